"""dtls.wrapper: one server object for many peers (recvfrom/sendto)."""

import socket
import ssl
import threading
import time

import pytest

from dtls import wrapper
from conftest import WAIT, Server, accept_one, cert, pump


class WrapperServer:
    """wrap_server in a thread, upper-casing every datagram back."""

    def __init__(self, variant, **kwargs):
        sock = variant.udp()
        kwargs.setdefault("certfile", cert("server.pem"))
        kwargs.setdefault("keyfile", cert("server.key"))
        self.server = wrapper.wrap_server(sock, **kwargs)
        # The order PyDTLS's users write: bind, settimeout, listen.
        self.server.bind((variant.host, 0))
        self.server.settimeout(0.05)
        self.server.listen(0)
        self.addr = (variant.host, self.server.getsockname()[1])
        self.stop = threading.Event()
        self.received = []
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while not self.stop.is_set():
                try:
                    data, addr = self.server.recvfrom(4096)
                except socket.timeout:
                    continue
                self.received.append((data, addr))
                self.server.sendto(data.upper(), addr)
        except BaseException as e:
            self.error = e

    def close(self):
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.server.close()
        if self.error is not None:
            raise self.error


def client(variant, **kwargs):
    kwargs.setdefault("cert_reqs", ssl.CERT_REQUIRED)
    kwargs.setdefault("ca_certs", cert("ca.pem"))
    c = wrapper.wrap_client(variant.udp(), **kwargs)
    c.settimeout(WAIT)
    return c


def test_echo_many_clients(variant):
    srv = WrapperServer(variant)
    n, rounds = 100, 10  # PyDTLS added this load test after 1.3.0
    results, errors = {}, []

    def run(i):
        try:
            c = client(variant)
            c.connect(srv.addr)
            out = []
            for j in range(rounds):
                c.send(b"peer %d msg %d" % (i, j))
                out.append(c.recv(100))
            c.unwrap()
            c.close()
            results[i] = out
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    srv.close()
    assert not errors, errors
    assert len(results) == n
    for i, out in results.items():
        assert out == [b"PEER %d MSG %d" % (i, j) for j in range(rounds)]
    assert len(srv.received) == n * rounds


def test_sendto_unknown_peer_is_zero(variant):
    srv = WrapperServer(variant)
    assert srv.server.sendto(b"x", (variant.host, 9)) == 0
    srv.close()


class HalfRelay(threading.Thread):
    """A UDP relay that forwards the client's first ``forward`` datagrams to
    the server (and every reply back), then drops the client's: a peer whose
    handshake passed the cookie exchange and then went silent."""

    def __init__(self, variant, server_addr, forward=2):
        super().__init__(daemon=True)
        self.front = variant.udp()
        self.front.bind((variant.host, 0))
        self.back = variant.udp()
        self.back.connect(server_addr)
        self.addr = (variant.host, self.front.getsockname()[1])
        self.forward = forward
        self.stop = threading.Event()
        self.start()

    def run(self):
        import select

        client = None
        while not self.stop.is_set():
            r, _, _ = select.select([self.front, self.back], [], [], 0.05)
            if self.front in r:
                data, client = self.front.recvfrom(65536)
                if self.forward > 0:
                    self.forward -= 1
                    self.back.send(data)
            if self.back in r and client is not None:
                self.front.sendto(self.back.recv(65536), client)

    def close(self):
        self.stop.set()
        self.join(WAIT)
        self.front.close()
        self.back.close()


def test_unanswered_handshake_stalls_nobody(variant):
    srv = WrapperServer(variant)
    relay = HalfRelay(variant, srv.addr)
    stuck = client(variant)
    stuck.settimeout(0.5)
    errors = []
    t = threading.Thread(target=lambda: _expect_failure(stuck, relay.addr, errors))
    t.start()
    end = time.monotonic() + WAIT
    while relay.forward > 0 and time.monotonic() < end:
        time.sleep(0.01)
    assert relay.forward == 0  # hello and hello with cookie reached the server
    c = client(variant)
    c.connect(srv.addr)
    for j in range(3):
        c.send(b"m%d" % j)
        assert c.recv(100) == b"M%d" % j
    assert len(srv.server.peers()) == 2  # the half-open one is still there
    c.unwrap()
    c.close()
    t.join(WAIT)
    assert errors == [ssl.ERR_HANDSHAKE_TIMEOUT]
    stuck.close()
    relay.close()
    srv.close()


def _expect_failure(sock, addr, errors):
    try:
        sock.connect(addr)
    except ssl.SSLError as e:
        errors.append(e.args[0])


def test_client_timeout_drops_idle_peer(variant):
    srv = WrapperServer(variant, client_timeout=0.3)
    c = client(variant)
    c.connect(srv.addr)
    c.send(b"a")
    assert c.recv(10) == b"A"
    assert len(srv.server.peers()) == 1
    end = time.monotonic() + WAIT
    while srv.server.peers() and time.monotonic() < end:
        time.sleep(0.05)
    assert srv.server.peers() == []
    # The server sent close_notify when it dropped the peer.
    assert c.recv(10) == b""
    c.close()
    srv.close()


def test_wrapper_version_and_curve_options(variant):
    srv = WrapperServer(variant, ssl_version=ssl.PROTOCOL_DTLSv1)
    c = client(variant, ssl_version=ssl.PROTOCOL_DTLSv1_2)
    with pytest.raises(ssl.SSLError) as e:
        c.connect(srv.addr)
    assert "version" in (str(e.value) + str(e.value.errqueue)).lower()
    c.close()
    srv.close()
    srv = WrapperServer(variant, server_key_exchange_curve="secp384r1")
    c = client(variant, curves=["secp384r1", "prime256v1"])
    c.connect(srv.addr)
    c.send(b"ok")
    assert c.recv(10) == b"OK"
    c.unwrap()
    c.close()
    srv.close()


def test_recvfrom_times_out_with_socket_timeout(variant):
    server = wrapper.wrap_server(variant.udp(), certfile=cert("server.pem"),
                                 keyfile=cert("server.key"))
    server.bind((variant.host, 0))
    server.settimeout(0.2)
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        server.recvfrom(100)
    assert 0.15 < time.monotonic() - t0 < 2
    server.close()


def test_client_recvfrom_sendto_and_ssl_logging(variant, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="dtls")
    srv = WrapperServer(variant, ssl_logging=True)
    c = client(variant)
    c.connect(srv.addr)
    assert c.sendto(b"to", srv.addr) == 2
    data, addr = c.recvfrom(100)
    assert data == b"TO" and addr[1] == srv.addr[1]
    c.write(b"rw")
    assert c.read(100) == b"RW"
    c.close()  # close_notify first
    srv.close()
    # ssl_logging=True: OpenSSL's states on dtls.ssl, the server's only.
    states = [r.getMessage() for r in caplog.records if r.name == "dtls.ssl"]
    assert any(m.startswith("accept:") for m in states), states
    assert not any(m.startswith("connect:") for m in states)
    assert any("alert" in m and "close notify" in m for m in states), states


def _chain_files(tmp_path):
    cas = tmp_path / "inter-and-root.pem"
    cas.write_bytes(open(cert("inter.pem"), "rb").read() + open(cert("ca.pem"), "rb").read())
    return dict(certfile=cert("chain-server.pem"), keyfile=cert("chain-server.key"),
                ca_certs=str(cas))


def _chain_seen(variant, srv):
    c = client(variant)
    try:
        c.connect(srv.addr)
        return len(c.getpeercertchain())
    except ssl.SSLError:
        return None
    finally:
        c.close()
        srv.close()


def test_server_cert_options_build_the_chain(variant, tmp_path):
    """The certificate file holds the leaf alone; the client trusts only the
    root, so it needs the intermediate."""
    files = _chain_files(tmp_path)
    no_cas = dict(files, ca_certs=None)
    assert _chain_seen(variant, WrapperServer(variant, **no_cas)) is None
    # With the CAs loaded OpenSSL completes the chain by itself, root included.
    assert _chain_seen(variant, WrapperServer(variant, **files)) == 3
    srv = WrapperServer(variant, server_cert_options=ssl.SSL_BUILD_CHAIN_FLAG_NO_ROOT, **files)
    assert _chain_seen(variant, srv) == 2  # leaf + intermediate


def test_build_cert_chain_callback(variant, tmp_path):
    files = _chain_files(tmp_path)
    srv = variant.server(**files, cb_user_config_ssl_ctx=lambda ctx: ctx.build_cert_chain(
        ssl.SSL_BUILD_CHAIN_FLAG_NO_ROOT))

    def serve(listener):
        conn, _ = accept_one(listener)
        conn.settimeout(WAIT)
        stop = pump(listener)
        try:
            conn.recv(10)  # completes the handshake; then the close_notify
        finally:
            stop()

    server = Server(srv, serve)
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    assert len(c.getpeercertchain()) == 2  # leaf, intermediate
    c.unwrap()
    c.close()
    server.result()
    srv.close()
    # Nothing to build the chain from: the construction fails.
    with pytest.raises(ssl.SSLError):
        wrapper.wrap_server(variant.udp(), certfile=cert("chain-server.pem"),
                            keyfile=cert("chain-server.key"),
                            server_cert_options=ssl.SSL_BUILD_CHAIN_FLAG_NO_ROOT)


@pytest.mark.parametrize("server_curve,client_curves,ok", [
    (None, None, True),
    (None, ["secp384r1", "prime256v1"], True),
    ("secp384r1", ["prime256v1", "secp384r1"], True),
    ("secp384r1", ["prime256v1"], False),  # the forced group is not offered
    ("prime256v1", ["prime256v1"], True),
])
def test_server_ecdh_curve_selection(variant, server_curve, client_curves, ok):
    srv = WrapperServer(variant, server_key_exchange_curve=server_curve)
    c = client(variant, curves=client_curves)
    try:
        c.connect(srv.addr)
        c.send(b"k")
        assert c.recv(10) == b"K"
        connected = True
    except ssl.SSLError:
        connected = False
    c.close()
    srv.close()
    assert connected is ok
