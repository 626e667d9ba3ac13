"""Certificate decoding: DER or PEM bytes into the dict
``ssl.SSLSocket.getpeercert()`` returns (``subject`` and ``issuer`` as tuples
of RDN tuples with long attribute names, ``version``, ``serialNumber``,
``notBefore``, ``notAfter``, ``subjectAltName``). Parsing runs in the native
module (OpenSSL through dtls-reactor)."""

from . import _native


def decode_cert(cert):
    """The dict for one certificate (``bytes``: DER or PEM)."""
    if isinstance(cert, str):
        cert = cert.encode("ascii")
    return _native.decode_cert(bytes(cert))


def PEM_cert_to_DER_cert(pem):
    """DER bytes of a PEM certificate (``str`` or ``bytes``)."""
    if isinstance(pem, str):
        pem = pem.encode("ascii")
    return _native.pem_to_der(bytes(pem))
