//! Listeners: a demux's listening socket in the reactor's loop (DTLS through
//! a front door, or plain UDP), its registration and its settings.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use dtls_demux::{Demux, SharedSocket};
use mio::unix::SourceFd;
use mio::{Interest, Token};

#[cfg(doc)]
use super::Ctx;
use super::{Handler, Inner, ListenerId, Reactor, LISTENER_BASE, SOURCE_BASE};
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::FrontDoor;

/// The socket a listener reads: a demux (links with descriptors of their
/// own), or one socket shared by every peer (its flow table says which entry
/// a datagram is for).
pub(super) enum Port {
    Demux(Arc<dyn Demux>),
    Shared(Arc<SharedSocket>),
}

impl Port {
    fn fd(&self) -> std::os::fd::RawFd {
        match self {
            Port::Demux(d) => d.listener().as_raw_fd(),
            Port::Shared(s) => s.socket().as_raw_fd(),
        }
    }

    fn socket(&self) -> &std::net::UdpSocket {
        match self {
            Port::Demux(d) => d.listener(),
            Port::Shared(s) => s.socket(),
        }
    }

    /// Datagrams held in memory that polling the socket would not show (OsNet
    /// strays).
    pub(super) fn has_buffered(&self) -> bool {
        match self {
            Port::Demux(d) => d.has_buffered(),
            Port::Shared(_) => false,
        }
    }

    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Port::Demux(d) => d.local_addr().ok(),
            Port::Shared(s) => Some(s.local_addr()),
        }
    }
}

/// One listener of the reactor: its socket, its front door, the peers it
/// attached.
pub(super) struct Listener {
    pub(super) port: Port,
    /// `None` for a plain UDP listener and for a shared socket that only
    /// carries client sessions.
    pub(super) door: Option<FrontDoor>,
    /// New peers are served (false: a shared socket for client sessions,
    /// where a datagram of an unknown flow is dropped).
    pub(super) accepts: bool,
    /// A demux's attached peers (a shared socket keeps its own table).
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
        self.add_listener(Port::Demux(demux), Some(door), true)
    }

    /// Serves DTLS on one socket shared by every peer ([`SharedSocket`]): no
    /// descriptor and no system call per peer; each `recvmmsg` of the socket
    /// serves many peers and what they are owed leaves in `sendmmsg` calls
    /// addressed to many. The same front door, caps and handler as
    /// [`Reactor::listen`]. The socket can also carry client sessions
    /// ([`Reactor::connect_via`]).
    pub fn listen_shared(
        &mut self,
        socket: Arc<SharedSocket>,
        config: &ServerConfig,
    ) -> Result<ListenerId> {
        let door = FrontDoor::new(config, &self.inner.stats.admission)?;
        self.add_listener(Port::Shared(socket), Some(door), true)
    }

    /// Plain UDP (see [`Reactor::listen_plain`]) on a shared socket: the
    /// baseline for [`Reactor::listen_shared`].
    pub fn listen_plain_shared(&mut self, socket: Arc<SharedSocket>) -> Result<ListenerId> {
        self.add_listener(Port::Shared(socket), None, true)
    }

    /// Puts a shared socket in the loop for client sessions only
    /// ([`Reactor::connect_via`]): many sessions on one socket, told apart by
    /// their [`Flow`](dtls_demux::Flow) (the server's address, and the local
    /// address on a socket bound to a wildcard address). Datagrams of flows
    /// without a session are dropped (counted by the socket as unknown).
    pub fn add_client_socket(&mut self, socket: Arc<SharedSocket>) -> Result<ListenerId> {
        self.add_listener(Port::Shared(socket), None, false)
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
        self.add_listener(Port::Demux(demux), None, true)
    }

    fn add_listener(
        &mut self,
        port: Port,
        door: Option<FrontDoor>,
        accepts: bool,
    ) -> Result<ListenerId> {
        port.socket().set_nonblocking(true)?;
        let want = self.inner.limits.listener_recv_buffer;
        if want > 0 {
            let sock = socket2::SockRef::from(port.socket());
            if sock.recv_buffer_size().map_or(true, |have| have < want) {
                if let Err(e) = sock.set_recv_buffer_size(want) {
                    log::warn!("reactor: SO_RCVBUF {want} on the listener: {e}");
                }
            }
            // A shared socket sends for every peer too.
            if matches!(port, Port::Shared(_))
                && sock.send_buffer_size().map_or(true, |have| have < want)
            {
                if let Err(e) = sock.set_send_buffer_size(want) {
                    log::warn!("reactor: SO_SNDBUF {want} on the shared socket: {e}");
                }
            }
        }
        let li = self.inner.listeners.len();
        if LISTENER_BASE + li >= SOURCE_BASE {
            return Err(Error::Io(io::Error::other("reactor: too many listeners")));
        }
        let fd = port.fd();
        self.inner.poll.registry().register(
            &mut SourceFd(&fd),
            Token(LISTENER_BASE + li),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.inner.listeners.push(Listener {
            port,
            door,
            accepts,
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
            .and_then(|l| l.port.local_addr())
    }
}
