//! The reactor's counters: [`ReactorStats`] (a snapshot) and the atomics
//! behind it, shared with every [`ReactorHandle`](super::ReactorHandle).

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(doc)]
use super::{CloseCause, Limits};
use crate::Admission;

macro_rules! stats {
    ($($(#[$m:meta])* $f:ident),* $(,)?) => {
        /// A snapshot of a reactor's counters and gauges.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct ReactorStats {
            $($(#[$m])* pub $f: u64,)*
        }
        #[derive(Debug, Default)]
        pub(crate) struct SharedStats {
            $(pub(super) $f: AtomicU64,)*
            /// The caps and admission counters of the reactor's front doors.
            pub(super) admission: Admission,
        }
        impl SharedStats {
            pub(crate) fn snapshot(&self) -> ReactorStats {
                let mut s = ReactorStats { $($f: self.$f.load(Ordering::Relaxed),)* };
                // What the front doors decided, counted where it was decided.
                let a = self.admission.stats();
                s.handshakes = a.handshakes;
                s.peak_handshakes = a.peak_handshakes;
                s.hello_verify = a.hello_verify;
                s.cookie_dropped = a.dropped - a.limit_connections - a.limit_handshakes;
                s.handshake_refused = a.refused;
                s.peer_restarts = a.peer_restarts;
                s.handler_refused = a.policy_refused;
                s.limit_connections = a.limit_connections;
                s.limit_handshakes = a.limit_handshakes;
                s
            }
        }
    };
}

stats! {
    /// Connections open now (gauge).
    connections,
    /// Server connections in their handshake now (gauge).
    handshakes,
    /// Most connections open at once.
    peak_connections,
    /// Most server handshakes in flight at once.
    peak_handshakes,
    /// Server connections created (peers that passed the cookie and were accepted).
    accepted,
    /// Client connections started.
    connects,
    /// Handshakes completed (both sides).
    connected,
    /// Connections closed, any cause.
    closed,
    /// HelloVerifyRequests sent.
    hello_verify,
    /// Datagrams the front doors dropped (not ClientHellos, rejected by
    /// OpenSSL, late copies of admitted hellos...), caps aside.
    cookie_dropped,
    /// Handshakes refused on the ClientHello itself (alert sent).
    handshake_refused,
    /// Established server connections replaced by a new handshake from the
    /// same address and port (the peer restarted, [`CloseCause::PeerRestarted`]).
    peer_restarts,
    /// Peers the handler refused in `on_accept`.
    handler_refused,
    /// ClientHellos with a cookie dropped because `max_connections` was
    /// reached (before any OpenSSL work).
    limit_connections,
    /// ClientHellos with a cookie dropped because `max_handshakes` was reached.
    limit_handshakes,
    /// Handshakes ended by the configuration's overall deadline
    /// ([`CloseCause::HandshakeTimeout`]).
    handshake_timeouts,
    /// Server handshakes ended because the peer went silent
    /// ([`CloseCause::PeerSilent`]).
    silent_peers,
    /// Connections closed by the idle timeout.
    idle_timeouts,
    /// DTLS flights retransmitted by the reactor's timers.
    retransmissions,
    /// Datagrams received from peers (listeners, links and client sockets).
    datagrams_in,
    /// Datagrams sent to peers.
    datagrams_out,
    /// Quiet connections that gave their buffers back
    /// ([`Limits::shrink_after`]).
    shrunk,
    /// Batched sends on connection sockets (`sendmmsg` calls that sent at
    /// least one datagram): `datagrams_out / send_batches` is the mean batch.
    send_batches,
    /// Batched reads of connection sockets (`recvmmsg` calls that returned
    /// at least one message).
    recv_batches,
    /// Datagrams dropped on receive because they did not fit a receive slot:
    /// longer than 64 KiB, or segments past the 128th of one GRO message (the
    /// kernel builds at most 64); not expected with UDP over IP.
    oversized,
    /// Datagrams that could not be sent (socket errors other than WouldBlock).
    send_errors,
    /// Socket errors on receive, and failed attaches.
    io_errors,
    /// Sends that hit WouldBlock (the connection waits for writability).
    blocked,
}

impl SharedStats {
    pub(super) fn inc(f: &AtomicU64) {
        f.fetch_add(1, Ordering::Relaxed);
    }
    pub(super) fn add(f: &AtomicU64, n: u64) {
        f.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    pub(super) fn gauge(&self, conns: usize) {
        self.connections.store(conns as u64, Ordering::Relaxed);
        self.peak_connections
            .fetch_max(conns as u64, Ordering::Relaxed);
    }
}
