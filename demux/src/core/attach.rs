//! Attach and detach: a peer's entry in the [`Core`]'s table and its per-peer socket, from
//! the reservation to the release. OsNet's socket is bound to the listener's address,
//! connected to the peer and drained of what reached it before the connect (the
//! attach-time drain); Router's is an ephemeral socket connected to the listener.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use socket2::{Domain, Protocol, Socket, Type};

use super::{inc, lock, Core, DatagramQueue, LinkShared, LinkState};
use crate::addr;
use crate::link::Link;
use crate::wake::Wake;
use crate::{sys, DemuxKind, LINK_QUEUE_MAX_BYTES, LINK_QUEUE_MAX_DATAGRAMS};

/// Largest UDP payload (IPv6 jumbograms aside): the scratch buffer size for internal reads.
const MAX_DATAGRAM: usize = 65_536;
/// Upper bound on datagrams read from a new OsNet socket right after connect().
const ATTACH_DRAIN_MAX: usize = 4096;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with a thread-local 64 KiB scratch buffer.
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < MAX_DATAGRAM {
            s.resize(MAX_DATAGRAM, 0);
        }
        f(&mut s[..])
    })
}

impl Core {
    /// Reserve the table entry for a new peer (exactly one link per peer).
    pub(super) fn reserve(&self, peer: SocketAddr) -> io::Result<Arc<LinkShared>> {
        let key = self.family.normalize(peer).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "dtls-demux: peer {} cannot reach a listener on {}",
                    peer, self.local
                ),
            )
        })?;
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.contains_key(&key) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("dtls-demux: peer {} already has a link", key),
            ));
        }
        let shared = Arc::new(LinkShared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer: key,
            queue: Mutex::new(DatagramQueue::new(
                LINK_QUEUE_MAX_DATAGRAMS,
                LINK_QUEUE_MAX_BYTES,
            )),
            queued: AtomicUsize::new(0),
            detached: AtomicBool::new(false),
            forward_to: OnceLock::new(),
            state: Mutex::new(LinkState::default()),
            wake: Wake::default(),
        });
        table.insert(key, shared.clone());
        Ok(shared)
    }

    /// Remove the table entry of `shared` if it is still the one for its peer.
    fn unlist(&self, shared: &LinkShared) {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.get(&shared.peer).is_some_and(|l| l.id == shared.id) {
            table.remove(&shared.peer);
        }
    }

    /// Mark detached, update counters, free the memory queue; with `neutralize`, point a
    /// live link's descriptor at the dead socket so the per-peer socket closes now.
    fn finish_detach(&self, shared: &LinkShared, neutralize: bool, st: &mut LinkState) {
        if !st.detached {
            st.detached = true;
            shared.detached.store(true, Ordering::Release);
            if st.open {
                self.counters.links_open.fetch_sub(1, Ordering::Relaxed);
                inc(&self.counters.detach_total);
            }
            let discarded = lock(&shared.queue).clear();
            shared.queued.store(0, Ordering::Release);
            if discarded > 0 {
                self.counters
                    .dropped
                    .fetch_add(discarded as u64, Ordering::Relaxed);
                log::debug!(
                    "dtls-demux {}: detach of {} discarded {} queued datagrams",
                    self.local,
                    shared.peer,
                    discarded
                );
            }
            log::debug!("dtls-demux {}: detached {}", self.local, shared.peer);
        }
        if neutralize {
            if let Some(fd) = st.fd {
                if let Err(e) = sys::dup_over(self.dead.as_raw_fd(), fd) {
                    log::warn!(
                        "dtls-demux {}: could not close the socket of {} at detach: {}",
                        self.local,
                        shared.peer,
                        e
                    );
                }
            }
        }
    }

    pub(crate) fn detach(&self, peer: SocketAddr) {
        let Some(key) = self.family.normalize(peer) else {
            return;
        };
        let removed = self
            .table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if let Some(shared) = removed {
            let mut st = lock(&shared.state);
            self.finish_detach(&shared, true, &mut st);
        }
    }

    /// Called by `Link::drop`, before its socket closes.
    pub(crate) fn release(&self, shared: &LinkShared) {
        self.unlist(shared);
        let mut st = lock(&shared.state);
        self.finish_detach(shared, false, &mut st);
        st.fd = None;
    }

    /// Abandon a reservation whose attach failed.
    fn abandon(&self, shared: &LinkShared) {
        self.unlist(shared);
        let mut st = lock(&shared.state);
        self.finish_detach(shared, false, &mut st);
        inc(&self.counters.attach_failed);
    }

    /// Record the descriptor of a freshly made link socket and count the link open;
    /// fails if the peer was detached while the socket was being made.
    pub(super) fn complete(&self, shared: &LinkShared, fd: RawFd) -> io::Result<()> {
        let mut st = lock(&shared.state);
        if st.detached {
            drop(st);
            inc(&self.counters.attach_failed);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "dtls-demux: {} was detached while its link was being made",
                    shared.peer
                ),
            ));
        }
        st.fd = Some(fd);
        st.open = true;
        inc(&self.counters.attach_total);
        self.counters.links_open.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn attach(self: &Arc<Self>, peer: SocketAddr) -> io::Result<Link> {
        let shared = self.reserve(peer)?;
        let made = match self.kind {
            DemuxKind::OsNet => self.make_osnet_socket(&shared),
            DemuxKind::Router => self.make_router_socket(&shared),
        };
        let sock = match made {
            Ok(s) => s,
            Err(e) => {
                self.abandon(&shared);
                // A socket the system would not make (descriptors exhausted, no
                // buffers, address gone) is the operator's to fix.
                log::warn!(
                    "dtls-demux {}: attach of {} failed: {}",
                    self.local,
                    shared.peer,
                    e
                );
                return Err(e);
            }
        };
        self.complete(&shared, sock.as_raw_fd())?;
        log::debug!(
            "dtls-demux {}: attached {} ({:?})",
            self.local,
            shared.peer,
            self.kind
        );
        Ok(Link::new(self.clone(), shared, sock))
    }

    /// OsNet: a socket bound to the listener's exact address (SO_REUSEADDR +
    /// SO_REUSEPORT, same IPV6_V6ONLY) and connected to the peer, then drained of
    /// whatever reached it before the connect.
    fn make_osnet_socket(&self, shared: &LinkShared) -> io::Result<UdpSocket> {
        let s = Socket::new(
            Domain::for_address(self.local),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        if self.family.v6 {
            s.set_only_v6(self.family.v6only)?;
        }
        s.bind(&self.local.into())?;
        let pause = self.race_window_us.load(Ordering::Relaxed);
        if pause > 0 {
            std::thread::sleep(std::time::Duration::from_micros(pause));
        }
        s.connect(&shared.peer.into())?;
        let sock: UdpSocket = s.into();
        self.drain_new_socket(&sock, shared);
        Ok(sock)
    }

    /// Read, without blocking, the datagrams queued on a new OsNet socket: the peer's
    /// own stay with the link (in order), other peers' go to the stray queue.
    fn drain_new_socket(&self, sock: &UdpSocket, shared: &LinkShared) {
        with_scratch(|buf| {
            for _ in 0..ATTACH_DRAIN_MAX {
                match sys::recv_from_dontwait(sock, buf) {
                    Ok((n, Some(from))) => {
                        let from = self.family.normalize(from).unwrap_or(from);
                        if from == shared.peer {
                            if shared.enqueue(&buf[..n]) {
                                inc(&self.counters.delivered);
                                inc(&self.counters.routed);
                            } else {
                                inc(&self.counters.dropped);
                                log::trace!(
                                    "dtls-demux {}: link queue of {} full at attach, dropped",
                                    self.local,
                                    shared.peer
                                );
                            }
                        } else {
                            self.push_stray(from, &buf[..n]);
                        }
                    }
                    Ok((_, None)) => {
                        inc(&self.counters.dropped);
                        log::trace!(
                            "dtls-demux {}: datagram without a source address at attach, dropped",
                            self.local
                        );
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // WouldBlock ends the drain; any other error (e.g. a pending ICMP
                    // error) is left for the link's own reads to report.
                    Err(_) => break,
                }
            }
        });
    }

    /// Router: a socket on an ephemeral port of the listener's interface (loopback for a
    /// wildcard listener), connected to the listener, so only forwarded datagrams reach it.
    fn make_router_socket(&self, shared: &LinkShared) -> io::Result<UdpSocket> {
        let bind_to = addr::router_link_bind(self.local);
        let s = Socket::new(
            Domain::for_address(bind_to),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if bind_to.is_ipv6() && addr::is_mapped(bind_to.ip()) {
            s.set_only_v6(false)?;
        }
        s.bind(&bind_to.into())?;
        let mut listener_addr = bind_to;
        listener_addr.set_port(self.local.port());
        s.connect(&listener_addr.into())?;
        let sock: UdpSocket = s.into();
        if !self.in_memory {
            let forward_to = sock.local_addr()?;
            let _ = shared.forward_to.set(forward_to);
        }
        Ok(sock)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sock;
    use super::*;
    use crate::{Incoming, OsNet};

    /// A new per-peer socket that caught datagrams of several peers before its connect():
    /// the peer's own stay with the link in order, the others go to the stray queue, which
    /// `recv_from` returns before reading the listener.
    #[test]
    fn drain_after_connect_sorts_own_and_strays() {
        let d = OsNet::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let core = d.core.clone();
        core.listener.set_nonblocking(true).unwrap();
        let (a, b) = (sock(), sock());
        let caught = sock();
        let to = caught.local_addr().unwrap();
        for (s, m) in [(&b, "b1"), (&a, "a1"), (&b, "b2"), (&a, "a2")] {
            s.send_to(m.as_bytes(), to).unwrap();
        }
        let shared = core.reserve(a.local_addr().unwrap()).unwrap();
        caught.connect(a.local_addr().unwrap()).unwrap();
        core.drain_new_socket(&caught, &shared);
        assert!(core.has_buffered());
        core.complete(&shared, caught.as_raw_fd()).unwrap();
        let link = Link::new(core.clone(), shared, caught);
        assert!(link.has_queued());
        let mut buf = [0u8; 16];
        for want in ["b1", "b2"] {
            match core.recv_from(&mut buf).unwrap() {
                Incoming::Unknown { len, peer } => {
                    assert_eq!(&buf[..len], want.as_bytes());
                    assert_eq!(peer, b.local_addr().unwrap());
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(!core.has_buffered());
        assert_eq!(
            core.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for want in ["a1", "a2"] {
            let n = link.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want.as_bytes());
        }
        let c = core.counters();
        assert_eq!((c.strays, c.delivered, c.unknown), (2, 2, 2));
    }
}
