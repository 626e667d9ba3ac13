//! `Router`: the listener forwards each known peer's datagrams to that peer's socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use crate::core::Core;
use crate::DemuxKind;

/// Options of a [`Router`] listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct RouterOptions {
    /// Hand each known peer's datagrams to its link's memory queue
    /// ([`Route::Delivered`](crate::Route::Delivered)) instead of forwarding them through
    /// the kernel (default: false). Saves a send and a receive per datagram, but the
    /// link's descriptor never becomes readable: only for a caller that owns both ends
    /// and checks [`Link::has_queued`](crate::Link::has_queued) after routing (a reactor),
    /// not for select loops or threads blocked in [`Link::recv`](crate::Link::recv).
    /// Datagrams beyond the memory queue's bound are dropped and counted.
    pub in_memory: bool,
}

impl RouterOptions {
    /// Set [`in_memory`](RouterOptions::in_memory).
    pub fn in_memory(mut self, on: bool) -> Self {
        self.in_memory = on;
        self
    }
}

/// A socket per peer bound to an ephemeral port on the listener's interface (loopback of
/// the same family for a wildcard listener) and connected to the listener's address, so
/// that only datagrams the listener forwards reach it. Works on every platform.
///
/// Something must keep calling [`Demux::recv_from`](crate::Demux::recv_from) (or
/// [`Demux::route`](crate::Demux::route)) on the listener: each datagram of a known peer
/// is forwarded with `listener.send_to(datagram, link_socket_addr)` and reported as
/// [`Route::Forwarded`](crate::Route::Forwarded). Outgoing datagrams leave from the
/// listening socket with `send_to(peer)`. A forwarded datagram keeps its peer identity:
/// the link knows its peer, and its socket accepts datagrams from the listener only.
#[derive(Debug)]
pub struct Router {
    pub(crate) core: Arc<Core>,
}

impl Router {
    /// Bind a new listener on `addr` (port 0 picks a free port), as
    /// `std::net::UdpSocket::bind` does.
    pub fn bind(addr: SocketAddr) -> io::Result<Arc<Router>> {
        Self::bind_with(addr, RouterOptions::default())
    }

    /// [`bind`](Router::bind) with options.
    pub fn bind_with(addr: SocketAddr, opts: RouterOptions) -> io::Result<Arc<Router>> {
        Self::from_socket_with(UdpSocket::bind(addr)?, opts)
    }

    /// Wrap an already-bound socket (any options).
    pub fn from_socket(sock: UdpSocket) -> io::Result<Arc<Router>> {
        Self::from_socket_with(sock, RouterOptions::default())
    }

    /// [`from_socket`](Router::from_socket) with options.
    pub fn from_socket_with(sock: UdpSocket, opts: RouterOptions) -> io::Result<Arc<Router>> {
        let mut core = Core::new(DemuxKind::Router, sock)?;
        core.in_memory = opts.in_memory;
        log::debug!(
            "dtls-demux: Router listening on {} ({:?})",
            core.local,
            core.family
        );
        Ok(Arc::new(Router {
            core: Arc::new(core),
        }))
    }
}
