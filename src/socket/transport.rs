//! `Transport`: the plain UDP under a `DtlsSocket` (a client's socket, or a
//! server connection's demux link).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use dtls_demux::Link;

/// The plain UDP transport under a [`DtlsSocket`](crate::DtlsSocket), as [`DtlsSocket::unwrap`](crate::DtlsSocket::unwrap)
/// returns it.
///
/// - `Socket`: a client's `UdpSocket`, connected to the server. Wrap it again
///   with [`DtlsSocket::wrap_client`](crate::DtlsSocket::wrap_client) for a new session.
/// - `Link`: a server-side connection's per-peer link of the listener's
///   demux. It still receives the peer's datagrams (with Router, as long as
///   someone calls the listener's `accept()`), sends from the listener's
///   address, and keeps the peer attached (the listener routes its datagrams
///   here) until dropped. Wrap it again with [`DtlsSocket::wrap_server`](crate::DtlsSocket::wrap_server).
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
