//! `DtlsSocket`: one DTLS connection over a UDP transport.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dtls_demux::{Demux, Link};

use super::shared::Shared;
use super::transport::Transport;
use super::wait::check_timeout;
use crate::ssl_error::clone_error;
use crate::{
    Admission, ClientConfig, CloseReason, ConnStats, Connection, Error, FrontDoor, PeerCertificate,
    Result, ServerConfig, State,
};

/// Largest UDP payload: the receive scratch buffer's size.
pub(super) const MAX_DATAGRAM: usize = 65_536;
/// How long [`DtlsSocket::shutdown`] waits for the peer's close_notify when no
/// read timeout is set.
pub const DEFAULT_SHUTDOWN_WAIT: Duration = Duration::from_secs(1);
/// Records drained and discarded while waiting for the peer's close_notify,
/// per call (bounds the work hostile input can cause).
const SHUTDOWN_DRAIN_MAX: usize = 1024;
/// Datagrams one non-blocking call reads at most before it returns
/// `WouldBlock` (the descriptor stays readable; the caller comes back).
pub(super) const NONBLOCKING_READ_BUDGET: usize = 256;

thread_local! {
    pub(super) static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a blocking call is waiting for: decides which timeout applies and
/// which error reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    Write,
}

pub(super) enum Session {
    /// A client that has not sent its ClientHello yet.
    Client {
        config: ClientConfig,
        name: Option<String>,
    },
    /// A server waiting for the peer's ClientHello (cookie exchange first).
    ServerWait { door: Box<FrontDoor> },
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
    pub(super) transport: Transport,
    /// Server side: the demux of the listener (a Router link sends through its
    /// listening socket, which is where a blocked send must wait).
    pub(super) demux: Option<Arc<dyn Demux>>,
    /// Accepted by a listener: what it shares (its front door), for a
    /// restarting peer.
    pub(super) listener: Option<Weak<Shared<DtlsSocket>>>,
    /// The peer restarted and a new connection took over: every call fails
    /// with [`Error::PeerRestarted`].
    pub(super) restarted: bool,
    pub(super) session: Session,
    pub(super) peeked: Option<Vec<u8>>,
    pub(super) read_timeout: Option<Duration>,
    pub(super) write_timeout: Option<Duration>,
    pub(super) nonblocking: bool,
    /// The earliest time `send` reads for a peer that may lack this side's
    /// last handshake flight again (see `read_for_peer`).
    pub(super) read_for_peer_at: Option<Instant>,
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
pub(super) fn transport_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Error::PeerUnreachable(e),
        io::ErrorKind::WouldBlock => Error::WouldBlock,
        _ => Error::Io(e),
    }
}

pub(super) fn closed_error_of(c: &Connection) -> Error {
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
            listener: None,
            restarted: false,
            session,
            peeked: None,
            read_timeout: None,
            write_timeout: None,
            nonblocking: false,
            read_for_peer_at: None,
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
        let door = Box::new(FrontDoor::new(config, &Admission::default())?);
        let mut s = Self::new(transport, Session::ServerWait { door }, None);
        s.read_timeout = read_timeout;
        s.write_timeout = write_timeout;
        Ok(s)
    }

    /// The server socket for a connection a listener's door admitted:
    /// attaches a link for `peer` and sends the first flight. `None` when no
    /// link could be made (counted; the client retries).
    pub(super) fn open_accepted(
        listener: &Arc<Shared<DtlsSocket>>,
        peer: SocketAddr,
        conn: Connection,
    ) -> Result<Option<Self>> {
        match listener.demux.attach(peer) {
            Ok(link) => Self::accepted(conn, link, listener).map(Some),
            Err(e) => {
                listener
                    .attach_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::warn!("{peer}: no link could be attached: {e}; dropped");
                Ok(None)
            }
        }
    }

    /// A server connection accepted by a listener: its front door admitted
    /// the peer and `link` was attached for it.
    fn accepted(conn: Connection, link: Link, listener: &Arc<Shared<DtlsSocket>>) -> Result<Self> {
        link.socket().set_nonblocking(true)?;
        let mut s = Self::new(
            Transport::Link(link),
            Session::Active(Box::new(conn)),
            Some(listener.demux.clone()),
        );
        s.listener = Some(Arc::downgrade(listener));
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
                return Err(closed_error_of(c));
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
    /// While the peer may lack this side's last handshake flight (it then
    /// retransmits its own and waits for the answer), `send` also reads what
    /// has arrived, without waiting and at most every 10 ms, so a server
    /// that only sends completes its clients' handshakes under loss; what it
    /// reads waits for [`Self::recv`]. That ends at the peer's first record
    /// of data, or a handshake timeout after the handshake.
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
        self.read_for_peer()?;
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
