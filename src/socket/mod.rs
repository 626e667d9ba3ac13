//! Blocking and non-blocking DTLS sockets in the shape of `std::net`.
//!
//! - [`DtlsSocket`]: one DTLS connection over UDP, client side (a connected
//!   [`UdpSocket`](std::net::UdpSocket)) or server side (a [`Link`](dtls_demux::Link) of a listener's demux). Blocking
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
//! needs a datagram; poll its descriptor ([`AsRawFd`](std::os::fd::AsRawFd))
//! for readability, wake at [`DtlsSocket::next_timeout`] and call
//! [`DtlsSocket::handle_timeout`] then (every call also acts on an expired
//! timer by itself).
//!
//! Server-side connections may receive a datagram that the demux handed over
//! in memory (OsNet stragglers) without their descriptor becoming readable:
//! check [`DtlsSocket::has_pending`] before polling. Blocking calls on them
//! also wait on the link's wake descriptor (`dtls_demux::Link::wake_fd`, an
//! `eventfd` on Linux, made the first time a call blocks: one descriptor more
//! per such connection), which a datagram put in the memory queue makes
//! readable; where there is none they re-check every [`MEMORY_QUEUE_CHECK`].
//! A blocking `accept()` likewise waits on the demux's wake descriptor for
//! strays and restarted peers' new connections.
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

#[allow(unused_imports)] // for the docs above
use crate::{ClientConfig, DemuxKind, Error, ServerConfig};

mod drive;
mod listener;
mod shared;
mod stream;
mod transport;
mod wait;

pub use listener::{DtlsListener, Incoming, ListenerStats, LISTENER_RCVBUF};
pub use stream::{DtlsSocket, UnwrapError, DEFAULT_SHUTDOWN_WAIT};
pub use transport::Transport;
pub use wait::{Readiness, MEMORY_QUEUE_CHECK};
