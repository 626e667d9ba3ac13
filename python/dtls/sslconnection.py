"""SSLConnection: a DTLS session over a datagram socket, PyDTLS's core class.

Everything TLS happens in the native module (dtls-reactor's ``DtlsSocket`` and
``DtlsListener``, on the system's OpenSSL); this module maps PyDTLS's
arguments and calls onto it.

Server side: ``SSLConnection(sock, server_side=True, certfile=...)`` over an
unconnected socket listens; ``accept()`` reads one datagram and returns
``(SSLConnection, address)`` for a peer that passed the cookie exchange, or
``None``. The accepted connection's handshake completes in its first
``read``/``write``/``do_handshake`` (never inside ``accept``, which must keep
serving the port: with the router demux it forwards every datagram of the
established connections, so keep calling it).
"""

import datetime
import errno
import logging
import os
import socket

from . import _native
from .err import (
    ERR_PORT_UNREACHABLE,
    SSL_ERROR_WANT_READ,
    SSL_ERROR_WANT_WRITE,
    InvalidSocketError,
    raise_ssl_error,
)

_logger = logging.getLogger("dtls.sslconnection")

PROTOCOL_DTLSv1 = 256
PROTOCOL_DTLSv1_2 = 258
PROTOCOL_DTLS = 259
PROTOCOL_NAMES = {
    PROTOCOL_DTLSv1: "DTLSv1",
    PROTOCOL_DTLSv1_2: "DTLSv1.2",
    PROTOCOL_DTLS: "DTLS",
}

CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2

SSL_BUILD_CHAIN_FLAG_NONE = 0x0
SSL_BUILD_CHAIN_FLAG_UNTRUSTED = 0x1
SSL_BUILD_CHAIN_FLAG_NO_ROOT = 0x2
SSL_BUILD_CHAIN_FLAG_CHECK = 0x4
SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR = 0x8
SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR = 0x10

DTLS_OPENSSL_VERSION, DTLS_OPENSSL_VERSION_NUMBER = _native.openssl_version()


def _version_info(n):
    return (n >> 28, (n >> 20) & 0xFF, (n >> 12) & 0xFF, (n >> 4) & 0xFF, n & 0xF)


DTLS_OPENSSL_VERSION_INFO = _version_info(DTLS_OPENSSL_VERSION_NUMBER)

# Which demux new listening connections use (see force_routing_demux).
_use_router = False


def force_routing_demux():
    """Listening sockets made from now on use the router demux (all datagrams
    arrive on the listening socket and accept() forwards them)."""
    global _use_router
    _use_router = True


def reset_default_demux():
    """Back to the platform's default demux (osnet on Linux: one connected
    socket per peer on the listening port)."""
    global _use_router
    _use_router = False


def _protocol(ssl_version):
    # Anything that is not a specific DTLS version (PROTOCOL_DTLS, or the
    # ssl module's PROTOCOL_TLS default) negotiates 1.0 or 1.2.
    return {PROTOCOL_DTLSv1: "1.0", PROTOCOL_DTLSv1_2: "1.2"}.get(ssl_version, "any")


class SSLContext:
    """What ``cb_user_config_ssl_ctx`` receives: the context settings that
    map onto the native configuration, applied when it is built."""

    def __init__(self):
        self._ciphers = None
        self._sigalgs = None
        self._curves = None
        self._build_chain = None
        self._ssl_logging = False

    def set_ciphers(self, ciphers):
        self._ciphers = ciphers

    def set_sigalgs(self, sigalgs):
        self._sigalgs = sigalgs

    def set_curves(self, curves):
        if not isinstance(curves, str):
            curves = ":".join(curves)
        self._curves = curves

    def build_cert_chain(self, flags=SSL_BUILD_CHAIN_FLAG_NONE):
        """Sends the certificate's chain as OpenSSL builds it from the CAs
        (``ca_certs``) when the configuration is made, instead of as the
        certificate file holds it (``SSL_BUILD_CHAIN_FLAG_*``: ``NO_ROOT``
        leaves the root out, ``UNTRUSTED`` also uses the file's chain,
        ``CHECK`` only checks it, ``IGNORE_ERROR`` keeps going when it
        cannot be built). A chain that cannot be built fails the
        construction with the OpenSSL error."""
        self._build_chain = int(flags)

    def set_ssl_logging(self, enable=False, func=None):
        """Logs OpenSSL's handshake states and alerts at DEBUG on the
        ``dtls.ssl`` logger. A ``func`` of one's own is not supported (the
        states reach Python's ``logging`` instead)."""
        if func is not None:
            raise NotImplementedError("set_ssl_logging: func is not supported; "
                                      "the states are logged on the 'dtls.ssl' logger")
        self._ssl_logging = bool(enable)

    @staticmethod
    def get_ec_nist2nid(nist):
        """The NID of a NIST curve name (``"P-256"``); ``ValueError`` if none."""
        return _native.ec_nist2nid(nist)

    @staticmethod
    def get_ec_nid2nist(nid):
        """The NIST name of a curve NID, or ``None``."""
        return _native.ec_nid2nist(int(nid))

    @staticmethod
    def get_ec_available(bAsName=True):
        """OpenSSL's built-in curves: short names (``prime256v1``...) or NIDs."""
        return _native.ec_available(bool(bAsName))

    def set_ecdh_curve(self, curve_name=None):
        """The key exchange group (a server offers only it); ``None``: OpenSSL's
        automatic choice among the supported groups."""
        if curve_name:
            self._curves = curve_name


class SSL:
    """What ``cb_user_config_ssl`` receives: per-connection settings that map
    onto the native configuration."""

    def __init__(self, family):
        self._family = family
        self._mtu = None

    def set_mtu(self, mtu):
        """Largest datagram (UDP payload) the session sends."""
        self._mtu = int(mtu)

    def set_link_mtu(self, mtu):
        """The link's MTU: the datagram limit less the IP and UDP headers."""
        overhead = 48 if self._family == socket.AF_INET6 else 28
        self._mtu = int(mtu) - overhead


def _is_bound(sock):
    try:
        return sock.getsockname()[1] != 0
    except OSError:
        return False


def _is_connected(sock):
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


class _LinkSocket(socket.socket):
    """What unwrap() returns on the server side: a socket object for plain
    datagrams with the peer, over the listener's per-peer link (with the
    router demux, datagrams arrive through the listener and leave from its
    socket, so send and receive go through the link, not this descriptor).
    Wrap it again with ``ssl.wrap_socket(s, server_side=True, ...)`` or
    ``SSLConnection``."""

    def __init__(self, plain, family):
        super().__init__(family, socket.SOCK_DGRAM, 0, fileno=_dup(plain.fileno()))
        self._plain = plain

    def _link(self):
        if self._plain is None:
            raise OSError(errno.EBADF, "link already wrapped again or closed")
        return self._plain

    def send(self, data, flags=0):
        return self._link().send(bytes(data))

    def sendall(self, data, flags=0):
        self._link().send(bytes(data))

    def recv(self, bufsize, flags=0):
        return self._link().recv(bufsize)

    def recv_into(self, buffer, nbytes=0, flags=0):
        view = memoryview(buffer).cast("B")
        data = self._link().recv(nbytes or len(view))
        view[: len(data)] = data
        return len(data)

    def settimeout(self, value):
        super().settimeout(value)
        if self._plain is not None:
            self._plain.set_timeout(value)

    def setblocking(self, flag):
        self.settimeout(None if flag else 0.0)

    def getpeername(self):
        return self._link().getpeername()

    def getsockname(self):
        return self._link().getsockname()

    def _take_plain(self):
        p = self._link()
        self._plain = None
        return p

    def close(self):
        if self._plain is not None:
            self._plain.close()
            self._plain = None
        super().close()


def _dup(fd):
    return os.dup(fd)


class SSLConnection:
    """A DTLS connection (PyDTLS's ``dtls.sslconnection.SSLConnection``).

    ``curves``, ``sigalgs``, ``mtu``, ``handshake_timeout``,
    ``server_hostname``, ``cert_chain_options`` (flags for
    ``SSLContext.build_cert_chain``) and ``ssl_logging`` (as
    ``SSLContext.set_ssl_logging(True)``) are keyword-only additions (the
    wrapper module's options)."""

    def __init__(
        self,
        sock,
        keyfile=None,
        certfile=None,
        server_side=False,
        cert_reqs=CERT_NONE,
        ssl_version=PROTOCOL_DTLS,
        ca_certs=None,
        do_handshake_on_connect=True,
        suppress_ragged_eofs=True,
        ciphers=None,
        cb_user_config_ssl_ctx=None,
        cb_user_config_ssl=None,
        *,
        curves=None,
        sigalgs=None,
        mtu=None,
        handshake_timeout=None,
        server_hostname=None,
        cert_chain_options=None,
        ssl_logging=False,
    ):
        if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_DGRAM:
            raise InvalidSocketError("Invalid socket: a datagram socket is needed")
        self._sock = sock
        self._server_side = bool(server_side)
        self._cert_reqs = cert_reqs
        self._do_handshake_on_connect = do_handshake_on_connect
        self._suppress_ragged_eofs = suppress_ragged_eofs
        self._use_router = _use_router
        self._listener = None
        self._conn = None
        self._accepted = None
        self._timeout = sock.gettimeout()
        ctx = SSLContext()
        if cb_user_config_ssl_ctx:
            cb_user_config_ssl_ctx(ctx)
        ssl_hook = SSL(sock.family)
        if cb_user_config_ssl:
            cb_user_config_ssl(ssl_hook)
        self._config = _native.make_config(
            self._server_side,
            certfile=certfile,
            keyfile=keyfile,
            ca_certs=ca_certs,
            verify=int(cert_reqs),
            protocol=_protocol(ssl_version),
            ciphers=ctx._ciphers or ciphers,
            groups=ctx._curves or (":".join(curves) if isinstance(curves, (list, tuple)) else curves),
            sigalgs=ctx._sigalgs or sigalgs,
            mtu=ssl_hook._mtu or mtu,
            handshake_timeout=handshake_timeout,
            build_chain=ctx._build_chain if ctx._build_chain is not None else cert_chain_options,
            ssl_logging=ctx._ssl_logging or bool(ssl_logging),
        )
        if self._server_side:
            if isinstance(sock, _LinkSocket):
                # A session unwrapped earlier, wrapped again for the same peer.
                self._conn = _native.Conn.wrap_server(sock._take_plain(), self._config)
                os.close(sock.detach())  # the session owns the link
                self._sock = None
                self._apply_timeout(self._conn)
            elif not _is_bound(sock) and not self._use_router:
                # osnet: per-peer sockets share the port (SO_REUSEPORT).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        else:
            self._conn = _native.Conn.wrap_client(sock.fileno(), self._config, server_hostname)
            self._apply_timeout(self._conn)
            if _is_connected(sock) and do_handshake_on_connect and self._timeout != 0.0:
                self.do_handshake()

    @classmethod
    def _from_accepted(cls, conn, parent):
        self = cls.__new__(cls)
        self._sock = None
        self._server_side = True
        self._cert_reqs = parent._cert_reqs
        self._do_handshake_on_connect = parent._do_handshake_on_connect
        self._suppress_ragged_eofs = parent._suppress_ragged_eofs
        self._use_router = parent._use_router
        self._listener = None
        self._conn = conn
        self._accepted = None
        self._timeout = parent._timeout
        self._config = parent._config
        self._apply_timeout(conn)
        return self

    # -- settings -------------------------------------------------------

    def _apply_timeout(self, obj):
        if self._timeout == 0.0:
            obj.set_nonblocking(True)
        else:
            if hasattr(obj, "set_nonblocking"):
                obj.set_nonblocking(False)
            obj.set_timeout(self._timeout)

    def settimeout(self, value):
        """``None`` blocking, ``0.0`` non-blocking, else seconds."""
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value
        for obj in (self._conn, self._listener):
            if obj is not None:
                self._apply_timeout(obj)

    def gettimeout(self):
        return self._timeout

    def get_socket(self, inbound):
        """The datagram socket (inbound and outbound are the same here)."""
        return self._sock

    def fileno(self):
        if self._conn is not None:
            return self._conn.fileno()
        if self._listener is not None:
            return self._listener.fileno()
        return self._sock.fileno() if self._sock is not None else -1

    # -- server ---------------------------------------------------------

    def _start_listening(self):
        if not self._server_side:
            raise ValueError("listen: not a server-side connection")
        if self._conn is not None:
            raise ValueError("listen: this connection is already connected to a peer")
        if self._listener is None:
            if not self._use_router and not self._sock.getsockopt(
                socket.SOL_SOCKET, socket.SO_REUSEPORT
            ):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            self._listener = _native.Listener.from_fd(
                self._sock.fileno(), self._config, self._use_router
            )
            self._apply_timeout(self._listener)
            _logger.debug(
                "listening on %s (%s demux)",
                self._listener.getsockname(),
                "router" if self._use_router else "osnet",
            )

    def listen(self):
        """Reads one datagram: the peer's address once its ClientHello passed
        the cookie exchange (``accept()`` then returns the connection), else
        ``None``."""
        self._start_listening()
        if self._accepted is None:
            self._accepted = self._listener.accept()
        return self._accepted[1] if self._accepted else None

    def accept(self):
        """``(SSLConnection, address)`` for a new peer, or ``None`` when the
        datagram read was a cookie exchange, a forwarded datagram or noise."""
        self._start_listening()
        got, self._accepted = self._accepted, None
        if got is None:
            got = self._listener.accept()
        if got is None:
            return None
        conn, addr = got
        return self._from_accepted(conn, self), addr

    # -- client ---------------------------------------------------------

    def connect(self, peer_address):
        """Connects the socket to the server and, unless
        ``do_handshake_on_connect=False``, runs the handshake."""
        if self._server_side:
            raise ValueError("connect: a server-side connection")
        self._sock.connect(peer_address)
        if self._do_handshake_on_connect:
            self.do_handshake()

    def do_handshake(self):
        self._live().handshake()

    # -- data -----------------------------------------------------------

    def _live(self):
        if self._conn is None:
            if self._listener is not None:
                raise ValueError("a listening connection has no peer: accept() first")
            raise OSError(errno.ENOTCONN, "not connected")
        return self._conn

    def read(self, len=1024, buffer=None):
        """One datagram of plaintext (at most ``len`` bytes). Raises
        ``SSL_ERROR_ZERO_RETURN`` once the peer's close_notify arrived."""
        if buffer is not None:
            view = memoryview(buffer).cast("B")
            n = min(len, view.nbytes) if len else view.nbytes
            data = self._live().recv(n)
            view[: data.__len__()] = data
            return data.__len__()
        return self._live().recv(len)

    def write(self, data):
        """Sends ``data`` (bytes-like, or str as UTF-8) as one datagram."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        return self._live().send(bytes(data))

    def pending(self):
        return self._conn.pending() if self._conn is not None else 0

    def has_pending(self):
        """Whether a read can progress without the descriptor becoming
        readable (a datagram the demux queued in memory, or buffered
        plaintext): check it before waiting in select."""
        if self._conn is not None:
            return self._conn.has_pending()
        if self._listener is not None:
            return self._listener.has_pending() or self._accepted is not None
        return False

    # -- timers ---------------------------------------------------------

    def get_timeout(self):
        """Time until the next DTLS retransmission is due (a
        ``datetime.timedelta``), or ``None`` when no timer runs."""
        if self._conn is None:
            return None
        t = self._conn.next_timeout()
        return None if t is None else datetime.timedelta(seconds=t)

    def handle_timeout(self):
        """Retransmits if the DTLS timer expired: True if it did. Raises
        ``ERR_HANDSHAKE_TIMEOUT`` after the last retransmission."""
        if self._conn is None:
            return False
        return self._conn.handle_timeout()

    # -- peer -----------------------------------------------------------

    def getpeercert(self, binary_form=False):
        """The peer's certificate: the ``ssl`` module's dict (``{}`` when it
        was not verified), DER with ``binary_form=True``, ``None`` if there
        is none."""
        if self._conn is None:
            return None
        der = self._conn.peer_certificate_der()
        if der is None:
            return None
        if binary_form:
            return der
        if self._cert_reqs == CERT_NONE or not self._conn.peer_verified():
            return {}
        return self._conn.peer_certificate_dict()

    def getpeercertchain(self, binary_form=False):
        """The chain the peer sent (leaf first), dicts or DER; ``None``
        before the handshake."""
        if self._conn is None or not self._conn.is_established():
            return None
        return self._conn.peer_certificate_chain(binary_form)

    def cipher(self):
        """``(name, protocol, secret bits)``, ``None`` before the handshake."""
        return self._conn.cipher() if self._conn is not None else None

    def version(self):
        return self._conn.version() if self._conn is not None else None

    # -- closing --------------------------------------------------------

    def shutdown(self):
        """Runs the close_notify exchange and returns the socket for plain
        datagrams with the peer (see ``unwrap``)."""
        return self.unwrap()

    def unwrap(self):
        """Runs the close_notify exchange (non-blocking: raises WANT_READ
        until the peer's arrived; with a timeout or blocking: waits for it
        up to the timeout, 1 s by default) and returns a socket that still
        works for plaintext with the peer and can be wrapped again: the
        client's own socket, or on the server a ``socket.socket`` subclass
        over the listener's per-peer link."""
        conn = self._live()
        plain = conn.unwrap()
        self._conn = None
        if plain.is_link:
            family = socket.AF_INET6 if ":" in plain.getsockname()[0] else socket.AF_INET
            s = _LinkSocket(plain, family)
            s.settimeout(self._timeout)
            return s
        # The native side restored its own settings on the descriptor
        # (SO_RCVTIMEO, O_NONBLOCK): clear them, then give the Python socket
        # this connection's mode.
        plain.set_timeout(None)
        plain.close()
        sock = self._sock
        sock.settimeout(self._timeout)
        return sock

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._listener = None
        self._accepted = None


def _connect_ex_code(exc):
    code = exc.args[0] if exc.args else None
    if code in (SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE):
        return errno.EWOULDBLOCK
    if code == ERR_PORT_UNREACHABLE:
        return errno.ECONNREFUSED
    return None


__all__ = [
    "SSLConnection",
    "SSLContext",
    "SSL",
    "force_routing_demux",
    "reset_default_demux",
    "raise_ssl_error",
]
