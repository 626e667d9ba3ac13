//! Listeners: a demux's listening socket in the reactor's loop (DTLS through
//! a front door, or plain UDP), its registration and its settings.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use dtls_demux::Demux;
use mio::unix::SourceFd;
use mio::{Interest, Token};

#[cfg(doc)]
use super::Ctx;
use super::{Handler, Inner, ListenerId, Reactor, LISTENER_BASE, SOURCE_BASE};
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::FrontDoor;

/// One listener of the reactor: its demux, its front door, the peers it
/// attached.
pub(super) struct Listener {
    pub(super) demux: Arc<dyn Demux>,
    /// `None` for a plain UDP listener.
    pub(super) door: Option<FrontDoor>,
    pub(super) peers: HashMap<SocketAddr, usize>,
    pub(super) pending: bool,
}

impl Inner {
    /// See [`Reactor::set_listener_config`].
    pub(super) fn set_listener_config(
        &mut self,
        listener: ListenerId,
        config: &ServerConfig,
    ) -> Result<()> {
        match self
            .listeners
            .get_mut(listener.0)
            .and_then(|l| l.door.as_mut())
        {
            Some(door) => door.set_config(config),
            None => Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a DTLS listener of this reactor",
            ))),
        }
    }
}

impl<H: Handler> Reactor<H> {
    /// Serves DTLS on `demux`'s listener with `config` (the listener is made
    /// non-blocking and registered).
    pub fn listen(&mut self, demux: Arc<dyn Demux>, config: &ServerConfig) -> Result<ListenerId> {
        let door = FrontDoor::new(config, &self.inner.stats.admission)?;
        self.add_listener(demux, Some(door))
    }

    /// Gives DTLS listener `listener` a new configuration for every handshake
    /// from now on (a new certificate, new settings) without a restart;
    /// established connections keep theirs. `InvalidInput` for a plain or
    /// unknown listener. From another thread:
    /// [`ReactorHandle::set_listener_config`](super::ReactorHandle::set_listener_config).
    pub fn set_listener_config(
        &mut self,
        listener: ListenerId,
        config: &ServerConfig,
    ) -> Result<()> {
        self.inner.set_listener_config(listener, config)
    }

    /// Serves plain UDP (no DTLS) on `demux`'s listener: every datagram from a
    /// new peer creates a session at once (after [`Handler::on_accept`] and
    /// the limits), whose datagrams reach [`Handler::on_data`] unchanged. The
    /// baseline of benchmarks: the same loop, links and limits, without DTLS.
    /// [`Ctx::connection`] is `None` for these sessions; they end by
    /// [`Ctx::close`], the idle timeout or a stop (UDP has no close message).
    pub fn listen_plain(&mut self, demux: Arc<dyn Demux>) -> Result<ListenerId> {
        self.add_listener(demux, None)
    }

    pub(super) fn add_listener(
        &mut self,
        demux: Arc<dyn Demux>,
        door: Option<FrontDoor>,
    ) -> Result<ListenerId> {
        demux.listener().set_nonblocking(true)?;
        let want = self.inner.limits.listener_recv_buffer;
        if want > 0 {
            let sock = socket2::SockRef::from(demux.listener());
            if sock.recv_buffer_size().map_or(true, |have| have < want) {
                if let Err(e) = sock.set_recv_buffer_size(want) {
                    log::warn!("reactor: SO_RCVBUF {want} on the listener: {e}");
                }
            }
        }
        let li = self.inner.listeners.len();
        if LISTENER_BASE + li >= SOURCE_BASE {
            return Err(Error::Io(io::Error::other("reactor: too many listeners")));
        }
        let fd = demux.listener().as_raw_fd();
        self.inner.poll.registry().register(
            &mut SourceFd(&fd),
            Token(LISTENER_BASE + li),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.inner.listeners.push(Listener {
            demux,
            door,
            peers: HashMap::new(),
            // Datagrams may already wait: drain once at the first turn.
            pending: true,
        });
        Ok(ListenerId(li))
    }

    /// The local address of a listener.
    pub fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        self.inner
            .listeners
            .get(listener.0)
            .and_then(|l| l.demux.local_addr().ok())
    }
}
