//! `DtlsListener`: a UDP port that admits DTLS connections.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtls_demux::{Demux, DemuxKind};

use super::shared::Shared;
use super::stream::DtlsSocket;
use super::wait::{check_timeout, min_wait, wait_fds, MEMORY_QUEUE_CHECK};
use crate::{
    Admission, AdmissionStats, Admitted, Datagram, Error, FrontDoor, Refusal, Result, ServerConfig,
};

const MAX_DATAGRAM: usize = 65_536;
/// Receive buffer the listener asks for (capped by `net.core.rmem_max`).
pub const LISTENER_RCVBUF: usize = 4 << 20;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Counters of a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStats {
    /// The front door's counters and gauges (HelloVerifyRequests, accepted,
    /// refused, dropped, late copies of hellos, caps, peer restarts).
    pub admission: AdmissionStats,
    /// Connections handed out by `accept()`.
    pub accepted: u64,
    /// Datagrams `accept()` routed to an existing connection.
    pub routed: u64,
    /// Admitted peers for which no link could be attached (dropped; the
    /// client retries its ClientHello).
    pub attach_failed: u64,
    /// Replies (HelloVerifyRequest, alert) that could not be sent.
    pub send_failed: u64,
}

/// A DTLS server's listening UDP port: see the [module docs](crate::socket).
///
/// [`Self::accept`] reads one datagram per call and never waits for a peer's
/// handshake, so an unanswered ClientHello costs nothing and never stalls
/// anyone. All methods take `&self`: share the listener (`Arc`) between an
/// accept thread and others.
pub struct DtlsListener {
    demux: Arc<dyn Demux>,
    shared: Arc<Shared<DtlsSocket>>,
    read_timeout: Mutex<Option<Duration>>,
    nonblocking: AtomicBool,
    accepted: AtomicU64,
    routed: AtomicU64,
    send_failed: AtomicU64,
}

impl fmt::Debug for DtlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsListener")
            .field("demux", &self.demux)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What one step of accepting did.
enum Step {
    Conn(Box<DtlsSocket>, SocketAddr),
    Consumed,
    WouldBlock,
}

impl DtlsListener {
    /// Binds `addr` with the given demux (see `dtls_demux::bind`).
    pub fn bind(addr: SocketAddr, config: &ServerConfig, kind: DemuxKind) -> Result<DtlsListener> {
        Self::with_demux(dtls_demux::bind(kind, addr)?, config)
    }

    /// Wraps a bound socket. `OsNet` needs `SO_REUSEPORT` set on it before
    /// it was bound (else `InvalidInput`).
    pub fn from_socket(
        socket: UdpSocket,
        config: &ServerConfig,
        kind: DemuxKind,
    ) -> Result<DtlsListener> {
        Self::with_demux(dtls_demux::from_socket(kind, socket)?, config)
    }

    /// Serves connections over a demux made by hand (e.g. with options).
    /// The listener makes its socket non-blocking; leave it so. The caps are
    /// [`AdmissionLimits`](crate::AdmissionLimits)'s defaults.
    pub fn with_demux(demux: Arc<dyn Demux>, config: &ServerConfig) -> Result<DtlsListener> {
        Self::with_admission(demux, config, &Admission::default())
    }

    /// [`Self::with_demux`] with the caps and counters of `admission`
    /// (several listeners may share one): at
    /// [`max_handshakes`](crate::AdmissionLimits::max_handshakes) accepted
    /// sockets whose handshake has not finished, or
    /// [`max_connections`](crate::AdmissionLimits::max_connections) sockets
    /// not yet dropped, a ClientHello with a cookie is dropped before OpenSSL
    /// sees it (the client retries).
    pub fn with_admission(
        demux: Arc<dyn Demux>,
        config: &ServerConfig,
        admission: &Admission,
    ) -> Result<DtlsListener> {
        demux.listener().set_nonblocking(true)?;
        // Every new peer's handshake (and with Router all traffic) arrives
        // here: a larger buffer rides out bursts (the kernel caps it at
        // net.core.rmem_max). Best effort.
        let sock = socket2::SockRef::from(demux.listener());
        if sock.recv_buffer_size().is_ok_and(|n| n < LISTENER_RCVBUF) {
            if let Err(e) = sock.set_recv_buffer_size(LISTENER_RCVBUF) {
                log::warn!("listener: SO_RCVBUF not raised to {LISTENER_RCVBUF}: {e}");
            }
        }
        Ok(DtlsListener {
            shared: Arc::new(Shared {
                demux: demux.clone(),
                door: Mutex::new(FrontDoor::new(config, admission)?),
                restarted: Mutex::new(VecDeque::new()),
                attach_failed: AtomicU64::new(0),
            }),
            demux,
            read_timeout: Mutex::new(None),
            nonblocking: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            send_failed: AtomicU64::new(0),
        })
    }

    /// Reads ONE datagram from the listening socket and deals with it:
    ///
    /// - from a peer with a connection: handed to it (with Router, forwarded
    ///   to its socket); `Ok(None)`.
    /// - a ClientHello without a valid cookie: answered with a
    ///   HelloVerifyRequest, nothing kept; `Ok(None)`.
    /// - a ClientHello with a valid cookie: a link is attached for the peer,
    ///   the server's first flight sent, and `Ok(Some((conn, peer)))`
    ///   returned with the handshake in progress: it completes in the first
    ///   `recv`/`send`/`handshake` call on `conn`.
    /// - a ClientHello that fails at once (no shared version...): the alert
    ///   is sent back; `Ok(None)`. Anything else from an unknown peer is
    ///   dropped and counted; `Ok(None)`.
    ///
    /// A connection that replaced a restarted peer's old one (see
    /// [`Error::PeerRestarted`]) is returned first, before any datagram is read.
    ///
    /// Blocking (the default) waits for a datagram up to the read timeout
    /// ([`Error::ReadTimeout`] when it passes); non-blocking fails with
    /// [`Error::WouldBlock`] when there is none, so `Ok(None)` always means a
    /// datagram was handled (an edge-triggered loop reads until
    /// `WouldBlock`).
    ///
    /// The new connection starts blocking, without timeouts (the
    /// configuration's handshake deadline still bounds its handshake); set
    /// them in the thread that uses it.
    ///
    /// With [`DemuxKind::Router`], keep calling `accept()` (a thread looping
    /// on it, or a poll loop whenever the listener is readable): it forwards
    /// every datagram of the established connections.
    ///
    /// A copy of an admitted ClientHello that arrives after its connection
    /// ended (same peer, same client random) is dropped
    /// ([`AdmissionStats::duplicate_hellos`]).
    pub fn accept(&self) -> Result<Option<(DtlsSocket, SocketAddr)>> {
        let deadline = self.deadline();
        match self.step(deadline)? {
            Step::Conn(s, p) => Ok(Some((*s, p))),
            Step::Consumed => Ok(None),
            Step::WouldBlock => Err(Error::WouldBlock),
        }
    }

    /// A blocking iterator over new connections: calls [`Self::accept`] and
    /// skips the `None`s. Yields `Err(ReadTimeout)` when a read timeout is set
    /// and passes, `Err(WouldBlock)` when non-blocking and nothing is left;
    /// iteration may continue after either.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    fn deadline(&self) -> Option<Instant> {
        if self.nonblocking.load(Ordering::Relaxed) {
            return None;
        }
        let t = *self.read_timeout.lock().unwrap_or_else(|p| p.into_inner());
        t.map(|t| Instant::now() + t)
    }

    fn step(&self, deadline: Option<Instant>) -> Result<Step> {
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        loop {
            // A restarted peer's new connection, made on its old connection's
            // thread.
            let replaced = self
                .shared
                .restarted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some((s, peer)) = replaced {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                return Ok(Step::Conn(Box::new(s), peer));
            }
            let got = SCRATCH.with(|s| {
                let mut buf = s.borrow_mut();
                if buf.len() < MAX_DATAGRAM {
                    buf.resize(MAX_DATAGRAM, 0);
                }
                match self.demux.recv_from(&mut buf) {
                    Ok(dtls_demux::Incoming::Routed { .. }) => {
                        self.routed.fetch_add(1, Ordering::Relaxed);
                        Ok(Some(Step::Consumed))
                    }
                    Ok(dtls_demux::Incoming::Unknown { len, peer }) => {
                        self.admit(peer, &buf[..len]).map(Some)
                    }
                    // A later demux's own handling: nothing to do.
                    Ok(_) => Ok(Some(Step::Consumed)),
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock => Ok(None),
                        // A signal, or an ICMP error queued on the listener
                        // for some earlier reply: nothing to do with the next
                        // datagram.
                        io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset => {
                            log::trace!("listener: {e} (ignored)");
                            Ok(Some(Step::Consumed))
                        }
                        _ => Err(Error::Io(e)),
                    },
                }
            })?;
            if let Some(step) = got {
                return Ok(step);
            }
            if nonblocking {
                return Ok(Step::WouldBlock);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(Error::ReadTimeout);
            }
            // Connections hand strays (OsNet) and restarted peers' new
            // connections to the listener from their own threads, which the
            // demux's wake descriptor announces (cleared before the check, so
            // a hand-over after it still wakes the poll); without one, look
            // again now and then.
            let (wake, wait) = match self.demux.listener_wake_fd() {
                Ok(fd) => {
                    self.demux.clear_listener_wake();
                    (Some(fd), left)
                }
                Err(_) => (None, min_wait(left, Some(MEMORY_QUEUE_CHECK))),
            };
            if self.has_pending() {
                continue;
            }
            wait_fds(self.demux.listener().as_fd(), false, wake, wait)?;
        }
    }

    fn admit(&self, peer: SocketAddr, datagram: &[u8]) -> Result<Step> {
        let admitted = self.door().admit(peer, &Datagram::parse(datagram));
        match admitted {
            Admitted::Reply(r) => self.reply(&r, peer),
            Admitted::Drop(_) => {}
            Admitted::Refused(Refusal { alert, .. }) => {
                if let Some(a) = alert {
                    self.reply(&a, peer);
                }
            }
            Admitted::Accepted(conn) => {
                if let Some(s) = DtlsSocket::open_accepted(&self.shared, peer, *conn)? {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Step::Conn(Box::new(s), peer));
                }
            }
        }
        Ok(Step::Consumed)
    }

    fn reply(&self, d: &[u8], peer: SocketAddr) {
        if let Err(e) = self.demux.send_to(d, peer) {
            self.send_failed.fetch_add(1, Ordering::Relaxed);
            log::trace!("listener: reply to {peer} not sent: {e}");
        }
    }

    /// Read timeout of a blocking [`Self::accept`] (`None`: wait forever).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> Result<()> {
        check_timeout(t)?;
        *self.read_timeout.lock().unwrap_or_else(|p| p.into_inner()) = t;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        *self.read_timeout.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Non-blocking mode: [`Self::accept`] returns `Ok(None)` at once when no
    /// datagram is ready.
    pub fn set_nonblocking(&self, on: bool) -> Result<()> {
        self.nonblocking.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// True when datagrams wait in memory (OsNet strays) that polling the
    /// listener's descriptor would not show: call [`Self::accept`] without
    /// waiting.
    pub fn has_pending(&self) -> bool {
        self.demux.has_buffered()
            || !self
                .shared
                .restarted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    /// The listening address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.demux.local_addr()?)
    }

    /// The demux (counters, kind). Do not change its socket's blocking mode.
    pub fn demux(&self) -> &Arc<dyn Demux> {
        &self.demux
    }

    /// The server configuration the next handshakes get.
    pub fn config(&self) -> ServerConfig {
        self.door().config().clone()
    }

    /// Takes `config` for every handshake from now on (a new certificate,
    /// new settings) without a restart; connections already accepted keep
    /// theirs. Cookies issued before verify only if both configurations share
    /// their [`crate::CookieKeys`].
    pub fn set_config(&self, config: &ServerConfig) -> Result<()> {
        self.door().set_config(config)
    }

    fn door(&self) -> std::sync::MutexGuard<'_, FrontDoor> {
        self.shared.door.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> ListenerStats {
        ListenerStats {
            admission: self.door().admission().stats(),
            accepted: self.accepted.load(Ordering::Relaxed),
            routed: self.routed.load(Ordering::Relaxed),
            attach_failed: self.shared.attach_failed.load(Ordering::Relaxed),
            send_failed: self.send_failed.load(Ordering::Relaxed),
        }
    }
}

impl AsRawFd for DtlsListener {
    /// The listening socket: readable when [`DtlsListener::accept`] has work.
    fn as_raw_fd(&self) -> RawFd {
        self.demux.listener().as_raw_fd()
    }
}

impl AsFd for DtlsListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.demux.listener().as_fd()
    }
}

/// The iterator of [`DtlsListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a DtlsListener,
}

impl Iterator for Incoming<'_> {
    type Item = Result<(DtlsSocket, SocketAddr)>;

    fn next(&mut self) -> Option<Self::Item> {
        let deadline = self.listener.deadline();
        loop {
            match self.listener.step(deadline) {
                Ok(Step::Conn(s, p)) => return Some(Ok((*s, p))),
                Ok(Step::Consumed) => continue,
                Ok(Step::WouldBlock) => return Some(Err(Error::WouldBlock)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

// Shared between an accept thread and others.
const _: () = {
    fn send_sync<T: Send + Sync>() {}
    fn check() {
        send_sync::<DtlsListener>();
    }
    let _ = check;
};
