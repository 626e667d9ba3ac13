//! A client that loses the server's last handshake flight once: the test of
//! every front end's answer to a retransmitted final flight.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dtls_reactor::{ClientConfig, Connection};

/// Content type of change_cipher_spec: the server's last flight (of a full
/// handshake) is the first datagram from it that carries one.
const CHANGE_CIPHER_SPEC: u8 = 20;

/// A client session over its own UDP socket whose handshake with `server`
/// never sees the first copy of the server's last flight and retransmits its
/// own final flight once, so it completes only if the server answers that
/// one copy.
pub struct LosesFinalFlight {
    pub sock: UdpSocket,
    pub conn: Connection,
    /// Datagrams of the server's that were not fed (the lost last flight).
    pub lost: usize,
}

impl LosesFinalFlight {
    /// Runs the handshake for at most `limit`; `true` when it completed.
    pub fn handshake(server: SocketAddr, cfg: &ClientConfig, limit: Duration) -> (Self, bool) {
        let mut c = LosesFinalFlight {
            sock: super::socket_to(server, Duration::from_millis(10)),
            conn: Connection::client(cfg, None).unwrap(),
            lost: 0,
        };
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        let mut resent = false;
        while start.elapsed() < limit && c.conn.is_handshaking() {
            c.flush();
            if let Ok(n) = c.sock.recv(&mut buf) {
                if c.lost == 0
                    && super::records(&buf[..n])
                        .iter()
                        .any(|r| r.0 == CHANGE_CIPHER_SPEC)
                {
                    c.lost += 1;
                } else {
                    let _ = c.conn.feed(&buf[..n]);
                }
            }
            // One retransmission of the client's final flight after the
            // loss, then none (as if they were all lost): the answer to that
            // one must come without any further datagram to wake the server.
            if c.lost == 0 || !resent {
                let _ = c.conn.handle_timeout(Instant::now());
                resent = c.lost > 0 && c.conn.has_transmit();
            }
        }
        c.flush();
        let ok = c.conn.is_established();
        (c, ok)
    }

    /// Sends what the session queued.
    pub fn flush(&mut self) {
        while let Some(d) = self.conn.poll_transmit() {
            let _ = self.sock.send(&d);
        }
    }

    /// Sends `data` and waits (at most `limit`) for one datagram of
    /// plaintext back.
    pub fn echo(&mut self, data: &[u8], limit: Duration) -> Option<Vec<u8>> {
        self.conn.send(data).unwrap();
        self.flush();
        self.recv(limit)
    }

    /// Waits (at most `limit`) for one datagram of plaintext.
    pub fn recv(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let start = Instant::now();
        let (mut buf, mut out) = ([0u8; 2048], [0u8; 2048]);
        while start.elapsed() < limit {
            if let Ok(Some(n)) = self.conn.recv(&mut out) {
                return Some(out[..n].to_vec());
            }
            self.flush();
            if let Ok(n) = self.sock.recv(&mut buf) {
                let _ = self.conn.feed(&buf[..n]);
            }
        }
        None
    }
}
