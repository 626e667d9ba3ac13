//! [`Limits`]: what protects a reactor, with protective defaults.

use std::time::Duration;

use super::LISTENER_BASE;
#[cfg(doc)]
use super::{Connection, ReactorStats};

/// Limits that protect a server, with protective defaults. What happens at
/// each is counted in [`ReactorStats`] and logged with `log::debug!`.
///
/// How long a handshake may take is the configuration's rule, the same in
/// the reactor, the socket API and the engine: a server's peer that sends
/// nothing for [`handshake_silence`](crate::ConfigBuilder::handshake_silence)
/// (default 10 s) is dropped, one that keeps answering may go on up to
/// [`handshake_timeout`](crate::ConfigBuilder::handshake_timeout) (default
/// 60 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most connections (server and client) at once; a peer that passes the
    /// cookie beyond it is dropped (it may retry). Default 10,000.
    pub max_connections: usize,
    /// Most server connections still in their handshake (half-open); a peer
    /// that passes the cookie beyond it is dropped. Default 1,000.
    pub max_handshakes: usize,
    /// Close an established connection when nothing arrived from the peer for
    /// this long (close_notify is sent); `None` for never. Default 300 s.
    pub idle_timeout: Option<Duration>,
    /// Most datagrams read from one socket per turn, checked between batched
    /// reads: one read returns up to 32 messages, and with UDP GRO a message can
    /// carry a run of up to 64 datagrams, all handled in that turn. Default 64.
    pub datagrams_per_turn: usize,
    /// An established connection that received nothing for this long gives
    /// its buffers back ([`Connection::shrink`]: OpenSSL's record buffers,
    /// about 20 KiB each); the next datagram takes them again. `None`: never.
    /// Default 2 s.
    pub shrink_after: Option<Duration>,
    /// Receive buffer (`SO_RCVBUF`) asked for each listener, in bytes; the
    /// kernel caps it (`net.core.rmem_max` on Linux); 0 leaves the system
    /// default. Every new peer's first datagrams, and all of Router's
    /// traffic, queue there: default 4 MiB.
    pub listener_recv_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_handshakes: 1_000,
            idle_timeout: Some(Duration::from_secs(300)),
            datagrams_per_turn: 64,
            shrink_after: Some(Duration::from_secs(2)),
            listener_recv_buffer: 4 << 20,
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_connections`] (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.clamp(1, LISTENER_BASE - 1);
        self
    }
    /// Sets [`Limits::max_handshakes`] (at least 1).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }
    /// Sets [`Limits::idle_timeout`].
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }
    /// Sets [`Limits::listener_recv_buffer`].
    pub fn listener_recv_buffer(mut self, bytes: usize) -> Self {
        self.listener_recv_buffer = bytes;
        self
    }
    /// Sets [`Limits::shrink_after`].
    pub fn shrink_after(mut self, d: Option<Duration>) -> Self {
        self.shrink_after = d;
        self
    }
    /// Sets [`Limits::datagrams_per_turn`] (at least 1).
    pub fn datagrams_per_turn(mut self, n: usize) -> Self {
        self.datagrams_per_turn = n.max(1);
        self
    }
}
