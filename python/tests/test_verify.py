"""Certificate verification, cipher/curve/sigalg and version mismatches,
configuration errors."""

import ssl
import threading
import time

import pytest

from dtls import err
from conftest import WAIT, Server, cert, pump


def attempt(variant, server_kw=None, client_kw=None):
    """One handshake and echo: (client error, server error, server's view of
    the client certificate)."""
    srv = variant.server(timeout=0.05, **(server_kw or {}))
    client_done = threading.Event()

    def serve(listener):
        # A hello the server cannot serve is refused at the door (an alert,
        # no connection): accept() keeps returning None.
        end = time.monotonic() + WAIT
        got = None
        while got is None and not client_done.is_set() and time.monotonic() < end:
            try:
                got = listener.accept()
            except ssl.SSLError as e:
                if e.args[0] != ssl.ERR_READ_TIMEOUT:
                    raise
        if got is None:
            return "refused", None
        conn = got[0]
        conn.settimeout(WAIT)
        stop = pump(listener)
        try:
            data = conn.recv(100)
            conn.send(data)
            peer = conn.getpeercert()
            conn.recv(100)  # close_notify
            return None, peer
        except OSError as e:
            return e, None
        finally:
            stop()
            conn.close()

    server = Server(srv, serve)
    c = variant.client(**(client_kw or {}))
    client_error = None
    try:
        c.connect((variant.host, srv.getsockname()[1]))
        c.send(b"ping")
        assert c.recv(100) == b"ping"
        c.unwrap()
    except OSError as e:
        client_error = e
    client_done.set()
    c.close()
    server_error, peer = server.result()
    srv.close()
    return client_error, server_error, peer


def queue_text(e):
    return " ".join(t for _, t in getattr(e, "errqueue", [])) + " " + str(e)


def test_verify_none_connects_without_ca(variant):
    ce, se, _ = attempt(variant, client_kw=dict(cert_reqs=ssl.CERT_NONE, ca_certs=None))
    assert ce is None and se is None


def test_verify_required_without_ca_fails(variant):
    ce, se, _ = attempt(variant, client_kw=dict(cert_reqs=ssl.CERT_REQUIRED, ca_certs=None))
    assert isinstance(ce, ssl.SSLError) and ce.args[0] == ssl.SSL_ERROR_SSL
    assert "verif" in str(ce)
    assert se is not None


def test_wrong_ca_fails(variant):
    ce, se, _ = attempt(variant, client_kw=dict(ca_certs=cert("other-ca.pem")))
    assert isinstance(ce, ssl.SSLError) and "verif" in str(ce)
    assert se is not None


def test_client_certificate_required(variant):
    server_kw = dict(cert_reqs=ssl.CERT_REQUIRED, ca_certs=cert("ca.pem"))
    # No certificate: refused by the server.
    ce, se, _ = attempt(variant, server_kw)
    assert ce is not None and se is not None
    # An untrusted (self-signed) one: refused.
    ce, se, _ = attempt(variant, server_kw, dict(certfile=cert("selfsigned.pem"),
                                                 keyfile=cert("selfsigned.key")))
    assert ce is not None and isinstance(se, ssl.SSLError) and "verif" in str(se)
    # The right one: accepted, and the server sees it.
    ce, se, peer = attempt(variant, server_kw, dict(certfile=cert("client.pem"),
                                                    keyfile=cert("client.key")))
    assert ce is None and se is None
    assert (("commonName", "test client"),) in peer["subject"]


@pytest.mark.parametrize("ciphers", ["ALL", "DEFAULT"])
def test_cipher_lists_connect(variant, ciphers):
    ce, se, _ = attempt(variant, client_kw=dict(ciphers=ciphers))
    assert ce is None and se is None


def test_cipher_list_selecting_nothing_fails_at_once(variant):
    with pytest.raises(ssl.SSLError) as e:
        variant.client(ciphers="NO-SUCH-CIPHER")
    assert e.value.args[0] == err.ERR_NO_CIPHER == 501


def test_cipher_mismatch(variant):
    # An RSA-only suite against the ECDSA certificate.
    ce, se, _ = attempt(variant, client_kw=dict(ciphers="ECDHE-RSA-AES256-GCM-SHA384"))
    assert ce is not None and se is not None
    ce, se, _ = attempt(variant, client_kw=dict(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert ce is None and se is None


def test_curve_mismatch(variant):
    # The client offers only P-384; the certificate's key is P-256.
    ce, se, _ = attempt(variant, client_kw=dict(curves="secp384r1"))
    assert ce is not None and se is not None
    ce, se, _ = attempt(variant, client_kw=dict(curves=["prime256v1"]))
    assert ce is None and se is None


def test_sigalg_mismatch(variant):
    ce, se, _ = attempt(variant, client_kw=dict(sigalgs="RSA+SHA256"))
    assert ce is not None and se is not None
    ce, se, _ = attempt(variant, client_kw=dict(sigalgs="ECDSA+SHA256"))
    assert ce is None and se is None


def test_version_mismatch(variant):
    ce, se, _ = attempt(variant, dict(ssl_version=ssl.PROTOCOL_DTLSv1),
                        dict(ssl_version=ssl.PROTOCOL_DTLSv1_2))
    assert isinstance(ce, ssl.SSLError) and ce.args[0] == ssl.SSL_ERROR_SSL
    assert "version" in queue_text(ce).lower()


@pytest.mark.parametrize("server_v,client_v", [
    ("PROTOCOL_DTLSv1", "PROTOCOL_DTLSv1"),
    ("PROTOCOL_DTLS", "PROTOCOL_DTLSv1"),
    ("PROTOCOL_DTLS", "PROTOCOL_DTLSv1_2"),
    ("PROTOCOL_DTLS", "PROTOCOL_DTLS"),
    ("PROTOCOL_DTLSv1_2", "PROTOCOL_DTLSv1_2"),
])
def test_protocol_matrix(variant, server_v, client_v):
    ce, se, _ = attempt(variant, dict(ssl_version=getattr(ssl, server_v)),
                        dict(ssl_version=getattr(ssl, client_v)))
    assert ce is None and se is None


def test_key_and_certificate_errors(variant, tmp_path):
    with pytest.raises(ssl.SSLError) as e:
        ssl.wrap_socket(variant.udp(), keyfile=cert("client.key"))
    assert e.value.args[0] == err.ERR_BOTH_KEY_CERT_FILES
    with pytest.raises(ssl.SSLError) as e:
        ssl.wrap_socket(variant.udp(), server_side=True)
    assert e.value.args[0] == err.ERR_BOTH_KEY_CERT_FILES_SVR
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    with pytest.raises(ssl.SSLError):
        ssl.wrap_socket(variant.udp(), server_side=True, certfile=str(empty),
                        keyfile=cert("server.key"))
    bad_key = tmp_path / "bad.key"
    bad_key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ssl.SSLError):
        ssl.wrap_socket(variant.udp(), server_side=True, certfile=cert("server.pem"),
                        keyfile=str(bad_key))
    # A key that does not match the certificate.
    with pytest.raises(ssl.SSLError):
        ssl.wrap_socket(variant.udp(), server_side=True, certfile=cert("server.pem"),
                        keyfile=cert("client.key"))


def test_not_a_datagram_socket():
    import socket

    with pytest.raises(err.InvalidSocketError):
        from dtls import SSLConnection

        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            SSLConnection(s)
        finally:
            s.close()
