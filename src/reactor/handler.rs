//! What the application writes ([`Handler`]) and what it gets in every
//! callback ([`Ctx`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[cfg(doc)]
use super::Reactor;
use super::{
    CloseCause, ConnId, DtlsTimeout, Inner, ListenerId, ReactorHandle, ReactorStats, Readiness,
    SourceRegistry, SourceToken, TimerId,
};
use crate::config::ClientConfig;
use crate::conn::{Connection, Role};
use crate::error::{Error, Result};
use crate::peer_cert::PeerCertificate;

/// What the application does when something happens. Every method has a
/// default that does nothing (accepts, for [`Handler::on_accept`]); all are
/// called on the reactor thread.
pub trait Handler {
    /// A peer passed the cookie exchange on `listener`: accept it (true,
    /// the default) or refuse it (false: nothing is kept; the handler hears
    /// nothing more about it). Called only within the limits.
    fn on_accept(&mut self, ctx: &mut Ctx<'_>, peer: SocketAddr, listener: ListenerId) -> bool {
        let _ = (ctx, peer, listener);
        true
    }
    /// The handshake of `id` completed (server or client side).
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = (ctx, id);
    }
    /// One datagram of plaintext arrived on `id`.
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        let _ = (ctx, id, data);
    }
    /// `id` can send again after [`Ctx::send`] returned [`Error::WouldBlock`].
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = (ctx, id);
    }
    /// A DTLS retransmission timer of `id` fired.
    fn on_timeout(&mut self, ctx: &mut Ctx<'_>, id: ConnId, what: DtlsTimeout) {
        let _ = (ctx, id, what);
    }
    /// `id` ended; it is removed when this returns (during the call
    /// [`Ctx::connection`] still answers for it). Called once per connection.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cause: &CloseCause) {
        let _ = (ctx, id, cause);
    }
    /// Something failed outside a connection's own life: a handshake the
    /// cookie stage refused (`id` is `None`), a command from a
    /// [`ReactorHandle`] that could not be carried out, a failed connect.
    fn on_error(&mut self, ctx: &mut Ctx<'_>, id: Option<ConnId>, error: &Error) {
        let _ = (ctx, id, error);
    }
    /// A timer set with [`Ctx::set_timer`] fired.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: TimerId, token: u64) {
        let _ = (ctx, timer, token);
    }
    /// A source the handler registered under `token` ([`Ctx::sources`],
    /// [`Reactor::sources`]) is ready. Registration is edge-triggered
    /// (mio's): an event says the readiness changed, not that it holds, so
    /// read, accept or write here until the call returns `WouldBlock`;
    /// what is left undone raises no new event. An event may be spurious
    /// (the first call then returns `WouldBlock`).
    fn on_source(&mut self, ctx: &mut Ctx<'_>, token: SourceToken, readiness: Readiness) {
        let _ = (ctx, token, readiness);
    }
}

/// The reactor's services inside a [`Handler`] callback.
pub struct Ctx<'a> {
    pub(super) inner: &'a mut Inner,
}

impl fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("connections", &self.inner.conns.len())
            .finish_non_exhaustive()
    }
}

impl Ctx<'_> {
    /// Seals `data` as one datagram on `id` and sends it now.
    /// [`Error::WouldBlock`] while the handshake runs or while an earlier
    /// datagram waits for the socket ([`Handler::on_writable`] follows);
    /// [`Error::NotConnected`] for an unknown id.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<()> {
        self.inner.send(id, data)
    }

    /// Closes `id`: close_notify to the peer, then [`Handler::on_close`] with
    /// [`CloseCause::Local`] (after the current callback returns). Idempotent;
    /// unknown ids are ignored.
    pub fn close(&mut self, id: ConnId) {
        self.inner.close(id)
    }

    /// The DTLS connection `id`, for queries (peer certificate, cipher,
    /// version, stats...); `None` for unknown ids and plain UDP sessions.
    pub fn connection(&self, id: ConnId) -> Option<&Connection> {
        self.inner.entry(id).and_then(|e| e.conn.as_dtls())
    }

    /// The peer's address of `id`.
    pub fn peer_addr(&self, id: ConnId) -> Option<SocketAddr> {
        self.inner.entry(id).map(|e| e.peer)
    }

    /// The peer's certificate of `id`, once the handshake saw one.
    pub fn peer_certificate(&self, id: ConnId) -> Option<PeerCertificate> {
        self.connection(id).and_then(|c| c.peer_certificate())
    }

    /// The negotiated cipher of `id`.
    pub fn cipher(&self, id: ConnId) -> Option<String> {
        self.connection(id).and_then(|c| c.cipher())
    }

    /// True when `id` is a client connection ([`Ctx::connect`], [`Reactor::connect`]).
    pub fn is_client(&self, id: ConnId) -> bool {
        self.inner
            .entry(id)
            .is_some_and(|e| e.conn.role() == Role::Client)
    }

    /// The listener `id` came through (`None` for client connections).
    pub fn listener_of(&self, id: ConnId) -> Option<ListenerId> {
        self.inner
            .entry(id)
            .and_then(|e| e.listener)
            .map(ListenerId)
    }

    /// Calls [`Handler::on_timer`] with `token` after `after`.
    pub fn set_timer(&mut self, after: Duration, token: u64) -> TimerId {
        self.inner.set_timer(after, token)
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.inner.cancel_timer(timer)
    }

    /// Starts a client connection to `addr` (a connected UDP socket of its
    /// own); [`Handler::on_connected`] follows with the id returned here.
    pub fn connect(&mut self, addr: SocketAddr, config: &ClientConfig) -> Result<ConnId> {
        self.inner.connect(addr, config)
    }

    /// Starts a plain UDP client session to `addr` (see [`Reactor::listen_plain`]).
    pub fn connect_plain(&mut self, addr: SocketAddr) -> Result<ConnId> {
        self.inner.connect_with(addr, None)
    }

    /// Starts a client connection to `addr` on a shared socket of this
    /// reactor (see [`Reactor::connect_via`]).
    pub fn connect_via(
        &mut self,
        via: ListenerId,
        local: Option<IpAddr>,
        addr: SocketAddr,
        config: &ClientConfig,
    ) -> Result<ConnId> {
        self.inner.connect_via(via, local, addr, Some(config))
    }

    /// Starts a plain UDP client session on a shared socket (see
    /// [`Reactor::connect_via`]).
    pub fn connect_plain_via(
        &mut self,
        via: ListenerId,
        local: Option<IpAddr>,
        addr: SocketAddr,
    ) -> Result<ConnId> {
        self.inner.connect_via(via, local, addr, None)
    }

    /// Stops the reactor after this turn (see [`ReactorHandle::stop`]).
    pub fn stop(&mut self) {
        self.inner.stopping = true;
    }

    /// The reactor's counters.
    pub fn stats(&self) -> ReactorStats {
        self.inner.stats.snapshot()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.inner.conns.len()
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ReactorHandle {
        self.inner.handle.clone()
    }

    /// The handler's own sources in the loop (a TCP socket, a pipe...):
    /// register, reregister, deregister ([`SourceRegistry`]); their
    /// readiness reaches [`Handler::on_source`].
    pub fn sources(&mut self) -> SourceRegistry<'_> {
        self.inner.source_registry()
    }
}
