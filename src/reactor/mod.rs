//! The single-threaded mio reactor: see [`Reactor`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::record::Datagram;
use crossbeam_channel::{Receiver, TryRecvError};
use dtls_demux::batch::{self, RecvBatch};
use dtls_demux::{Demux, Incoming, Link, Route};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::admission::Count;
use crate::config::{ClientConfig, ServerConfig};
use crate::conn::{CloseReason, Connection, Event, PeerCertificate, Role};
use crate::error::{Error, Result};
use crate::{Admission, AdmissionLimits, Admit, FrontDoor, Refusal};

mod handle;
mod session;
mod timer;

use handle::Command;
pub use handle::ReactorHandle;
use session::{Plain, Session};
use timer::{Timer, Timers};

const WAKER: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX / 2;
/// Largest datagram read from a socket.
const RECV_BUF: usize = 65_536;
/// Most datagrams read from a closing OsNet link before it is dropped.
const LINGER_READS: usize = 64;
/// Messages per `recvmmsg` of a connection's socket (each up to 64 KiB, a GRO
/// message possibly many datagrams).
const RECV_SLOTS: usize = 32;

/// Identifies one connection of a reactor. Ids are never reused: a stale id
/// names no connection (calls with it fail or return `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    key: usize,
    gen: u64,
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
pub struct TimerId(u64);

/// Why a connection of the reactor ended ([`Handler::on_close`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer sent close_notify.
    PeerClosed,
    /// The application closed it ([`Ctx::close`], [`ReactorHandle::close`]).
    Local,
    /// The handshake did not finish in time (the reactor's
    /// [`Limits::handshake_timeout`] or the configuration's deadline).
    HandshakeTimeout,
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

/// Limits that protect a server, with protective defaults. What happens at
/// each is counted in [`ReactorStats`] and logged with `log::debug!`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Most connections (server and client) at once; a peer that passes the
    /// cookie beyond it is dropped (it may retry). Default 10,000.
    pub max_connections: usize,
    /// Most server connections still in their handshake (half-open); a peer
    /// that passes the cookie beyond it is dropped. Default 1,000.
    pub max_handshakes: usize,
    /// Time a handshake may take from the first datagram that created the
    /// connection; `None` leaves only the configuration's deadline. Default 10 s.
    pub handshake_timeout: Option<Duration>,
    /// Close an established connection when nothing arrived from the peer for
    /// this long (close_notify is sent); `None` for never. Default 300 s.
    pub idle_timeout: Option<Duration>,
    /// Most datagrams read from one socket per turn, checked between batched
    /// reads: one read returns up to 32 messages, and with UDP GRO a message can
    /// carry a run of up to 64 datagrams, all handled in that turn. Default 64.
    pub datagrams_per_turn: usize,
    /// An established connection that received nothing for this long gives
    /// its buffers back ([`Connection::shrink`]: OpenSSL's record buffers,
    /// about 20 KiB each); the next datagram takes them again. `None`: never.
    /// Default 2 s.
    pub shrink_after: Option<Duration>,
    /// Receive buffer (`SO_RCVBUF`) asked for each listener, in bytes; the
    /// kernel caps it (`net.core.rmem_max` on Linux); 0 leaves the system
    /// default. Every new peer's first datagrams, and all of Router's
    /// traffic, queue there: default 4 MiB.
    pub listener_recv_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_handshakes: 1_000,
            handshake_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(300)),
            datagrams_per_turn: 64,
            shrink_after: Some(Duration::from_secs(2)),
            listener_recv_buffer: 4 << 20,
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_connections`] (at least 1).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.clamp(1, LISTENER_BASE - 1);
        self
    }
    /// Sets [`Limits::max_handshakes`] (at least 1).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }
    /// Sets [`Limits::handshake_timeout`].
    pub fn handshake_timeout(mut self, d: Option<Duration>) -> Self {
        self.handshake_timeout = d;
        self
    }
    /// Sets [`Limits::idle_timeout`].
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.idle_timeout = d;
        self
    }
    /// Sets [`Limits::listener_recv_buffer`].
    pub fn listener_recv_buffer(mut self, bytes: usize) -> Self {
        self.listener_recv_buffer = bytes;
        self
    }
    /// Sets [`Limits::shrink_after`].
    pub fn shrink_after(mut self, d: Option<Duration>) -> Self {
        self.shrink_after = d;
        self
    }
    /// Sets [`Limits::datagrams_per_turn`] (at least 1).
    pub fn datagrams_per_turn(mut self, n: usize) -> Self {
        self.datagrams_per_turn = n.max(1);
        self
    }
}

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
            $($f: AtomicU64,)*
            /// The caps and admission counters of the reactor's front doors.
            admission: Admission,
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
    /// Connections closed by a handshake deadline.
    handshake_timeouts,
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
    fn inc(f: &AtomicU64) {
        f.fetch_add(1, Ordering::Relaxed);
    }
    fn add(f: &AtomicU64, n: u64) {
        f.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    fn gauge(&self, conns: usize) {
        self.connections.store(conns as u64, Ordering::Relaxed);
        self.peak_connections
            .fetch_max(conns as u64, Ordering::Relaxed);
    }
}

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
}

enum Io {
    Link(Link),
    Socket(mio::net::UdpSocket),
}

impl Io {
    fn send(&self, d: &[u8]) -> io::Result<usize> {
        match self {
            Io::Link(l) => l.send(d),
            Io::Socket(s) => s.send(d),
        }
    }
    /// Sends the first datagrams of `d` in one system call; how many went.
    fn send_batch(&self, d: &[&[u8]]) -> io::Result<usize> {
        match self {
            Io::Link(l) => l.send_batch(d),
            Io::Socket(s) => batch::send_batch(s, None, d),
        }
    }
    /// Reads a batch of datagrams (memory queue first for links).
    fn recv_batch(&self, b: &mut RecvBatch) -> io::Result<usize> {
        match self {
            Io::Link(l) => l.recv_batch(b),
            Io::Socket(s) => batch::recv_batch(s, b),
        }
    }
    /// Lets the kernel coalesce the peer's equal-size datagrams (this socket is only
    /// ever read with `recv_batch`, which splits them again).
    fn enable_gro(&self) {
        let r = match self {
            Io::Link(l) => l.enable_gro(),
            Io::Socket(s) => batch::enable_gro(s),
        };
        if let Err(e) = r {
            log::debug!("reactor: UDP GRO not enabled: {e}");
        }
    }
    fn has_queued(&self) -> bool {
        match self {
            Io::Link(l) => l.has_queued(),
            Io::Socket(_) => false,
        }
    }
}

struct Entry {
    conn: Session,
    io: Io,
    gen: u64,
    peer: SocketAddr,
    listener: Option<usize>,
    blocked: bool,
    /// In `Inner::unflushed`.
    unflushed: bool,
    /// In the ready queue.
    queued: bool,
    /// on_close was called.
    closed: bool,
    forced: Option<CloseCause>,
    last_rx: Instant,
    dtls_armed: Option<(Instant, u64)>,
    hs_armed: Option<(Instant, u64)>,
    idle_armed: Option<(Instant, u64)>,
    /// The quiet check; `None` after a shrink until the next datagram.
    shrink_armed: Option<(Instant, u64)>,
}

struct Listener {
    demux: Arc<dyn Demux>,
    /// `None` for a plain UDP listener.
    door: Option<FrontDoor>,
    peers: HashMap<SocketAddr, usize>,
    pending: bool,
}

/// Everything but the handler: what a [`Ctx`] works on.
struct Inner {
    poll: Poll,
    conns: Slab<Entry>,
    listeners: Vec<Listener>,
    timers: Timers,
    user_timers: HashMap<u64, (Instant, u64, u64)>,
    next_timer: u64,
    next_gen: u64,
    ready: VecDeque<usize>,
    dirty: VecDeque<usize>,
    blocked: Vec<usize>,
    limits: Limits,
    stats: Arc<SharedStats>,
    rx: Receiver<Command>,
    handle: ReactorHandle,
    stopping: bool,
    stopped: bool,
    /// Receive buffers of `read_conn` (taken out while it runs) and of the
    /// last reads of a closing link.
    batch: Option<RecvBatch>,
    /// Receive buffers of `drain_listener`.
    lbatch: Option<RecvBatch>,
    /// Connections whose queued datagrams wait for the end of the handler
    /// callback (one batched send instead of one per record).
    unflushed: Vec<usize>,
}

/// The reactor's services inside a [`Handler`] callback.
pub struct Ctx<'a> {
    inner: &'a mut Inner,
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
}

impl Inner {
    fn entry(&self, id: ConnId) -> Option<&Entry> {
        self.conns.get(id.key).filter(|e| e.gen == id.gen)
    }

    fn entry_mut(&mut self, id: ConnId) -> Option<&mut Entry> {
        self.conns.get_mut(id.key).filter(|e| e.gen == id.gen)
    }

    fn id(&self, key: usize) -> Option<ConnId> {
        self.conns.get(key).map(|e| ConnId { key, gen: e.gen })
    }

    fn mark_ready(&mut self, key: usize) {
        if let Some(e) = self.conns.get_mut(key) {
            if !e.queued {
                e.queued = true;
                self.ready.push_back(key);
            }
        }
    }

    fn gauge(&self) {
        self.stats.gauge(self.conns.len());
    }

    fn send(&mut self, id: ConnId, data: &[u8]) -> Result<()> {
        let e = self.entry_mut(id).ok_or(Error::NotConnected)?;
        if e.closed {
            return Err(Error::Closed);
        }
        if e.blocked {
            return Err(Error::WouldBlock);
        }
        let r = e.conn.send(data);
        if r.is_err() {
            self.flush(id.key);
            self.dirty.push_back(id.key);
        } else if e.conn.transmit_len() >= batch::MAX_SEND {
            self.flush(id.key);
        } else if !e.unflushed {
            e.unflushed = true;
            self.unflushed.push(id.key);
        }
        r.map(|_| ())
    }

    fn close(&mut self, id: ConnId) {
        if let Some(e) = self.entry_mut(id) {
            e.conn.close();
            self.flush(id.key);
            self.dirty.push_back(id.key);
        }
    }

    /// Sends what the connection has queued, a batch per system call, until the
    /// socket would block.
    fn flush(&mut self, key: usize) {
        let Some(e) = self.conns.get_mut(key) else {
            return;
        };
        e.unflushed = false;
        loop {
            // Mostly one or two datagrams wait: a small array, else a full one.
            let mut small: [&[u8]; 4] = [&[]; 4];
            let mut full: [&[u8]; batch::MAX_SEND];
            let out: &mut [&[u8]] = if e.conn.transmit_len() <= small.len() {
                &mut small
            } else {
                full = [&[]; batch::MAX_SEND];
                &mut full
            };
            let n = e.conn.transmits(out);
            if n == 0 {
                break;
            }
            match e.io.send_batch(&out[..n]) {
                Ok(sent) => {
                    e.conn.pop_transmits(sent);
                    SharedStats::add(&self.stats.datagrams_out, sent as u64);
                    SharedStats::inc(&self.stats.send_batches);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if !e.blocked {
                        e.blocked = true;
                        self.blocked.push(key);
                        SharedStats::inc(&self.stats.blocked);
                    }
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    e.conn.pop_transmits(1);
                    SharedStats::inc(&self.stats.send_errors);
                    log::debug!("reactor: send to {} failed: {err}", e.peer);
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected
                    ) && e.forced.is_none()
                        && !e.closed
                    {
                        e.forced =
                            Some(CloseCause::Failed(Error::PeerUnreachable(err).to_string()));
                        self.dirty.push_back(key);
                        break;
                    }
                }
            }
        }
    }

    /// Flushes every connection a handler sent on since the last call.
    fn flush_unflushed(&mut self) {
        while let Some(key) = self.unflushed.pop() {
            if self.conns.get(key).is_some_and(|e| e.unflushed) {
                self.flush(key);
            }
        }
    }

    /// Sends one datagram that belongs to no connection's DTLS state (a
    /// HelloVerifyRequest, an alert) on `key`'s socket; a failure is counted.
    fn send_raw(&mut self, key: usize, d: &[u8]) {
        let Some(e) = self.conns.get(key) else {
            return;
        };
        match e.io.send(d) {
            Ok(_) => SharedStats::inc(&self.stats.datagrams_out),
            Err(err) => {
                SharedStats::inc(&self.stats.send_errors);
                log::debug!("reactor: send to {} failed: {err}", e.peer);
            }
        }
    }

    /// Sends a front door's reply to a peer that has no connection (through
    /// the listener).
    fn send_to(&mut self, demux: &Arc<dyn Demux>, d: &[u8], peer: SocketAddr) {
        match demux.send_to(d, peer) {
            Ok(_) => SharedStats::inc(&self.stats.datagrams_out),
            Err(e) => {
                SharedStats::inc(&self.stats.send_errors);
                log::debug!("reactor: reply to {peer} failed: {e}");
            }
        }
    }

    fn set_timer(&mut self, after: Duration, token: u64) -> TimerId {
        self.next_timer += 1;
        let id = self.next_timer;
        let at = Instant::now() + after;
        let seq = self.timers.insert(at, Timer::User { id });
        self.user_timers.insert(id, (at, seq, token));
        TimerId(id)
    }

    fn cancel_timer(&mut self, t: TimerId) -> bool {
        match self.user_timers.remove(&t.0) {
            Some((at, seq, _)) => {
                self.timers.remove(at, seq);
                true
            }
            None => false,
        }
    }

    fn insert(
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
        }
        io.enable_gro();
        self.next_gen += 1;
        let gen = self.next_gen;
        entry.insert(Entry {
            conn,
            io,
            gen,
            peer,
            listener,
            blocked: false,
            unflushed: false,
            queued: false,
            closed: false,
            forced: None,
            last_rx: Instant::now(),
            dtls_armed: None,
            hs_armed: None,
            idle_armed: None,
            shrink_armed: None,
        });
        if let Some(d) = self.limits.handshake_timeout {
            let at = Instant::now() + d;
            let seq = self.timers.insert(at, Timer::Handshake { key, gen });
            self.conns[key].hs_armed = Some((at, seq));
        }
        self.gauge();
        Ok(ConnId { key, gen })
    }

    fn connect(&mut self, addr: SocketAddr, config: &ClientConfig) -> Result<ConnId> {
        self.connect_with(addr, Some(config))
    }

    /// A client session to `addr`: DTLS with a configuration, plain UDP without.
    fn connect_with(&mut self, addr: SocketAddr, config: Option<&ClientConfig>) -> Result<ConnId> {
        let slot = self.stats.admission.client_slot().map_err(|cap| {
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
        let conn = match config {
            Some(c) => {
                let mut conn = Connection::client_to(c, None, Some(addr))?;
                conn.set_slot(slot);
                Session::Dtls(Box::new(conn))
            }
            None => Session::Plain(Box::new(Plain::new(Role::Client, slot))),
        };
        let id = self.insert(conn, Io::Socket(sock), addr, None)?;
        SharedStats::inc(&self.stats.connects);
        self.flush(id.key);
        self.dirty.push_back(id.key);
        Ok(id)
    }

    /// Re-arms the connection's DTLS timer from its deadline.
    fn rearm(&mut self, key: usize) {
        let Some(e) = self.conns.get_mut(key) else {
            return;
        };
        let want = e.conn.deadline();
        match (want, e.dtls_armed) {
            (None, Some((at, seq))) => {
                self.timers.remove(at, seq);
                e.dtls_armed = None;
            }
            (Some(w), Some((at, _))) if at <= w => {}
            (Some(w), old) => {
                if let Some((at, seq)) = old {
                    self.timers.remove(at, seq);
                }
                let seq = self.timers.insert(w, Timer::Dtls { key, gen: e.gen });
                e.dtls_armed = Some((w, seq));
            }
            (None, None) => {}
        }
    }

    /// Arms the quiet check of an established connection at `from` +
    /// `shrink_after` (replacing an armed one).
    fn arm_shrink(&mut self, key: usize, from: Instant) {
        if let Some(after) = self.limits.shrink_after {
            self.arm(
                key,
                from + after,
                |e| &mut e.shrink_armed,
                |key, gen| Timer::Shrink { key, gen },
            );
        }
    }

    fn arm_idle(&mut self, key: usize, from: Instant) {
        if let Some(idle) = self.limits.idle_timeout {
            self.arm(
                key,
                from + idle,
                |e| &mut e.idle_armed,
                |key, gen| Timer::Idle { key, gen },
            );
        }
    }

    /// Arms the timer `make(key, gen)` of connection `key` at `at`, replacing the
    /// one recorded in the entry's `slot`.
    fn arm(
        &mut self,
        key: usize,
        at: Instant,
        slot: fn(&mut Entry) -> &mut Option<(Instant, u64)>,
        make: fn(usize, u64) -> Timer,
    ) {
        let Some(e) = self.conns.get_mut(key) else {
            return;
        };
        if let Some((old, seq)) = slot(e).take() {
            self.timers.remove(old, seq);
        }
        let seq = self.timers.insert(at, make(key, e.gen));
        *slot(e) = Some((at, seq));
    }

    fn remove(&mut self, key: usize) {
        let Some(mut e) = self.conns.try_remove(key) else {
            return;
        };
        for (at, seq) in [e.dtls_armed, e.hs_armed, e.idle_armed, e.shrink_armed]
            .into_iter()
            .flatten()
        {
            self.timers.remove(at, seq);
        }
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
        };
        if let Err(err) = r {
            log::debug!("reactor: deregister of {} failed: {err}", e.peer);
        }
        if let Some(li) = e.listener {
            if let Io::Link(l) = &e.io {
                self.listeners[li].peers.remove(&l.peer_addr());
            }
        }
        SharedStats::inc(&self.stats.closed);
        self.gauge();
        // Dropping the entry drops the link: the demux detaches the peer.
    }
}

/// A single-threaded mio reactor serving many DTLS peers.
///
/// A [`Reactor`] owns a mio `Poll`, any number of listeners (a
/// [`dtls_demux::Demux`] each, with its [`FrontDoor`]), client connections,
/// a slab of [`Connection`]s and one timer structure. The application reacts
/// to what happens through a [`Handler`] (asyncore's dispatcher, as a trait
/// with default methods); every callback gets a [`Ctx`] to send, close, query
/// a connection, set timers and connect. Other threads use a
/// [`ReactorHandle`].
///
/// One turn of the loop:
/// 1. wait in `poll` until a socket is ready, a command arrives, or the
///    earliest deadline passes (no wait when work is left from the last turn);
/// 2. read every ready socket in batches (`recvmmsg`; on Linux with UDP GRO)
///    until a batch comes back short or the socket is empty, at most
///    [`Limits::datagrams_per_turn`] datagrams each, checked between batches
///    (the rest waits for the next turn, so one busy peer cannot starve the
///    others): listeners through the demux and the front door, links and
///    client sockets into their connection; each datagram's plaintext is
///    delivered at once, and after each batch (and after each callback) the
///    connection's datagrams leave in one `sendmmsg`;
/// 3. serve memory queues polling cannot see (the demux's stray queue, link
///    memory queues, Router in memory) and work left over from step 2;
/// 4. fire due timers (DTLS retransmission, handshake deadline, idle timeout,
///    user timers); run commands from other threads.
///
/// ```
/// use std::net::SocketAddr;
/// use dtls_reactor::{ClientConfig, ConnId, Ctx, Handler, Reactor, ServerConfig};
///
/// // A server that echoes, and a client in the same reactor that stops it.
/// struct Echo { got: Option<Vec<u8>> }
/// impl Handler for Echo {
///     fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
///         if ctx.is_client(id) { ctx.send(id, b"hello").unwrap(); }
///     }
///     fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
///         if ctx.is_client(id) {
///             self.got = Some(data.to_vec());
///             ctx.stop();
///         } else {
///             ctx.send(id, data).unwrap();
///         }
///     }
/// }
/// # let (cert_pem, key_pem) = include!("../doc_pki.rs");
/// let server = ServerConfig::builder()
///     .certificate_chain_pem(&cert_pem)
///     .private_key_pem(&key_pem)
///     .build().unwrap();
/// let client = ClientConfig::builder()
///     .ca_pem(&cert_pem) // self-signed: its own CA
///     .server_name("localhost").build().unwrap();
/// let demux = dtls_demux::bind(Default::default(), "127.0.0.1:0".parse().unwrap()).unwrap();
/// let addr: SocketAddr = demux.local_addr().unwrap();
/// let mut reactor = Reactor::new(Echo { got: None }).unwrap();
/// reactor.listen(demux, &server).unwrap();
/// reactor.connect(addr, &client).unwrap();
/// reactor.run().unwrap();
/// assert_eq!(reactor.handler().got.as_deref(), Some(&b"hello"[..]));
/// ```
pub struct Reactor<H: Handler> {
    inner: Inner,
    handler: H,
    events: Events,
    tokens: Vec<(Token, bool, bool)>,
    /// What `drain_listener`'s last batch held.
    received: Vec<dtls_demux::Received>,
    plain: Vec<u8>,
}

impl<H: Handler + fmt::Debug> fmt::Debug for Reactor<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("handler", &self.handler)
            .field("connections", &self.inner.conns.len())
            .field("listeners", &self.inner.listeners.len())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Reactor<H> {
    /// A reactor with the default [`Limits`].
    pub fn new(handler: H) -> Result<Self> {
        Self::with_limits(handler, Limits::default())
    }

    /// A reactor with the given limits.
    pub fn with_limits(handler: H, limits: Limits) -> Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let admission = Admission::new(
            AdmissionLimits::default()
                .max_connections(limits.max_connections)
                .max_handshakes(limits.max_handshakes),
        );
        let stats = Arc::new(SharedStats {
            admission,
            ..SharedStats::default()
        });
        let handle = ReactorHandle {
            tx,
            waker,
            stats: stats.clone(),
        };
        Ok(Reactor {
            inner: Inner {
                poll,
                conns: Slab::new(),
                listeners: Vec::new(),
                timers: Timers::default(),
                user_timers: HashMap::new(),
                next_timer: 0,
                next_gen: 0,
                ready: VecDeque::new(),
                dirty: VecDeque::new(),
                blocked: Vec::new(),
                limits,
                stats,
                rx,
                handle,
                stopping: false,
                stopped: false,
                batch: Some(RecvBatch::new(RECV_SLOTS)),
                lbatch: Some(RecvBatch::new(RECV_SLOTS)),
                unflushed: Vec::new(),
            },
            handler,
            events: Events::with_capacity(1024),
            tokens: Vec::with_capacity(1024),
            received: Vec::with_capacity(RECV_SLOTS),
            plain: vec![0u8; RECV_BUF],
        })
    }

    /// Serves DTLS on `demux`'s listener with `config` (the listener is made
    /// non-blocking and registered).
    pub fn listen(&mut self, demux: Arc<dyn Demux>, config: &ServerConfig) -> Result<ListenerId> {
        let door = FrontDoor::new(config, &self.inner.stats.admission)?;
        self.add_listener(demux, Some(door))
    }

    /// Gives DTLS listener `listener` a new configuration for every handshake
    /// from now on (a new certificate, new settings) without a restart;
    /// established connections keep theirs. `InvalidInput` for a plain or
    /// unknown listener.
    pub fn set_listener_config(
        &mut self,
        listener: ListenerId,
        config: &ServerConfig,
    ) -> Result<()> {
        match self
            .inner
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

    /// Serves plain UDP (no DTLS) on `demux`'s listener: every datagram from a
    /// new peer creates a session at once (after [`Handler::on_accept`] and
    /// the limits), whose datagrams reach [`Handler::on_data`] unchanged. The
    /// baseline of benchmarks: the same loop, links and limits, without DTLS.
    /// [`Ctx::connection`] is `None` for these sessions; they end by
    /// [`Ctx::close`], the idle timeout or a stop (UDP has no close message).
    pub fn listen_plain(&mut self, demux: Arc<dyn Demux>) -> Result<ListenerId> {
        self.add_listener(demux, None)
    }

    /// Starts a plain UDP client session to `addr` (see [`Reactor::listen_plain`]);
    /// [`Handler::on_connected`] follows at once.
    pub fn connect_plain(&mut self, addr: SocketAddr) -> Result<ConnId> {
        self.inner.connect_with(addr, None)
    }

    fn add_listener(
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

    /// Starts a client connection to `addr` (see [`Ctx::connect`]).
    pub fn connect(&mut self, addr: SocketAddr, config: &ClientConfig) -> Result<ConnId> {
        self.inner.connect(addr, config)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ReactorHandle {
        self.inner.handle.clone()
    }

    /// Calls [`Handler::on_timer`] with `token` after `after` (see [`Ctx::set_timer`]).
    pub fn set_timer(&mut self, after: Duration, token: u64) -> TimerId {
        self.inner.set_timer(after, token)
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Gives the handler back.
    pub fn into_handler(self) -> H {
        self.handler
    }

    /// The reactor's counters.
    pub fn stats(&self) -> ReactorStats {
        self.inner.stats.snapshot()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.inner.conns.len()
    }

    /// The local address of a listener.
    pub fn local_addr(&self, listener: ListenerId) -> Option<SocketAddr> {
        self.inner
            .listeners
            .get(listener.0)
            .and_then(|l| l.demux.local_addr().ok())
    }

    /// True once the reactor stopped (after which [`Self::run`] returns at once).
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped
    }

    /// Runs turns until the reactor is stopped ([`Ctx::stop`],
    /// [`ReactorHandle::stop`]). Fails only if polling fails.
    pub fn run(&mut self) -> Result<()> {
        while !self.inner.stopped {
            self.turn(None)?;
        }
        Ok(())
    }

    /// Runs one turn, waiting at most `max_wait` (and never past the earliest
    /// deadline) for something to happen.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> Result<()> {
        if self.inner.stopped {
            return Ok(());
        }
        let now = Instant::now();
        let mut wait = self
            .inner
            .timers
            .next()
            .map(|at| at.saturating_duration_since(now));
        if let Some(m) = max_wait {
            wait = Some(wait.map_or(m, |t| t.min(m)));
        }
        if !self.inner.ready.is_empty()
            || !self.inner.dirty.is_empty()
            || self.inner.stopping
            || self.inner.listeners.iter().any(|l| l.pending)
        {
            wait = Some(Duration::ZERO);
        }
        match self.inner.poll.poll(&mut self.events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        self.tokens.clear();
        for ev in self.events.iter() {
            self.tokens.push((
                ev.token(),
                ev.is_readable() || ev.is_error() || ev.is_read_closed(),
                ev.is_writable(),
            ));
        }
        let mut commands = false;
        for i in 0..self.tokens.len() {
            let (token, readable, writable) = self.tokens[i];
            if token == WAKER {
                commands = true;
            } else if token.0 >= LISTENER_BASE {
                let li = token.0 - LISTENER_BASE;
                if writable {
                    self.retry_blocked(Some(li), None);
                }
                if readable {
                    self.drain_listener(li);
                }
            } else {
                if writable {
                    self.retry_blocked(None, Some(token.0));
                }
                if readable {
                    self.read_conn(token.0);
                }
            }
            self.run_dirty();
        }
        // Memory queues and left-over work.
        let n = self.inner.ready.len();
        for _ in 0..n {
            let Some(key) = self.inner.ready.pop_front() else {
                break;
            };
            if let Some(e) = self.inner.conns.get_mut(key) {
                e.queued = false;
                self.read_conn(key);
                self.run_dirty();
            }
        }
        for li in 0..self.inner.listeners.len() {
            let l = &self.inner.listeners[li];
            if l.pending || l.demux.has_buffered() {
                self.drain_listener(li);
                self.run_dirty();
            }
        }
        self.fire_timers();
        if commands || !self.inner.rx.is_empty() {
            self.commands();
        }
        self.run_dirty();
        if self.inner.stopping {
            self.shutdown();
        }
        Ok(())
    }

    fn ctx_handler(&mut self) -> (&mut H, Ctx<'_>) {
        (
            &mut self.handler,
            Ctx {
                inner: &mut self.inner,
            },
        )
    }

    fn run_dirty(&mut self) {
        self.inner.flush_unflushed();
        while let Some(key) = self.inner.dirty.pop_front() {
            self.pump(key);
        }
        self.inner.flush_unflushed();
    }

    fn retry_blocked(&mut self, listener: Option<usize>, key: Option<usize>) {
        let blocked = std::mem::take(&mut self.inner.blocked);
        let mut keep = Vec::new();
        for k in blocked {
            let matches = match (listener, key) {
                (_, Some(x)) => x == k,
                (Some(li), None) => self.inner.conns.get(k).is_some_and(|e| {
                    e.listener == Some(li) && matches!(e.io, Io::Link(ref l) if l.kind() == dtls_demux::DemuxKind::Router)
                }),
                (None, None) => false,
            };
            let Some(e) = self.inner.conns.get_mut(k) else {
                continue;
            };
            if !e.blocked {
                continue;
            }
            if !matches {
                keep.push(k);
                continue;
            }
            e.blocked = false;
            self.inner.flush(k);
            let still = self.inner.conns.get(k).is_some_and(|e| e.blocked);
            if !still {
                if let Some(id) = self.inner.id(k) {
                    let (h, mut ctx) = self.ctx_handler();
                    h.on_writable(&mut ctx, id);
                }
            }
        }
        // flush() may have pushed keys that blocked again.
        keep.append(&mut self.inner.blocked);
        self.inner.blocked = keep;
    }

    /// Reads the listener in batches up to the budget: unknown peers go to the
    /// front door, datagrams of known peers were handed to their link by the
    /// demux (a link's memory queue makes its connection ready).
    fn drain_listener(&mut self, li: usize) {
        let mut batch = self
            .inner
            .lbatch
            .take()
            .unwrap_or_else(|| RecvBatch::new(RECV_SLOTS));
        let mut got = std::mem::take(&mut self.received);
        let budget = self.inner.limits.datagrams_per_turn;
        let demux = self.inner.listeners[li].demux.clone();
        let mut done = 0;
        let mut exhausted = true;
        while done < budget {
            match demux.recv_batch(&mut batch, &mut got) {
                Ok(n) => {
                    SharedStats::add(&self.inner.stats.datagrams_in, n as u64);
                    done += n.max(1);
                    for r in &got {
                        match r.incoming {
                            Incoming::Unknown { peer, .. } => {
                                let d = batch.get(r.index);
                                match self.inner.listeners[li].peers.get(&peer) {
                                    // Attached by an earlier datagram of this batch.
                                    Some(&k) => {
                                        if demux.route(peer, d) == Route::Delivered {
                                            self.inner.mark_ready(k);
                                        }
                                    }
                                    None => self.unknown(li, &demux, peer, d),
                                }
                            }
                            Incoming::Routed {
                                peer,
                                route: Route::Delivered,
                            } => {
                                if let Some(&k) = self.inner.listeners[li].peers.get(&peer) {
                                    self.inner.mark_ready(k);
                                }
                            }
                            // Forwarded (its link socket becomes readable), or a
                            // later demux's own handling: nothing to do.
                            _ => {}
                        }
                        self.run_dirty();
                    }
                    if batch.socket_drained() && !demux.has_buffered() {
                        exhausted = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    exhausted = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    SharedStats::inc(&self.inner.stats.io_errors);
                    log::debug!("reactor: listener {li}: receive failed: {e}");
                    break;
                }
            }
        }
        batch.clear();
        got.clear();
        self.inner.lbatch = Some(batch);
        self.received = got;
        let l = &mut self.inner.listeners[li];
        l.pending = exhausted || l.demux.has_buffered();
    }

    /// A datagram from a peer without a connection on listener `li`: the
    /// front door decides; an incoming peer is put to the handler
    /// ([`Handler::on_accept`]) before its handshake starts.
    fn unknown(&mut self, li: usize, demux: &Arc<dyn Demux>, peer: SocketAddr, data: &[u8]) {
        let Some(door) = self.inner.listeners[li].door.as_mut() else {
            self.unknown_plain(li, demux, peer, data);
            return;
        };
        let incoming = match door.handle(peer, &Datagram::parse(data)) {
            Admit::Reply(r) => {
                self.inner.send_to(demux, &r, peer);
                return;
            }
            Admit::Drop(_) => return,
            Admit::Incoming(i) => i,
        };
        if !self.ask_accept(peer, li) {
            if let Some(door) = self.inner.listeners[li].door.as_mut() {
                door.refuse(incoming);
            }
            return;
        }
        let Some(door) = self.inner.listeners[li].door.as_mut() else {
            return;
        };
        match door.accept(incoming) {
            Ok(conn) => {
                self.open(li, demux, peer, Session::Dtls(Box::new(conn)));
            }
            Err(refusal) => self.refused(refusal, |inner, a| inner.send_to(demux, a, peer)),
        }
    }

    /// Plain UDP: the first datagram opens the session (within the caps, if
    /// the handler accepts) and is its first data.
    fn unknown_plain(&mut self, li: usize, demux: &Arc<dyn Demux>, peer: SocketAddr, data: &[u8]) {
        let admission = self.inner.stats.admission.clone();
        let slot = match admission.take(false) {
            Ok(s) => s,
            Err(cap) => {
                admission.dropped(cap);
                log::debug!("reactor: {peer} dropped: {cap}");
                return;
            }
        };
        if !self.ask_accept(peer, li) {
            admission.count(Count::PolicyRefused);
            return;
        }
        let conn = Session::Plain(Box::new(Plain::new(Role::Server, slot)));
        if let Some(key) = self.open(li, demux, peer, conn) {
            if let Some(e) = self.inner.conns.get_mut(key) {
                let _ = e.conn.feed(data);
            }
            self.pump(key);
        }
    }

    /// Asks the handler whether to take `peer` on listener `li`.
    fn ask_accept(&mut self, peer: SocketAddr, li: usize) -> bool {
        let (h, mut ctx) = self.ctx_handler();
        let yes = h.on_accept(&mut ctx, peer, ListenerId(li));
        if !yes {
            log::debug!("reactor: {peer} refused by the handler");
        }
        yes
    }

    /// The front door could not start a handshake: the alert goes out through
    /// `send`, the handler hears why (unless a cap filled, which is counted).
    fn refused(&mut self, r: Refusal, send: impl FnOnce(&mut Inner, &[u8])) {
        if let Some(a) = &r.alert {
            send(&mut self.inner, a);
        }
        if !matches!(r.error, Error::Limit(_)) {
            let (h, mut ctx) = self.ctx_handler();
            h.on_error(&mut ctx, None, &r.error);
        }
    }

    /// A new server session of listener `li` for `peer`: attaches its link,
    /// registers it and sends what it has queued (the first flight).
    fn open(
        &mut self,
        li: usize,
        demux: &Arc<dyn Demux>,
        peer: SocketAddr,
        conn: Session,
    ) -> Option<usize> {
        let stats = self.inner.stats.clone();
        let link = match demux.attach(peer) {
            Ok(l) => l,
            Err(e) => {
                SharedStats::inc(&stats.io_errors);
                log::debug!("reactor: attach of {peer} failed: {e}");
                return None;
            }
        };
        if let Err(e) = link.socket().set_nonblocking(true) {
            SharedStats::inc(&stats.io_errors);
            log::debug!("reactor: link of {peer}: {e}");
            return None;
        }
        let key_peer = link.peer_addr();
        let queued = link.has_queued();
        let id = match self.inner.insert(conn, Io::Link(link), peer, Some(li)) {
            Ok(id) => id,
            Err(e) => {
                SharedStats::inc(&stats.io_errors);
                log::debug!("reactor: register of {peer} failed: {e}");
                return None;
            }
        };
        SharedStats::inc(&stats.accepted);
        self.inner.listeners[li].peers.insert(key_peer, id.key);
        if queued {
            self.inner.mark_ready(id.key);
        }
        self.pump(id.key);
        Some(id.key)
    }

    /// An epoch-0 ClientHello arrived on the link of the established server
    /// connection `key` of listener `li`: the front door decides (RFC 6347
    /// section 4.2.8). Unless it lets a restarted peer in and the handler
    /// accepts it, the session stays as it is.
    fn restart(&mut self, key: usize, li: usize, d: &Datagram<'_>) {
        let inner = &mut self.inner;
        let (Some(door), Some(e)) = (inner.listeners[li].door.as_mut(), inner.conns.get_mut(key))
        else {
            return;
        };
        let Some(old) = e.conn.as_dtls() else {
            return;
        };
        let peer = e.peer;
        let incoming = match door.handle_established(old, d) {
            Admit::Reply(r) => {
                inner.send_raw(key, &r);
                return;
            }
            Admit::Drop(_) => return,
            Admit::Incoming(i) => i,
        };
        if !self.ask_accept(peer, li) {
            if let Some(door) = self.inner.listeners[li].door.as_mut() {
                door.refuse(incoming);
            }
            return;
        }
        let inner = &mut self.inner;
        let (Some(door), Some(e)) = (inner.listeners[li].door.as_mut(), inner.conns.get_mut(key))
        else {
            return;
        };
        let Some(old) = e.conn.as_dtls_mut() else {
            return;
        };
        match door.accept_restart(incoming, old) {
            Ok(conn) => self.replace(key, conn),
            Err(refusal) => self.refused(refusal, |inner, a| inner.send_raw(key, a)),
        }
    }

    /// The restarted peer of server connection `key` was accepted: the old
    /// connection ends (`on_close` with [`CloseCause::PeerRestarted`], no
    /// close_notify) and `conn` takes over its slab entry and link under a
    /// new id.
    fn replace(&mut self, key: usize, conn: Connection) {
        let stats = self.inner.stats.clone();
        let Some(e) = self.inner.conns.get_mut(key) else {
            return;
        };
        if e.closed {
            return;
        }
        let peer = e.peer;
        let old = ConnId { key, gen: e.gen };
        e.closed = true;
        log::debug!("reactor: {peer} {old} closed: the peer restarted");
        {
            let (h, mut ctx) = self.ctx_handler();
            h.on_close(&mut ctx, old, &CloseCause::PeerRestarted);
        }
        let inner = &mut self.inner;
        let Some(e) = inner.conns.get_mut(key) else {
            return;
        };
        for (at, seq) in [
            e.dtls_armed.take(),
            e.hs_armed.take(),
            e.idle_armed.take(),
            e.shrink_armed.take(),
        ]
        .into_iter()
        .flatten()
        {
            inner.timers.remove(at, seq);
        }
        inner.next_gen += 1;
        let gen = inner.next_gen;
        e.gen = gen;
        e.conn = Session::Dtls(Box::new(conn));
        e.closed = false;
        e.forced = None;
        e.last_rx = Instant::now();
        if let Some(d) = inner.limits.handshake_timeout {
            let at = Instant::now() + d;
            let seq = inner.timers.insert(at, Timer::Handshake { key, gen });
            e.hs_armed = Some((at, seq));
        }
        SharedStats::inc(&stats.closed);
        SharedStats::inc(&stats.accepted);
        inner.gauge();
        log::debug!("reactor: {peer} restarted as {}", ConnId { key, gen });
        // The server's first flight.
        inner.flush(key);
    }

    /// Reads a connection's socket (and memory queue) up to the budget, a batch
    /// of datagrams per system call; what the handler sends in reply goes out
    /// batched after each batch.
    fn read_conn(&mut self, key: usize) {
        let mut batch = self
            .inner
            .batch
            .take()
            .unwrap_or_else(|| RecvBatch::new(RECV_SLOTS));
        let budget = self.inner.limits.datagrams_per_turn;
        let mut done = 0;
        let mut exhausted = true;
        let truncated = batch.truncated();
        'read: while done < budget {
            let Some(e) = self.inner.conns.get_mut(key) else {
                exhausted = false;
                break;
            };
            if e.closed || e.forced.is_some() {
                exhausted = false;
                break;
            }
            let from_memory = e.io.has_queued();
            match e.io.recv_batch(&mut batch) {
                Ok(n) => {
                    SharedStats::add(&self.inner.stats.datagrams_in, n as u64);
                    if !from_memory {
                        SharedStats::inc(&self.inner.stats.recv_batches);
                    }
                    done += n.max(1);
                    for i in 0..n {
                        let d = batch.get(i);
                        let Some(e) = self.inner.conns.get_mut(key) else {
                            exhausted = false;
                            break 'read;
                        };
                        if e.closed || e.forced.is_some() {
                            exhausted = false;
                            break 'read;
                        }
                        let view = e.conn.as_dtls().map(|c| {
                            let v = Datagram::parse(d);
                            (FrontDoor::wants(c, &v), v)
                        });
                        if let (Some((true, v)), Some(li)) = (&view, e.listener) {
                            // The front door's (the peer may have restarted): not fed
                            // to the established session and not counted as life of it.
                            self.restart(key, li, v);
                            continue;
                        }
                        e.last_rx = Instant::now();
                        if e.shrink_armed.is_none() && !e.conn.is_handshaking() {
                            // Shrunk while quiet: watch for the next quiet spell.
                            let at = e.last_rx;
                            self.inner.arm_shrink(key, at);
                        }
                        let Some(e) = self.inner.conns.get_mut(key) else {
                            break 'read;
                        };
                        let _ = match (&mut e.conn, &view) {
                            (Session::Dtls(c), Some((_, v))) => c.feed_datagram(v),
                            (other, _) => other.feed(d),
                        };
                        self.deliver(key);
                    }
                    self.inner.flush(key);
                    self.inner.flush_unflushed();
                    if !from_memory && batch.socket_drained() {
                        // The socket's queue was empty when the batch ended: with
                        // edge-triggered polling the next datagram raises a new event.
                        exhausted = false;
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    exhausted = false;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    SharedStats::inc(&self.inner.stats.io_errors);
                    log::debug!("reactor: receive from {} failed: {err}", e.peer);
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected
                    ) {
                        e.forced =
                            Some(CloseCause::Failed(Error::PeerUnreachable(err).to_string()));
                    }
                    exhausted = false;
                    break;
                }
            }
        }
        let cut = batch.truncated() - truncated;
        if cut > 0 {
            SharedStats::add(&self.inner.stats.datagrams_in, cut);
            SharedStats::add(&self.inner.stats.oversized, cut);
        }
        batch.clear();
        self.inner.batch = Some(batch);
        let more = self
            .inner
            .conns
            .get(key)
            .is_some_and(|e| !e.closed && e.io.has_queued());
        if exhausted || more {
            self.inner.mark_ready(key);
        }
        self.pump(key);
    }

    /// Reports the connection's events and delivers all plaintext it holds.
    fn deliver(&mut self, key: usize) {
        loop {
            self.events_of(key);
            let Some(e) = self.inner.conns.get_mut(key) else {
                return;
            };
            if e.closed || !e.conn.has_pending() {
                return;
            }
            let gen = e.gen;
            match e.conn.recv(&mut self.plain) {
                Ok(Some(n)) => {
                    let id = ConnId { key, gen };
                    let Reactor {
                        inner,
                        handler,
                        plain,
                        ..
                    } = self;
                    handler.on_data(&mut Ctx { inner }, id, &plain[..n]);
                }
                Ok(None) => {
                    self.events_of(key);
                    return;
                }
                Err(_) => {
                    self.events_of(key);
                    return;
                }
            }
        }
    }

    /// Hands the connection's queued events to the handler.
    fn events_of(&mut self, key: usize) {
        loop {
            let Some(e) = self.inner.conns.get_mut(key) else {
                return;
            };
            if e.closed {
                return;
            }
            let Some(ev) = e.conn.poll_event() else {
                return;
            };
            let id = ConnId { key, gen: e.gen };
            match ev {
                Event::Connected => {
                    self.inner.gauge();
                    SharedStats::inc(&self.inner.stats.connected);
                    if let Some((at, seq)) = self.inner.conns[key].hs_armed.take() {
                        self.inner.timers.remove(at, seq);
                    }
                    self.inner.arm_idle(key, Instant::now());
                    self.inner.arm_shrink(key, Instant::now());
                    let (h, mut ctx) = self.ctx_handler();
                    h.on_connected(&mut ctx, id);
                }
                Event::Closed(reason) => {
                    let cause = CloseCause::from(&reason);
                    if cause == CloseCause::HandshakeTimeout {
                        SharedStats::inc(&self.inner.stats.handshake_timeouts);
                    }
                    self.report_close(key, cause);
                }
            }
        }
    }

    fn report_close(&mut self, key: usize, cause: CloseCause) {
        let Some(e) = self.inner.conns.get_mut(key) else {
            return;
        };
        if e.closed {
            return;
        }
        e.closed = true;
        let id = ConnId { key, gen: e.gen };
        log::debug!("reactor: {} {id} closed: {cause:?}", e.peer);
        let (h, mut ctx) = self.ctx_handler();
        h.on_close(&mut ctx, id, &cause);
        self.inner.dirty.push_back(key);
    }

    /// After anything happened to a connection: deliver, send, close or re-arm.
    fn pump(&mut self, key: usize) {
        if !self.inner.conns.contains(key) {
            return;
        }
        self.deliver(key);
        self.inner.flush(key);
        let forced =
            self.inner.conns.get_mut(key).and_then(
                |e| {
                    if e.closed {
                        None
                    } else {
                        e.forced.take()
                    }
                },
            );
        if let Some(cause) = forced {
            if let Some(e) = self.inner.conns.get_mut(key) {
                if !matches!(cause, CloseCause::Failed(_)) {
                    e.conn.close();
                }
                while e.conn.poll_event().is_some() {}
            }
            self.inner.flush(key);
            self.report_close(key, cause);
        }
        match self.inner.conns.get(key) {
            Some(e) if e.closed => {
                self.inner.flush(key);
                self.inner.remove(key);
            }
            Some(_) => self.inner.rearm(key),
            None => {}
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((seq, t)) = self.inner.timers.pop_due(now) {
            match t {
                Timer::User { id } => {
                    if let Some((_, _, token)) = self.inner.user_timers.remove(&id) {
                        let (h, mut ctx) = self.ctx_handler();
                        h.on_timer(&mut ctx, TimerId(id), token);
                    }
                }
                Timer::Dtls { key, gen } => {
                    let Some(e) = self.inner.entry_mut(ConnId { key, gen }) else {
                        continue;
                    };
                    if e.dtls_armed.map(|a| a.1) != Some(seq) || e.closed {
                        continue;
                    }
                    e.dtls_armed = None;
                    let what = match e.conn.handle_timeout(now) {
                        Ok(true) => Some(DtlsTimeout::Retransmitted),
                        Ok(false) => None,
                        Err(Error::RetransmitLimit) => Some(DtlsTimeout::LimitReached),
                        Err(_) => None,
                    };
                    if what == Some(DtlsTimeout::Retransmitted) {
                        SharedStats::inc(&self.inner.stats.retransmissions);
                        self.inner.flush(key);
                    }
                    if let Some(w) = what {
                        let (h, mut ctx) = self.ctx_handler();
                        h.on_timeout(&mut ctx, ConnId { key, gen }, w);
                    }
                    self.pump(key);
                }
                Timer::Handshake { key, gen } => {
                    let Some(e) = self.inner.entry_mut(ConnId { key, gen }) else {
                        continue;
                    };
                    if e.hs_armed.map(|a| a.1) != Some(seq) {
                        continue;
                    }
                    e.hs_armed = None;
                    if e.conn.is_handshaking() && !e.closed && e.forced.is_none() {
                        log::debug!("reactor: {}: handshake deadline passed", e.peer);
                        e.forced = Some(CloseCause::HandshakeTimeout);
                        SharedStats::inc(&self.inner.stats.handshake_timeouts);
                    }
                    self.pump(key);
                }
                Timer::Shrink { key, gen } => {
                    let Some(after) = self.inner.limits.shrink_after else {
                        continue;
                    };
                    let Some(e) = self.inner.entry_mut(ConnId { key, gen }) else {
                        continue;
                    };
                    if e.shrink_armed.map(|a| a.1) != Some(seq) || e.closed {
                        continue;
                    }
                    e.shrink_armed = None;
                    let last = e.last_rx;
                    if now.saturating_duration_since(last) >= after {
                        e.conn.shrink();
                        SharedStats::inc(&self.inner.stats.shrunk);
                    } else {
                        self.inner.arm_shrink(key, last);
                    }
                }
                Timer::Idle { key, gen } => {
                    let Some(idle) = self.inner.limits.idle_timeout else {
                        continue;
                    };
                    let Some(e) = self.inner.entry_mut(ConnId { key, gen }) else {
                        continue;
                    };
                    if e.idle_armed.map(|a| a.1) != Some(seq) {
                        continue;
                    }
                    e.idle_armed = None;
                    let last = e.last_rx;
                    if now.saturating_duration_since(last) >= idle {
                        if !e.closed && e.forced.is_none() {
                            log::debug!("reactor: {}: idle for {idle:?}, closing", e.peer);
                            e.forced = Some(CloseCause::IdleTimeout);
                            SharedStats::inc(&self.inner.stats.idle_timeouts);
                        }
                        self.pump(key);
                    } else {
                        self.inner.arm_idle(key, last);
                    }
                }
            }
            self.run_dirty();
        }
    }

    fn commands(&mut self) {
        // Bounded per turn so a flood of commands cannot starve the sockets.
        for _ in 0..4096 {
            let c = match self.inner.rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
            };
            match c {
                Command::Send(id, data) => {
                    if let Err(e) = self.inner.send(id, &data) {
                        let (h, mut ctx) = self.ctx_handler();
                        h.on_error(&mut ctx, Some(id), &e);
                    }
                }
                Command::Close(id) => self.inner.close(id),
                Command::Connect(addr, cfg) => {
                    if let Err(e) = self.inner.connect(addr, &cfg) {
                        let (h, mut ctx) = self.ctx_handler();
                        h.on_error(&mut ctx, None, &e);
                    }
                }
                Command::Stop => self.inner.stopping = true,
            }
            self.run_dirty();
        }
        // More are waiting: the next turn must not sleep.
        let _ = self.inner.handle.waker.wake();
    }

    /// close_notify to every peer, on_close(Stopped) for each, then stopped.
    fn shutdown(&mut self) {
        let keys: Vec<usize> = self.inner.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(e) = self.inner.conns.get_mut(key) {
                if !e.closed {
                    e.conn.close();
                    while e.conn.poll_event().is_some() {}
                }
            }
            self.inner.flush(key);
            self.report_close(key, CloseCause::Stopped);
            self.inner.flush(key);
            self.inner.remove(key);
        }
        self.inner.dirty.clear();
        self.inner.ready.clear();
        self.inner.blocked.clear();
        self.inner.stopped = true;
        log::debug!("reactor: stopped");
    }
}
