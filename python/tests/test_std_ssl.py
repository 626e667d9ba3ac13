"""After do_patch(): TCP still goes to the standard module; the patched
entry points (ssl.SSLSocket, get_server_certificate) handle datagrams."""

import socket
import ssl
import threading

import pytest

from conftest import WAIT, Server, accept_one, cert, echo_server


def test_std_ssl_over_tcp_still_works():
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_ctx.load_cert_chain(cert("server.pem"), cert("server.key"))
    out = {}

    def serve():
        conn, _ = lsock.accept()
        with srv_ctx.wrap_socket(conn, server_side=True) as tls:
            out["version"] = tls.version()
            tls.sendall(tls.recv(100).upper())

    t = threading.Thread(target=serve)
    t.start()
    tcp = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    # The patched ssl.wrap_socket with a stream socket: the standard module's TLS.
    tls = ssl.wrap_socket(tcp, cert_reqs=ssl.CERT_REQUIRED, ca_certs=cert("ca.pem"))
    assert isinstance(tls, ssl.SSLSocket)
    assert tls.version().startswith("TLS")
    tls.sendall(b"over tcp")
    assert tls.recv(100) == b"OVER TCP"
    tls.close()
    t.join(WAIT)
    assert out["version"].startswith("TLS")
    lsock.close()
    # And SSLContext.wrap_socket, unaffected.
    ctx = ssl.create_default_context()
    assert ctx.sslsocket_class is ssl.SSLSocket


def test_stream_sslsocket_constructor_unchanged():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(TypeError):
        ssl.SSLSocket(s)
    s.close()


def test_dtls_protocol_on_stream_socket_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ValueError):
        ssl.wrap_socket(s, ssl_version=ssl.PROTOCOL_DTLSv1_2)
    s.close()


def test_sslsocket_constructor_with_datagram_socket(variant):
    srv = variant.server()
    server = Server(srv, echo_server(1))
    c = ssl.SSLSocket(variant.udp(), cert_reqs=ssl.CERT_REQUIRED, ca_certs=cert("ca.pem"))
    c.settimeout(WAIT)
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"via SSLSocket")
    assert c.recv(100) == b"via SSLSocket"
    c.unwrap()
    c.close()
    server.result()
    srv.close()


@pytest.mark.parametrize("proto,ca", [("PROTOCOL_DTLSv1_2", "ca.pem"), ("PROTOCOL_DTLS", "ca.pem"),
                                      ("PROTOCOL_DTLSv1", None), ("PROTOCOL_DTLS", None)])
def test_get_server_certificate_over_udp(variant, proto, ca):
    srv = variant.server(ssl_version=ssl.PROTOCOL_DTLS)

    def serve(listener):
        conn, _ = accept_one(listener)
        conn.settimeout(WAIT)
        from conftest import pump

        stop = pump(listener)
        try:
            return conn.recv(100)  # the client's close_notify
        finally:
            stop()

    server = Server(srv, serve)
    pem = ssl.get_server_certificate((variant.host, srv.getsockname()[1]),
                                     ssl_version=getattr(ssl, proto),
                                     ca_certs=cert(ca) if ca else None)
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(open(cert("server.pem")).read())
    assert server.result() == b""
    srv.close()
