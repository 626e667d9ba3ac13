"""Shared fixtures: every socket test runs four ways (IPv4/IPv6 x osnet/router),
on loopback, on free ports, with bounded waits."""

import os
import socket
import ssl
import threading

import pytest

import dtls
from dtls import do_patch

do_patch()

CERTS = os.environ.get(
    "DTLS_TEST_CERTS",
    os.path.join(os.path.dirname(__file__), "..", "..", "tests", "certs"),
)


def cert(name):
    return os.path.join(CERTS, name)


# What a blocked call may wait at most in these tests.
WAIT = 10.0


class Variant:
    def __init__(self, fam, demux):
        self.fam = fam
        self.demux = demux
        self.family = socket.AF_INET if fam == "v4" else socket.AF_INET6
        self.host = "127.0.0.1" if fam == "v4" else "::1"

    def __repr__(self):
        return "%s_%s" % (self.fam, self.demux)

    def udp(self):
        return socket.socket(self.family, socket.SOCK_DGRAM)

    def server(self, certfile=cert("server.pem"), keyfile=cert("server.key"), timeout=WAIT,
               **kwargs):
        """A listening DTLS server socket on a free port."""
        s = ssl.wrap_socket(self.udp(), server_side=True, certfile=certfile, keyfile=keyfile,
                            **kwargs)
        s.bind((self.host, 0))
        s.listen()
        s.settimeout(timeout)
        return s

    def client(self, timeout=WAIT, **kwargs):
        kwargs.setdefault("cert_reqs", ssl.CERT_REQUIRED)
        kwargs.setdefault("ca_certs", cert("ca.pem"))
        s = ssl.wrap_socket(self.udp(), **kwargs)
        s.settimeout(timeout)
        return s


@pytest.fixture(params=[("v4", "osnet"), ("v6", "osnet"), ("v4", "router"), ("v6", "router")],
                ids=lambda p: "%s_%s" % p)
def variant(request):
    fam, demux = request.param
    if demux == "router":
        dtls.force_routing_demux()
    else:
        dtls.reset_default_demux()
    yield Variant(fam, demux)
    dtls.reset_default_demux()


class Server(threading.Thread):
    """Runs ``serve(listening_socket)`` in a thread; ``result()`` re-raises
    what it raised."""

    def __init__(self, listener, serve):
        super().__init__(daemon=True)
        self.listener = listener
        self.serve = serve
        self.error = None
        self.value = None
        self.start()

    def run(self):
        try:
            self.value = self.serve(self.listener)
        except BaseException as e:  # handed to the test
            self.error = e

    def result(self, timeout=WAIT * 2):
        self.join(timeout)
        assert not self.is_alive(), "server thread did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def accept_one(listener, deadline=WAIT):
    """accept() until a connection comes (None is the cookie exchange)."""
    import time

    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = listener.accept()
        if got is not None:
            return got
    raise AssertionError("no connection accepted")


def echo_server(n_messages, upper=False):
    """A serve function: one connection, echoes n messages, then waits for
    close_notify (recv returns b'')."""

    def serve(listener):
        conn, addr = accept_one(listener)
        conn.settimeout(WAIT)
        # With router someone must keep calling accept(): a pump thread.
        stop = _pump(listener)
        try:
            got = []
            for _ in range(n_messages):
                data = conn.recv(4096)
                got.append(data)
                conn.send(data.upper() if upper else data)
            tail = conn.recv(4096)
            return got, tail, addr
        finally:
            stop()
            conn.close()

    return serve


def _pump(listener):
    """Keeps calling accept() on a listener (forwarding for router) until stopped."""
    stopped = threading.Event()

    def run():
        while not stopped.is_set():
            try:
                listener.accept()
            except OSError:
                pass

    listener.settimeout(0.05)
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def stop():
        stopped.set()
        t.join(WAIT)

    return stop


pump = _pump
