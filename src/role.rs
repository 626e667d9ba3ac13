//! `Role`: which side of a handshake, for connections and for the
//! configuration's callbacks.

/// Which side of the handshake a connection plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent the ClientHello.
    Client,
    /// Answered it.
    Server,
}
