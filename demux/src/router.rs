//! `Router`: the listener forwards each known peer's datagrams to that peer's socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use crate::core::Core;
use crate::DemuxKind;

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
        Self::from_socket(UdpSocket::bind(addr)?)
    }

    /// Wrap an already-bound socket (any options).
    pub fn from_socket(sock: UdpSocket) -> io::Result<Arc<Router>> {
        let core = Core::new(DemuxKind::Router, sock)?;
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
