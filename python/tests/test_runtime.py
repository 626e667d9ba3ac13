"""Logging through Python's logging, the GIL released while waiting, the
module's own decoding helpers."""

import logging
import threading
import time

import ssl

import dtls.x509
from conftest import WAIT, Server, cert, echo_server


def test_crate_logs_reach_the_dtls_logger(variant, caplog):
    caplog.set_level(logging.DEBUG, logger="dtls")
    srv = variant.server()
    server = Server(srv, echo_server(1))
    c = variant.client()
    c.connect((variant.host, srv.getsockname()[1]))
    c.send(b"log")
    assert c.recv(10) == b"log"
    c.unwrap()
    c.close()
    server.result()
    srv.close()
    names = {r.name for r in caplog.records}
    assert any(n.startswith("dtls.dtls_reactor") for n in names), names
    assert any("established" in r.getMessage() for r in caplog.records)
    assert all(r.name.startswith("dtls") for r in caplog.records)


def test_gil_released_while_blocked(variant):
    """A thread blocked in recv (0.5 s timeout) does not stop the others."""
    silent = variant.udp()
    silent.bind((variant.host, 0))
    c = variant.client(timeout=0.5)
    errors = []

    def blocked():
        try:
            c.connect((variant.host, silent.getsockname()[1]))
        except ssl.SSLError as e:
            errors.append(e.args[0])

    t = threading.Thread(target=blocked)
    t0 = time.monotonic()
    t.start()
    ticks = 0
    while t.is_alive() and time.monotonic() - t0 < WAIT:
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert errors == [ssl.ERR_HANDSHAKE_TIMEOUT]
    # ~0.5 s of 1 ms sleeps: hundreds of ticks if the GIL was free.
    assert ticks > 100
    c.close()
    silent.close()


def test_decode_cert_from_pem_file():
    pem = open(cert("server-rsa.pem"), "rb").read()
    d = dtls.x509.decode_cert(pem)
    assert (("commonName", "localhost"),) in d["subject"]
    assert d["issuer"][-1] == (("commonName", "dtls-reactor test root CA"),)
    assert dtls.x509.decode_cert(dtls.x509.PEM_cert_to_DER_cert(pem)) == d
    assert ssl.PEM_cert_to_DER_cert(pem.decode()) == dtls.x509.PEM_cert_to_DER_cert(pem)
