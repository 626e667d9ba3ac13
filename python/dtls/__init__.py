"""DTLS (RFC 6347, 1.0 and 1.2) for Python: a drop-in for PyDTLS 1.3.0 on
OpenSSL 3, over the Rust crate dtls-reactor.

    import ssl
    from socket import socket, AF_INET, SOCK_DGRAM
    from dtls import do_patch
    do_patch()
    sock = ssl.wrap_socket(socket(AF_INET, SOCK_DGRAM))
    sock.connect(("localhost", 28000))
    sock.send("Hi there")

Modules: ``dtls.sslconnection`` (``SSLConnection``), ``dtls.patch``
(``do_patch``, the ssl-style ``SSLSocket``), ``dtls.wrapper``
(``wrap_client``/``wrap_server``, ``DtlsSocket``), ``dtls.err`` (codes,
``SSLError``), ``dtls.x509`` (certificate decoding). The crate's log records
reach Python's ``logging`` under the ``dtls`` logger.
"""

import logging as _logging

from . import _native
from .patch import do_patch
from .sslconnection import (
    DTLS_OPENSSL_VERSION,
    DTLS_OPENSSL_VERSION_INFO,
    DTLS_OPENSSL_VERSION_NUMBER,
    SSL,
    SSLConnection,
    SSLContext,
    force_routing_demux,
    reset_default_demux,
)

VERSION = (1, 3, 0)
"""The PyDTLS API version this package re-creates."""

__version__ = "0.1.0"

_logging.getLogger("dtls").addHandler(_logging.NullHandler())


def set_trace_logging(on=True):
    """Also forward the crate's per-datagram ``trace`` records (level 5 on the
    ``dtls.*`` loggers); off by default, as each costs a GIL acquisition."""
    _native.set_log_level(5 if on else _logging.DEBUG)


__all__ = [
    "do_patch",
    "SSLConnection",
    "SSLContext",
    "SSL",
    "force_routing_demux",
    "reset_default_demux",
    "VERSION",
    "DTLS_OPENSSL_VERSION",
    "DTLS_OPENSSL_VERSION_INFO",
    "DTLS_OPENSSL_VERSION_NUMBER",
    "set_trace_logging",
]
