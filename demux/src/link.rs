//! `Link`: one peer's end of the demux.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::batch::{self, RecvBatch};
use crate::core::{Core, LinkShared};
use crate::DemuxKind;

/// One attached peer: its own UDP socket (a file descriptor to poll) plus a small memory
/// queue of datagrams the demux handed over without the kernel.
///
/// Read with [`Link::recv`] (the memory queue first, then the socket) and write with
/// [`Link::send`]. Dropping the link detaches the peer from its demux and closes the
/// per-peer socket. After [`Demux::detach`](crate::Demux::detach) the link is dead:
/// [`send`](Link::send) and [`recv`](Link::recv) fail with
/// [`io::ErrorKind::NotConnected`], and its descriptor, still valid until the link is
/// dropped, refers to an unbound placeholder socket (the per-peer socket itself is
/// closed at once unless you hold clones from [`try_clone_socket`](Link::try_clone_socket)).
pub struct Link {
    core: Arc<Core>,
    shared: Arc<LinkShared>,
    socket: UdpSocket,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("kind", &self.core.kind)
            .field("peer", &self.shared.peer)
            .field("listener", &self.core.local)
            .field("fd", &self.socket.as_raw_fd())
            .field("queued", &self.shared.queued.load(Ordering::Relaxed))
            .field("detached", &self.is_detached())
            .finish()
    }
}

fn not_connected(peer: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        format!("dtls-demux: link of {} is detached", peer),
    )
}

impl Link {
    pub(crate) fn new(core: Arc<Core>, shared: Arc<LinkShared>, socket: UdpSocket) -> Link {
        Link {
            core,
            shared,
            socket,
        }
    }

    /// Which demux made this link.
    pub fn kind(&self) -> DemuxKind {
        self.core.kind
    }

    /// The peer's address, in the listener's family (`::ffff:a.b.c.d` for an IPv4 peer
    /// of a dual-stack IPv6 listener; flow label cleared, scope id kept).
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// The address the peer talks to. OsNet: the per-peer socket's local address (the
    /// listener's address and port; for a wildcard listener, the concrete address the
    /// kernel chose when connecting). Router: the listener's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.core.kind {
            DemuxKind::OsNet => self.socket.local_addr(),
            DemuxKind::Router => self.core.listener.local_addr(),
        }
    }

    /// True once the peer was detached (explicitly or by dropping this link).
    pub fn is_detached(&self) -> bool {
        self.shared.detached.load(Ordering::Acquire)
    }

    /// Send one datagram to the peer, from the listener's address and port. OsNet: on the
    /// per-peer connected socket. Router: `send_to(peer)` on the listening socket (so it
    /// follows the listener's blocking mode).
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        if self.is_detached() {
            return Err(not_connected(self.shared.peer));
        }
        match self.core.kind {
            DemuxKind::OsNet => self.socket.send(buf),
            DemuxKind::Router => self.core.listener.send_to(buf, self.shared.peer),
        }
    }

    /// Receive one datagram of the peer: from the memory queue if it holds any, else from
    /// the per-peer socket, honouring its blocking mode and read timeout. A datagram longer
    /// than `buf` is truncated, as with `UdpSocket::recv`.
    ///
    /// OsNet: a datagram of another peer still queued on the socket from before its
    /// connect() is passed to the demux's stray queue (see
    /// [`Demux::has_buffered`](crate::Demux::has_buffered)) and the read continues.
    /// Errors of the connected socket keep their kind (an ICMP port unreachable from the
    /// peer surfaces as [`io::ErrorKind::ConnectionRefused`]).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.is_detached() {
            return Err(not_connected(self.shared.peer));
        }
        if let Some(d) = self.shared.dequeue() {
            let n = d.len().min(buf.len());
            buf[..n].copy_from_slice(&d[..n]);
            return Ok(n);
        }
        match self.core.kind {
            DemuxKind::Router => self.socket.recv(buf),
            DemuxKind::OsNet => loop {
                let (n, from) = self.socket.recv_from(buf)?;
                let from_key = self.core.family.normalize(from).unwrap_or(from);
                if from_key == self.shared.peer {
                    return Ok(n);
                }
                self.core.stray_from_link(from, &buf[..n]);
                if self.is_detached() {
                    return Err(not_connected(self.shared.peer));
                }
            },
        }
    }

    /// Reads several datagrams of the peer in one system call, without blocking
    /// (see [`batch::recv_batch`]): the memory queue's datagrams first (then the socket is
    /// not read in this call), else up to `batch.slots()` messages of the socket, GRO
    /// messages split. Returns how many datagrams `batch` now holds, possibly 0 when
    /// everything read was another peer's (OsNet: passed to the stray queue, as with
    /// [`Link::recv`]) or too long. Nothing to read: `WouldBlock`.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        if self.is_detached() {
            return Err(not_connected(self.shared.peer));
        }
        batch.clear();
        if self.has_queued() {
            for slot in 0..batch.slots() {
                let Some(d) = self.shared.dequeue() else {
                    break;
                };
                if !batch.push_copy(slot, &d, Some(self.shared.peer)) {
                    log::trace!(
                        "dtls-demux: queued datagram of {} bytes for {} dropped: longer than a batch slot",
                        d.len(),
                        self.shared.peer
                    );
                }
            }
            return Ok(batch.len());
        }
        batch::recv_batch(&self.socket, batch)?;
        if self.core.kind == DemuxKind::OsNet {
            let mut i = 0;
            while i < batch.len() {
                let from = batch.source(i);
                let key = from.map(|f| self.core.family.normalize(f).unwrap_or(f));
                match (from, key) {
                    (Some(f), Some(k)) if k != self.shared.peer => {
                        self.core.stray_from_link(f, batch.get(i));
                        batch.remove(i);
                    }
                    _ => i += 1,
                }
            }
        }
        Ok(batch.len())
    }

    /// Sends datagrams to the peer, several per system call (see
    /// [`batch::send_batch`]), from the listener's address and port as [`Link::send`]
    /// does; never blocks. Returns how many of the first datagrams went (at most
    /// [`batch::MAX_SEND`]); none: the error (`WouldBlock` when the buffer is full).
    pub fn send_batch(&self, datagrams: &[&[u8]]) -> io::Result<usize> {
        if self.is_detached() {
            return Err(not_connected(self.shared.peer));
        }
        match self.core.kind {
            DemuxKind::OsNet => batch::send_batch(&self.socket, None, datagrams),
            DemuxKind::Router => {
                batch::send_batch(&self.core.listener, Some(self.shared.peer), datagrams)
            }
        }
    }

    /// Lets the kernel hand runs of the peer's equal-size datagrams to the per-peer
    /// socket as one message (`UDP_GRO`). Afterwards read the link only with
    /// [`Link::recv_batch`], which splits such messages; [`Link::recv`] would see a run
    /// as one datagram.
    pub fn enable_gro(&self) -> io::Result<()> {
        batch::enable_gro(&self.socket)
    }

    /// True when datagrams wait in the memory queue: [`recv`](Link::recv) returns them
    /// without touching the socket, and polling the descriptor would not show them.
    pub fn has_queued(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) > 0
    }

    /// A descriptor that becomes readable when a datagram is put in the memory
    /// queue ([`has_queued`](Link::has_queued) turns true), until
    /// [`clear_wake`](Link::clear_wake): a thread blocked on the link polls it with
    /// [`socket`](Link::socket), so a datagram handed over in memory wakes it at
    /// once. An `eventfd` made on first call (one descriptor more for this link;
    /// Linux, Android); `Unsupported` elsewhere.
    pub fn wake_fd(&self) -> io::Result<BorrowedFd<'_>> {
        self.shared.wake.fd()
    }

    /// Makes [`wake_fd`](Link::wake_fd) unreadable again; call it after the
    /// wake-up, before looking at the memory queue.
    pub fn clear_wake(&self) {
        self.shared.wake.clear()
    }

    /// The per-peer socket: set its read timeout or blocking mode, poll its descriptor.
    /// Read it through [`Link::recv`], which also drains the memory queue.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// A new handle to the per-peer socket (`dup`). A clone keeps the socket open after
    /// detach until the clone is closed too.
    pub fn try_clone_socket(&self) -> io::Result<UdpSocket> {
        self.socket.try_clone()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Detach before the socket field closes the descriptor (fields drop after this).
        self.core.release(&self.shared);
    }
}

impl AsRawFd for Link {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for Link {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl mio::event::Source for Link {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.socket.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.socket.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match SourceFd(&self.socket.as_raw_fd()).deregister(registry) {
            // Detach closed the registered socket; the kernel already forgot it.
            Err(e) if self.is_detached() && e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }
}
