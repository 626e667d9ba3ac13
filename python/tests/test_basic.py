"""Blocking clients and servers: data calls, certificates, ciphers, close."""

import datetime
import ssl

import pytest

import dtls
import dtls.x509
from dtls import err
from conftest import WAIT, Server, accept_one, cert, echo_server, pump


def test_constants_and_version():
    assert ssl.PROTOCOL_DTLSv1 == 256
    assert ssl.PROTOCOL_DTLSv1_2 == 258
    assert ssl.PROTOCOL_DTLS == 259
    assert ssl._PROTOCOL_NAMES[258] == "DTLSv1.2"
    assert ssl.DTLS_OPENSSL_VERSION.startswith("OpenSSL 3")
    assert ssl.DTLS_OPENSSL_VERSION_INFO[0] == 3
    assert ssl.DTLS_OPENSSL_VERSION_NUMBER >> 28 == 3
    assert ssl.ERR_HANDSHAKE_TIMEOUT == 504 and ssl.ERR_PORT_UNREACHABLE == 505
    assert ssl.SSL_BUILD_CHAIN_FLAG_NONE == 0
    assert err.SSL_ERROR_ZERO_RETURN == 6 and err.ERR_NO_CIPHER == 501
    assert dtls.VERSION == (1, 3, 0)


def test_echo_payload_kinds(variant):
    srv = variant.server()
    server = Server(srv, echo_server(4))
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    assert c.cipher()[1] == "DTLSv1.2"
    c.send("text")  # str, as PyDTLS's snippet sends
    assert c.recv(100) == b"text"
    c.sendall(bytearray(b"bytes array"))
    assert c.recv(100) == b"bytes array"
    c.write(memoryview(b"--slice--")[2:7])
    assert c.read(100) == b"slice"
    c.send(b"into")
    buf = bytearray(16)
    n = c.recv_into(buf)
    assert buf[:n] == b"into"
    assert c.pending() == 0
    c.unwrap()
    got, tail, addr = server.result()
    assert got == [b"text", b"bytes array", b"slice", b"into"]
    assert tail == b""  # close_notify
    assert addr[1] == c.getsockname()[1]
    srv.close()


def test_peer_certificate_and_cipher(variant, tmp_path):
    # The server sends its chain: the leaf and the intermediate below the root.
    chain = tmp_path / "chain.pem"
    chain.write_bytes(open(cert("chain-server.pem"), "rb").read() + open(cert("inter.pem"), "rb").read())
    srv = variant.server(certfile=str(chain), keyfile=cert("chain-server.key"))
    server = Server(srv, echo_server(1))
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"x")
    assert c.recv(10) == b"x"
    pc = c.getpeercert()
    assert (("commonName", "localhost"),) in pc["subject"]
    assert (("organizationName", "dtls-reactor tests"),) in pc["subject"]
    assert ("DNS", "localhost") in pc["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in pc["subjectAltName"]
    assert pc["notAfter"].endswith("GMT") and pc["version"] == 3
    der = c.getpeercert(binary_form=True)
    assert isinstance(der, bytes) and der[0] == 0x30
    assert dtls.x509.decode_cert(der) == pc
    chain = c.getpeercertchain()
    assert len(chain) == 2 and chain[0]["subject"] == pc["subject"]
    assert (("commonName", "dtls-reactor test intermediate CA"),) in chain[1]["subject"]
    assert c.getpeercertchain(True)[0] == der
    name, proto, bits = c.cipher()
    assert proto == "DTLSv1.2" and bits >= 128 and name
    c.unwrap()
    server.result()
    srv.close()


def test_unverified_peer_gives_empty_dict(variant):
    srv = variant.server()
    server = Server(srv, echo_server(1))
    c = variant.client(cert_reqs=ssl.CERT_NONE, ca_certs=None)
    assert c.cipher() is None and c.getpeercert() is None
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"a")
    assert c.recv(10) == b"a"
    assert c.getpeercert() == {}
    assert c.getpeercert(True)[0] == 0x30
    c.unwrap()
    server.result()
    srv.close()


def test_read_raises_zero_return_after_close_notify(variant):
    srv = variant.server()

    def serve(listener):
        conn, _ = accept_one(listener)
        conn.settimeout(WAIT)
        stop = pump(listener)
        try:
            assert conn.recv(100) == b"bye"
            conn.unwrap()
        finally:
            stop()

    server = Server(srv, serve)
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"bye")
    with pytest.raises(ssl.SSLError) as e:
        c.read()
    assert e.value.args[0] == ssl.SSL_ERROR_ZERO_RETURN
    assert isinstance(e.value, ssl.SSLZeroReturnError)
    server.result()
    c.close()
    srv.close()


def test_get_timeout_and_handle_timeout(variant):
    c = variant.client(timeout=0.0)
    silent = variant.udp()
    silent.bind((variant.host, 0))
    with pytest.raises(ssl.SSLError) as e:
        c.connect((variant.host, silent.getsockname()[1]))
    assert e.value.args[0] == ssl.SSL_ERROR_WANT_READ
    t = c.get_timeout()
    assert isinstance(t, datetime.timedelta)
    assert datetime.timedelta(0) < t <= datetime.timedelta(seconds=1)
    assert c.handle_timeout() is False  # not expired yet
    # The ClientHello reached the silent socket.
    silent.settimeout(WAIT)
    first = silent.recv(2048)
    assert first[0] == 22  # handshake record
    c.close()
    silent.close()


def test_send_on_unconnected_client_fails(variant):
    c = variant.client()
    with pytest.raises(OSError):
        c.send(b"nobody")
    c.close()


def test_pydtls_snippet_unchanged(variant):
    # PyDTLS's README, as is (its host and port replaced by the test server's).
    srv = variant.server()
    server = Server(srv, echo_server(1))
    host, port = variant.host, srv.getsockname()[1]
    from socket import socket, AF_INET, SOCK_DGRAM
    from dtls import do_patch
    do_patch()
    sock = ssl.wrap_socket(socket(AF_INET if variant.fam == "v4" else variant.family, SOCK_DGRAM))
    sock.connect((host, port))
    sock.send('Hi there')
    assert sock.recv(100) == b"Hi there"
    sock.unwrap()
    got, _, _ = server.result()
    assert got == [b"Hi there"]
    srv.close()
