//! Blocking and non-blocking DTLS sockets in the shape of `std::net`.
//!
//! - [`DtlsSocket`]: one DTLS connection over UDP, client side (a connected
//!   [`UdpSocket`]) or server side (a [`Link`] of a listener's demux). Blocking
//!   calls with read and write timeouts, or non-blocking calls returning
//!   [`Error::WouldBlock`] for callers that run their own poll loop.
//! - [`DtlsListener`]: a bound UDP port with a [`ServerConfig`] and a demux
//!   ([`DemuxKind::OsNet`] or [`DemuxKind::Router`]); [`DtlsListener::accept`]
//!   reads one datagram and returns a new connection, or `None`.
//! - [`Transport`]: the plain UDP transport a connection runs over, handed
//!   back by [`DtlsSocket::unwrap`] after the close_notify exchange.
//!
//! # Blocking, timeouts and the DTLS timer
//!
//! The real socket is non-blocking underneath. A blocking call waits with
//! `poll(2)` on the socket's descriptor for the smaller of the time left of
//! the caller's timeout ([`DtlsSocket::set_read_timeout`],
//! [`DtlsSocket::set_write_timeout`]) and the connection's DTLS
//! retransmission deadline, and retransmits when the latter passes: a
//! blocking socket never needs [`DtlsSocket::handle_timeout`]. Without a
//! timeout a blocking call waits as long as the configuration's handshake
//! deadline and retransmission limit allow during a handshake, and as long as
//! it takes afterwards, like `std::net::UdpSocket::recv`.
//!
//! A non-blocking socket ([`DtlsSocket::set_nonblocking`]) does one step per
//! call and returns [`Error::WouldBlock`] (`io::ErrorKind::WouldBlock`) when it
//! needs a datagram; poll its descriptor ([`AsRawFd`])
//! for readability, wake at [`DtlsSocket::next_timeout`] and call
//! [`DtlsSocket::handle_timeout`] then (every call also acts on an expired
//! timer by itself).
//!
//! Server-side connections may receive a datagram that the demux handed over
//! in memory (OsNet stragglers) without their descriptor becoming readable:
//! check [`DtlsSocket::has_pending`] before polling. Blocking calls on them
//! re-check every [`MEMORY_QUEUE_CHECK`] while they wait.
//!
//! # Who moves datagrams to server-side connections
//!
//! With [`DemuxKind::OsNet`] the kernel delivers each peer's datagrams to its
//! connection's own socket. With [`DemuxKind::Router`] they all arrive on the
//! listening socket and [`DtlsListener::accept`] forwards them: **someone must
//! keep calling `accept()`** (a thread looping on it, or a select loop calling
//! it whenever the listener is readable), or established connections starve.
//! `accept()` never blocks on one peer: it reads one datagram, answers a
//! ClientHello statelessly (cookie exchange) or creates the connection and
//! sends the server's first flight, and returns. The rest of that handshake
//! runs in whichever thread uses the new [`DtlsSocket`].
//!
//! # From Python's `ssl` / PyDTLS
//!
//! | Python `ssl` / PyDTLS | here |
//! |---|---|
//! | `ssl.wrap_socket(sock)` (client) | [`DtlsSocket::wrap_client`]`(sock, &cfg, name)` |
//! | `ssl.wrap_socket(sock, server_side=True)` | [`DtlsSocket::wrap_server`]`(transport, &cfg)` for one peer, or a [`DtlsListener`] |
//! | `SSLContext(PROTOCOL_DTLSv1_2)`, `load_cert_chain`, `load_verify_locations`, `set_ciphers`, `cert_reqs` | [`ClientConfig::builder`] / [`ServerConfig::builder`]: `certificate_chain_file`, `private_key_file`, `ca_file`, `ciphers`, `verify` |
//! | `do_handshake_on_connect=True`, `s.connect(addr)` | [`DtlsSocket::connect`]`(addr, &cfg)`, or [`DtlsSocket::connect_peer`] on a wrapped unconnected socket |
//! | `do_handshake_on_connect=False`, `s.do_handshake()` | [`DtlsSocket::handshake`] (or lazily on the first `send`/`recv`) |
//! | `s.listen()` + `s.accept()` | [`DtlsListener::bind`] + [`DtlsListener::accept`] → `Some((conn, peer))` or `None` |
//! | `s.send(b)`, `s.sendall(b)`, `s.write(b)` | [`DtlsSocket::send`], `Write::write` / `write_all` (one datagram per call) |
//! | `s.recv(n)`, `s.recv_into(buf)`, `s.read(n)` | [`DtlsSocket::recv`], [`DtlsSocket::recv_into`], `Read::read` (one datagram per call; `Ok(0)` at close_notify) |
//! | `s.recv(n, MSG_PEEK)` | [`DtlsSocket::peek`] |
//! | `s.pending()` | [`DtlsSocket::pending`], [`DtlsSocket::has_pending`] |
//! | `s.settimeout(t)` | [`DtlsSocket::set_read_timeout`] + [`DtlsSocket::set_write_timeout`] ([`DtlsListener::set_read_timeout`] for accept) |
//! | `s.setblocking(False)` | [`DtlsSocket::set_nonblocking`], [`DtlsListener::set_nonblocking`] |
//! | `s.get_timeout()` | [`DtlsSocket::next_timeout`] |
//! | `s.handle_timeout()` | [`DtlsSocket::handle_timeout`] (`Err(RetransmitLimit)` after the last retransmission) |
//! | `s.unwrap()` | [`DtlsSocket::unwrap`] → the plain [`Transport`], still open |
//! | `s.shutdown(SHUT_RDWR)` | [`DtlsSocket::shutdown`] (close_notify exchange) |
//! | `s.getpeercert()`, `getpeercert(True)` | [`DtlsSocket::peer_certificate`] (`subject()`, `subject_alt_names()`, `to_der()`) |
//! | `s.cipher()`, `s.version()` | [`DtlsSocket::cipher`], [`DtlsSocket::version`] |
//! | `ssl.get_server_certificate(addr)` | connect with `Verify::None`, then `peer_certificate()?.to_pem()` |
//! | `s.fileno()` | `as_raw_fd()` / `as_fd()` on [`DtlsSocket`] and [`DtlsListener`] |
//! | `s.getsockname()`, `s.getpeername()` | `local_addr()`, `peer_addr()` |
//! | `ssl.OPENSSL_VERSION` | [`crate::openssl_version`] |
//! | `ssl.SSLError` (`SSL_ERROR_WANT_READ`, `socket.timeout`, ...) | [`Error`]: `WouldBlock`, `ReadTimeout`, `WriteTimeout`, `HandshakeTimeout`, `PeerUnreachable`, `ClosedByPeer`, `PeerRestarted`, `RetransmitLimit`, `Verification`, `VersionMismatch`; `io::Error::from(e).kind()` |
//! | `do_patch()`, osnet/router demux env var | [`DemuxKind`] argument of [`DtlsListener::bind`] |
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use dtls_reactor::{ClientConfig, DemuxKind, DtlsListener, DtlsSocket, ServerConfig};
//!
//! # fn main() -> dtls_reactor::Result<()> {
//! # let (cert_pem, key_pem) = include!("../doc_pki.rs");
//! let server_cfg = ServerConfig::builder()
//!     .certificate_chain_pem(&cert_pem)
//!     .private_key_pem(&key_pem)
//!     .build()?;
//! let listener = DtlsListener::bind("127.0.0.1:0".parse().unwrap(), &server_cfg, DemuxKind::OsNet)?;
//! listener.set_read_timeout(Some(Duration::from_secs(5)))?;
//! let addr = listener.local_addr()?;
//!
//! let client = std::thread::spawn(move || -> dtls_reactor::Result<Vec<u8>> {
//!     let cfg = ClientConfig::builder()
//!         .ca_pem(&cert_pem) // self-signed: its own CA
//!         .server_name("localhost")
//!         .build()?;
//!     let mut s = DtlsSocket::connect_timeout(addr, &cfg, Duration::from_secs(5))?;
//!     s.set_read_timeout(Some(Duration::from_secs(5)))?;
//!     s.send(b"hello")?;
//!     let mut buf = [0u8; 1500];
//!     let n = s.recv(&mut buf)?;
//!     s.shutdown()?;
//!     Ok(buf[..n].to_vec())
//! });
//!
//! // accept() returns None for the cookie exchange, Some for the connection.
//! let (mut conn, _peer) = loop {
//!     if let Some(c) = listener.accept()? {
//!         break c;
//!     }
//! };
//! conn.set_read_timeout(Some(Duration::from_secs(5)))?;
//! let mut buf = [0u8; 1500];
//! let n = conn.recv(&mut buf)?; // finishes the handshake, then reads
//! conn.send(&buf[..n])?;
//! assert!(matches!(conn.recv(&mut buf), Err(dtls_reactor::Error::ClosedByPeer)));
//! assert_eq!(client.join().unwrap()?, b"hello");
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use dtls_demux::Link;

#[allow(unused_imports)] // for the docs above
use crate::{ClientConfig, DemuxKind, Error, ServerConfig};

mod listener;
mod stream;

pub use listener::{DtlsListener, Incoming, ListenerStats, LISTENER_RCVBUF, RECENT_HELLOS};
pub use stream::{DtlsSocket, UnwrapError, DEFAULT_SHUTDOWN_WAIT};

/// How often a blocking call on a server-side connection, or a blocking
/// `accept()` on an OsNet listener, re-checks the memory queues the demux
/// fills without making the descriptor readable. Ten wake-ups a second cost
/// microseconds of CPU; a datagram handed over that way waits at most this long.
pub const MEMORY_QUEUE_CHECK: Duration = Duration::from_millis(100);

/// The plain UDP transport under a [`DtlsSocket`], as [`DtlsSocket::unwrap`]
/// returns it.
///
/// - `Socket`: a client's `UdpSocket`, connected to the server. Wrap it again
///   with [`DtlsSocket::wrap_client`] for a new session.
/// - `Link`: a server-side connection's per-peer link of the listener's
///   demux. It still receives the peer's datagrams (with Router, as long as
///   someone calls the listener's `accept()`), sends from the listener's
///   address, and keeps the peer attached (the listener routes its datagrams
///   here) until dropped. Wrap it again with [`DtlsSocket::wrap_server`].
///
/// After `unwrap` the socket is back in the blocking mode and timeouts the
/// `DtlsSocket` had. (A Router link sends through the listening socket, which
/// the listener keeps non-blocking.)
#[derive(Debug)]
pub enum Transport {
    /// A UDP socket (connected to the peer).
    Socket(UdpSocket),
    /// A per-peer link of a listener's demux.
    Link(Link),
}

impl From<UdpSocket> for Transport {
    fn from(s: UdpSocket) -> Self {
        Transport::Socket(s)
    }
}

impl From<Link> for Transport {
    fn from(l: Link) -> Self {
        Transport::Link(l)
    }
}

impl Transport {
    /// Sends one datagram to the peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Socket(s) => s.send(buf),
            Transport::Link(l) => l.send(buf),
        }
    }

    /// Receives one datagram of the peer (a link reads its memory queue first).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Socket(s) => s.recv(buf),
            Transport::Link(l) => l.recv(buf),
        }
    }

    /// The peer's address (`NotConnected` for an unconnected socket).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Socket(s) => s.peer_addr(),
            Transport::Link(l) => Ok(l.peer_addr()),
        }
    }

    /// The local address the peer talks to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Transport::Socket(s) => s.local_addr(),
            Transport::Link(l) => l.local_addr(),
        }
    }

    /// Datagrams waiting in a link's memory queue (never for a plain socket).
    pub fn has_queued(&self) -> bool {
        match self {
            Transport::Socket(_) => false,
            Transport::Link(l) => l.has_queued(),
        }
    }

    /// The socket whose descriptor shows readability: the UDP socket, or the
    /// link's per-peer socket.
    pub fn socket(&self) -> &UdpSocket {
        match self {
            Transport::Socket(s) => s,
            Transport::Link(l) => l.socket(),
        }
    }

    /// Sets the blocking mode of [`Self::socket`].
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.socket().set_nonblocking(on)
    }

    /// Sets the read timeout of [`Self::socket`].
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(t)
    }

    /// Sets the write timeout of [`Self::socket`].
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(t)
    }

    /// The UDP socket, if this is one.
    pub fn into_socket(self) -> Option<UdpSocket> {
        match self {
            Transport::Socket(s) => Some(s),
            Transport::Link(_) => None,
        }
    }

    /// The link, if this is one.
    pub fn into_link(self) -> Option<Link> {
        match self {
            Transport::Link(l) => Some(l),
            Transport::Socket(_) => None,
        }
    }
}

impl AsRawFd for Transport {
    fn as_raw_fd(&self) -> RawFd {
        self.socket().as_raw_fd()
    }
}

impl AsFd for Transport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket().as_fd()
    }
}

/// Waits until `fd` is readable (or writable with `write`) or `timeout`
/// passes (`None`: no limit). True when an event (including an error
/// condition) is pending; false on timeout or a signal. The timeout is
/// rounded up to whole milliseconds so a sub-millisecond rest never spins.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    write: bool,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: if write { libc::POLLOUT } else { libc::POLLIN },
        revents: 0,
    };
    let ms: libc::c_int = match timeout {
        None => -1,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    };
    // SAFETY: `pfd` is one valid pollfd on our stack and the count is 1; the
    // descriptor is borrowed, so it stays open for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// The smaller of two optional durations (`None` is infinite).
pub(crate) fn min_wait(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Rejects a zero timeout, as `std::net` does.
pub(crate) fn check_timeout(t: Option<Duration>) -> crate::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(crate::Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )));
    }
    Ok(())
}
