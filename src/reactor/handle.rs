//! `ReactorHandle`: what other threads use to reach a running reactor.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::Waker;

use super::{ConnId, ListenerId, ReactorStats, SharedStats};
use crate::config::{ClientConfig, ServerConfig};
use crate::error::{Error, Result};

/// A request from another thread, carried out on the reactor thread.
pub(crate) enum Command {
    Send(ConnId, Vec<u8>),
    Close(ConnId),
    Connect(SocketAddr, ClientConfig),
    SetListenerConfig(ListenerId, ServerConfig),
    Stop,
}

/// A cross-thread handle to a [`Reactor`](super::Reactor): `Clone + Send + Sync`.
///
/// Each call queues a command (crossbeam channel, unbounded) and wakes the
/// reactor (mio `Waker`); the reactor carries it out on its own thread at its
/// next turn. Failures there (an unknown connection, a send that fails) are
/// reported to [`Handler::on_error`](super::Handler::on_error). The calls here
/// fail only with [`Error::Closed`] once the reactor is gone.
#[derive(Clone)]
pub struct ReactorHandle {
    pub(crate) tx: Sender<Command>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) stats: Arc<SharedStats>,
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle").finish_non_exhaustive()
    }
}

impl ReactorHandle {
    fn command(&self, c: Command) -> Result<()> {
        self.tx.send(c).map_err(|_| Error::Closed)?;
        // The reactor may be gone between the two calls; a wake of a dropped
        // poll is harmless.
        let _ = self.waker.wake();
        Ok(())
    }

    /// Sends one plaintext datagram on connection `id`.
    pub fn send(&self, id: ConnId, data: &[u8]) -> Result<()> {
        self.command(Command::Send(id, data.to_vec()))
    }

    /// Closes connection `id` (close_notify to the peer, then
    /// [`Handler::on_close`](super::Handler::on_close) with
    /// [`CloseCause::Local`](super::CloseCause::Local)).
    pub fn close(&self, id: ConnId) -> Result<()> {
        self.command(Command::Close(id))
    }

    /// Starts a client connection to `addr` from the reactor thread; the
    /// handler sees [`Handler::on_connected`](super::Handler::on_connected)
    /// with its id, or [`Handler::on_error`](super::Handler::on_error).
    pub fn connect(&self, addr: SocketAddr, config: &ClientConfig) -> Result<()> {
        self.command(Command::Connect(addr, config.clone()))
    }

    /// Gives DTLS listener `listener` a new configuration for every handshake
    /// from now on (certificate rotation without a restart; see
    /// [`Reactor::set_listener_config`](super::Reactor::set_listener_config));
    /// an unknown or plain listener is reported to
    /// [`Handler::on_error`](super::Handler::on_error).
    pub fn set_listener_config(&self, listener: ListenerId, config: &ServerConfig) -> Result<()> {
        self.command(Command::SetListenerConfig(listener, config.clone()))
    }

    /// Stops the reactor: close_notify to every peer,
    /// [`CloseCause::Stopped`](super::CloseCause::Stopped) to the handler for
    /// each connection, then [`Reactor::run`](super::Reactor::run) returns.
    pub fn stop(&self) -> Result<()> {
        self.command(Command::Stop)
    }

    /// A snapshot of the reactor's counters (readable from any thread).
    pub fn stats(&self) -> ReactorStats {
        self.stats.snapshot()
    }

    /// The counters and gauges of the reactor's front doors (its caps,
    /// shared by all its listeners and client connections).
    pub fn admission_stats(&self) -> crate::AdmissionStats {
        self.stats.admission().stats()
    }
}
