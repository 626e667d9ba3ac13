//! An entry's life cycle: what a connection's slab entry holds ([`Entry`],
//! its I/O [`Io`]), and the one start and one end of a connection's life on
//! it (insert, restart, remove).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use dtls_demux::batch::{self, RecvBatch, Transmit};
use dtls_demux::{Flow, Link, SharedSocket};
use mio::{Interest, Token};

use super::listener::Port;
use super::session::{Plain, Session};
use super::{CloseCause, ConnId, Handler, Inner, ListenerId, Reactor, SharedStats, LINGER_READS};
use crate::config::ClientConfig;
use crate::conn::{Connection, Role};
use crate::error::{Error, Result};

/// How an entry reaches its peer.
pub(super) enum Io {
    /// A demux's link (a descriptor of its own, registered under the entry's key).
    Link(Link),
    /// A client's own connected socket (registered likewise).
    Socket(mio::net::UdpSocket),
    /// A flow of the shared socket of listener `li`: no descriptor; the
    /// listener's reads hand the entry its datagrams.
    Shared {
        li: usize,
        socket: Arc<SharedSocket>,
        flow: Flow,
    },
}

impl Io {
    pub(super) fn send(&self, d: &[u8]) -> io::Result<usize> {
        match self {
            Io::Link(l) => l.send(d),
            Io::Socket(s) => s.send(d),
            Io::Shared { socket, flow, .. } => socket.send_to(d, *flow),
        }
    }
    /// Sends the first datagrams of `d` in one system call; how many went.
    pub(super) fn send_batch(&self, d: &[&[u8]]) -> io::Result<usize> {
        match self {
            Io::Link(l) => l.send_batch(d),
            Io::Socket(s) => batch::send_batch(s, None, d),
            Io::Shared { socket, flow, .. } => socket.send_on(*flow, d),
        }
    }
    /// Reads a batch of datagrams (memory queue first for links). A shared
    /// flow has nothing of its own to read: its listener's reads feed it.
    pub(super) fn recv_batch(&self, b: &mut RecvBatch) -> io::Result<usize> {
        match self {
            Io::Link(l) => l.recv_batch(b),
            Io::Socket(s) => batch::recv_batch(s, b),
            Io::Shared { .. } => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    /// Lets the kernel coalesce the peer's equal-size datagrams (this socket is only
    /// ever read with `recv_batch`, which splits them again).
    pub(super) fn enable_gro(&self) {
        let r = match self {
            Io::Link(l) => l.enable_gro(),
            Io::Socket(s) => batch::enable_gro(s),
            // The shared socket turned it on when it was made.
            Io::Shared { .. } => Ok(()),
        };
        if let Err(e) = r {
            log::debug!("reactor: UDP GRO not enabled: {e}");
        }
    }
    pub(super) fn has_queued(&self) -> bool {
        match self {
            Io::Link(l) => l.has_queued(),
            Io::Socket(_) | Io::Shared { .. } => false,
        }
    }
    /// The shared socket's listener, for a shared flow.
    pub(super) fn shared_listener(&self) -> Option<usize> {
        match self {
            Io::Shared { li, .. } => Some(*li),
            _ => None,
        }
    }
    /// The datagram `d` to this shared flow, for a gathered send.
    pub(super) fn transmit<'a>(&self, d: &'a [u8]) -> Option<Transmit<'a>> {
        match self {
            Io::Shared { socket, flow, .. } => Some(socket.transmit(*flow, d)),
            _ => None,
        }
    }
}

pub(super) struct Entry {
    pub(super) conn: Session,
    pub(super) io: Io,
    pub(super) gen: u64,
    pub(super) peer: SocketAddr,
    pub(super) listener: Option<usize>,
    pub(super) blocked: bool,
    /// In `Inner::unflushed`.
    pub(super) unflushed: bool,
    /// In the ready queue.
    pub(super) queued: bool,
    /// on_close was called.
    pub(super) closed: bool,
    pub(super) forced: Option<CloseCause>,
    pub(super) last_rx: Instant,
    pub(super) dtls_armed: Option<(Instant, u64)>,
    pub(super) idle_armed: Option<(Instant, u64)>,
    /// The quiet check; `None` after a shrink until the next datagram.
    pub(super) shrink_armed: Option<(Instant, u64)>,
}

impl Inner {
    /// Registers `io` (readable and writable, edge-triggered, under the slab
    /// key as token; a shared flow: in its socket's table under the key) and
    /// puts a new entry in the slab; a connection's life starts on it
    /// ([`Inner::start`]).
    pub(super) fn insert(
        &mut self,
        conn: Session,
        mut io: Io,
        peer: SocketAddr,
        listener: Option<usize>,
    ) -> io::Result<ConnId> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Token(key);
        let interest = Interest::READABLE | Interest::WRITABLE;
        match &mut io {
            Io::Link(l) => self.poll.registry().register(l, token, interest)?,
            Io::Socket(s) => self.poll.registry().register(s, token, interest)?,
            // In the socket's table under the key: its reads find the entry.
            Io::Shared { socket, flow, .. } => socket.attach(*flow, key as u64)?,
        }
        io.enable_gro();
        entry.insert(Entry {
            conn,
            io,
            gen: 0,
            peer,
            listener,
            blocked: false,
            unflushed: false,
            queued: false,
            closed: false,
            forced: None,
            last_rx: Instant::now(),
            dtls_armed: None,
            idle_armed: None,
            shrink_armed: None,
        });
        Ok(self.start(key))
    }

    /// The one start of a connection's life on entry `key` (a new entry, or
    /// a restart that keeps the entry and its link): a new generation, so a
    /// new [`ConnId`]; not closed, nothing forced, `last_rx` now. The entry
    /// holds no timer here (new, or after [`Inner::end`]); its DTLS timer,
    /// which also carries the engine's handshake limits, is armed when it is
    /// settled.
    fn start(&mut self, key: usize) -> ConnId {
        self.next_gen += 1;
        let gen = self.next_gen;
        let now = Instant::now();
        let e = &mut self.conns[key];
        e.gen = gen;
        e.closed = false;
        e.forced = None;
        e.last_rx = now;
        self.gauge();
        ConnId { key, gen }
    }

    /// The one end of a connection's life on entry `key` (before its removal,
    /// or a restart that keeps the entry): every timer it armed goes, and it
    /// is counted closed.
    fn end(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        self.disarm_all(key);
        SharedStats::inc(&self.stats.closed);
    }

    pub(super) fn connect(&mut self, addr: SocketAddr, config: &ClientConfig) -> Result<ConnId> {
        self.connect_with(addr, Some(config))
    }

    /// A client session to `addr`: DTLS with a configuration, plain UDP without.
    pub(super) fn connect_with(
        &mut self,
        addr: SocketAddr,
        config: Option<&ClientConfig>,
    ) -> Result<ConnId> {
        let slot = self.stats.admission.take(false).map_err(|cap| {
            log::debug!("reactor: connect to {addr} refused: {cap}");
            Error::Limit(cap)
        })?;
        let local: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = mio::net::UdpSocket::bind(local)?;
        sock.connect(addr)?;
        self.start_client(conn_for(config, addr, slot)?, Io::Socket(sock), addr)
    }

    /// A client session to `addr` on the shared socket of listener `via`
    /// (see [`Reactor::connect_via`]).
    pub(super) fn connect_via(
        &mut self,
        via: ListenerId,
        local: Option<IpAddr>,
        addr: SocketAddr,
        config: Option<&ClientConfig>,
    ) -> Result<ConnId> {
        let socket = match self.listeners.get(via.0).map(|l| &l.port) {
            Some(Port::Shared(s)) => s.clone(),
            _ => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a shared socket of this reactor",
                )))
            }
        };
        let flow = socket.flow(local, addr)?;
        let slot = self.stats.admission.take(false).map_err(|cap| {
            log::debug!("reactor: connect to {addr} refused: {cap}");
            Error::Limit(cap)
        })?;
        let io = Io::Shared {
            li: via.0,
            socket,
            flow,
        };
        self.start_client(conn_for(config, addr, slot)?, io, addr)
    }

    /// A new client entry: in the slab, counted, its first flight out.
    fn start_client(&mut self, conn: Session, io: Io, addr: SocketAddr) -> Result<ConnId> {
        let id = self.insert(conn, io, addr, None)?;
        SharedStats::inc(&self.stats.connects);
        self.flush(id.key);
        self.dirty.push_back(id.key);
        Ok(id)
    }

    /// Ends the connection on entry `key` and removes the entry: the link
    /// reads what lingers (OsNet), is deregistered and leaves the listener's
    /// peer map; a shared flow leaves its socket's table.
    pub(super) fn remove(&mut self, key: usize) {
        self.end(key);
        let Some(mut e) = self.conns.try_remove(key) else {
            return;
        };
        if let Io::Link(l) = &e.io {
            // OsNet on IPv4 can queue other peers' datagrams on a per-peer socket (see
            // `Demux::has_buffered`); read what waits before the socket closes, so the
            // demux keeps those as strays for the listener instead of losing them. The
            // peer's own datagrams are discarded: its connection is gone.
            if l.kind() == dtls_demux::DemuxKind::OsNet {
                let mut b = self.batch.take().unwrap_or_else(|| RecvBatch::new(1));
                for _ in 0..LINGER_READS.div_ceil(b.slots()) {
                    if l.recv_batch(&mut b).is_err() {
                        break;
                    }
                }
                b.clear();
                self.batch = Some(b);
            }
        }
        let r = match &mut e.io {
            Io::Link(l) => self.poll.registry().deregister(l),
            Io::Socket(s) => self.poll.registry().deregister(s),
            Io::Shared { socket, flow, .. } => {
                socket.detach(*flow);
                Ok(())
            }
        };
        if let Err(err) = r {
            log::warn!("reactor: deregister of {} failed: {err}", e.peer);
        }
        if let Some(li) = e.listener {
            if let Io::Link(l) = &e.io {
                self.listeners[li].peers.remove(&l.peer_addr());
            }
        }
        self.gauge();
        // Dropping the entry drops the link: the demux detaches the peer.
    }
}

/// A client session to `addr`: DTLS with a configuration, plain UDP without.
fn conn_for(
    config: Option<&ClientConfig>,
    addr: SocketAddr,
    slot: crate::admission::Slot,
) -> Result<Session> {
    Ok(match config {
        Some(c) => {
            let mut conn = Connection::client_to(c, None, Some(addr))?;
            conn.put_slot(slot);
            Session::Dtls(Box::new(conn))
        }
        None => Session::Plain(Box::new(Plain::new(Role::Client, slot))),
    })
}

impl<H: Handler> Reactor<H> {
    /// The restarted peer of server connection `key` was accepted: the old
    /// connection ends (`on_close` with [`CloseCause::PeerRestarted`], no
    /// close_notify) and `conn` takes over its slab entry and link under a
    /// new id.
    pub(super) fn replace(&mut self, key: usize, conn: Connection) {
        let Some(peer) = self.inner.conns.get(key).map(|e| e.peer) else {
            return;
        };
        if !self.tell_closed(key, &CloseCause::PeerRestarted) {
            return;
        }
        let inner = &mut self.inner;
        let Some(e) = inner.conns.get_mut(key) else {
            return;
        };
        e.conn = Session::Dtls(Box::new(conn));
        inner.end(key);
        let id = inner.start(key);
        SharedStats::inc(&inner.stats.accepted);
        log::debug!("reactor: {peer} restarted as {id}");
        // The server's first flight.
        inner.flush(key);
    }
}
