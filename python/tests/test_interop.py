"""Interop with OpenSSL's command-line peers: our client against
``openssl s_server -dtls1_2``, ``openssl s_client -dtls1_2`` against our
server."""

import os
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from conftest import WAIT, Server, accept_one, cert, pump


def need_openssl():
    if shutil.which("openssl") is None:
        assert "CI" not in os.environ, "openssl missing in CI: .ci/run installs it"
        pytest.skip("openssl not installed")


class Peer:
    """An openssl process; stdout and stderr collected; killed at close()."""

    def __init__(self, args):
        self.proc = subprocess.Popen(["openssl"] + args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):
            with self.lock:
                self.out += chunk

    def output(self):
        with self.lock:
            return self.out

    def wait_for(self, needle, timeout=WAIT):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.output():
                return True
            time.sleep(0.01)
        return False

    def send_line(self, line):
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def close(self):
        self.proc.kill()
        self.proc.wait(WAIT)
        self.reader.join(WAIT)


def host_port(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def test_python_client_against_s_server(variant):
    need_openssl()
    free = variant.udp()
    free.bind((variant.host, 0))
    port = free.getsockname()[1]
    free.close()
    peer = Peer(["s_server", "-dtls1_2", "-accept", host_port(variant.host, port),
                 "-cert", cert("server.pem"), "-key", cert("server.key")])
    try:
        assert peer.wait_for(b"ACCEPT"), peer.output()
        c = variant.client()
        c.connect((variant.host, port))
        assert c.version() == "DTLSv1.2"
        assert (("commonName", "localhost"),) in c.getpeercert()["subject"]
        c.send(b"from python\n")
        assert peer.wait_for(b"from python"), peer.output()
        peer.send_line(b"from openssl")
        assert c.recv(100) == b"from openssl\n"
        c.close()
    finally:
        peer.close()


def test_s_client_against_python_server(variant):
    need_openssl()
    srv = variant.server()
    done = threading.Event()

    def serve(listener):
        conn, _ = accept_one(listener)
        conn.settimeout(0.1)
        stop = pump(listener)
        try:
            n = 0
            while True:
                try:
                    data = conn.recv(4096)
                except ssl.SSLError as e:
                    # s_client is killed without a close_notify: stop when told.
                    if e.args[0] in (ssl.ERR_READ_TIMEOUT, ssl.ERR_HANDSHAKE_TIMEOUT) and not done.is_set():
                        continue
                    if e.args[0] == ssl.ERR_READ_TIMEOUT:
                        return n
                    raise
                if not data:
                    return n
                conn.send(data.upper())
                n += 1
        finally:
            stop()
            conn.close()

    server = Server(srv, serve)
    peer = Peer(["s_client", "-dtls1_2", "-connect", host_port(variant.host, srv.getsockname()[1]),
                 "-CAfile", cert("ca.pem"), "-verify_return_error", "-quiet"])
    try:
        msg = b"interop-%s" % repr(variant).encode()
        end = time.monotonic() + WAIT
        # s_client sends each stdin line as one record once its handshake is done.
        while not peer.wait_for(msg.upper(), 0.3):
            assert time.monotonic() < end, peer.output()
            peer.send_line(msg)
    finally:
        done.set()
        peer.close()
    assert server.result() >= 1
    srv.close()
