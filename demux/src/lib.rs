//! Per-peer routing of UDP datagrams for a server that listens on one UDP port.
//!
//! A DTLS server (or any connection-oriented protocol over UDP) reads its first datagram
//! from a peer on the listening socket, then wants every later datagram of that peer to
//! reach the peer's connection. This crate decides how: it knows UDP and socket
//! addresses, nothing about DTLS.
//!
//! - [`Demux`] is the interface: [`attach`](Demux::attach) a [`Link`] for a new peer,
//!   [`route`](Demux::route) or [`recv_from`](Demux::recv_from) datagrams that arrive on
//!   the listener (to a known peer's link, or "unknown peer" for the caller's
//!   handshake stage), [`send_to`](Demux::send_to) any peer from the listener,
//!   [`detach`](Demux::detach) a peer.
//! - [`OsNet`] (Linux, the default there): a connected `SO_REUSEPORT` socket per peer;
//!   the kernel does the routing.
//! - [`Router`] (portable): the listener forwards each known peer's datagrams to that
//!   peer's own loopback socket.
//!
//! - [`SharedSocket`] (for an owner that reads the socket itself, such as a reactor):
//!   one socket for every peer and a table of [`Flow`]s in memory, no descriptor and no
//!   system call per peer. It is not a [`Demux`]: it has no [`Link`] to poll.
//!
//! Options beyond the defaults: [`OsNetOptions`] (the reuseport BPF program) and
//! [`RouterOptions`] (hand-over in memory instead of through the kernel).
//!
//! A [`Link`] has a file descriptor ([`AsRawFd`](std::os::fd::AsRawFd), `mio` source) that
//! a reactor or a select loop polls; [`Link::recv`] reads the link's small memory queue
//! first (check [`Link::has_queued`] before going back to poll), and the listener side
//! may buffer datagrams that polling would not show ([`Demux::has_buffered`]).
//!
//! Network input is treated as hostile: every in-memory queue is bounded (see
//! [`LINK_QUEUE_MAX_DATAGRAMS`] and friends), overflow is counted in
//! [`Counters::dropped`] and logged with `log::trace!`.
//!
//! # Example
//!
//! Bind a listener, attach the first peer that writes, exchange datagrams through its
//! link, with each kind of demux:
//!
//! ```
//! use std::net::UdpSocket;
//! use std::time::Duration;
//! use dtls_demux::{bind, DemuxKind, Incoming, Route};
//!
//! # fn main() -> std::io::Result<()> {
//! let t = Some(Duration::from_secs(5));
//! for kind in [DemuxKind::default(), DemuxKind::Router] {
//!     let demux = bind(kind, "127.0.0.1:0".parse().unwrap())?;
//!     demux.listener().set_read_timeout(t)?;
//!     let server = demux.local_addr()?;
//!
//!     let client = UdpSocket::bind("127.0.0.1:0")?;
//!     client.set_read_timeout(t)?;
//!     client.send_to(b"hello", server)?;
//!
//!     // The first datagram comes from a peer the demux does not know yet.
//!     let mut buf = [0u8; 2048];
//!     let peer = match demux.recv_from(&mut buf)? {
//!         Incoming::Unknown { len, peer } => {
//!             assert_eq!(&buf[..len], b"hello");
//!             peer
//!         }
//!         other => panic!("unexpected {other:?}"),
//!     };
//!
//!     let link = demux.attach(peer)?;
//!     link.socket().set_read_timeout(t)?;
//!     link.send(b"welcome")?;
//!     let (n, from) = client.recv_from(&mut buf)?;
//!     assert_eq!((&buf[..n], from), (&b"welcome"[..], server));
//!
//!     client.send_to(b"data", server)?;
//!     if kind == DemuxKind::Router {
//!         // Router: the listener forwards the peer's datagram to its link.
//!         let got = demux.recv_from(&mut buf)?;
//!         assert!(matches!(got, Incoming::Routed { route: Route::Forwarded, .. }));
//!     }
//!     let n = link.recv(&mut buf)?;
//!     assert_eq!(&buf[..n], b"data");
//!
//!     drop(link); // detaches the peer and closes its socket
//!     assert!(!demux.is_attached(peer));
//! }
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg(unix)]

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::BorrowedFd;
use std::str::FromStr;
use std::sync::Arc;

mod addr;
pub mod batch;
mod core;
mod link;
mod osnet;
mod router;
mod shared;
mod sys;
mod wake;

use crate::batch::RecvBatch;
pub use crate::link::Link;
pub use crate::osnet::{OsNet, OsNetOptions};
pub use crate::router::{Router, RouterOptions};
pub use crate::shared::{Flow, FlowDatagram, SharedCounters, SharedSocket};

// Links and demuxes cross threads (reactor and socket API rely on it).
const _: () = {
    fn send_sync<T: Send + Sync + ?Sized>() {}
    fn check() {
        send_sync::<Link>();
        send_sync::<dyn Demux>();
        send_sync::<OsNet>();
        send_sync::<Router>();
        send_sync::<SharedSocket>();
    }
    let _ = check;
};

/// Most datagrams a link's memory queue holds; more are dropped and counted.
pub const LINK_QUEUE_MAX_DATAGRAMS: usize = 256;
/// Most payload bytes a link's memory queue holds.
pub const LINK_QUEUE_MAX_BYTES: usize = 512 * 1024;
/// Most datagrams the demux's stray queue (OsNet race handling) holds.
pub const STRAY_QUEUE_MAX_DATAGRAMS: usize = 1024;
/// Most payload bytes the stray queue holds.
pub const STRAY_QUEUE_MAX_BYTES: usize = 2 * 1024 * 1024;

/// Which demux serves a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DemuxKind {
    /// [`OsNet`]: a connected `SO_REUSEPORT` socket per peer (Linux, Android).
    OsNet,
    /// [`Router`]: the listener forwards to a loopback socket per peer (portable).
    Router,
}

impl Default for DemuxKind {
    /// `OsNet` on Linux and Android, `Router` elsewhere.
    fn default() -> Self {
        if cfg!(any(target_os = "linux", target_os = "android")) {
            DemuxKind::OsNet
        } else {
            DemuxKind::Router
        }
    }
}

impl fmt::Display for DemuxKind {
    /// `osnet` or `router`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DemuxKind::OsNet => "osnet",
            DemuxKind::Router => "router",
        })
    }
}

/// The error of parsing a [`DemuxKind`] from a string other than `osnet` or `router`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDemuxKindError(String);

impl fmt::Display for ParseDemuxKindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown demux kind {:?} (expected \"osnet\" or \"router\")",
            self.0
        )
    }
}

impl std::error::Error for ParseDemuxKindError {}

impl FromStr for DemuxKind {
    type Err = ParseDemuxKindError;

    /// `osnet` or `router`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("osnet") {
            Ok(DemuxKind::OsNet)
        } else if s.eq_ignore_ascii_case("router") {
            Ok(DemuxKind::Router)
        } else {
            Err(ParseDemuxKindError(s.to_owned()))
        }
    }
}

/// What happened to a datagram that arrived on the listener.
///
/// Non-exhaustive: a later version may tell more ways of handing a datagram over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// The sender has no link: the caller handles it (e.g. the DTLS cookie exchange).
    Unknown,
    /// Queued in the link's memory queue ([`Link::recv`] returns it; [`Link::has_queued`]
    /// reports it). OsNet stragglers, and datagrams routed while a link is being made.
    Delivered,
    /// Router: sent to the link's socket.
    Forwarded,
    /// The link's queue was full, the forward failed, or the link went away: counted in
    /// [`Counters::dropped`].
    Dropped,
}

/// One datagram read by [`Demux::recv_from`].
///
/// Non-exhaustive: a later version may add variants only for datagrams the
/// demux handled itself, so a caller that treats an unknown variant as "handled,
/// nothing to do" stays correct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Incoming {
    /// A datagram from a peer with no link: `buf[..len]` holds it.
    Unknown {
        /// Length of the datagram in the caller's buffer (truncated to the buffer).
        len: usize,
        /// Its sender, in the listener's address family.
        peer: SocketAddr,
    },
    /// The datagram belonged to an attached peer and was handed to its link.
    Routed {
        /// The attached peer.
        peer: SocketAddr,
        /// How it was handed over (never [`Route::Unknown`]).
        route: Route,
    },
}

/// One datagram of a [`Demux::recv_batch`] and what the demux did with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Received {
    /// Its index in the batch: the bytes are `batch.get(index)`.
    pub index: usize,
    /// [`Incoming::Unknown`] (`len` is the datagram's length) or [`Incoming::Routed`].
    pub incoming: Incoming,
}

/// A snapshot of a demux's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Counters {
    /// Datagrams of attached peers handed to their link by the demux
    /// (`delivered + forwarded`; datagrams the kernel sent straight to an OsNet link
    /// socket never pass through the demux and are not counted).
    pub routed: u64,
    /// Of those, queued in a link's memory queue.
    pub delivered: u64,
    /// Of those, forwarded to a Router link socket.
    pub forwarded: u64,
    /// Datagrams dropped: a full link or stray queue, a failed forward, a link detached
    /// while routing, or still queued in a link's memory when it was detached.
    pub dropped: u64,
    /// Datagrams from peers without a link reported to the caller as unknown.
    pub unknown: u64,
    /// OsNet race handling: datagrams of other peers found on a per-peer socket and kept
    /// for [`Demux::recv_from`].
    pub strays: u64,
    /// Links currently attached.
    pub links_open: u64,
    /// Links attached since the demux was made.
    pub attach_total: u64,
    /// Attach calls that failed after reserving the peer (socket errors, detach during
    /// attach); `AlreadyExists` and address family errors are not counted.
    pub attach_failed: u64,
    /// Links detached (explicitly or by dropping the link).
    pub detach_total: u64,
}

/// How each peer's datagrams reach its connection, for one listening UDP socket.
///
/// All methods take `&self` and may be called from several threads.
pub trait Demux: Send + Sync + fmt::Debug {
    /// Which demux this is.
    fn kind(&self) -> DemuxKind;

    /// The listening socket. Callers may set its blocking mode or read timeout and poll
    /// its descriptor; read it through [`recv_from`](Demux::recv_from) (or pass what they
    /// read themselves to [`route`](Demux::route)).
    fn listener(&self) -> &UdpSocket;

    /// The listener's local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Read ONE datagram and route it: first from the internal stray queue filled by
    /// OsNet's race handling, then from the listener socket, honouring its blocking mode
    /// and read timeout. A datagram longer than `buf` is truncated (use 64 KiB to be safe).
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<Incoming>;

    /// Read several datagrams in one system call and route each as
    /// [`recv_from`](Demux::recv_from) does; `out` is cleared and gets one [`Received`]
    /// per datagram, in arrival order, naming its slot in `batch`. Strays come first (a
    /// call that has strays returns only strays). Never blocks (`WouldBlock` when
    /// nothing waits). Router forwards consecutive datagrams of one peer to its link in
    /// one batched send ([`batch::send_batch`]). Returns `out.len()`.
    ///
    /// Each datagram is routed when the batch is read: a caller that attaches a peer
    /// while going through `out` passes that peer's later `Unknown` datagrams of the same
    /// batch to [`route`](Demux::route).
    fn recv_batch(&self, batch: &mut RecvBatch, out: &mut Vec<Received>) -> io::Result<usize>;

    /// Route a datagram the caller read from the listener itself.
    fn route(&self, peer: SocketAddr, datagram: &[u8]) -> Route;

    /// Create the link for a new peer. Fails with [`io::ErrorKind::AlreadyExists`] if the
    /// peer has a link, [`io::ErrorKind::InvalidInput`] if its address family cannot
    /// reach this listener, or with the socket error that prevented making the link.
    fn attach(&self, peer: SocketAddr) -> io::Result<Link>;

    /// Forget the peer and close its per-peer socket (a live [`Link`] becomes dead, see
    /// its docs). Dropping the link does this too. Idempotent.
    fn detach(&self, peer: SocketAddr);

    /// True when the peer has a link.
    fn is_attached(&self, peer: SocketAddr) -> bool;

    /// Send a datagram to a peer from the listening socket (e.g. a HelloVerifyRequest
    /// to an unknown peer).
    fn send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize>;

    /// True when [`recv_from`](Demux::recv_from) has datagrams buffered in memory (OsNet
    /// strays) that polling the listener's descriptor would not show.
    ///
    /// Strays appear during [`attach`](Demux::attach) (datagrams of other peers caught by
    /// the new socket before its connect) and, rarely, during [`Link::recv`]. A poll loop
    /// checks this after those calls and before blocking on the listener. On Linux 6.18
    /// the reuseport BPF program keeps them away for IPv6 but not for IPv4 listeners once
    /// links exist, so IPv4 servers under load do see them.
    fn has_buffered(&self) -> bool;

    /// A snapshot of the counters.
    fn counters(&self) -> Counters;

    /// A descriptor that becomes readable when [`has_buffered`](Demux::has_buffered)
    /// turns true (a stray arrived) or [`wake_listener`](Demux::wake_listener) was
    /// called, until [`clear_listener_wake`](Demux::clear_listener_wake): poll it
    /// with the listener instead of re-checking on a timer. An `eventfd` made on
    /// first call (Linux, Android); `Unsupported` elsewhere (and by default).
    fn listener_wake_fd(&self) -> io::Result<BorrowedFd<'_>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no wake descriptor",
        ))
    }

    /// Makes [`listener_wake_fd`](Demux::listener_wake_fd) readable: for the
    /// owner's own hand-overs to a thread waiting on the listener.
    fn wake_listener(&self) {}

    /// Makes [`listener_wake_fd`](Demux::listener_wake_fd) unreadable again; call
    /// it after the wake-up, before looking at what it announced.
    fn clear_listener_wake(&self) {}
}

macro_rules! impl_demux {
    ($t:ty) => {
        impl Demux for $t {
            fn kind(&self) -> DemuxKind {
                self.core.kind
            }
            fn listener(&self) -> &UdpSocket {
                &self.core.listener
            }
            fn local_addr(&self) -> io::Result<SocketAddr> {
                self.core.listener.local_addr()
            }
            fn recv_batch(
                &self,
                batch: &mut RecvBatch,
                out: &mut Vec<Received>,
            ) -> io::Result<usize> {
                self.core.recv_batch(batch, out)
            }
            fn recv_from(&self, buf: &mut [u8]) -> io::Result<Incoming> {
                self.core.recv_from(buf)
            }
            fn route(&self, peer: SocketAddr, datagram: &[u8]) -> Route {
                self.core.route(peer, datagram)
            }
            fn attach(&self, peer: SocketAddr) -> io::Result<Link> {
                self.core.attach(peer)
            }
            fn detach(&self, peer: SocketAddr) {
                self.core.detach(peer)
            }
            fn is_attached(&self, peer: SocketAddr) -> bool {
                self.core.is_attached(peer)
            }
            fn send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
                self.core.send_to(buf, peer)
            }
            fn has_buffered(&self) -> bool {
                self.core.has_buffered()
            }
            fn counters(&self) -> Counters {
                self.core.counters()
            }
            fn listener_wake_fd(&self) -> io::Result<BorrowedFd<'_>> {
                self.core.wake.fd()
            }
            fn wake_listener(&self) {
                self.core.wake.signal()
            }
            fn clear_listener_wake(&self) {
                self.core.wake.clear()
            }
        }
    };
}

impl_demux!(OsNet);
impl_demux!(Router);

/// Bind a listener on `addr` for the given kind of demux (see [`OsNet::bind`] and
/// [`Router::bind`] for how each creates its socket).
pub fn bind(kind: DemuxKind, addr: SocketAddr) -> io::Result<Arc<dyn Demux>> {
    Ok(match kind {
        DemuxKind::OsNet => OsNet::bind(addr)?,
        DemuxKind::Router => Router::bind(addr)?,
    })
}

/// Wrap an already-bound socket. OsNet fails with [`io::ErrorKind::InvalidInput`] if
/// `SO_REUSEPORT` is not set on it.
pub fn from_socket(kind: DemuxKind, sock: UdpSocket) -> io::Result<Arc<dyn Demux>> {
    Ok(match kind {
        DemuxKind::OsNet => OsNet::from_socket(sock)?,
        DemuxKind::Router => Router::from_socket(sock)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_parse_display() {
        assert_eq!("OsNet".parse::<DemuxKind>(), Ok(DemuxKind::OsNet));
        assert_eq!("ROUTER".parse::<DemuxKind>(), Ok(DemuxKind::Router));
        assert!("kernel".parse::<DemuxKind>().is_err());
        for k in [DemuxKind::OsNet, DemuxKind::Router] {
            assert_eq!(k.to_string().parse::<DemuxKind>(), Ok(k));
        }
        #[cfg(target_os = "linux")]
        assert_eq!(DemuxKind::default(), DemuxKind::OsNet);
    }

    #[test]
    fn queue_bounds() {
        let p: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut q = core::DatagramQueue::new(2, 10);
        assert!(q.push(p, b"12345"));
        assert!(!q.push(p, b"123456"));
        assert!(q.push(p, b"12345"));
        assert!(!q.push(p, b""));
        assert_eq!(q.pop().map(|x| x.1), Some(b"12345".to_vec()));
        assert!(q.push(p, b""));
        assert_eq!(q.clear(), 2);
        assert!(q.pop().is_none());
    }
}

/// The README's Rust snippet, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
