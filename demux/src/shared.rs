//! [`SharedSocket`]: one UDP socket for every peer, a table of flows in memory, no
//! descriptor per peer.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};

use crate::addr::Family;
use crate::batch::{self, RecvBatch, Transmit};
use crate::core::lock;

/// One conversation on a [`SharedSocket`]: the peer, and the local address it talks
/// to when the socket is bound to a wildcard address (`None` on a socket bound to one
/// address, where it is always that one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The local address the peer writes to and hears from (wildcard sockets only).
    pub local: Option<IpAddr>,
    /// The peer, in the socket's address family (see [`SharedSocket::flow`]).
    pub remote: SocketAddr,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            Some(l) => write!(f, "{} via {l}", self.remote),
            None => write!(f, "{}", self.remote),
        }
    }
}

/// One datagram of [`SharedSocket::recv_batch`]: its slot in the batch, its flow, and
/// the token its flow was attached with (`None`: a flow the table does not know).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct FlowDatagram {
    /// Its index in the batch: the bytes are `batch.get(index)`.
    pub index: usize,
    /// Who sent it, to which of our addresses.
    pub flow: Flow,
    /// The attached flow's token.
    pub token: Option<u64>,
}

/// A snapshot of a shared socket's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SharedCounters {
    /// Datagrams read from the socket.
    pub received: u64,
    /// Of those, from flows that are not attached (reported with no token).
    pub unknown: u64,
    /// Of those, dropped: no source address, or a source this socket's family cannot
    /// serve.
    pub dropped: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Flows attached now.
    pub flows_open: u64,
    /// Flows attached since the socket was made.
    pub attach_total: u64,
    /// Flows detached.
    pub detach_total: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    unknown: AtomicU64,
    dropped: AtomicU64,
    sent: AtomicU64,
    attach_total: AtomicU64,
    detach_total: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Every peer of a server (or every session of a client) on one UDP socket: a table
/// in memory maps each [`Flow`] to the owner's token, so a peer costs no descriptor
/// and no system call of its own.
///
/// The owner reads the socket in batches ([`recv_batch`](SharedSocket::recv_batch):
/// one `recvmmsg`, each datagram named by its flow and that flow's token) and sends
/// what many peers are owed in one `sendmmsg` ([`send_batch`](SharedSocket::send_batch),
/// each datagram to its own destination). There is no [`Link`](crate::Link) to poll:
/// this kind serves an owner that reads the socket itself, such as the reactor
/// (`dtls_reactor::Reactor::listen_shared`). The socket API (`DtlsListener`) and
/// select loops, which wait on one descriptor per peer, use [`OsNet`](crate::OsNet) or
/// [`Router`](crate::Router).
///
/// Bound to a wildcard address (`0.0.0.0`, `::`), the socket asks the kernel for each
/// datagram's local address (packet info), keys flows by it and answers from it, so a
/// host with several addresses answers each peer from the address it wrote to, and a
/// client can run many sessions to one server from one socket, one local address each.
///
/// Several reactors share one port with [`bind_group`](SharedSocket::bind_group): a
/// reuseport group whose BPF program sends each peer to one member by a hash of its
/// address.
pub struct SharedSocket {
    socket: UdpSocket,
    local: SocketAddr,
    family: Family,
    /// Bound to a wildcard address: packet info on, flows carry their local address.
    wildcard: bool,
    table: Mutex<HashMap<Flow, u64>>,
    counters: Counters,
    #[cfg(feature = "test-hooks")]
    hooks: Hooks,
}

/// What the `test-hooks` feature adds: sends refused as by a full buffer.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Default)]
struct Hooks {
    block: std::sync::atomic::AtomicBool,
    refused: AtomicU64,
}

impl fmt::Debug for SharedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSocket")
            .field("local", &self.local)
            .field("flows", &lock(&self.table).len())
            .finish_non_exhaustive()
    }
}

impl SharedSocket {
    /// Binds a non-blocking socket on `addr` (port 0: a free port).
    pub fn bind(addr: SocketAddr) -> io::Result<Arc<SharedSocket>> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            // As std binds: an IPv6 wildcard socket takes IPv4 peers only when asked.
            s.set_only_v6(true)?;
        }
        s.bind(&addr.into())?;
        Self::from_socket(s.into())
    }

    /// `n` sockets on one address and port (port 0: a free one), for `n` reactors:
    /// a `SO_REUSEPORT` group with a classic BPF program that picks the member by a
    /// hash of the peer's address and port, so all of one peer's datagrams reach the
    /// same socket. Where the program cannot be attached the kernel's own reuseport
    /// hash spreads peers, which also keeps a peer on one member while the group does
    /// not change.
    pub fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<Arc<SharedSocket>>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut socks = Vec::with_capacity(n);
        let mut at = addr;
        for _ in 0..n {
            let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
            if at.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.set_reuse_port(true)?;
            s.bind(&at.into())?;
            let s: UdpSocket = s.into();
            at = s.local_addr()?;
            socks.push(s);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if n > 1 {
            if let Err(e) = crate::sys::attach_reuseport_hash(&socks[0], n as u32) {
                log::warn!(
                    "dtls-demux: {at}: cannot attach the group's reuseport BPF ({e}); the kernel's hash spreads peers"
                );
            }
        }
        socks.into_iter().map(Self::from_socket).collect()
    }

    /// Wraps a bound socket (made non-blocking; packet info turned on when it is bound
    /// to a wildcard address).
    pub fn from_socket(socket: UdpSocket) -> io::Result<Arc<SharedSocket>> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let v6only = local.is_ipv6() && socket2::SockRef::from(&socket).only_v6()?;
        let wildcard = local.ip().is_unspecified();
        if wildcard {
            batch::enable_pktinfo(&socket, local.is_ipv6())?;
        }
        if let Err(e) = batch::enable_gro(&socket) {
            log::debug!("dtls-demux: {local}: UDP GRO not enabled: {e}");
        }
        Ok(Arc::new(SharedSocket {
            socket,
            local,
            family: Family {
                v6: local.is_ipv6(),
                v6only,
            },
            wildcard,
            table: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            #[cfg(feature = "test-hooks")]
            hooks: Hooks::default(),
        }))
    }

    /// The socket: poll its descriptor (readable, writable); read and write it through
    /// this type, which keeps the flows apart.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The local address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// True when the socket is bound to a wildcard address, so flows carry their local
    /// address.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The flow of `remote` talking to `local`, as the table keys it: `remote` in the
    /// socket's family (an IPv4 peer of a dual-stack IPv6 socket as `::ffff:a.b.c.d`),
    /// `local` kept only on a wildcard socket (normalised the same way) and dropped on a
    /// socket bound to one address. `InvalidInput` when this socket cannot reach
    /// `remote`, when a wildcard socket is given no local address, or when a bound
    /// socket is given another address than its own.
    pub fn flow(&self, local: Option<IpAddr>, remote: SocketAddr) -> io::Result<Flow> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let remote = self
            .family
            .normalize(remote)
            .ok_or_else(|| invalid(format!("{remote} cannot be reached from {}", self.local)))?;
        let local = match (self.wildcard, local) {
            (true, Some(ip)) => Some(
                self.family
                    .normalize(SocketAddr::new(ip, 0))
                    .ok_or_else(|| invalid(format!("{ip} is not an address of {}", self.local)))?
                    .ip(),
            ),
            (true, None) => {
                return Err(invalid(format!(
                    "{} is bound to a wildcard address: a flow needs its local address",
                    self.local
                )))
            }
            (false, Some(ip)) if ip != self.local.ip() => {
                return Err(invalid(format!(
                    "{ip} is not the address of {}",
                    self.local
                )))
            }
            (false, _) => None,
        };
        Ok(Flow { local, remote })
    }

    /// Reads up to `batch.slots()` messages in one `recvmmsg` without blocking (GRO
    /// messages split), and names each datagram's flow and token in `out` (cleared
    /// first), in arrival order. Returns `out.len()`; nothing to read: `WouldBlock`.
    /// Datagrams without a usable source are dropped and counted.
    pub fn recv_batch(
        &self,
        batch: &mut RecvBatch,
        out: &mut Vec<FlowDatagram>,
    ) -> io::Result<usize> {
        out.clear();
        let n = batch::recv_batch(&self.socket, batch)?;
        add(&self.counters.received, n as u64);
        let table = lock(&self.table);
        let mut unknown = 0;
        let mut dropped = 0;
        for index in 0..n {
            let remote = batch.source(index).and_then(|s| self.family.normalize(s));
            let local = if self.wildcard {
                batch
                    .local(index)
                    .and_then(|ip| self.family.normalize(SocketAddr::new(ip, 0)))
                    .map(|a| a.ip())
            } else {
                None
            };
            let Some(remote) = remote.filter(|_| !self.wildcard || local.is_some()) else {
                dropped += 1;
                log::trace!(
                    "dtls-demux: {}: datagram without a usable source or local address dropped",
                    self.local
                );
                continue;
            };
            let flow = Flow { local, remote };
            let token = table.get(&flow).copied();
            if token.is_none() {
                unknown += 1;
            }
            out.push(FlowDatagram { index, flow, token });
        }
        drop(table);
        add(&self.counters.unknown, unknown);
        add(&self.counters.dropped, dropped);
        Ok(out.len())
    }

    /// Enters `flow` (from [`flow`](SharedSocket::flow) or a received datagram) in the
    /// table with the owner's `token`. `AlreadyExists` when it is there.
    pub fn attach(&self, flow: Flow, token: u64) -> io::Result<()> {
        let mut t = lock(&self.table);
        if t.contains_key(&flow) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("dtls-demux: {flow} is attached"),
            ));
        }
        t.insert(flow, token);
        drop(t);
        add(&self.counters.attach_total, 1);
        log::debug!("dtls-demux: {}: {flow} attached", self.local);
        Ok(())
    }

    /// Removes `flow` from the table; its token, if it was there.
    pub fn detach(&self, flow: Flow) -> Option<u64> {
        let token = lock(&self.table).remove(&flow);
        if token.is_some() {
            add(&self.counters.detach_total, 1);
            log::debug!("dtls-demux: {}: {flow} detached", self.local);
        }
        token
    }

    /// The token `flow` is attached with.
    pub fn token(&self, flow: Flow) -> Option<u64> {
        lock(&self.table).get(&flow).copied()
    }

    /// Sends one datagram on `flow`.
    pub fn send_to(&self, data: &[u8], flow: Flow) -> io::Result<usize> {
        self.send_batch(&[self.transmit(flow, data)])
            .map(|_| data.len())
    }

    /// The [`Transmit`] that sends `data` on `flow` (for [`send_batch`](SharedSocket::send_batch)).
    pub fn transmit<'a>(&self, flow: Flow, data: &'a [u8]) -> Transmit<'a> {
        Transmit {
            to: flow.remote,
            from: flow.local,
            data,
        }
    }

    /// Sends the first datagrams of `datagrams` (at most [`batch::MAX_SEND`]) on
    /// `flow` in one `sendmmsg`; how many went.
    pub fn send_on(&self, flow: Flow, datagrams: &[&[u8]]) -> io::Result<usize> {
        let mut msgs = [self.transmit(flow, &[]); batch::MAX_SEND];
        let n = datagrams.len().min(batch::MAX_SEND);
        for (m, d) in msgs.iter_mut().zip(&datagrams[..n]) {
            m.data = d;
        }
        self.send_batch(&msgs[..n])
    }

    /// Sends datagrams to their flows in one `sendmmsg` (see [`batch::send_to_many`]);
    /// how many of the first went.
    pub fn send_batch(&self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        #[cfg(feature = "test-hooks")]
        if self.hooks.block.load(Ordering::Relaxed) {
            add(&self.hooks.refused, 1);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = batch::send_to_many(&self.socket, msgs)?;
        add(&self.counters.sent, n as u64);
        Ok(n)
    }

    /// For tests (feature `test-hooks`): while `on`, every send of this socket fails
    /// with `WouldBlock` and sends nothing, as when its send buffer is full. Loopback
    /// never fills a UDP socket's send buffer (the kernel releases each datagram's
    /// memory as it hands it over), so a test of what an owner does with a full socket
    /// needs this. Turning it off raises no readiness event: the owner finds the socket
    /// writable at the next event the kernel reports for it.
    #[cfg(feature = "test-hooks")]
    pub fn block_sends(&self, on: bool) {
        self.hooks.block.store(on, Ordering::Relaxed);
    }

    /// For tests (feature `test-hooks`): how many sends
    /// [`block_sends`](SharedSocket::block_sends) refused.
    #[cfg(feature = "test-hooks")]
    pub fn refused_sends(&self) -> u64 {
        self.hooks.refused.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> SharedCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let attach_total = g(&self.counters.attach_total);
        let detach_total = g(&self.counters.detach_total);
        SharedCounters {
            received: g(&self.counters.received),
            unknown: g(&self.counters.unknown),
            dropped: g(&self.counters.dropped),
            sent: g(&self.counters.sent),
            flows_open: attach_total - detach_total,
            attach_total,
            detach_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn read(s: &SharedSocket, b: &mut RecvBatch, out: &mut Vec<FlowDatagram>, n: usize) {
        let end = Instant::now() + Duration::from_secs(5);
        let mut all = Vec::new();
        while all.len() < n && Instant::now() < end {
            match s.recv_batch(b, out) {
                Ok(_) => all.extend(out.iter().map(|d| (*d, b.get(d.index).to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        out.clear();
        out.extend(all.iter().map(|a| a.0));
        assert_eq!(out.len(), n);
    }

    /// Two peers, one attached: the attached one's datagrams carry its token, the
    /// other's none; answers reach each peer; detach forgets the flow.
    #[test]
    fn flows_by_peer() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let s = SharedSocket::bind(host.parse().unwrap()).unwrap();
            let a = UdpSocket::bind(host).unwrap();
            let b = UdpSocket::bind(host).unwrap();
            let fa = s.flow(None, a.local_addr().unwrap()).unwrap();
            s.attach(fa, 7).unwrap();
            assert_eq!(
                s.attach(fa, 8).unwrap_err().kind(),
                io::ErrorKind::AlreadyExists
            );
            a.send_to(b"a", s.local_addr()).unwrap();
            b.send_to(b"b", s.local_addr()).unwrap();
            let mut batch = RecvBatch::new(4);
            let mut out = Vec::new();
            read(&s, &mut batch, &mut out, 2);
            let ta: Vec<Option<u64>> = out.iter().map(|d| d.token).collect();
            assert!(ta.contains(&Some(7)) && ta.contains(&None), "{ta:?}");
            let fb = out.iter().find(|d| d.token.is_none()).unwrap().flow;
            assert_eq!(fb.remote, b.local_addr().unwrap());
            let m = [s.transmit(fa, b"to a"), s.transmit(fb, b"to b")];
            assert_eq!(s.send_batch(&m).unwrap(), 2);
            let mut buf = [0u8; 16];
            a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(a.recv(&mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], b"to a");
            assert_eq!(b.recv(&mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], b"to b");
            assert_eq!(s.detach(fa), Some(7));
            assert_eq!(s.detach(fa), None);
            let c = s.counters();
            assert_eq!((c.received, c.unknown, c.sent, c.flows_open), (2, 1, 2, 0));
        }
    }

    /// On a wildcard socket one peer address talking to two local addresses is two
    /// flows, each answered from its own address.
    #[test]
    fn wildcard_flows_by_local_address() {
        let s = SharedSocket::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        assert!(s.is_wildcard());
        let port = s.local_addr().port();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let l2: IpAddr = "127.0.0.2".parse().unwrap();
        let l3: IpAddr = "127.0.0.3".parse().unwrap();
        let f2 = s.flow(Some(l2), c.local_addr().unwrap()).unwrap();
        s.attach(f2, 2).unwrap();
        c.send_to(b"x", SocketAddr::new(l2, port)).unwrap();
        c.send_to(b"y", SocketAddr::new(l3, port)).unwrap();
        let mut batch = RecvBatch::new(4);
        let mut out = Vec::new();
        read(&s, &mut batch, &mut out, 2);
        assert_eq!(out[0].token, Some(2));
        assert_eq!(out[1].token, None);
        assert_eq!(out[1].flow.local, Some(l3));
        s.send_to(b"from 3", out[1].flow).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"from 3"[..], SocketAddr::new(l3, port))
        );
        assert_eq!(
            s.flow(None, c.local_addr().unwrap()).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn flow_rules() {
        let s = SharedSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let p: SocketAddr = "127.0.0.9:9".parse().unwrap();
        assert_eq!(
            s.flow(Some("127.0.0.1".parse().unwrap()), p).unwrap().local,
            None
        );
        assert!(s.flow(Some("127.0.0.2".parse().unwrap()), p).is_err());
        assert!(s.flow(None, "[::1]:9".parse().unwrap()).is_err());
        let m: SocketAddr = "[::ffff:127.0.0.9]:9".parse().unwrap();
        assert_eq!(s.flow(None, m).unwrap().remote, p);
    }

    #[test]
    fn group_shares_a_port() {
        let g = SharedSocket::bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        assert_eq!(g[0].local_addr(), g[1].local_addr());
    }
}
