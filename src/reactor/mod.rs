//! The single-threaded mio reactor: see [`Reactor`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use dtls_demux::batch::RecvBatch;
use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use crate::config::ClientConfig;
#[cfg(doc)]
use crate::conn::Connection;
use crate::error::Result;
#[cfg(doc)]
use crate::FrontDoor;
use crate::{Admission, AdmissionLimits};

mod entry;
mod flush;
mod handle;
mod handler;
mod ids;
mod limits;
mod listener;
mod read;
mod session;
mod settle;
mod shared;
mod source;
mod stats;
mod timeouts;
mod timer;

use entry::Entry;
use handle::Command;
pub use handle::ReactorHandle;
pub use handler::{Ctx, Handler};
pub use ids::{CloseCause, ConnId, DtlsTimeout, ListenerId, TimerId};
pub use limits::Limits;
use listener::Listener;
use source::Sources;
pub use source::{Readiness, SourceId, SourceRegistry, SourceToken};
pub use stats::ReactorStats;
pub(crate) use stats::SharedStats;
use timer::Timers;

// The reactor's mio tokens: connections at their slab keys (fewer than
// `LISTENER_BASE`, `Limits::max_connections` is capped below it), listener `i`
// at `LISTENER_BASE + i`, the handler's sources from `SOURCE_BASE` (mapped to
// the handler's own tokens by `Sources`), the waker last.
const WAKER: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX / 2;
const SOURCE_BASE: usize = LISTENER_BASE + usize::MAX / 4;
/// Largest datagram read from a socket.
const RECV_BUF: usize = 65_536;
/// Most datagrams read from a closing OsNet link before it is dropped.
const LINGER_READS: usize = 64;
/// Messages per `recvmmsg` of a connection's socket (each up to 64 KiB, a GRO
/// message possibly many datagrams).
const RECV_SLOTS: usize = 32;

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
    /// The handler's own sources ([`Ctx::sources`]).
    sources: Sources,
    /// Shared-flow entries of the current [`Inner::flush_unflushed`].
    gather: Vec<usize>,
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
}

/// A single-threaded mio reactor serving many DTLS peers.
///
/// A [`Reactor`] owns a mio `Poll`, any number of listeners (a
/// [`dtls_demux::Demux`] each, with its [`FrontDoor`]), client connections,
/// a slab of [`Connection`]s and one timer structure. The application reacts
/// to what happens through a [`Handler`] (asyncore's dispatcher, as a trait
/// with default methods); every callback gets a [`Ctx`] to send, close, query
/// a connection, set timers and connect. Other threads use a
/// [`ReactorHandle`]. Sockets that are not DTLS (a TCP control port, a pipe,
/// a timerfd) join the same loop as the handler's own sources
/// ([`Reactor::sources`], [`Ctx::sources`], [`Handler::on_source`]).
///
/// One turn of the loop:
/// 1. wait in `poll` until a socket is ready, a command arrives, or the
///    earliest deadline passes (no wait when work is left from the last turn);
/// 2. read every ready socket in batches (`recvmmsg`; on Linux with UDP GRO)
///    until a batch comes back short or the socket is empty, at most
///    [`Limits::datagrams_per_turn`] datagrams each, checked between batches
///    (the rest waits for the next turn, so one busy peer cannot starve the
///    others): listeners through the demux and the front door, links and
///    client sockets into their connection, the handler's own sources to
///    [`Handler::on_source`]; each datagram's plaintext is
///    delivered at once, and after each batch (and after each callback) the
///    connection's datagrams leave in one `sendmmsg`;
/// 3. serve memory queues polling cannot see (the demux's stray queue, link
///    memory queues, Router in memory) and work left over from step 2;
/// 4. fire due timers (DTLS retransmission and the engine's handshake limits, idle timeout,
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
    tokens: Vec<(Token, Readiness)>,
    /// What `drain_listener`'s last batch held.
    received: Vec<dtls_demux::Received>,
    /// What `drain_shared`'s last batch held, and the entries it fed.
    flows: Vec<dtls_demux::FlowDatagram>,
    touched: Vec<usize>,
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
                sources: Sources::default(),
                gather: Vec::new(),
            },
            handler,
            events: Events::with_capacity(1024),
            tokens: Vec::with_capacity(1024),
            received: Vec::with_capacity(RECV_SLOTS),
            flows: Vec::with_capacity(RECV_SLOTS),
            touched: Vec::with_capacity(RECV_SLOTS),
            plain: vec![0u8; RECV_BUF],
        })
    }

    /// Starts a plain UDP client session to `addr` (see [`Reactor::listen_plain`]);
    /// [`Handler::on_connected`] follows at once.
    pub fn connect_plain(&mut self, addr: SocketAddr) -> Result<ConnId> {
        self.inner.connect_with(addr, None)
    }

    /// Starts a client connection to `addr` (see [`Ctx::connect`]).
    pub fn connect(&mut self, addr: SocketAddr, config: &ClientConfig) -> Result<ConnId> {
        self.inner.connect(addr, config)
    }

    /// Starts a client connection to `addr` on the shared socket of `via`
    /// ([`Reactor::add_client_socket`], or a [`Reactor::listen_shared`]
    /// listener) instead of a socket of its own: many client sessions, one
    /// descriptor. Sessions on one socket are told apart by their
    /// [`Flow`](dtls_demux::Flow): the server's address, and `local`, the
    /// local address the session sends from, which a socket bound to a
    /// wildcard address needs (many sessions to one server from one socket:
    /// one local address each, such as 127.0.x.y on loopback) and a socket
    /// bound to one address ignores. `InvalidInput` when `via` is no shared
    /// socket or the flow cannot be made, `AlreadyExists` when the flow has a
    /// session.
    pub fn connect_via(
        &mut self,
        via: ListenerId,
        local: Option<std::net::IpAddr>,
        addr: SocketAddr,
        config: &ClientConfig,
    ) -> Result<ConnId> {
        self.inner.connect_via(via, local, addr, Some(config))
    }

    /// A plain UDP client session on a shared socket (see
    /// [`Reactor::connect_via`], [`Reactor::listen_plain_shared`]).
    pub fn connect_plain_via(
        &mut self,
        via: ListenerId,
        local: Option<std::net::IpAddr>,
        addr: SocketAddr,
    ) -> Result<ConnId> {
        self.inner.connect_via(via, local, addr, None)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ReactorHandle {
        self.inner.handle.clone()
    }

    /// Calls [`Handler::on_timer`] with `token` after `after` (see [`Ctx::set_timer`]).
    pub fn set_timer(&mut self, after: Duration, token: u64) -> TimerId {
        self.inner.set_timer(after, token)
    }

    /// The handler's own sources in the loop, before [`Reactor::run`] (see
    /// [`Ctx::sources`]).
    pub fn sources(&mut self) -> SourceRegistry<'_> {
        self.inner.source_registry()
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
            self.tokens.push((ev.token(), Readiness::from(ev)));
        }
        let mut commands = false;
        for i in 0..self.tokens.len() {
            let (token, ready) = self.tokens[i];
            let readable = ready.is_readable() || ready.is_error() || ready.is_read_closed();
            let writable = ready.is_writable();
            if token == WAKER {
                commands = true;
            } else if token.0 >= SOURCE_BASE {
                self.source_ready(token, ready);
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
            if l.pending || l.port.has_buffered() {
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
                Command::SetListenerConfig(l, cfg) => {
                    if let Err(e) = self.inner.set_listener_config(l, &cfg) {
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
