//! What a connection reports about itself: where it is in its life
//! ([`State`]), why it ended ([`CloseReason`]), what its owner should react to
//! ([`Event`]) and its counters ([`ConnStats`]).

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer sent close_notify.
    PeerClosed,
    /// This side called [`Connection::close`](crate::Connection::close).
    Local,
    /// The handshake deadline (the overall cap) passed.
    HandshakeTimeout,
    /// A server's handshaking peer sent nothing for the silence limit
    /// ([`crate::Timers::silence`]).
    PeerSilent,
    /// The retransmission limit was reached.
    RetransmitLimit,
    /// A fatal error; the text is the error's. [`Connection::error`](crate::Connection::error) has the value.
    Failed(String),
}

/// Where a connection is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// The handshake is running.
    Handshaking,
    /// Application data can flow.
    Established,
    /// Ended, for the reason given.
    Closed(CloseReason),
}

/// Something the owner of a connection should react to, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed.
    Connected,
    /// The connection ended.
    Closed(CloseReason),
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Datagrams fed in.
    pub datagrams_in: u64,
    /// Datagrams produced for sending.
    pub datagrams_out: u64,
    /// Datagrams dropped before the record layer (OpenSSL's or the
    /// engine's) sees them: empty, not a sequence of whole DTLS
    /// records (unknown content type, not DTLS, length past the end), with a
    /// protected record shorter than any the negotiated cipher produces, or
    /// the receive queue was full.
    pub dropped: u64,
    /// Application-data records the record layer read and threw away: failed
    /// authentication (forged or corrupted), replayed or too old, or of an
    /// epoch not in use. Exact whenever [`Connection::recv`](crate::Connection::recv) has just returned
    /// `Ok(None)`; in between it may include records the record layer still holds.
    /// (A zero-length application record, which carries nothing, counts too.)
    pub discarded: u64,
    /// Retransmission timeouts that resent a flight, and (on the engine's
    /// record layer) the last handshake flight sent again for a peer that
    /// retransmitted its Finished.
    pub retransmissions: u64,
}
