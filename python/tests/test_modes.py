"""Timeouts, unreachable and silent peers, non-blocking sockets in select,
selectors and asyncore loops, and a thread-per-connection server."""

import select
import selectors
import ssl
import sys
import threading
import time

import pytest

from conftest import WAIT, Server, accept_one, echo_server, pump


def test_closed_port_is_unreachable(variant):
    # A port nobody listens on: ICMP port unreachable, seen at once.
    free = variant.udp()
    free.bind((variant.host, 0))
    port = free.getsockname()[1]
    free.close()
    c = variant.client(timeout=5)
    t0 = time.monotonic()
    with pytest.raises(ssl.SSLError) as e:
        c.connect((variant.host, port))
    assert e.value.args[0] == ssl.ERR_PORT_UNREACHABLE == 505
    assert time.monotonic() - t0 < 4  # not the timeout
    c.close()


def test_silent_port_times_out(variant):
    silent = variant.udp()
    silent.bind((variant.host, 0))
    c = variant.client(timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(ssl.SSLError) as e:
        c.connect((variant.host, silent.getsockname()[1]))
    assert e.value.args[0] == ssl.ERR_HANDSHAKE_TIMEOUT == 504
    assert 0.15 < time.monotonic() - t0 < 3
    c.close()
    silent.close()


def test_read_timeout(variant):
    srv = variant.server()

    def serve(listener):
        conn, _ = accept_one(listener)
        conn.settimeout(WAIT)
        stop = pump(listener)
        try:
            assert conn.recv(10) == b"hi"
            # Send nothing back: the client's read times out.
            return conn.recv(10)
        finally:
            stop()

    server = Server(srv, serve)
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"hi")
    c.settimeout(0.2)
    with pytest.raises(ssl.SSLError) as e:
        c.recv(10)
    assert e.value.args[0] == ssl.ERR_READ_TIMEOUT == 502
    c.settimeout(WAIT)
    c.unwrap()
    assert server.result() == b""
    srv.close()


def _nonblocking_handshake(c, addr):
    """Drives a non-blocking client's handshake with select and the DTLS timer."""
    try:
        c.connect(addr)
        return
    except ssl.SSLWantReadError:
        pass
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        t = c.get_timeout()
        wait = min(t.total_seconds(), 0.5) if t is not None else 0.5
        r, _, _ = select.select([c], [], [], wait)
        if not r:
            c.handle_timeout()
            continue
        try:
            c.do_handshake()
            return
        except ssl.SSLWantReadError:
            continue
    raise AssertionError("handshake did not finish")


def test_nonblocking_client_and_select_server(variant):
    """A single-threaded server: one select loop over the listener and its
    connections, all non-blocking; accept() may return None."""
    srv = variant.server(timeout=0.0)
    addr = (variant.host, srv.getsockname()[1])
    n_clients = 3
    done = []

    def serve(listener):
        conns = {}
        nones = 0
        end = time.monotonic() + WAIT * 2
        while len(done) < n_clients and time.monotonic() < end:
            waits = [c.get_timeout() for c in conns.values()]
            waits = [w.total_seconds() for w in waits if w is not None] + [0.2]
            r, _, _ = select.select([listener] + list(conns.values()), [], [], max(0, min(waits)))
            if listener in r:
                while True:
                    got = listener.accept()
                    if got is None:
                        nones += 1
                        break
                    conn, peer = got
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
            for fd, conn in list(conns.items()):
                if conn not in r and not conn.has_pending():
                    if conn.get_timeout() is not None and conn.get_timeout().total_seconds() <= 0:
                        conn.handle_timeout()
                    continue
                try:
                    data = conn.recv(1024)
                except ssl.SSLWantReadError:
                    continue
                if data == b"":
                    done.append(fd)
                    del conns[fd]
                    conn.close()
                else:
                    conn.send(data[::-1])
        return nones

    server = Server(srv, serve)
    clients = []
    for i in range(n_clients):
        c = variant.client(timeout=0.0)
        _nonblocking_handshake(c, addr)
        clients.append(c)
    for i, c in enumerate(clients):
        c.send(b"abc%d" % i)
        end = time.monotonic() + WAIT
        while True:
            select.select([c], [], [], 0.5)
            try:
                assert c.recv(100) == b"%dcba" % i
                break
            except ssl.SSLWantReadError:
                assert time.monotonic() < end
    for c in clients:
        c.settimeout(WAIT)
        c.unwrap()
        c.close()
    nones = server.result()
    assert nones >= n_clients  # at least each cookie exchange returned None
    assert len(done) == n_clients
    srv.close()


def test_selectors_registration(variant):
    """fileno() works with selectors: the listener becomes readable on a hello."""
    srv = variant.server(timeout=0.0)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    c = variant.client(timeout=0.0)
    with pytest.raises(ssl.SSLWantReadError):
        c.connect((variant.host, srv.getsockname()[1]))
    events = sel.select(WAIT)
    assert events and events[0][0].fileobj is srv
    assert srv.accept() is None  # the cookie exchange
    sel.close()
    c.close()
    srv.close()


def test_thread_per_connection_server(variant):
    srv = variant.server(timeout=0.1)
    n = 6
    stop = threading.Event()
    handlers = []
    errors = []

    def handle(conn):
        try:
            conn.settimeout(WAIT)
            while True:
                data = conn.recv(2048)
                if not data:
                    return
                conn.sendall(data.upper())
        except Exception as e:
            errors.append(e)
        finally:
            conn.close()

    def accept_loop(listener):
        while not stop.is_set():
            try:
                got = listener.accept()
            except ssl.SSLError as e:
                if e.args[0] == ssl.ERR_READ_TIMEOUT:
                    continue
                raise
            if got is not None:
                t = threading.Thread(target=handle, args=(got[0],), daemon=True)
                t.start()
                handlers.append(t)

    acceptor = Server(srv, accept_loop)
    results = {}

    def client(i):
        c = variant.client()
        c.connect((variant.host, srv.getsockname()[1]))
        out = []
        for j in range(5):
            c.send(b"c%d m%d" % (i, j))
            out.append(c.recv(100))
        c.unwrap()
        c.close()
        results[i] = out

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    stop.set()
    acceptor.result()
    for t in handlers:
        t.join(WAIT)
    assert not errors
    assert sorted(results) == list(range(n))
    for i, out in results.items():
        assert out == [b"C%d M%d" % (i, j) for j in range(5)]
    srv.close()


if sys.version_info >= (3, 12):
    asyncore = pytest.importorskip("asyncore")  # the pyasyncore package
else:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore


class _EchoHandler(asyncore.dispatcher):
    def __init__(self, conn, stats, socket_map):
        asyncore.dispatcher.__init__(self, conn, map=socket_map)
        self.conn = conn
        self.stats = stats

    def readable(self):
        # A DTLS timer due: let the loop come back through handle_read.
        t = self.conn.get_timeout()
        if t is not None and t.total_seconds() <= 0:
            self.conn.handle_timeout()
        return True

    def writable(self):
        return False

    def handle_read(self):
        while True:
            try:
                data = self.conn.recv(2048)
            except ssl.SSLWantReadError:
                return
            if not data:
                self.stats["closed"] += 1
                self.close()
                return
            self.conn.send(data)
            self.stats["echoed"] += 1
            if not self.conn.pending() and not self.conn.has_pending():
                return


class _AsyncoreServer(asyncore.dispatcher):
    def __init__(self, listener, stats, socket_map):
        asyncore.dispatcher.__init__(self, listener, map=socket_map)
        self.listener = listener
        self.stats = stats
        self.socket_map = socket_map

    def writable(self):
        return False

    def handle_read(self):
        got = self.listener.accept()
        if got is None:
            self.stats["none"] += 1
            return
        conn, _ = got
        conn.setblocking(False)
        self.stats["accepted"] += 1
        _EchoHandler(conn, self.stats, self.socket_map)


def test_asyncore_server(variant):
    srv = variant.server(timeout=0.0)
    stats = {"none": 0, "accepted": 0, "echoed": 0, "closed": 0}
    socket_map = {}
    _AsyncoreServer(srv, stats, socket_map)
    stop = threading.Event()

    def loop(_):
        end = time.monotonic() + WAIT * 2
        while not stop.is_set() and time.monotonic() < end:
            asyncore.loop(timeout=0.05, map=socket_map, count=1)

    server = Server(srv, loop)
    for i in range(3):
        c = variant.client()
        c.connect((variant.host, srv.getsockname()[1]))
        for j in range(3):
            c.send(b"%d-%d" % (i, j))
            assert c.recv(100) == b"%d-%d" % (i, j)
        c.unwrap()
        c.close()
    end = time.monotonic() + WAIT
    while stats["closed"] < 3 and time.monotonic() < end:
        time.sleep(0.01)
    stop.set()
    server.result()
    assert stats["accepted"] == 3 and stats["echoed"] == 9 and stats["closed"] == 3
    assert stats["none"] >= 3
    for d in list(socket_map.values()):
        d.close()
    srv.close()


def test_blocking_sockets_without_timeout(variant):
    """settimeout(None) / setblocking(True) on wrapped sockets: calls block
    until done (the shared descriptor stays usable by the native side)."""
    srv = variant.server(timeout=None)
    srv.setblocking(True)
    server = Server(srv, _echo_blocking)
    c = variant.client(timeout=None)
    c.setblocking(True)
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"blocking")
    assert c.recv(100) == b"blocking"
    plain = c.unwrap()
    assert plain.gettimeout() is None
    server.result()
    plain.close()
    srv.close()


def _echo_blocking(listener):
    while True:
        got = listener.accept()  # blocks for a datagram, no timeout
        if got is not None:
            break
    conn = got[0]
    stop = pump(listener)
    try:
        conn.setblocking(True)
        conn.send(conn.recv(100))
        assert conn.recv(100) == b""
    finally:
        stop()


def test_send_while_another_thread_waits_in_recv(variant):
    """A reader thread blocked in recv does not hold up a writer thread."""
    srv = variant.server()
    server = Server(srv, echo_server(1))
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    got = []
    reader = threading.Thread(target=lambda: got.append(c.recv(100)))
    reader.start()
    time.sleep(0.2)  # the reader is waiting now
    t0 = time.monotonic()
    c.send(b"ping")
    assert time.monotonic() - t0 < 1.0
    reader.join(WAIT)
    assert got == [b"ping"]
    c.unwrap()
    c.close()
    server.result()
    srv.close()
