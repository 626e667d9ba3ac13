//! The reactor's names for things: connection, listener and timer ids, and
//! why a connection ended or what its DTLS timer did.

use std::fmt;

#[cfg(doc)]
use super::{Ctx, Handler, Limits, Reactor, ReactorHandle};
use crate::conn::CloseReason;

/// Identifies one connection of a reactor. Ids are never reused: a stale id
/// names no connection (calls with it fail or return `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(super) key: usize,
    pub(super) gen: u64,
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.gen)
    }
}

/// Identifies a listener of a reactor (the order of [`Reactor::listen`] calls, from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(pub usize);

/// Identifies a user timer ([`Ctx::set_timer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub(super) u64);

/// Why a connection of the reactor ended ([`Handler::on_close`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer sent close_notify.
    PeerClosed,
    /// The application closed it ([`Ctx::close`], [`ReactorHandle::close`]).
    Local,
    /// The handshake did not finish within the configuration's overall
    /// deadline ([`crate::ConfigBuilder::handshake_timeout`]).
    HandshakeTimeout,
    /// A server's handshaking peer sent nothing for the configuration's
    /// silence limit ([`crate::ConfigBuilder::handshake_silence`]).
    PeerSilent,
    /// DTLS gave up retransmitting: the peer does not answer.
    RetransmitLimit,
    /// Nothing arrived from the peer for [`Limits::idle_timeout`].
    IdleTimeout,
    /// The reactor stopped ([`Ctx::stop`], [`ReactorHandle::stop`]).
    Stopped,
    /// The peer restarted (RFC 6347 section 4.2.8): a new ClientHello with a
    /// valid cookie came from the same address and port, and a new connection
    /// replaced this one ([`Handler::on_accept`] was asked first; the new one
    /// has its own [`ConnId`]). No close_notify is sent: the peer lost the
    /// old session's keys.
    PeerRestarted,
    /// A fatal error, with its text. In [`Handler::on_close`],
    /// `ctx.connection(id).and_then(|c| c.error())` still has the value.
    Failed(String),
}

impl From<&CloseReason> for CloseCause {
    fn from(r: &CloseReason) -> Self {
        match r {
            CloseReason::PeerClosed => CloseCause::PeerClosed,
            CloseReason::Local => CloseCause::Local,
            CloseReason::HandshakeTimeout => CloseCause::HandshakeTimeout,
            CloseReason::PeerSilent => CloseCause::PeerSilent,
            CloseReason::RetransmitLimit => CloseCause::RetransmitLimit,
            CloseReason::Failed(s) => CloseCause::Failed(s.clone()),
        }
    }
}

/// What a DTLS timer did ([`Handler::on_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsTimeout {
    /// The last flight was sent again.
    Retransmitted,
    /// The retransmission limit was reached; [`Handler::on_close`] follows
    /// with [`CloseCause::RetransmitLimit`].
    LimitReached,
}
