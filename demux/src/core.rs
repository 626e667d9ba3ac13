//! State shared by both demuxes: the listener, the peer table, the stray queue, counters,
//! and the routing of what the listener reads (to a link, or `Unknown` for the caller).
//! A link's life in the table, attach to detach, is in `attach.rs`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::addr::Family;
use crate::batch::{self, RecvBatch};
use crate::wake::Wake;
use crate::{Counters, DemuxKind, Incoming, Received, Route};
use crate::{STRAY_QUEUE_MAX_BYTES, STRAY_QUEUE_MAX_DATAGRAMS};

mod attach;

/// Lock a mutex, ignoring poisoning (the protected data stays consistent: every critical
/// section here is a handful of infallible collection operations).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A FIFO of datagrams bounded both in count and in bytes.
#[derive(Debug)]
pub(crate) struct DatagramQueue {
    q: VecDeque<(SocketAddr, Vec<u8>)>,
    bytes: usize,
    max_datagrams: usize,
    max_bytes: usize,
}

impl DatagramQueue {
    pub(crate) fn new(max_datagrams: usize, max_bytes: usize) -> Self {
        DatagramQueue {
            q: VecDeque::new(),
            bytes: 0,
            max_datagrams,
            max_bytes,
        }
    }

    /// Append a copy of `data`; false (nothing stored) when either bound would be exceeded.
    pub(crate) fn push(&mut self, peer: SocketAddr, data: &[u8]) -> bool {
        if self.q.len() >= self.max_datagrams || self.bytes + data.len() > self.max_bytes {
            return false;
        }
        self.bytes += data.len();
        self.q.push_back((peer, data.to_vec()));
        true
    }

    pub(crate) fn pop(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let item = self.q.pop_front()?;
        self.bytes -= item.1.len();
        Some(item)
    }

    pub(crate) fn len(&self) -> usize {
        self.q.len()
    }

    /// Empty the queue, freeing its memory; returns how many datagrams were discarded.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.q.len();
        self.q = VecDeque::new();
        self.bytes = 0;
        n
    }
}

/// The counters, as atomics.
#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub(crate) routed: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) unknown: AtomicU64,
    pub(crate) strays: AtomicU64,
    pub(crate) links_open: AtomicU64,
    pub(crate) attach_total: AtomicU64,
    pub(crate) attach_failed: AtomicU64,
    pub(crate) detach_total: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl AtomicCounters {
    fn snapshot(&self) -> Counters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            routed: g(&self.routed),
            delivered: g(&self.delivered),
            forwarded: g(&self.forwarded),
            dropped: g(&self.dropped),
            unknown: g(&self.unknown),
            strays: g(&self.strays),
            links_open: g(&self.links_open),
            attach_total: g(&self.attach_total),
            attach_failed: g(&self.attach_failed),
            detach_total: g(&self.detach_total),
        }
    }
}

/// Mutable life-cycle state of one link, guarded by one mutex so that closing the
/// link's descriptor (Link drop) and neutralising it (detach) never interleave.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    /// Detached: removed from the table, or never completed.
    pub(crate) detached: bool,
    /// The attach completed and the link is counted in `links_open`.
    pub(crate) open: bool,
    /// The per-peer socket's descriptor while the `Link` owns it.
    pub(crate) fd: Option<RawFd>,
}

/// What the demux and a `Link` share about one peer.
#[derive(Debug)]
pub(crate) struct LinkShared {
    /// Distinguishes successive links of the same peer.
    pub(crate) id: u64,
    /// The normalised peer address (the table key).
    pub(crate) peer: SocketAddr,
    /// Datagrams handed over in memory (OsNet stragglers, datagrams routed while the
    /// link was being created).
    pub(crate) queue: Mutex<DatagramQueue>,
    /// Length of `queue`, readable without the lock.
    pub(crate) queued: AtomicUsize,
    /// Mirror of `state.detached` for lock-free checks.
    pub(crate) detached: AtomicBool,
    /// Router: the link socket's address, where the listener forwards datagrams.
    pub(crate) forward_to: OnceLock<SocketAddr>,
    pub(crate) state: Mutex<LinkState>,
    /// Readable while the memory queue got a datagram since the last clear
    /// (for a thread blocked on the link's socket).
    pub(crate) wake: Wake,
}

impl LinkShared {
    /// Queue a datagram in memory; false when the queue is full.
    pub(crate) fn enqueue(&self, data: &[u8]) -> bool {
        let mut q = lock(&self.queue);
        let ok = q.push(self.peer, data);
        self.queued.store(q.len(), Ordering::Release);
        drop(q);
        if ok {
            self.wake.signal();
        }
        ok
    }

    /// Take the oldest datagram queued in memory.
    pub(crate) fn dequeue(&self) -> Option<Vec<u8>> {
        if self.queued.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.queue);
        let item = q.pop();
        self.queued.store(q.len(), Ordering::Release);
        item.map(|(_, d)| d)
    }
}

/// Everything one listener owns.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) kind: DemuxKind,
    pub(crate) listener: UdpSocket,
    /// The listener's local address, as bound.
    pub(crate) local: SocketAddr,
    pub(crate) family: Family,
    table: RwLock<HashMap<SocketAddr, Arc<LinkShared>>>,
    strays: Mutex<DatagramQueue>,
    stray_len: AtomicUsize,
    /// An unbound socket of the listener's family; detach points a live link's
    /// descriptor at it (dup3) so the per-peer socket closes at once.
    dead: UdpSocket,
    pub(crate) counters: AtomicCounters,
    next_id: AtomicU64,
    /// Test hook: pause between bind() and connect() of an OsNet socket (microseconds).
    pub(crate) race_window_us: AtomicU64,
    /// Router only: hand datagrams over in the link's memory queue instead of forwarding.
    pub(crate) in_memory: bool,
    /// Readable while strays arrived since the last clear, or after
    /// `Demux::wake_listener` (for a thread blocked on the listener).
    pub(crate) wake: Wake,
}

impl Core {
    /// Wrap a bound listener. The caller did the kind-specific socket set-up.
    pub(crate) fn new(kind: DemuxKind, listener: UdpSocket) -> io::Result<Core> {
        let local = listener.local_addr()?;
        if local.port() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dtls-demux: the listening socket is not bound to a port",
            ));
        }
        let v6 = local.is_ipv6();
        let v6only = if v6 {
            SockRef::from(&listener).only_v6()?
        } else {
            false
        };
        let dead: UdpSocket =
            Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?.into();
        Ok(Core {
            kind,
            listener,
            local,
            family: Family { v6, v6only },
            table: RwLock::new(HashMap::new()),
            strays: Mutex::new(DatagramQueue::new(
                STRAY_QUEUE_MAX_DATAGRAMS,
                STRAY_QUEUE_MAX_BYTES,
            )),
            stray_len: AtomicUsize::new(0),
            dead,
            counters: AtomicCounters::default(),
            next_id: AtomicU64::new(1),
            race_window_us: AtomicU64::new(0),
            in_memory: false,
            wake: Wake::default(),
        })
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    pub(crate) fn has_buffered(&self) -> bool {
        self.stray_len.load(Ordering::Acquire) > 0
    }

    /// Keep a datagram of another peer caught on a per-peer socket, for `recv_from`.
    pub(crate) fn push_stray(&self, peer: SocketAddr, data: &[u8]) {
        let mut q = lock(&self.strays);
        if q.push(peer, data) {
            self.wake.signal();
            inc(&self.counters.strays);
            log::trace!(
                "dtls-demux {}: stray datagram from {} ({} bytes) kept for the listener",
                self.local,
                peer,
                data.len()
            );
        } else {
            inc(&self.counters.dropped);
            log::trace!(
                "dtls-demux {}: stray queue full, dropped datagram from {}",
                self.local,
                peer
            );
        }
        self.stray_len.store(q.len(), Ordering::Release);
    }

    fn pop_stray(&self) -> Option<(SocketAddr, Vec<u8>)> {
        if self.stray_len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = lock(&self.strays);
        let item = q.pop();
        self.stray_len.store(q.len(), Ordering::Release);
        item
    }

    fn lookup(&self, key: &SocketAddr) -> Option<Arc<LinkShared>> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn is_attached(&self, peer: SocketAddr) -> bool {
        match self.family.normalize(peer) {
            Some(k) => self.lookup(&k).is_some(),
            None => false,
        }
    }

    /// Hand a datagram of an attached peer to its link.
    fn hand_to(&self, link: &LinkShared, data: &[u8]) -> Route {
        let c = &self.counters;
        if link.detached.load(Ordering::Acquire) {
            inc(&c.dropped);
            log::trace!(
                "dtls-demux {}: link of {} went away while routing, dropped",
                self.local,
                link.peer
            );
            return Route::Dropped;
        }
        if let Some(&to) = link.forward_to.get() {
            return match self.listener.send_to(data, to) {
                Ok(n) if n == data.len() => {
                    inc(&c.forwarded);
                    inc(&c.routed);
                    Route::Forwarded
                }
                Ok(n) => {
                    inc(&c.dropped);
                    log::trace!(
                        "dtls-demux {}: short forward for {} ({} of {} bytes), dropped",
                        self.local,
                        link.peer,
                        n,
                        data.len()
                    );
                    Route::Dropped
                }
                Err(e) => {
                    inc(&c.dropped);
                    log::trace!(
                        "dtls-demux {}: forward for {} failed ({}), dropped",
                        self.local,
                        link.peer,
                        e
                    );
                    Route::Dropped
                }
            };
        }
        if link.enqueue(data) {
            inc(&c.delivered);
            inc(&c.routed);
            Route::Delivered
        } else {
            inc(&c.dropped);
            log::trace!(
                "dtls-demux {}: link queue of {} full, dropped {} bytes",
                self.local,
                link.peer,
                data.len()
            );
            Route::Dropped
        }
    }

    pub(crate) fn route(&self, peer: SocketAddr, data: &[u8]) -> Route {
        let link = self.family.normalize(peer).and_then(|k| self.lookup(&k));
        match link {
            Some(l) => self.hand_to(&l, data),
            None => {
                inc(&self.counters.unknown);
                Route::Unknown
            }
        }
    }

    pub(crate) fn recv_from(&self, buf: &mut [u8]) -> io::Result<Incoming> {
        if let Some((peer, data)) = self.pop_stray() {
            return Ok(match self.route(peer, &data) {
                Route::Unknown => {
                    let len = data.len().min(buf.len());
                    buf[..len].copy_from_slice(&data[..len]);
                    Incoming::Unknown { len, peer }
                }
                route => Incoming::Routed { peer, route },
            });
        }
        let (len, from) = self.listener.recv_from(buf)?;
        let peer = self.family.normalize(from).unwrap_or(from);
        Ok(match self.route(peer, &buf[..len]) {
            Route::Unknown => Incoming::Unknown { len, peer },
            route => Incoming::Routed { peer, route },
        })
    }

    pub(crate) fn recv_batch(
        &self,
        batch: &mut RecvBatch,
        out: &mut Vec<Received>,
    ) -> io::Result<usize> {
        out.clear();
        batch.clear();
        if self.stray_len.load(Ordering::Acquire) > 0 {
            for slot in 0..batch.slots() {
                let Some((peer, data)) = self.pop_stray() else {
                    break;
                };
                if !batch.push_copy(slot, &data, Some(peer)) {
                    inc(&self.counters.dropped);
                    log::trace!(
                        "dtls-demux {}: stray of {} bytes longer than a batch slot, dropped",
                        self.local,
                        data.len()
                    );
                }
            }
        } else {
            batch::recv_batch(&self.listener, batch)?;
        }
        let mut i = 0;
        while i < batch.len() {
            let Some(from) = batch.source(i) else {
                inc(&self.counters.dropped);
                log::trace!(
                    "dtls-demux {}: datagram without a source, dropped",
                    self.local
                );
                i += 1;
                continue;
            };
            let peer = self.family.normalize(from).unwrap_or(from);
            let Some(link) = self.lookup(&peer) else {
                inc(&self.counters.unknown);
                out.push(Received {
                    index: i,
                    incoming: Incoming::Unknown {
                        len: batch.get(i).len(),
                        peer,
                    },
                });
                i += 1;
                continue;
            };
            let Some(&to) = link.forward_to.get() else {
                let route = self.hand_to(&link, batch.get(i));
                out.push(Received {
                    index: i,
                    incoming: Incoming::Routed { peer, route },
                });
                i += 1;
                continue;
            };
            // Router: this datagram and the next ones of the same peer, in one send.
            let mut j = i + 1;
            while j < batch.len() && j - i < batch::MAX_SEND {
                let next = batch
                    .source(j)
                    .map(|f| self.family.normalize(f).unwrap_or(f));
                if next != Some(peer) {
                    break;
                }
                j += 1;
            }
            let routes = self.forward_run(&link, to, batch, i, j);
            for (k, route) in (i..j).zip(routes) {
                out.push(Received {
                    index: k,
                    incoming: Incoming::Routed { peer, route },
                });
            }
            i = j;
        }
        Ok(out.len())
    }

    /// Router: forwards datagrams `i..j` of `batch` (one peer's) to its link socket at
    /// `to` with batched sends; the route of each, in order.
    fn forward_run(
        &self,
        link: &LinkShared,
        to: SocketAddr,
        batch: &RecvBatch,
        i: usize,
        j: usize,
    ) -> impl Iterator<Item = Route> {
        let c = &self.counters;
        let n = j - i;
        let mut sent = 0;
        if link.detached.load(Ordering::Acquire) {
            log::trace!(
                "dtls-demux {}: link of {} went away while routing, {n} dropped",
                self.local,
                link.peer
            );
        } else {
            let mut slices: [&[u8]; batch::MAX_SEND] = [&[]; batch::MAX_SEND];
            for (k, s) in slices.iter_mut().enumerate().take(n) {
                *s = batch.get(i + k);
            }
            while sent < n {
                match batch::send_batch(&self.listener, Some(to), &slices[sent..n]) {
                    Ok(m) => sent += m,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::trace!(
                            "dtls-demux {}: forward for {} failed ({}), {} dropped",
                            self.local,
                            link.peer,
                            e,
                            n - sent
                        );
                        break;
                    }
                }
            }
        }
        c.forwarded.fetch_add(sent as u64, Ordering::Relaxed);
        c.routed.fetch_add(sent as u64, Ordering::Relaxed);
        c.dropped.fetch_add((n - sent) as u64, Ordering::Relaxed);
        (0..n).map(move |k| {
            if k < sent {
                Route::Forwarded
            } else {
                Route::Dropped
            }
        })
    }

    pub(crate) fn send_to(&self, buf: &[u8], peer: SocketAddr) -> io::Result<usize> {
        let to = self.family.normalize(peer).unwrap_or(peer);
        self.listener.send_to(buf, to)
    }

    /// OsNet: route a datagram found on a link socket that did not come from its peer.
    pub(crate) fn stray_from_link(&self, from: SocketAddr, data: &[u8]) {
        let from = self.family.normalize(from).unwrap_or(from);
        self.push_stray(from, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Link;
    use crate::{OsNet, LINK_QUEUE_MAX_BYTES, LINK_QUEUE_MAX_DATAGRAMS};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A client socket on 127.0.0.1 whose reads give up after 5 s (also for
    /// the tests of `attach`).
    pub(super) fn sock() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A stray left on the link socket (beyond what the attach drained) is not returned
    /// by `Link::recv`: it goes to the stray queue and is routed as the listener would.
    #[test]
    fn link_recv_diverts_foreign_datagrams() {
        let d = OsNet::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let core = d.core.clone();
        let (a, b) = (sock(), sock());
        let caught = sock();
        let to = caught.local_addr().unwrap();
        b.send_to(b"for-b", to).unwrap();
        a.send_to(b"for-a", to).unwrap();
        // b is attached by now: its stray must be routed to b's link, not to a's.
        let link_b = core.attach(b.local_addr().unwrap()).unwrap();
        let shared = core.reserve(a.local_addr().unwrap()).unwrap();
        caught.connect(a.local_addr().unwrap()).unwrap();
        core.complete(&shared, caught.as_raw_fd()).unwrap();
        let link_a = Link::new(core.clone(), shared, caught);
        let mut buf = [0u8; 16];
        let n = link_a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"for-a");
        assert!(core.has_buffered());
        match core.recv_from(&mut buf).unwrap() {
            Incoming::Routed { peer, route } => {
                assert_eq!(peer, b.local_addr().unwrap());
                assert_eq!(route, Route::Delivered);
            }
            other => panic!("{other:?}"),
        }
        let n = link_b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"for-b");
    }

    /// Floods cannot grow memory: link and stray queues stop at their bounds and count.
    #[test]
    fn queues_are_bounded() {
        let d = OsNet::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let core = d.core.clone();
        let p: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let _link = core.attach(p).unwrap();
        let mut routes = HashMap::new();
        for _ in 0..LINK_QUEUE_MAX_DATAGRAMS + 10 {
            *routes.entry(core.route(p, b"x")).or_insert(0usize) += 1;
        }
        assert_eq!(routes[&Route::Delivered], LINK_QUEUE_MAX_DATAGRAMS);
        assert_eq!(routes[&Route::Dropped], 10);
        for _ in 0..STRAY_QUEUE_MAX_DATAGRAMS + 5 {
            core.push_stray("127.0.0.1:10".parse().unwrap(), b"y");
        }
        let c = core.counters();
        assert_eq!(c.strays, STRAY_QUEUE_MAX_DATAGRAMS as u64);
        assert_eq!(c.dropped, 15);
        let big = vec![0u8; LINK_QUEUE_MAX_BYTES];
        let q = DatagramQueue::new(LINK_QUEUE_MAX_DATAGRAMS, LINK_QUEUE_MAX_BYTES);
        let mut q = q;
        assert!(q.push(p, &big));
        assert!(!q.push(p, b"z"));
    }
}
