"""PyDTLS API details: SSLConnection and its callbacks, makefile, bind
before wrapping, timers that fail, an idle listener that does not spin."""

import select
import ssl
import threading
import time

import pytest

from dtls import SSLConnection, err
from dtls.sslconnection import CERT_REQUIRED, PROTOCOL_DTLSv1_2
from conftest import WAIT, Server, accept_one, cert, echo_server, pump


def test_sslconnection_listen_accept_echo(variant):
    """echo_seq's sequence over SSLConnection on both sides."""
    ssock = variant.udp()
    ssock.bind((variant.host, 0))
    ssock.settimeout(WAIT)
    server_conn = SSLConnection(ssock, keyfile=cert("server.key"), certfile=cert("server.pem"),
                                server_side=True, ssl_version=PROTOCOL_DTLSv1_2)
    addr = (variant.host, ssock.getsockname()[1])

    def serve(_):
        peer = None
        end = time.monotonic() + WAIT
        while peer is None and time.monotonic() < end:
            peer = server_conn.listen()  # None for the cookie exchange
        got = server_conn.accept()
        assert got is not None and got[1] == peer
        conn = got[0]
        stop = pump(server_conn)
        try:
            conn.write(conn.read())
            with pytest.raises(OSError) as e:  # ssl.SSLError: do_patch() ran
                conn.read()
            assert e.value.args[0] == err.SSL_ERROR_ZERO_RETURN
            return conn.getpeercert(), conn.cipher()
        finally:
            stop()

    server = Server(None, serve)
    csock = variant.udp()
    csock.settimeout(WAIT)
    client = SSLConnection(csock, cert_reqs=CERT_REQUIRED, ca_certs=cert("ca.pem"),
                           ssl_version=PROTOCOL_DTLSv1_2)
    client.connect(addr)
    client.write(b"seq")
    assert client.read() == b"seq"
    plain = client.shutdown()
    assert plain is csock and plain.fileno() >= 0
    peer_cert, cipher = server.result()
    assert peer_cert is None and cipher[1] == "DTLSv1.2"
    plain.close()
    ssock.close()


def test_configuration_callbacks(variant):
    def ctx_hook(ctx):
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        ctx.set_curves(["prime256v1"])
        ctx.set_sigalgs("ECDSA+SHA256")

    def ssl_hook(s):
        s.set_mtu(400)

    srv = variant.server()
    server = Server(srv, echo_server(1))
    csock = variant.udp()
    csock.settimeout(WAIT)
    c = SSLConnection(csock, cert_reqs=CERT_REQUIRED, ca_certs=cert("ca.pem"),
                      cb_user_config_ssl_ctx=ctx_hook, cb_user_config_ssl=ssl_hook)
    c.connect((variant.host, srv.getsockname()[1]))
    assert c.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
    with pytest.raises(OSError):
        c.write(b"x" * 500)  # larger than one record of a 400-byte MTU
    c.write(b"y" * 300)
    assert c.read(1000) == b"y" * 300
    c.shutdown()
    server.result()
    csock.close()
    srv.close()


def test_context_callback_mismatch_fails(variant):
    srv = variant.server(timeout=0.05)
    client_done = threading.Event()

    def serve(listener):
        while not client_done.is_set():
            try:
                if listener.accept() is not None:
                    return "accepted"
            except ssl.SSLError:
                pass
        return "refused"

    server = Server(srv, serve)
    csock = variant.udp()
    csock.settimeout(WAIT)
    with pytest.raises(ssl.SSLError):
        c = SSLConnection(csock, cb_user_config_ssl_ctx=lambda ctx: ctx.set_ciphers(
            "ECDHE-RSA-AES128-GCM-SHA256"))
        try:
            c.connect((variant.host, srv.getsockname()[1]))
        finally:
            client_done.set()
    assert server.result() == "refused"
    csock.close()
    srv.close()


def test_makefile_serves_a_file_until_close_notify(variant):
    """A stream-style framework: the server writes a file through makefile,
    the client reads it until the close_notify."""
    content = b"".join(b"line %04d of the served file\n" % i for i in range(200))

    def serve(listener):
        conn, _ = accept_one(listener)
        conn.settimeout(WAIT)
        stop = pump(listener)
        try:
            assert conn.recv(100) == b"GET"
            f = conn.makefile("wb", buffering=1000)
            f.write(content)
            f.close()
            conn.unwrap()
        finally:
            stop()

    srv = variant.server()
    server = Server(srv, serve)
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"GET")
    f = c.makefile("rb")
    assert f.read() == content
    f.close()
    c.close()
    server.result()
    srv.close()


def test_bind_before_wrapping(variant):
    s = variant.udp()
    s.bind((variant.host, 0))
    srv = ssl.wrap_socket(s, server_side=True, certfile=cert("server.pem"),
                          keyfile=cert("server.key"))
    srv.listen()
    srv.settimeout(WAIT)
    server = Server(srv, echo_server(2))
    c = variant.client()
    c.connect((variant.host, s.getsockname()[1]))
    for m in (b"one", b"two"):
        c.send(m)
        assert c.recv(10) == m
    c.unwrap()
    server.result()
    srv.close()


def test_handle_timeout_fails_after_the_deadline(variant):
    """A non-blocking client against a silent port: handle_timeout raises
    the handshake timeout once the handshake deadline passed (PyDTLS 1.3.0
    returned a value)."""
    silent = variant.udp()
    silent.bind((variant.host, 0))
    c = variant.client(timeout=0.0, handshake_timeout=0.5)
    with pytest.raises(ssl.SSLWantReadError):
        c.connect((variant.host, silent.getsockname()[1]))
    retransmitted = 0
    end = time.monotonic() + WAIT
    with pytest.raises(ssl.SSLError) as e:
        while time.monotonic() < end:
            t = c.get_timeout()
            select.select([c], [], [], t.total_seconds() if t else 0.05)
            retransmitted += bool(c.handle_timeout())
    assert e.value.args[0] == ssl.ERR_HANDSHAKE_TIMEOUT
    assert time.monotonic() < end
    c.close()
    silent.close()


def test_idle_listener_with_timeout_does_not_spin(variant):
    srv = variant.server(timeout=0.5)
    cpu = time.process_time()
    wall = time.monotonic()
    with pytest.raises(ssl.SSLError) as e:
        srv.accept()
    assert e.value.args[0] == ssl.ERR_READ_TIMEOUT
    assert time.monotonic() - wall >= 0.45
    assert time.process_time() - cpu < 0.1  # PyDTLS 1.3.0 spun at ~75 % CPU
    srv.close()


def test_errors_before_do_patch_are_dtls_errors():
    """Without do_patch() failures raise dtls.err.SSLError, not ssl's."""
    import subprocess
    import sys

    code = (
        "import socket, ssl, dtls, dtls.err as err\n"
        "from dtls import SSLConnection\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n"
        "    SSLConnection(s, ciphers='NO-SUCH-CIPHER')\n"
        "except Exception as e:\n"
        "    print(type(e).__module__, type(e).__name__, e.args[0], isinstance(e, ssl.SSLError))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=WAIT)
    assert out.stdout.split() == ["dtls.err", "SSLError", "501", "False"], out


def _open_fds():
    import os

    return len(os.listdir("/proc/self/fd"))


def test_wrapped_sockets_are_freed(variant):
    """No descriptor leaks: sockets wrapped and dropped, sessions closed."""
    import gc

    srv = variant.server()
    gc.collect()
    before = _open_fds()
    for _ in range(30):
        ssl.wrap_socket(variant.udp())  # dropped without close
    gc.collect()
    assert _open_fds() <= before + 1

    def serve(listener):
        for _ in range(5):
            listener.settimeout(WAIT)
            conn, _ = accept_one(listener)
            conn.settimeout(WAIT)
            stop = pump(listener)
            try:
                conn.send(conn.recv(100))
                assert conn.recv(100) == b""
            finally:
                stop()
            conn.close()

    server = Server(srv, serve)
    for i in range(5):
        c = variant.client()
        c.connect((variant.host, srv.getsockname()[1]))
        c.send(b"%d" % i)
        assert c.recv(10) == b"%d" % i
        c.unwrap().close()
        c.close()
    server.result()
    gc.collect()
    assert _open_fds() <= before + 1
    srv.close()


def test_context_curve_helpers():
    from dtls import SSLContext

    nid = SSLContext.get_ec_nist2nid("P-256")
    assert SSLContext.get_ec_nid2nist(nid) == "P-256"
    names = SSLContext.get_ec_available()
    assert "prime256v1" in names and "secp384r1" in names
    nids = SSLContext.get_ec_available(bAsName=False)
    assert nid in nids and len(nids) == len(names)
    with pytest.raises(ValueError):
        SSLContext.get_ec_nist2nid("P-1")
    assert SSLContext.get_ec_nid2nist(1) is None


def test_set_ssl_logging_from_the_context_callback(variant, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="dtls.ssl")
    srv = variant.server()
    server = Server(srv, echo_server(1))
    csock = variant.udp()
    csock.settimeout(WAIT)
    c = SSLConnection(csock, cert_reqs=CERT_REQUIRED, ca_certs=cert("ca.pem"),
                      cb_user_config_ssl_ctx=lambda ctx: ctx.set_ssl_logging(True))
    c.connect((variant.host, srv.getsockname()[1]))
    c.write(b"l")
    assert c.read() == b"l"
    c.shutdown()
    server.result()
    csock.close()
    srv.close()
    states = [r.getMessage() for r in caplog.records if r.name == "dtls.ssl"]
    assert any(m.startswith("connect:") for m in states), states
    assert not any(m.startswith("accept:") for m in states)
