"""``dtls.wrapper``: PyDTLS's client and server wrappers.

``wrap_server`` returns a :class:`DtlsSocket` that serves many peers behind
one object, in the manner of a plain UDP socket: ``recvfrom`` returns
``(data, address)`` from whichever peer sent (running cookie exchanges,
handshakes and DTLS retransmission timers inside, with ``select``), and
``sendto`` sends to a connected peer. ``wrap_client`` returns a
``DtlsSocket`` that behaves as the patched ``ssl`` socket.
"""

import logging
import select
import socket
import time

from .err import (
    ERR_HANDSHAKE_TIMEOUT,
    SSL_ERROR_WANT_READ,
    SSL_ERROR_WANT_WRITE,
    SSL_ERROR_ZERO_RETURN,
)
from .patch import SSLSocket
from .sslconnection import (
    CERT_NONE,
    PROTOCOL_DTLS,
    PROTOCOL_DTLSv1_2,
    SSL_BUILD_CHAIN_FLAG_NONE,
    SSLConnection,
)

_logger = logging.getLogger("dtls.wrapper")

_WANT = (SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE)


def _code(exc):
    return exc.args[0] if exc.args else None


def _chain_flags(flags):
    """None (the file's chain as is) for SSL_BUILD_CHAIN_FLAG_NONE."""
    return None if flags == SSL_BUILD_CHAIN_FLAG_NONE else int(flags)


def wrap_client(sock, keyfile=None, certfile=None, cert_reqs=CERT_NONE,
                ssl_version=PROTOCOL_DTLSv1_2, ca_certs=None, do_handshake_on_connect=True,
                suppress_ragged_eofs=True, ciphers=None, curves=None, sigalgs=None,
                user_mtu=None, client_cert_options=SSL_BUILD_CHAIN_FLAG_NONE,
                ssl_logging=False, handshake_timeout=None):
    """A client ``DtlsSocket``. ``client_cert_options``: with
    ``SSL_BUILD_CHAIN_FLAG_NONE`` (the default) the certificate's chain is
    sent as the file holds it; other flags build it from ``ca_certs``
    (``SSLContext.build_cert_chain``). ``ssl_logging=True`` logs OpenSSL's
    handshake states and alerts at DEBUG on the ``dtls.ssl`` logger."""
    return DtlsSocket(sock, keyfile=keyfile, certfile=certfile, server_side=False,
                      cert_reqs=cert_reqs, ssl_version=ssl_version, ca_certs=ca_certs,
                      do_handshake_on_connect=do_handshake_on_connect,
                      suppress_ragged_eofs=suppress_ragged_eofs, ciphers=ciphers,
                      curves=curves, sigalgs=sigalgs, user_mtu=user_mtu,
                      handshake_timeout=handshake_timeout,
                      cert_chain_options=_chain_flags(client_cert_options),
                      ssl_logging=ssl_logging)


def wrap_server(sock, keyfile=None, certfile=None, cert_reqs=CERT_NONE,
                ssl_version=PROTOCOL_DTLS, ca_certs=None, do_handshake_on_connect=True,
                suppress_ragged_eofs=True, ciphers=None, curves=None, sigalgs=None,
                user_mtu=None, server_key_exchange_curve=None,
                server_cert_options=SSL_BUILD_CHAIN_FLAG_NONE, ssl_logging=False,
                client_timeout=None, handshake_timeout=None,
                cb_ignore_ssl_exception_in_handshake=None,
                cb_ignore_ssl_exception_read=None, cb_ignore_ssl_exception_write=None):
    """A server ``DtlsSocket`` over a datagram socket (bound now or later
    with ``bind``). ``server_key_exchange_curve`` limits the key exchange to
    one group (else ``curves``, else OpenSSL's choice).
    ``server_cert_options`` and ``ssl_logging`` as ``client_cert_options``
    and ``ssl_logging`` of ``wrap_client``."""
    return DtlsSocket(sock, keyfile=keyfile, certfile=certfile, server_side=True,
                      cert_reqs=cert_reqs, ssl_version=ssl_version, ca_certs=ca_certs,
                      do_handshake_on_connect=do_handshake_on_connect,
                      suppress_ragged_eofs=suppress_ragged_eofs, ciphers=ciphers,
                      curves=server_key_exchange_curve or curves, sigalgs=sigalgs,
                      user_mtu=user_mtu, client_timeout=client_timeout,
                      handshake_timeout=handshake_timeout,
                      cert_chain_options=_chain_flags(server_cert_options),
                      ssl_logging=ssl_logging,
                      cb_ignore_ssl_exception_in_handshake=cb_ignore_ssl_exception_in_handshake,
                      cb_ignore_ssl_exception_read=cb_ignore_ssl_exception_read,
                      cb_ignore_ssl_exception_write=cb_ignore_ssl_exception_write)


class _Peer:
    __slots__ = ("conn", "addr", "started", "last_seen", "established")

    def __init__(self, conn, addr, now):
        self.conn = conn
        self.addr = addr
        self.started = now
        self.last_seen = now
        self.established = False


class DtlsSocket:
    """See the module docs. The ``cb_ignore_ssl_exception_*(exc)`` callbacks
    decide about an ``SSLError`` of one peer (handshake, read, write): a true
    result drops the peer quietly, a false one raises the error from
    ``recvfrom`` / ``sendto``; without a callback the peer is dropped and the
    error logged on the ``dtls.wrapper`` logger."""

    def __init__(self, sock, keyfile=None, certfile=None, server_side=False,
                 cert_reqs=CERT_NONE, ssl_version=PROTOCOL_DTLSv1_2, ca_certs=None,
                 do_handshake_on_connect=True, suppress_ragged_eofs=True, ciphers=None,
                 curves=None, sigalgs=None, user_mtu=None, client_timeout=None,
                 handshake_timeout=None, cert_chain_options=None, ssl_logging=False,
                 cb_ignore_ssl_exception_in_handshake=None,
                 cb_ignore_ssl_exception_read=None, cb_ignore_ssl_exception_write=None):
        self._sock = sock
        self._server_side = server_side
        self._timeout = sock.gettimeout()
        self._client_timeout = client_timeout
        self._handshake_timeout = handshake_timeout
        self._cb_handshake = cb_ignore_ssl_exception_in_handshake
        self._cb_read = cb_ignore_ssl_exception_read
        self._cb_write = cb_ignore_ssl_exception_write
        options = dict(curves=curves, sigalgs=sigalgs, mtu=user_mtu,
                       handshake_timeout=handshake_timeout,
                       cert_chain_options=cert_chain_options, ssl_logging=ssl_logging)
        if server_side:
            self._server = SSLConnection(sock, keyfile, certfile, True, cert_reqs, ssl_version,
                                         ca_certs, do_handshake_on_connect,
                                         suppress_ragged_eofs, ciphers, **options)
            self._peers = {}
            self._client = None
        else:
            self._server = None
            self._client = SSLSocket(sock, keyfile, certfile, False, cert_reqs, ssl_version,
                                     ca_certs, do_handshake_on_connect, suppress_ragged_eofs,
                                     ciphers, **options)

    def __getattr__(self, name):
        d = self.__dict__
        target = d.get("_client") or d.get("_sock")
        if target is None:
            raise AttributeError(name)
        return getattr(target, name)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    # -- common -------------------------------------------------------

    def settimeout(self, value):
        self._timeout = value
        if self._client is not None:
            self._client.settimeout(value)

    def gettimeout(self):
        return self._timeout

    def setblocking(self, flag):
        self.settimeout(None if flag else 0.0)

    def fileno(self):
        if self._client is not None:
            return self._client.fileno()
        self._listen()
        return self._server.fileno()

    def close(self):
        if self._client is not None:
            try:
                self._client.unwrap()
            except OSError:
                pass  # not connected, or the server's close_notify did not come
            self._client.close()
            return
        for p in list(self._peers.values()):
            self._drop(p, notify=True)
        self._server.close()
        self._sock.close()

    # -- client -------------------------------------------------------

    def connect(self, addr):
        return self._client.connect(addr)

    def send(self, data, flags=0):
        return self._client.send(data, flags)

    def recv(self, bufsize=1024, flags=0):
        return self._client.recv(bufsize, flags)

    def read(self, len=1024):
        return self._client.read(len)

    def write(self, data):
        return self._client.write(data)

    def _client_recvfrom(self, bufsize):
        return self._client.recv(bufsize), self._client.getpeername()

    def _client_sendto(self, data, addr):
        return self._client.send(data)

    # -- server -------------------------------------------------------

    def bind(self, addr):
        self._sock.bind(addr)

    def listen(self, backlog=None):
        """Starts serving the bound port (``recvfrom`` also does)."""
        if self._client is not None:
            raise ValueError("listen: a client DtlsSocket")
        self._listen()

    def _listen(self):
        if self._server._listener is None:
            self._server.settimeout(0.0)
            self._server._start_listening()

    def peers(self):
        """The addresses of the connected (or handshaking) peers."""
        return list(self._peers)

    def _drop(self, p, notify=False):
        self._peers.pop(p.addr, None)
        if notify and p.established:
            try:
                p.conn._conn.shutdown()
            except OSError:
                pass
        p.conn.close()
        _logger.debug("%s: dropped", p.addr)

    def _failed(self, p, exc, cb):
        """An SSLError of one peer: drop it; raise when the callback says so."""
        self._drop(p)
        if cb is not None:
            if cb(exc):
                return
            raise exc
        _logger.debug("%s: %s", p.addr, exc)

    def _accept_all(self, now):
        while True:
            got = self._server.accept()
            if got is None:
                if not self._server.has_pending():
                    return
                continue
            conn, addr = got
            old = self._peers.get(addr)
            if old is not None:
                self._drop(old)
            self._peers[addr] = _Peer(conn, addr, now)

    def _read(self, p, bufsize, now):
        """One attempt at reading from a peer: the data, or None."""
        try:
            data = p.conn.read(bufsize)
        except OSError as e:
            code = _code(e)
            if code in _WANT:
                if not p.established and p.conn._conn is not None:
                    p.established = p.conn._conn.is_established()
                return None
            if code == SSL_ERROR_ZERO_RETURN:
                self._drop(p)
                return None
            self._failed(p, e, self._cb_read if p.established else self._cb_handshake)
            return None
        p.last_seen = now
        p.established = True
        return data

    def _timers(self, now):
        """Runs expired DTLS timers and idle/handshake limits; returns the
        seconds until the next one is due (or None)."""
        nearest = None
        for p in list(self._peers.values()):
            if not p.established:
                if self._handshake_timeout is not None and now - p.started >= self._handshake_timeout:
                    self._failed(p, _timeout_error(), self._cb_handshake)
                    continue
                try:
                    t = p.conn.get_timeout()
                    if t is not None and t.total_seconds() <= 0:
                        p.conn.handle_timeout()
                        t = p.conn.get_timeout()
                except OSError as e:
                    self._failed(p, e, self._cb_handshake)
                    continue
                due = [t.total_seconds()] if t is not None else []
                if self._handshake_timeout is not None:
                    due.append(self._handshake_timeout - (now - p.started))
            else:
                if self._client_timeout is not None and now - p.last_seen >= self._client_timeout:
                    self._drop(p, notify=True)
                    continue
                due = [self._client_timeout - (now - p.last_seen)] if self._client_timeout else []
            for d in due:
                nearest = d if nearest is None else min(nearest, d)
        return nearest

    def recvfrom(self, bufsize, flags=0):
        """``(data, address)`` of the next datagram from any peer; raises
        ``socket.timeout`` when the socket's timeout passes first
        (non-blocking: when nothing is ready). A client gets ``(data,
        server address)``."""
        if self._client is not None:
            return self._client_recvfrom(bufsize)
        self._listen()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            now = time.monotonic()
            for p in list(self._peers.values()):
                if p.conn.has_pending():
                    data = self._read(p, bufsize, now)
                    if data is not None:
                        return data, p.addr
            nearest = self._timers(now)
            wait = None if deadline is None else max(0.0, deadline - now)
            if nearest is not None:
                wait = max(0.0, nearest) if wait is None else min(wait, max(0.0, nearest))
            fds = [self._server.fileno()] + [p.conn.fileno() for p in self._peers.values()]
            readable, _, _ = select.select(fds, [], [], wait)
            now = time.monotonic()
            if self._server.fileno() in readable or self._server.has_pending():
                self._accept_all(now)
            for p in list(self._peers.values()):
                if p.conn.fileno() in readable or p.conn.has_pending():
                    data = self._read(p, bufsize, now)
                    if data is not None:
                        return data, p.addr
            if deadline is not None and time.monotonic() >= deadline:
                raise socket.timeout("timed out")

    def sendto(self, data, addr):
        """Sends to a connected peer; 0 for an unknown address (a client
        sends to its server)."""
        if self._client is not None:
            return self._client_sendto(data, addr)
        p = self._peers.get(addr) or self._find(addr)
        if p is None:
            return 0
        try:
            return p.conn.write(data)
        except OSError as e:
            if _code(e) in _WANT:
                return 0
            self._failed(p, e, self._cb_write)
            return 0

    def _find(self, addr):
        for key, p in self._peers.items():
            if key[:2] == tuple(addr[:2]):
                return p
        return None


def _timeout_error():
    from .err import _make, SSL_ERROR_TEXT

    return _make(ERR_HANDSHAKE_TIMEOUT, SSL_ERROR_TEXT[ERR_HANDSHAKE_TIMEOUT])


__all__ = ["wrap_client", "wrap_server", "DtlsSocket"]
