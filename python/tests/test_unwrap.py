"""unwrap(): a plain socket that still talks to the peer, wrapped again."""

import socket
import ssl

from conftest import WAIT, Server, accept_one, cert, pump


def test_unwrap_plaintext_and_rewrap(variant):
    srv = variant.server()

    def serve(listener):
        conn, peer = accept_one(listener)
        conn.settimeout(WAIT)
        stop = pump(listener)  # router: the listener keeps forwarding to the link
        try:
            conn.send(conn.recv(100))
            assert conn.recv(100) == b""  # the client's close_notify (answered)
            link = conn.unwrap()
            assert isinstance(link, socket.socket)
            assert link.getpeername()[1] == peer[1]
            link.settimeout(WAIT)
            plain_in = link.recv(100)
            link.send(b"plain from server")
            again = ssl.wrap_socket(link, server_side=True, certfile=cert("server.pem"),
                                    keyfile=cert("server.key"))
            again.settimeout(WAIT)
            data = again.recv(100)
            again.send(data)
            tail = again.recv(100)
            again.close()
            return plain_in, data, tail
        finally:
            stop()

    server = Server(srv, serve)
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"secure 1")
    assert c.recv(100) == b"secure 1"
    plain = c.unwrap()
    assert isinstance(plain, socket.socket) and plain.fileno() >= 0
    plain.settimeout(WAIT)
    plain.send(b"plain from client")
    assert plain.recv(100) == b"plain from server"
    c2 = ssl.wrap_socket(plain, cert_reqs=ssl.CERT_REQUIRED, ca_certs=cert("ca.pem"))
    c2.settimeout(WAIT)
    assert c2.cipher() is not None  # connected socket: handshaken when wrapped
    c2.send(b"secure 2")
    assert c2.recv(100) == b"secure 2"
    c2.unwrap()
    c2.close()
    plain_in, data, tail = server.result()
    assert plain_in == b"plain from client"
    assert data == b"secure 2"
    assert tail == b""
    srv.close()


def test_unwrap_without_peer_answer_times_out_and_keeps_socket(variant):
    """The peer's close_notify does not come: unwrap raises the read timeout
    (this side's close_notify was sent) and the socket is still there."""
    srv = variant.server()

    def serve(listener):
        conn, _ = accept_one(listener)
        conn.settimeout(WAIT)
        stop = pump(listener)
        try:
            conn.send(conn.recv(100))
        finally:
            stop()
        return conn  # kept open, never reads the close_notify

    server = Server(srv, serve)
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"x")
    assert c.recv(10) == b"x"
    held = server.result()
    c.settimeout(0.2)
    try:
        c.unwrap()
        raise AssertionError("unwrap did not time out")
    except ssl.SSLError as e:
        assert e.args[0] == ssl.ERR_READ_TIMEOUT
    assert c.fileno() >= 0
    c.close()
    held.close()
    srv.close()
