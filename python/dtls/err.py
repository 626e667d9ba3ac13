"""Errors and error codes, as PyDTLS 1.3.0 defines them.

Until ``dtls.do_patch()`` runs, failures raise :class:`SSLError` (an
``OSError``); afterwards ``ssl.SSLError`` (and its ``SSLWantReadError``,
``SSLZeroReturnError`` subclasses where they fit), so code handling the
standard module's errors handles these too. Either way ``args[0]`` / ``errno``
is one of the codes below and ``errqueue`` lists OpenSSL's error queue as
``(code, text)`` pairs.
"""

import socket

SSL_ERROR_NONE = 0
SSL_ERROR_SSL = 1
SSL_ERROR_WANT_READ = 2
SSL_ERROR_WANT_WRITE = 3
SSL_ERROR_WANT_X509_LOOKUP = 4
SSL_ERROR_SYSCALL = 5
SSL_ERROR_ZERO_RETURN = 6
SSL_ERROR_WANT_CONNECT = 7
SSL_ERROR_WANT_ACCEPT = 8

ERR_BOTH_KEY_CERT_FILES = 500
ERR_BOTH_KEY_CERT_FILES_SVR = 298
ERR_NO_CERTS = 331
ERR_NO_CIPHER = 501
ERR_READ_TIMEOUT = 502
ERR_WRITE_TIMEOUT = 503
ERR_HANDSHAKE_TIMEOUT = 504
ERR_PORT_UNREACHABLE = 505

# OpenSSL 1.x packed reason codes (ERR_PACK(lib 20, func 0, reason)), kept
# for code that compares against them. OpenSSL 3 reports the same reasons
# with other packed values: match on the text in ``errqueue`` instead.
ERR_WRONG_SSL_VERSION = 0x1409210A
ERR_WRONG_VERSION_NUMBER = 0x1408A10B
ERR_COOKIE_MISMATCH = 0x1408A134
ERR_CERTIFICATE_VERIFY_FAILED = 0x14090086
ERR_NO_SHARED_CIPHER = 0x1408A0C1
ERR_SSL_HANDSHAKE_FAILURE = 0x1410C0E5
ERR_TLSV1_ALERT_UNKNOWN_CA = 0x14102418

SSL_ERROR_TEXT = {
    SSL_ERROR_NONE: "No error",
    SSL_ERROR_SSL: "SSL error",
    SSL_ERROR_WANT_READ: "The operation did not complete (read)",
    SSL_ERROR_WANT_WRITE: "The operation did not complete (write)",
    SSL_ERROR_WANT_X509_LOOKUP: "The operation did not complete (X509 lookup)",
    SSL_ERROR_SYSCALL: "System error",
    SSL_ERROR_ZERO_RETURN: "TLS/SSL connection has been closed",
    SSL_ERROR_WANT_CONNECT: "The operation did not complete (connect)",
    SSL_ERROR_WANT_ACCEPT: "The operation did not complete (accept)",
    ERR_BOTH_KEY_CERT_FILES: "Both the key & certificate files must be specified",
    ERR_BOTH_KEY_CERT_FILES_SVR: "Both the key & certificate files must be specified for server-side operation",
    ERR_NO_CERTS: "No root certificates specified for verification of other-side certificates.",
    ERR_NO_CIPHER: "No cipher can be selected.",
    ERR_READ_TIMEOUT: "The read operation timed out",
    ERR_WRITE_TIMEOUT: "The write operation timed out",
    ERR_HANDSHAKE_TIMEOUT: "The handshake operation timed out",
    ERR_PORT_UNREACHABLE: "The peer address is not reachable",
}


class SSLError(socket.error):
    """A DTLS failure: ``args == (code, message)``; ``errqueue`` holds
    OpenSSL's ``(code, text)`` pairs."""

    def __init__(self, *args):
        super().__init__(*args)
        self.errqueue = []


class InvalidSocketError(Exception):
    """A socket that cannot be wrapped (not a datagram socket)."""


# Set by do_patch(): raise the standard module's classes from then on.
_use_std_ssl = False


def _make(code, message, errqueue=()):
    if _use_std_ssl:
        import ssl

        cls = {
            SSL_ERROR_WANT_READ: ssl.SSLWantReadError,
            SSL_ERROR_WANT_WRITE: ssl.SSLWantWriteError,
            SSL_ERROR_ZERO_RETURN: ssl.SSLZeroReturnError,
            SSL_ERROR_SYSCALL: ssl.SSLSyscallError,
        }.get(code, ssl.SSLError)
        exc = cls(code, message)
    else:
        exc = SSLError(code, message)
    exc.errqueue = list(errqueue)
    return exc


def _from_native(code, message, errqueue):
    """Called by the native module for every failure it raises."""
    return _make(code, message, errqueue)


def raise_ssl_error(code, nested=None):
    """Raises the error for ``code`` with its standard text."""
    text = SSL_ERROR_TEXT.get(code, "")
    if nested:
        text = "%s: %s" % (text, nested)
    raise _make(code, text)


def raise_as_ssl_module_error():
    """PyDTLS's switch (called by do_patch): raise ``ssl.SSLError``."""
    global _use_std_ssl
    _use_std_ssl = True
