//! What the front doors of one server share: the caps on connections and
//! handshakes in flight, the counts they are checked against, and the
//! admission counters.
//!
//! Every connection a front door admits holds a [`Slot`]: one connection,
//! and while its handshake runs, one handshake. The connection gives the
//! handshake back when the handshake ends (established or failed) and the
//! connection when it is dropped, so the counts are right whatever front end
//! owns the connection and however it ends.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The caps of an [`Admission`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionLimits {
    /// Connections open at once, handshaking or established (client
    /// connections of a reactor count too). Default 10,000.
    pub max_connections: usize,
    /// Server handshakes in flight at once (half-open peers). Default 1,000.
    pub max_handshakes: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            max_connections: 10_000,
            max_handshakes: 1_000,
        }
    }
}

impl AdmissionLimits {
    /// Sets [`Self::max_connections`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`Self::max_handshakes`].
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
        self
    }
}

macro_rules! counters {
    ($($(#[$m:meta])* $f:ident),* $(,)?) => {
        /// A snapshot of an [`Admission`]'s counters and gauges.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct AdmissionStats {
            $($(#[$m])* pub $f: u64,)*
        }
        #[derive(Default)]
        struct Counters {
            $($f: AtomicU64,)*
        }
        impl Counters {
            fn snapshot(&self) -> AdmissionStats {
                AdmissionStats { $($f: self.$f.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Connections holding a slot now (gauge).
    connections,
    /// Server handshakes in flight now (gauge).
    handshakes,
    /// Most connections at once.
    peak_connections,
    /// Most server handshakes in flight at once.
    peak_handshakes,
    /// HelloVerifyRequests sent (cookie asked).
    hello_verify,
    /// ClientHellos whose cookie verified (or any ClientHello, without
    /// cookies): incoming peers handed to the front end's policy.
    incoming,
    /// Server connections started (`SSL_accept` run on the ClientHello).
    accepted,
    /// Handshakes that failed on the ClientHello itself (no shared version,
    /// cipher, group...): alert sent, nothing kept.
    refused,
    /// Incoming peers the front end's policy turned away (a reactor
    /// handler's `on_accept`); nothing was started for them.
    policy_refused,
    /// Datagrams dropped by the front door, any reason (the reasons below
    /// are counted here too).
    dropped,
    /// Late copies of admitted ClientHellos (same peer, same client random).
    duplicate_hellos,
    /// ClientHellos with a cookie dropped because `max_connections` was reached.
    limit_connections,
    /// ClientHellos with a cookie dropped because `max_handshakes` was reached.
    limit_handshakes,
    /// Established connections replaced by a new handshake from the same
    /// address and port (the peer restarted, RFC 6347 section 4.2.8).
    peer_restarts,
}

struct Shared {
    limits: AdmissionLimits,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    counters: Counters,
}

/// Caps, counts and counters shared by one server's front doors (a
/// listener's, or all of a reactor's listeners and its client connections).
///
/// Clones share the same state.
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("limits", &self.shared.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(AdmissionLimits::default())
    }
}

/// Which counter of [`AdmissionStats`] an event moves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    HelloVerify,
    Incoming,
    Accepted,
    Refused,
    PolicyRefused,
    PeerRestarts,
}

impl Admission {
    /// Shared state with these caps.
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            shared: Arc::new(Shared {
                limits,
                connections: AtomicUsize::new(0),
                handshakes: AtomicUsize::new(0),
                counters: Counters::default(),
            }),
        }
    }

    /// The caps.
    pub fn limits(&self) -> AdmissionLimits {
        self.shared.limits
    }

    /// The counters and gauges.
    pub fn stats(&self) -> AdmissionStats {
        let mut s = self.shared.counters.snapshot();
        s.connections = self.connections() as u64;
        s.handshakes = self.handshakes() as u64;
        s
    }

    /// Connections holding a slot now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Server handshakes in flight now.
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::Relaxed)
    }

    /// The cap a new server handshake would exceed now, as the drop reason;
    /// for a `restart` (which takes over its old connection's slot) only the
    /// handshake cap.
    pub(crate) fn full(&self, restart: bool) -> Option<DropReason> {
        let l = &self.shared.limits;
        if !restart && self.connections() >= l.max_connections {
            Some(DropReason::ConnectionLimit)
        } else if self.handshakes() >= l.max_handshakes {
            Some(DropReason::HandshakeLimit)
        } else {
            None
        }
    }

    /// Counts a datagram dropped for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason) {
        let c = &self.shared.counters;
        c.dropped.fetch_add(1, Ordering::Relaxed);
        let f = match reason {
            DropReason::DuplicateHello => &c.duplicate_hellos,
            DropReason::ConnectionLimit => &c.limit_connections,
            DropReason::HandshakeLimit => &c.limit_handshakes,
            _ => return,
        };
        f.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self, what: Count) {
        let c = &self.shared.counters;
        let f = match what {
            Count::HelloVerify => &c.hello_verify,
            Count::Incoming => &c.incoming,
            Count::Accepted => &c.accepted,
            Count::Refused => &c.refused,
            Count::PolicyRefused => &c.policy_refused,
            Count::PeerRestarts => &c.peer_restarts,
        };
        f.fetch_add(1, Ordering::Relaxed);
    }

    /// A slot for a new connection, `handshake` when it also takes a server
    /// handshake slot; the cap that stands in the way otherwise.
    pub(crate) fn take(&self, handshake: bool) -> Result<Slot, DropReason> {
        let s = &self.shared;
        let take = |n: &AtomicUsize, cap: usize, why: DropReason| {
            n.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                (v < cap).then_some(v + 1)
            })
            .map(|prev| prev + 1)
            .map_err(|_| why)
        };
        let conns = take(
            &s.connections,
            s.limits.max_connections,
            DropReason::ConnectionLimit,
        )?;
        s.counters
            .peak_connections
            .fetch_max(conns as u64, Ordering::Relaxed);
        if handshake {
            match take(
                &s.handshakes,
                s.limits.max_handshakes,
                DropReason::HandshakeLimit,
            ) {
                Ok(hs) => {
                    s.counters
                        .peak_handshakes
                        .fetch_max(hs as u64, Ordering::Relaxed);
                }
                Err(why) => {
                    s.connections.fetch_sub(1, Ordering::AcqRel);
                    return Err(why);
                }
            }
        }
        Ok(Slot {
            admission: self.clone(),
            handshake,
        })
    }
}

/// One connection's place in an [`Admission`]: released when dropped.
pub(crate) struct Slot {
    admission: Admission,
    handshake: bool,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("handshake", &self.handshake)
            .finish()
    }
}

impl Slot {
    /// Takes a handshake slot for a connection that holds none (a restarted
    /// peer's new session in its old connection's slot).
    pub(crate) fn begin_handshake(&mut self) -> Result<(), DropReason> {
        if self.handshake {
            return Ok(());
        }
        let s = &self.admission.shared;
        let hs = s
            .handshakes
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                (v < s.limits.max_handshakes).then_some(v + 1)
            })
            .map_err(|_| DropReason::HandshakeLimit)?;
        s.counters
            .peak_handshakes
            .fetch_max(hs as u64 + 1, Ordering::Relaxed);
        self.handshake = true;
        Ok(())
    }

    /// The handshake ended (established or failed): its handshake slot goes.
    pub(crate) fn handshake_over(&mut self) {
        if std::mem::take(&mut self.handshake) {
            self.admission
                .shared
                .handshakes
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.handshake_over();
        self.admission
            .shared
            .connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the front door dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A zero-length datagram.
    Empty,
    /// Not a DTLS handshake record, or too short to be one.
    NotHandshake,
    /// A handshake record, but not a ClientHello (a connection-less peer may
    /// only start with one).
    NotClientHello,
    /// OpenSSL rejected the ClientHello (malformed, unsupported version...).
    Rejected,
    /// The server could not create a connection (allocation or OpenSSL failure).
    Internal,
    /// A late copy of a ClientHello that was already admitted (same peer,
    /// same client random): its cookie still verifies, but its connection
    /// exists or existed.
    DuplicateHello,
    /// A ClientHello with a cookie while `max_connections` is reached:
    /// dropped before the cookie is checked, so it costs no OpenSSL work.
    ConnectionLimit,
    /// A ClientHello with a cookie while `max_handshakes` is reached.
    HandshakeLimit,
    /// A ClientHello on an established session while cookies are off:
    /// nothing proves the sender owns the address, so the session is kept.
    Unproven,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Empty => "empty datagram",
            DropReason::NotHandshake => "not a DTLS handshake record",
            DropReason::NotClientHello => "not a ClientHello",
            DropReason::Rejected => "ClientHello rejected by OpenSSL",
            DropReason::Internal => "internal error",
            DropReason::DuplicateHello => "late copy of an admitted ClientHello",
            DropReason::ConnectionLimit => "max_connections reached",
            DropReason::HandshakeLimit => "max_handshakes reached",
            DropReason::Unproven => "ClientHello on an established session without a cookie",
        })
    }
}
