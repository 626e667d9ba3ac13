"""``do_patch()``: the standard ``ssl`` module learns datagram sockets.

Afterwards ``ssl.wrap_socket(sock, ...)`` and ``ssl.SSLSocket(sock, ...)``
return a :class:`SSLSocket` (this module's, over :class:`SSLConnection`) for
a ``SOCK_DGRAM`` socket; stream sockets go to the standard module as before.
On Python 3.12+, which removed ``ssl.wrap_socket``, ``do_patch`` provides it
(stream sockets then get an ``SSLContext`` set up as the old function did).
"""

import errno
import io
import socket

from . import err
from .err import SSL_ERROR_ZERO_RETURN, ERR_READ_TIMEOUT
from .sslconnection import (
    CERT_NONE,
    DTLS_OPENSSL_VERSION,
    DTLS_OPENSSL_VERSION_INFO,
    DTLS_OPENSSL_VERSION_NUMBER,
    PROTOCOL_DTLS,
    PROTOCOL_DTLSv1,
    PROTOCOL_DTLSv1_2,
    PROTOCOL_NAMES,
    SSLConnection,
    _connect_ex_code,
)
from . import sslconnection as _sc

_DTLS_PROTOCOLS = (PROTOCOL_DTLSv1, PROTOCOL_DTLSv1_2, PROTOCOL_DTLS)


class SSLSocket:
    """A DTLS socket with the standard ``ssl.SSLSocket`` interface.

    Methods the DTLS layer does not define (``setsockopt``, ``family``...)
    are those of the wrapped datagram socket."""

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
        **kwargs
    ):
        if sock is None:
            raise err.InvalidSocketError("SSLSocket: a datagram socket is needed")
        self._sock = sock
        self._family = sock.family
        self.server_side = bool(server_side)
        self.do_handshake_on_connect = do_handshake_on_connect
        self.suppress_ragged_eofs = suppress_ragged_eofs
        self._sslobj = SSLConnection(
            sock,
            keyfile,
            certfile,
            server_side,
            cert_reqs,
            ssl_version,
            ca_certs,
            do_handshake_on_connect,
            suppress_ragged_eofs,
            ciphers,
            cb_user_config_ssl_ctx=kwargs.pop("cb_user_config_ssl_ctx", None),
            cb_user_config_ssl=kwargs.pop("cb_user_config_ssl", None),
            **{k: v for k, v in kwargs.items() if k in _EXTRA}
        )
        # None when the socket was a server link unwrapped earlier: the
        # session owns the link now.
        self._sock = self._sslobj._sock
        self._listening = False
        self._closed = False
        self._io_refs = 0

    @classmethod
    def _accepted(cls, conn, parent):
        self = cls.__new__(cls)
        self._sock = None
        self._family = parent._family
        self.server_side = True
        self.do_handshake_on_connect = parent.do_handshake_on_connect
        self.suppress_ragged_eofs = parent.suppress_ragged_eofs
        self._sslobj = conn
        self._listening = False
        self._closed = False
        self._io_refs = 0
        return self

    def __getattr__(self, name):
        # Only called for what this class lacks: the datagram socket's.
        sock = self.__dict__.get("_sock")
        if sock is None:
            raise AttributeError(name)
        return getattr(sock, name)

    def __repr__(self):
        return "<dtls SSLSocket fd=%d server_side=%s>" % (self.fileno(), self.server_side)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    @property
    def family(self):
        return self._family

    @property
    def type(self):
        return socket.SOCK_DGRAM

    # -- server ---------------------------------------------------------

    def bind(self, address):
        if self._sock is None:
            raise OSError(errno.EINVAL, "an accepted connection cannot be bound")
        self._sock.bind(address)

    def listen(self, backlog=None):
        """Required before accept(); reads nothing."""
        self._sslobj._start_listening()
        self._listening = True

    def accept(self):
        """``(SSLSocket, address)`` for a new peer that passed the cookie
        exchange, or ``None``: the datagram read produced no new connection
        (cookie exchange, forwarded to a known peer, noise); go back to the
        loop. Blocking: waits for one datagram up to the timeout."""
        if not self._listening:
            raise ValueError("accept: listen() first")
        got = self._sslobj.accept()
        if got is None:
            return None
        conn, addr = got
        return SSLSocket._accepted(conn, self), addr

    # -- client ---------------------------------------------------------

    def connect(self, addr):
        self._sslobj.connect(addr)

    def connect_ex(self, addr):
        """0 when connected (and handshaken), ``EWOULDBLOCK`` while a
        non-blocking handshake needs the peer, else an errno."""
        try:
            self._sslobj.connect(addr)
            return 0
        except OSError as e:
            code = _connect_ex_code(e)
            if code is not None:
                return code
            if e.errno and e.errno < 256:
                return e.errno
            raise

    def do_handshake(self, block=False):
        self._sslobj.do_handshake()

    # -- data -----------------------------------------------------------

    def read(self, len=1024, buffer=None):
        return self._sslobj.read(len, buffer)

    def write(self, data):
        return self._sslobj.write(data)

    def send(self, data, flags=0):
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on %s" % self.__class__)
        return self._sslobj.write(data)

    def sendall(self, data, flags=0):
        """One datagram (a datagram is sent whole or not at all)."""
        self.send(data, flags)

    def recv(self, buflen=1024, flags=0):
        """One datagram; ``b''`` once the peer's close_notify arrived."""
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv() on %s" % self.__class__)
        try:
            return self._sslobj.read(buflen)
        except OSError as e:
            if e.args and e.args[0] == SSL_ERROR_ZERO_RETURN:
                return b""
            raise

    def recv_into(self, buffer, nbytes=None, flags=0):
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on %s" % self.__class__)
        view = memoryview(buffer).cast("B")
        n = nbytes or view.nbytes
        try:
            return self._sslobj.read(n, view)
        except OSError as e:
            if e.args and e.args[0] == SSL_ERROR_ZERO_RETURN:
                return 0
            raise

    def sendto(self, data, flags_or_addr, addr=None):
        raise ValueError("sendto not allowed on instances of %s" % self.__class__)

    def recvfrom(self, buflen=1024, flags=0):
        raise ValueError("recvfrom not allowed on instances of %s" % self.__class__)

    def pending(self):
        return self._sslobj.pending()

    def has_pending(self):
        return self._sslobj.has_pending()

    # -- modes and timers -------------------------------------------------

    def settimeout(self, value):
        # Only the session's mode: the descriptor is shared with the native
        # socket, which keeps it non-blocking and waits with poll(2); the
        # Python socket object is left alone. unwrap() hands the mode on to
        # the plain socket it returns.
        self._sslobj.settimeout(value)

    def gettimeout(self):
        return self._sslobj.gettimeout()

    def setblocking(self, flag):
        self.settimeout(None if flag else 0.0)

    def getblocking(self):
        return self._sslobj.gettimeout() != 0.0

    def fileno(self):
        return -1 if self._closed else self._sslobj.fileno()

    def get_timeout(self):
        return self._sslobj.get_timeout()

    def handle_timeout(self):
        return self._sslobj.handle_timeout()

    # -- peer -----------------------------------------------------------

    def getpeercert(self, binary_form=False):
        return self._sslobj.getpeercert(binary_form)

    def getpeercertchain(self, binary_form=False):
        return self._sslobj.getpeercertchain(binary_form)

    def cipher(self):
        return self._sslobj.cipher()

    def version(self):
        return self._sslobj.version()

    def getpeername(self):
        if self._sslobj._conn is not None:
            return self._sslobj._conn.getpeername()
        return self._sock.getpeername()

    def getsockname(self):
        if self._sslobj._conn is not None and self._sock is None:
            return self._sslobj._conn.getsockname()
        return self._sock.getsockname()

    # -- closing --------------------------------------------------------

    def unwrap(self):
        """Runs the close_notify exchange; returns the plain socket."""
        return self._sslobj.unwrap()

    def shutdown(self, how=socket.SHUT_RDWR):
        """Sends close_notify and waits briefly for the peer's (no wait
        when non-blocking); the socket stays open until close()."""
        conn = self._sslobj._conn
        if conn is None:
            return
        try:
            conn.shutdown()
        except OSError as e:
            if not (e.args and e.args[0] in (ERR_READ_TIMEOUT, err.SSL_ERROR_WANT_READ)):
                raise

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._io_refs <= 0:
            self._real_close()

    def _real_close(self):
        self._sslobj.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _decref_socketios(self):
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed:
            self._real_close()

    def makefile(self, mode="r", buffering=None, *, encoding=None, errors=None, newline=None):
        """A file object reading and writing datagrams (as ``socket.makefile``)."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError("invalid mode %r (only r, w, b allowed)" % (mode,))
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = socket.SocketIO(_FileAdapter(self), rawmode)
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buf = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buf = io.BufferedReader(raw, buffering)
        else:
            buf = io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buf
        text = io.TextIOWrapper(buf, encoding, errors, newline)
        text.mode = mode
        return text

    def _checkClosed(self):
        if self._closed:
            raise OSError(errno.EBADF, "closed")


class _FileAdapter:
    """What ``socket.SocketIO`` calls, for makefile(): a write larger than
    one datagram's plaintext goes out in datagrams of at most the session's
    data MTU (a buffered writer sends the rest in the next calls)."""

    def __init__(self, sock):
        self._sock = sock

    def recv_into(self, buffer, nbytes=0):
        return self._sock.recv_into(buffer, nbytes)

    def send(self, data):
        conn = self._sock._sslobj._conn
        limit = conn.data_mtu() if conn is not None else len(data)
        return self._sock.send(memoryview(data)[:limit])

    def fileno(self):
        return self._sock.fileno()

    def gettimeout(self):
        return self._sock.gettimeout()

    def _decref_socketios(self):
        self._sock._decref_socketios()


_EXTRA = ("curves", "sigalgs", "mtu", "handshake_timeout", "server_hostname",
          "cert_chain_options", "ssl_logging")

_patched = False


def _std_wrap_socket(ssl):
    """The standard wrap_socket for stream sockets: the original where the
    ssl module has one, else (3.12+) the same settings on an SSLContext."""
    original = getattr(ssl, "wrap_socket", None)
    if original is not None:
        return original

    def wrap_socket(sock, keyfile=None, certfile=None, server_side=False, cert_reqs=ssl.CERT_NONE,
                    ssl_version=ssl.PROTOCOL_TLS_CLIENT, ca_certs=None, do_handshake_on_connect=True,
                    suppress_ragged_eofs=True, ciphers=None):
        if server_side and ssl_version == ssl.PROTOCOL_TLS_CLIENT:
            ssl_version = ssl.PROTOCOL_TLS_SERVER
        context = ssl.SSLContext(ssl_version)
        context.check_hostname = False
        context.verify_mode = cert_reqs
        if ca_certs:
            context.load_verify_locations(ca_certs)
        if certfile:
            context.load_cert_chain(certfile, keyfile)
        if ciphers:
            context.set_ciphers(ciphers)
        return context.wrap_socket(sock, server_side=server_side,
                                   do_handshake_on_connect=do_handshake_on_connect,
                                   suppress_ragged_eofs=suppress_ragged_eofs)

    return wrap_socket


def do_patch():
    """Patches the ``ssl`` module (idempotent)."""
    global _patched
    import ssl

    if _patched:
        return
    std_wrap = _std_wrap_socket(ssl)

    def wrap_socket(sock, keyfile=None, certfile=None, server_side=False, cert_reqs=ssl.CERT_NONE,
                    ssl_version=None, ca_certs=None, do_handshake_on_connect=True,
                    suppress_ragged_eofs=True, ciphers=None, **kwargs):
        if sock.type == socket.SOCK_DGRAM:
            return SSLSocket(sock, keyfile, certfile, server_side, cert_reqs,
                             PROTOCOL_DTLS if ssl_version is None else ssl_version, ca_certs,
                             do_handshake_on_connect, suppress_ragged_eofs, ciphers, **kwargs)
        if ssl_version in _DTLS_PROTOCOLS:
            raise ValueError("a DTLS protocol needs a datagram socket")
        args = dict(keyfile=keyfile, certfile=certfile, server_side=server_side,
                    cert_reqs=cert_reqs, ca_certs=ca_certs,
                    do_handshake_on_connect=do_handshake_on_connect,
                    suppress_ragged_eofs=suppress_ragged_eofs, ciphers=ciphers)
        if ssl_version is not None:
            args["ssl_version"] = ssl_version
        return std_wrap(sock, **args)

    ssl.wrap_socket = wrap_socket

    std_new = ssl.SSLSocket.__new__

    def _sslsocket_new(cls, sock=None, *args, **kwargs):
        if cls is ssl.SSLSocket and sock is not None and getattr(sock, "type", None) == socket.SOCK_DGRAM:
            return SSLSocket(sock, *args, **kwargs)
        return std_new(cls)

    ssl.SSLSocket.__new__ = staticmethod(_sslsocket_new)

    std_get_server_certificate = ssl.get_server_certificate

    def get_server_certificate(addr, ssl_version=None, ca_certs=None, *args, **kwargs):
        """The server's certificate in PEM; over DTLS for a DTLS protocol."""
        if ssl_version not in _DTLS_PROTOCOLS:
            if ssl_version is None:
                return std_get_server_certificate(addr, ca_certs=ca_certs, *args, **kwargs)
            return std_get_server_certificate(addr, ssl_version, ca_certs, *args, **kwargs)
        return _get_server_certificate(addr, ssl_version, ca_certs)

    ssl.get_server_certificate = get_server_certificate

    ssl.PROTOCOL_DTLSv1 = PROTOCOL_DTLSv1
    ssl.PROTOCOL_DTLSv1_2 = PROTOCOL_DTLSv1_2
    ssl.PROTOCOL_DTLS = PROTOCOL_DTLS
    names = getattr(ssl, "_PROTOCOL_NAMES", None)
    if isinstance(names, dict):
        names.update(PROTOCOL_NAMES)
    ssl.DTLS_OPENSSL_VERSION_NUMBER = DTLS_OPENSSL_VERSION_NUMBER
    ssl.DTLS_OPENSSL_VERSION = DTLS_OPENSSL_VERSION
    ssl.DTLS_OPENSSL_VERSION_INFO = DTLS_OPENSSL_VERSION_INFO
    for name in dir(_sc):
        if name.startswith("SSL_BUILD_CHAIN_FLAG_"):
            setattr(ssl, name, getattr(_sc, name))
    for name in dir(err):
        if name.startswith("ERR_") and not hasattr(ssl, name):
            setattr(ssl, name, getattr(err, name))
    err.raise_as_ssl_module_error()
    _patched = True


def _get_server_certificate(addr, ssl_version, ca_certs):
    import ssl

    host = addr[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s = SSLSocket(sock, cert_reqs=ssl.CERT_REQUIRED if ca_certs else CERT_NONE,
                      ssl_version=ssl_version, ca_certs=ca_certs)
        s.connect(addr)
        der = s.getpeercert(True)
        try:
            s.shutdown()
        finally:
            s.close()
    finally:
        sock.close()
    return ssl.DER_cert_to_PEM_cert(der)
