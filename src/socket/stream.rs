//! `DtlsSocket`: one DTLS connection over a UDP transport.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dtls_demux::{Demux, DemuxKind, Link};

use super::listener::Admission;
use super::{check_timeout, min_wait, wait_fd, Transport, MEMORY_QUEUE_CHECK};
use crate::conn::clone_error;
use crate::record::{carries_cookie, classify, client_random, Kind};
use crate::{
    ClientConfig, CloseReason, ConnStats, Connection, CookieStage, Error, PeerCertificate, Result,
    ServerConfig, State, Verdict,
};

/// Largest UDP payload: the receive scratch buffer's size.
const MAX_DATAGRAM: usize = 65_536;
/// How long [`DtlsSocket::shutdown`] waits for the peer's close_notify when no
/// read timeout is set.
pub const DEFAULT_SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// Records drained and discarded while waiting for the peer's close_notify,
/// per call (bounds the work hostile input can cause).
const SHUTDOWN_DRAIN_MAX: usize = 1024;
/// Datagrams one non-blocking call reads at most before it returns
/// `WouldBlock` (the descriptor stays readable; the caller comes back).
const NONBLOCKING_READ_BUDGET: usize = 256;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a blocking call is waiting for: decides which timeout applies and
/// which error reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

enum Session {
    /// A client that has not sent its ClientHello yet.
    Client {
        config: ClientConfig,
        name: Option<String>,
    },
    /// A server waiting for the peer's ClientHello (cookie exchange first).
    ServerWait { stage: Box<CookieStage> },
    /// A session (handshaking, established or closed).
    Active(Box<Connection>),
}

/// One DTLS connection over UDP, client or server side, with `std::net`-like
/// blocking calls and timeouts, or non-blocking calls. See the
/// [module docs](crate::socket) for how waiting works.
///
/// Made by [`DtlsSocket::connect`] / [`DtlsSocket::wrap_client`] (client),
/// [`crate::DtlsListener::accept`] or [`DtlsSocket::wrap_server`] (server).
/// `Send`: move it to a thread of its own. Every call sends one datagram or
/// receives one.
///
/// Dropping a socket sends nothing; call [`Self::shutdown`] (or
/// [`Self::unwrap`]) for a clean close_notify exchange.
pub struct DtlsSocket {
    transport: Transport,
    /// Server side: the demux of the listener (a Router link sends through its
    /// listening socket, which is where a blocked send must wait).
    demux: Option<Arc<dyn Demux>>,
    /// Accepted by a listener: its cookie stage, for a restarting peer.
    admission: Option<Weak<Admission>>,
    /// The client random of the ClientHello that opened this server
    /// connection: a late copy of it is not a restart.
    opening_random: Option<[u8; 32]>,
    /// The peer restarted and a new connection took over: every call fails
    /// with [`Error::PeerRestarted`].
    restarted: bool,
    session: Session,
    peeked: Option<Vec<u8>>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    nonblocking: bool,
}

impl fmt::Debug for DtlsSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.session {
            Session::Client { .. } => "not started (client)".to_string(),
            Session::ServerWait { .. } => "waiting for a ClientHello".to_string(),
            Session::Active(c) => format!("{:?}", c.state()),
        };
        f.debug_struct("DtlsSocket")
            .field("transport", &self.transport)
            .field("state", &state)
            .field("nonblocking", &self.nonblocking)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

/// The error of [`DtlsSocket::unwrap`]: why the close_notify exchange did not
/// complete, and the socket, so nothing is lost. Get the transport anyway
/// with [`DtlsSocket::into_transport`].
pub struct UnwrapError {
    error: Error,
    socket: Box<DtlsSocket>,
}

impl UnwrapError {
    /// Why the exchange failed ([`Error::ReadTimeout`] when the peer's
    /// close_notify did not arrive in time).
    pub fn error(&self) -> &Error {
        &self.error
    }
    /// The socket (this side's close_notify was sent).
    pub fn into_socket(self) -> DtlsSocket {
        *self.socket
    }
    /// Both parts.
    pub fn into_parts(self) -> (Error, DtlsSocket) {
        (self.error, *self.socket)
    }
}

impl fmt::Debug for UnwrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnwrapError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for UnwrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unwrap: close_notify exchange failed: {}", self.error)
    }
}

impl std::error::Error for UnwrapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<UnwrapError> for Error {
    fn from(e: UnwrapError) -> Self {
        e.error
    }
}

impl From<UnwrapError> for io::Error {
    fn from(e: UnwrapError) -> Self {
        e.error.into()
    }
}

/// Maps an error of the transport to ours.
fn transport_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::PeerUnreachable(e),
        io::ErrorKind::WouldBlock => Error::WouldBlock,
        _ => Error::Io(e),
    }
}

fn closed_error(c: &Connection) -> Error {
    match c.state() {
        State::Closed(CloseReason::PeerClosed) => Error::ClosedByPeer,
        _ => c.error().map(clone_error).unwrap_or(Error::Closed),
    }
}

impl DtlsSocket {
    fn new(transport: Transport, session: Session, demux: Option<Arc<dyn Demux>>) -> Self {
        DtlsSocket {
            transport,
            demux,
            admission: None,
            opening_random: None,
            restarted: false,
            session,
            peeked: None,
            read_timeout: None,
            write_timeout: None,
            nonblocking: false,
        }
    }

    /// Connects to a DTLS server: binds an ephemeral UDP socket of the
    /// address's family, connects it and runs the handshake (blocking, bounded
    /// by the configuration's handshake deadline and retransmission limit).
    /// The server name for SNI and the certificate check is the
    /// configuration's [`server_name`](crate::ConfigBuilder::server_name).
    /// Each resolved address is tried in turn; the last error is returned.
    ///
    /// Errors: [`Error::PeerUnreachable`] when nothing listens there,
    /// [`Error::HandshakeTimeout`] / [`Error::RetransmitLimit`] when nobody
    /// answers, [`Error::Verification`], [`Error::VersionMismatch`]...
    pub fn connect(addr: impl ToSocketAddrs, config: &ClientConfig) -> Result<DtlsSocket> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match Self::connect_inner(a, config, None) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address to connect to",
            ))
        }))
    }

    /// [`Self::connect`] to one address, failing with
    /// [`Error::HandshakeTimeout`] if the handshake has not completed within
    /// `timeout`. The socket comes back without timeouts set.
    pub fn connect_timeout(
        addr: SocketAddr,
        config: &ClientConfig,
        timeout: Duration,
    ) -> Result<DtlsSocket> {
        check_timeout(Some(timeout))?;
        Self::connect_inner(addr, config, Some(timeout))
    }

    fn connect_inner(
        addr: SocketAddr,
        config: &ClientConfig,
        timeout: Option<Duration>,
    ) -> Result<DtlsSocket> {
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)?;
        sock.connect(addr)?;
        let mut s = Self::wrap_client(sock, config, None)?;
        let deadline = timeout.map(|t| Instant::now() + t);
        s.handshake_until(deadline)?;
        Ok(s)
    }

    /// Wraps a UDP socket for the client side of a session. The handshake
    /// runs on the first [`Self::send`] / [`Self::recv`], or by
    /// [`Self::handshake`] / [`Self::connect_peer`]. `server_name` overrides
    /// the configuration's (SNI and certificate check).
    ///
    /// The socket may be unconnected: connect it with [`Self::connect_peer`];
    /// until then every I/O call fails with [`Error::NotConnected`]. The
    /// socket's read and write timeouts are taken over; the `DtlsSocket`
    /// starts blocking.
    pub fn wrap_client(
        socket: UdpSocket,
        config: &ClientConfig,
        server_name: Option<&str>,
    ) -> Result<DtlsSocket> {
        let read_timeout = socket.read_timeout()?;
        let write_timeout = socket.write_timeout()?;
        socket.set_nonblocking(true)?;
        let mut s = Self::new(
            Transport::Socket(socket),
            Session::Client {
                config: config.clone(),
                name: server_name.map(str::to_string),
            },
            None,
        );
        s.read_timeout = read_timeout;
        s.write_timeout = write_timeout;
        Ok(s)
    }

    /// Wraps a transport for the server side of a session with one peer: a
    /// UDP socket connected to the peer, or a listener's [`Link`] (for
    /// instance one that [`Self::unwrap`] returned). The handshake, with the
    /// cookie exchange when the configuration requires it, runs on the first
    /// [`Self::send`] / [`Self::recv`] or by [`Self::handshake`].
    pub fn wrap_server(
        transport: impl Into<Transport>,
        config: &ServerConfig,
    ) -> Result<DtlsSocket> {
        let transport = transport.into();
        if transport.peer_addr().is_err() {
            return Err(Error::NotConnected);
        }
        let read_timeout = transport.socket().read_timeout()?;
        let write_timeout = transport.socket().write_timeout()?;
        transport.set_nonblocking(true)?;
        let stage = Box::new(CookieStage::new(config)?);
        let mut s = Self::new(transport, Session::ServerWait { stage }, None);
        s.read_timeout = read_timeout;
        s.write_timeout = write_timeout;
        Ok(s)
    }

    /// A server connection accepted by a listener: the cookie stage admitted
    /// the peer and `link` was attached for it.
    pub(crate) fn accepted(
        conn: Connection,
        link: Link,
        admission: &Arc<Admission>,
        opening_random: Option<[u8; 32]>,
    ) -> Result<Self> {
        link.socket().set_nonblocking(true)?;
        let mut s = Self::new(
            Transport::Link(link),
            Session::Active(Box::new(conn)),
            Some(admission.demux.clone()),
        );
        s.admission = Some(Arc::downgrade(admission));
        s.opening_random = opening_random;
        // The server's first flight; what would block goes out with the first call.
        match s.flush(None, Op::Write, true) {
            Ok(()) | Err(Error::WouldBlock) => {}
            Err(e) => log::debug!("accepted connection: first flight not sent: {e}"),
        }
        Ok(s)
    }

    /// Connects a socket given to [`Self::wrap_client`] unconnected to `addr`
    /// and runs the handshake (Python's `connect` on a wrapped socket).
    /// Blocking: honours the read timeout; non-blocking: returns
    /// [`Error::WouldBlock`] after sending the ClientHello (continue with
    /// [`Self::handshake`]). Fails with `InvalidInput` if the session started.
    pub fn connect_peer(&mut self, addr: impl ToSocketAddrs) -> Result<()> {
        let (Session::Client { .. }, Transport::Socket(sock)) = (&self.session, &self.transport)
        else {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connect_peer: the session already started (or not a client socket)",
            )));
        };
        sock.connect(addr)?;
        self.handshake()
    }

    /// Runs the handshake to its end. Blocking: waits up to the read timeout
    /// ([`Error::HandshakeTimeout`] when it passes; call again to keep
    /// waiting). Non-blocking: one step, [`Error::WouldBlock`] until done.
    /// Returns at once when the handshake is already complete.
    pub fn handshake(&mut self) -> Result<()> {
        let deadline = self.deadline(Op::Read);
        self.handshake_until(deadline)
    }

    fn handshake_until(&mut self, deadline: Option<Instant>) -> Result<()> {
        self.drive(Op::Read, deadline, |c| {
            if c.is_established() {
                return Ok(Some(()));
            }
            if c.is_closed() {
                return Err(closed_error(c));
            }
            c.recv(&mut [])?;
            Ok(c.is_established().then_some(()))
        })
    }

    /// Receives one datagram of plaintext into `buf`, running the handshake
    /// first if needed. A buffer shorter than the datagram gets its start;
    /// the rest comes with the next call ([`Self::pending`]). Use a buffer of
    /// at least [`Self::data_mtu`] bytes.
    ///
    /// Errors: [`Error::ReadTimeout`] (or [`Error::HandshakeTimeout`] during
    /// the handshake), [`Error::WouldBlock`], [`Error::ClosedByPeer`] once the
    /// peer's close_notify arrived (this side answers it),
    /// [`Error::PeerUnreachable`] (client side: ICMP port unreachable; a
    /// server-side link ignores ICMP errors, which may belong to another
    /// peer sharing its address), and whatever ended the connection.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize> {
        if let Some(p) = self.peeked.take() {
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            if n < p.len() {
                self.peeked = Some(p[n..].to_vec());
            }
            return Ok(n);
        }
        let deadline = self.deadline(Op::Read);
        self.drive(Op::Read, deadline, |c| c.recv(buf))
    }

    /// [`Self::recv`] under Python's name.
    pub fn recv_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.recv(buf)
    }

    /// Receives the next datagram without consuming it: the next `peek` or
    /// `recv` returns it again.
    pub fn peek(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.peeked.is_none() {
            let mut tmp = vec![0u8; self.data_mtu().max(2048)];
            let n = self.recv(&mut tmp)?;
            tmp.truncate(n);
            self.peeked = Some(tmp);
        }
        let p = self.peeked.as_deref().unwrap_or_default();
        let n = p.len().min(buf.len());
        buf[..n].copy_from_slice(&p[..n]);
        Ok(n)
    }

    /// Plaintext bytes readable without new input: the peeked datagram, or
    /// the rest of the current record (Python's `pending()`).
    pub fn pending(&self) -> usize {
        match (&self.peeked, &self.session) {
            (Some(p), _) => p.len(),
            (None, Session::Active(c)) => c.pending(),
            _ => 0,
        }
    }

    /// Whether a call may make progress without the descriptor becoming
    /// readable: a peeked datagram, plaintext or records held by the session,
    /// or datagrams in the link's memory queue. A poll loop checks this before
    /// it waits.
    pub fn has_pending(&self) -> bool {
        self.peeked.is_some()
            || self.transport.has_queued()
            || matches!(&self.session, Session::Active(c) if c.has_pending())
    }

    /// Sends `buf` as one datagram of plaintext, running the handshake first
    /// if needed. Larger than [`Self::data_mtu`] is [`Error::TooLarge`].
    /// Non-blocking: [`Error::WouldBlock`] while the handshake needs input or
    /// an earlier record still waits to be sent; when only this record's
    /// transmission would block, it is kept and goes out with the next call.
    ///
    /// Errors: [`Error::WriteTimeout`] (or [`Error::HandshakeTimeout`]),
    /// [`Error::NotConnected`] on an unconnected client socket,
    /// [`Error::PeerUnreachable`], [`Error::Closed`] after [`Self::shutdown`].
    pub fn send(&mut self, buf: &[u8]) -> Result<usize> {
        let deadline = self.deadline(Op::Write);
        if self.nonblocking {
            // Back-pressure: do not queue more while earlier records wait.
            if let Session::Active(c) = &self.session {
                if c.has_transmit() {
                    self.flush(deadline, Op::Write, true)?;
                }
            }
        }
        let n = self.drive(Op::Write, deadline, |c| match c.send(buf) {
            Ok(n) => Ok(Some(n)),
            Err(Error::WouldBlock) => {
                c.recv(&mut [])?;
                Ok(None)
            }
            Err(e) => Err(e),
        })?;
        match self.flush(deadline, Op::Write, true) {
            Ok(()) | Err(Error::WouldBlock) => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Sends close_notify (once) and waits for the peer's: up to the read
    /// timeout, or [`DEFAULT_SHUTDOWN_WAIT`] when none is set. Plaintext that
    /// arrives meanwhile is discarded. Alerts are not retransmitted.
    /// `Ok(())` once the peer's close_notify arrived (also when it had
    /// before); [`Error::ReadTimeout`] when it did not in time (this side is
    /// closed anyway; call again to wait more); [`Error::WouldBlock`] when
    /// non-blocking and it has not arrived yet. A session that never started
    /// has nothing to close.
    pub fn shutdown(&mut self) -> Result<()> {
        let Session::Active(c) = &mut self.session else {
            return Ok(());
        };
        c.close();
        if c.is_close_received() {
            return match self.flush(None, Op::Read, true) {
                Ok(()) | Err(Error::WouldBlock) => Ok(()),
                Err(e) => Err(e),
            };
        }
        let wait = self.read_timeout.unwrap_or(DEFAULT_SHUTDOWN_WAIT);
        let deadline = Some(Instant::now() + wait);
        let r = self.drive(Op::Read, deadline, |c| {
            let mut scratch = [0u8; 512];
            for _ in 0..SHUTDOWN_DRAIN_MAX {
                match c.recv(&mut scratch) {
                    Ok(Some(n)) => {
                        log::debug!("shutdown: discarded {n} bytes of plaintext");
                    }
                    Ok(None) => return Ok(None),
                    Err(Error::ClosedByPeer) => return Ok(Some(())),
                    Err(e) => return Err(e),
                }
            }
            Ok(None)
        });
        match r {
            Err(Error::ClosedByPeer) => Ok(()),
            other => other,
        }
    }

    /// Closes the session ([`Self::shutdown`]) and hands back the plain,
    /// still-open transport (Python's `unwrap()`): the client's `UdpSocket`
    /// connected to the server, or the server's [`Link`]. On failure the
    /// socket comes back inside the error.
    pub fn unwrap(mut self) -> std::result::Result<Transport, UnwrapError> {
        match self.shutdown() {
            Ok(()) => Ok(self.into_transport()),
            Err(error) => Err(UnwrapError {
                error,
                socket: Box::new(self),
            }),
        }
    }

    /// Drops the session without any exchange and returns the transport, in
    /// the blocking mode and with the timeouts this socket had.
    pub fn into_transport(self) -> Transport {
        let t = self.transport;
        if let Err(e) = t
            .set_nonblocking(self.nonblocking)
            .and_then(|_| t.set_read_timeout(self.read_timeout))
            .and_then(|_| t.set_write_timeout(self.write_timeout))
        {
            log::debug!("into_transport: could not restore socket settings: {e}");
        }
        t
    }

    /// Time until the DTLS timer needs [`Self::handle_timeout`] (Python's
    /// `get_timeout()`); `None` when no timer runs (established, idle).
    pub fn next_timeout(&self) -> Option<Duration> {
        match &self.session {
            Session::Active(c) => c.timeout(),
            _ => None,
        }
    }

    /// Acts on a passed DTLS deadline: retransmits the last flight (returns
    /// true) or does nothing if the deadline has not passed (false). Fails
    /// with [`Error::RetransmitLimit`] after the last retransmission, or
    /// [`Error::HandshakeTimeout`] past the handshake deadline. Blocking
    /// calls do this by themselves; non-blocking callers call it when
    /// [`Self::next_timeout`] runs out.
    pub fn handle_timeout(&mut self) -> Result<bool> {
        let Session::Active(c) = &mut self.session else {
            return Ok(false);
        };
        let r = c.handle_timeout(Instant::now())?;
        match self.flush(None, Op::Write, true) {
            Ok(()) | Err(Error::WouldBlock) => Ok(r),
            Err(e) => Err(e),
        }
    }

    /// Read timeout of blocking calls (`None`: no limit). A zero duration is
    /// an `InvalidInput` error, as with `std::net`.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        check_timeout(t)?;
        self.read_timeout = t;
        Ok(())
    }

    /// Write timeout of blocking calls (`None`: no limit).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        check_timeout(t)?;
        self.write_timeout = t;
        Ok(())
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// Non-blocking mode: calls return [`Error::WouldBlock`] instead of waiting.
    pub fn set_nonblocking(&mut self, on: bool) -> Result<()> {
        self.nonblocking = on;
        Ok(())
    }

    /// Whether the socket is non-blocking.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking
    }

    /// The peer's certificate, once the handshake has seen one.
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        self.connection().and_then(Connection::peer_certificate)
    }

    /// The chain the peer sent (see [`Connection::peer_certificate_chain`]).
    pub fn peer_certificate_chain(&self) -> Vec<PeerCertificate> {
        self.connection()
            .map(Connection::peer_certificate_chain)
            .unwrap_or_default()
    }

    /// The negotiated cipher suite's OpenSSL name, once established.
    pub fn cipher(&self) -> Option<String> {
        self.connection()
            .filter(|c| !c.is_handshaking())
            .and_then(Connection::cipher)
    }

    /// The negotiated protocol (`"DTLSv1.2"` or `"DTLSv1"`), once established.
    pub fn version(&self) -> Option<&'static str> {
        self.connection()
            .filter(|c| !c.is_handshaking())
            .map(Connection::version)
    }

    /// True once the handshake completed and until the session closes.
    pub fn is_established(&self) -> bool {
        self.connection().is_some_and(Connection::is_established)
    }

    /// True while the handshake has not completed (including before it started).
    pub fn is_handshaking(&self) -> bool {
        match &self.session {
            Session::Active(c) => c.is_handshaking(),
            _ => true,
        }
    }

    /// Largest plaintext datagram one call can send.
    pub fn data_mtu(&self) -> usize {
        self.connection()
            .map(Connection::data_mtu)
            .unwrap_or(crate::DEFAULT_MTU as usize)
    }

    /// The session's counters (zero before it started).
    pub fn stats(&self) -> ConnStats {
        self.connection().map(Connection::stats).unwrap_or_default()
    }

    /// The sans-IO session underneath, once started: state, error, exporter...
    pub fn connection(&self) -> Option<&Connection> {
        match &self.session {
            Session::Active(c) => Some(c),
            _ => None,
        }
    }

    /// The local address the peer talks to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.transport.local_addr()?)
    }

    /// The peer's address ([`Error::NotConnected`] for an unconnected client socket).
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        self.transport.peer_addr().map_err(|e| {
            if e.kind() == io::ErrorKind::NotConnected {
                Error::NotConnected
            } else {
                Error::Io(e)
            }
        })
    }

    /// The transport underneath (to poll, or to read its addresses).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    // ---- the engine of every call ----

    fn deadline(&self, op: Op) -> Option<Instant> {
        if self.nonblocking {
            return None;
        }
        let t = match op {
            Op::Read => self.read_timeout,
            Op::Write => self.write_timeout,
        };
        t.map(|t| Instant::now() + t)
    }

    fn timeout_error(&self, op: Op) -> Error {
        if self.is_handshaking() {
            return Error::HandshakeTimeout;
        }
        match op {
            Op::Read => Error::ReadTimeout,
            Op::Write => Error::WriteTimeout,
        }
    }

    /// Creates the client session on first use.
    fn start(&mut self) -> Result<()> {
        if let Session::Client { config, name } = &self.session {
            let Ok(server) = self.transport.peer_addr() else {
                return Err(Error::NotConnected);
            };
            let conn = Connection::client_to(config, name.as_deref(), Some(server))?;
            self.session = Session::Active(Box::new(conn));
        }
        Ok(())
    }

    /// The descriptor a blocked send waits on: the listening socket for a
    /// Router link, else the transport's own socket.
    fn write_fd(&self) -> BorrowedFd<'_> {
        match (&self.transport, &self.demux) {
            (Transport::Link(l), Some(d)) if l.kind() == DemuxKind::Router => d.listener().as_fd(),
            _ => self.transport.as_fd(),
        }
    }

    /// Sends every datagram the session has queued. `Err(WouldBlock)` when
    /// non-blocking (or `never_wait`) and the socket is full: the rest stays
    /// queued for the next call.
    fn flush(&mut self, deadline: Option<Instant>, op: Op, never_wait: bool) -> Result<()> {
        loop {
            let Session::Active(c) = &mut self.session else {
                return Ok(());
            };
            let Some(d) = c.peek_transmit() else {
                return Ok(());
            };
            match self.transport.send(d) {
                Ok(_) => c.pop_transmit(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.nonblocking || never_wait {
                        return Err(Error::WouldBlock);
                    }
                    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    if left == Some(Duration::ZERO) {
                        return Err(self.timeout_error(op));
                    }
                    // A Router link without its demux (re-wrapped by hand)
                    // has no descriptor to wait on: retry every millisecond.
                    let rest = match (&self.transport, &self.demux) {
                        (Transport::Link(l), None) if l.kind() == DemuxKind::Router => {
                            Some(Duration::from_millis(1))
                        }
                        _ => None,
                    };
                    match rest {
                        Some(r) => std::thread::sleep(min_wait(left, Some(r)).unwrap_or(r)),
                        None => {
                            wait_fd(self.write_fd(), true, left)?;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // An earlier datagram drew ICMP port unreachable; this one
                    // was not sent. A client reports it (and retries the
                    // datagram with the next call); a server-side link
                    // ignores it (see `read_one`) and sends again.
                    if matches!(self.transport, Transport::Socket(_)) {
                        return Err(Error::PeerUnreachable(e));
                    }
                    log::debug!("link: ICMP error ignored: {e}");
                }
                Err(e) => {
                    // Not sendable (too large for the path...): drop it so
                    // the queue cannot jam, and report.
                    c.pop_transmit();
                    log::debug!("send failed, datagram dropped: {e}");
                    return Err(Error::Io(e));
                }
            }
        }
    }

    /// Acts on an expired DTLS timer.
    fn fire_timer(&mut self) -> Result<()> {
        if let Session::Active(c) = &mut self.session {
            if c.timeout() == Some(Duration::ZERO) {
                c.handle_timeout(Instant::now())?;
            }
        }
        Ok(())
    }

    /// Reads one datagram from the transport without waiting and feeds it to
    /// the session (or the cookie stage). False when none was ready.
    fn read_one(&mut self) -> Result<bool> {
        SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            if buf.len() < MAX_DATAGRAM {
                buf.resize(MAX_DATAGRAM, 0);
            }
            let n = loop {
                match self.transport.recv(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if e.kind() == io::ErrorKind::ConnectionRefused
                            && matches!(self.transport, Transport::Link(_)) =>
                    {
                        // Server side: the per-peer socket shares its address
                        // with the listener's group, so an ICMP error may
                        // belong to another peer; DTLS has its own timers.
                        log::debug!("link: ICMP error ignored: {e}");
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(transport_error(e)),
                }
            };
            self.ingest(&buf[..n])?;
            Ok(true)
        })
    }

    fn ingest(&mut self, d: &[u8]) -> Result<()> {
        match &mut self.session {
            Session::Active(c)
                if self.admission.is_some()
                    && c.is_established()
                    && classify(d) == Kind::ClientHello =>
            {
                self.restart(d)
            }
            Session::Active(c) => c.feed(d),
            Session::ServerWait { stage } => {
                let peer = self.transport.peer_addr()?;
                match stage.handle(peer, d) {
                    Verdict::HelloVerify(hvr) => {
                        if let Err(e) = self.transport.send(&hvr) {
                            log::debug!("HelloVerifyRequest to {peer} not sent: {e}");
                        }
                        Ok(())
                    }
                    Verdict::Accept(conn) => {
                        self.session = Session::Active(conn);
                        Ok(())
                    }
                    Verdict::Refused { alert, error } => {
                        if let Some(a) = alert {
                            let _ = self.transport.send(&a);
                        }
                        Err(error)
                    }
                    Verdict::Drop(_) => Ok(()),
                }
            }
            Session::Client { .. } => {
                log::debug!("datagram before the ClientHello dropped");
                Ok(())
            }
        }
    }

    /// An epoch-0 ClientHello on the link of an established server connection:
    /// the peer may have restarted (RFC 6347 section 4.2.8). The datagram is
    /// unauthenticated, so it goes through the listener's cookie stage: without
    /// a valid cookie it only earns a HelloVerifyRequest and this session goes
    /// on; with one, a new connection (on a new link) replaces this one, waits
    /// for the listener's `accept()`, and this one fails with
    /// [`Error::PeerRestarted`]. A late copy of this connection's own
    /// ClientHello, or of any the listener admitted, is dropped.
    fn restart(&mut self, d: &[u8]) -> Result<()> {
        let Some(adm) = self.admission.as_ref().and_then(Weak::upgrade) else {
            log::debug!("ClientHello on an established link, listener gone: dropped");
            return Ok(());
        };
        let peer = self.transport.peer_addr()?;
        if client_random(d).is_some_and(|r| Some(r) == self.opening_random) {
            log::debug!("{peer}: late copy of this session's ClientHello dropped");
            return Ok(());
        }
        let Some(verdict) = adm.screen(peer, d) else {
            return Ok(());
        };
        match verdict {
            Verdict::HelloVerify(hvr) => {
                log::debug!("{peer}: ClientHello on an established session, cookie asked");
                if let Err(e) = self.transport.send(&hvr) {
                    log::debug!("HelloVerifyRequest to {peer} not sent: {e}");
                }
                Ok(())
            }
            Verdict::Accept(conn) if carries_cookie(d) => {
                // The old link goes (the peer's datagrams reach the new one from
                // now on); a datagram of the old session still queued is lost.
                adm.demux.detach(peer);
                self.restarted = true;
                if let Some(s) = adm.open(peer, *conn, d)? {
                    adm.restarted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back((s, peer));
                    adm.peer_restarts.fetch_add(1, Ordering::Relaxed);
                    log::debug!("{peer}: peer restarted; the new session waits for accept()");
                }
                Err(Error::PeerRestarted)
            }
            Verdict::Accept(_) => {
                // Cookies are off: nothing proves the sender owns the address.
                log::debug!("{peer}: ClientHello without cookie on an established session dropped");
                Ok(())
            }
            Verdict::Refused { alert, error } => {
                log::debug!("{peer}: ClientHello on an established session refused: {error}");
                if let Some(a) = alert {
                    let _ = self.transport.send(&a);
                }
                Ok(())
            }
            Verdict::Drop(_) => Ok(()),
        }
    }

    /// The loop behind every call: flush, try `attempt`, read a datagram,
    /// wait for the descriptor or the DTLS deadline, until `attempt` gives a
    /// value, fails, or the caller's deadline passes.
    fn drive<T>(
        &mut self,
        op: Op,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Connection) -> Result<Option<T>>,
    ) -> Result<T> {
        if self.restarted {
            return Err(Error::PeerRestarted);
        }
        self.start()?;
        let mut budget = NONBLOCKING_READ_BUDGET;
        loop {
            if let Err(e) = self.fire_timer() {
                self.flush_quietly();
                return Err(e);
            }
            match self.flush(deadline, op, false) {
                Ok(()) => {}
                Err(Error::WouldBlock) if op == Op::Read => {}
                Err(e) => return Err(e),
            }
            if let Session::Active(c) = &mut self.session {
                match attempt(c) {
                    Ok(Some(v)) => {
                        // Answers the attempt produced (close_notify reply,
                        // handshake retransmissions): best effort.
                        if op == Op::Read {
                            self.flush_quietly();
                        }
                        return Ok(v);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.flush_quietly();
                        return Err(e);
                    }
                }
            }
            // A stream of datagrams that make no progress (a flood, garbage)
            // must not outlast the caller's timeout.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.timeout_error(op));
            }
            match self.read_one() {
                Ok(true) if self.nonblocking => {
                    // Non-blocking calls do a bounded amount of work.
                    budget -= 1;
                    if budget == 0 {
                        return Err(Error::WouldBlock);
                    }
                    continue;
                }
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.flush_quietly();
                    return Err(e);
                }
            }
            if self.nonblocking {
                return Err(Error::WouldBlock);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.timeout_error(op));
            }
            let mut wait = min_wait(left, self.next_timeout());
            if matches!(self.transport, Transport::Link(_)) {
                wait = min_wait(wait, Some(MEMORY_QUEUE_CHECK));
            }
            if wait == Some(Duration::ZERO) || self.transport.has_queued() {
                continue;
            }
            wait_fd(self.transport.as_fd(), false, wait)?;
        }
    }

    /// Sends what is queued without waiting, ignoring failures (alerts and
    /// replies whose loss the peer survives).
    fn flush_quietly(&mut self) {
        if let Err(e) = self.flush(None, Op::Write, true) {
            log::debug!("flush: {e}");
        }
    }
}

impl Read for DtlsSocket {
    /// One datagram per call; `Ok(0)` once the peer's close_notify arrived.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.recv(buf) {
            Ok(n) => Ok(n),
            Err(Error::ClosedByPeer) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

impl Write for DtlsSocket {
    /// One datagram per call.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.send(buf)?)
    }

    /// Sends records still queued (after a send that would have blocked).
    fn flush(&mut self) -> io::Result<()> {
        let deadline = self.deadline(Op::Write);
        Ok(DtlsSocket::flush(self, deadline, Op::Write, false)?)
    }
}

impl AsRawFd for DtlsSocket {
    /// The descriptor that becomes readable when a datagram for this
    /// connection arrives (the UDP socket, or the link's per-peer socket).
    fn as_raw_fd(&self) -> RawFd {
        self.transport.as_raw_fd()
    }
}

impl AsFd for DtlsSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.transport.as_fd()
    }
}

// A connection moves to a thread of its own.
const _: () = {
    fn send<T: Send>() {}
    fn check() {
        send::<DtlsSocket>();
    }
    let _ = check;
};
