//! A fault-injecting UDP relay for tests: it sits between clients and one
//! upstream server on loopback and drops, duplicates, reorders, delays,
//! truncates and corrupts datagrams with given probabilities, per direction,
//! deterministically from a seed.
//!
//! - Clients send to [`Relay::local_addr`]. Each client (source address and
//!   port) gets its own upstream socket, connected to the server, so the
//!   server sees one distinct peer per client. Replies from the server go
//!   back to that client from the relay's listening socket.
//! - Each (client, direction) has its own PRNG, seeded from the relay's seed
//!   and the client's number in order of first appearance, and every
//!   datagram consumes the same number of draws whatever happens to it: the
//!   same seed and the same datagrams (per client and direction) give the
//!   same faults, whatever the thread timing.
//! - Bounded: one thread, stopped when the [`Relay`] is dropped or
//!   [`Relay::stop`]ped, or by itself after `max_duration`; at most
//!   `max_clients` clients (others are dropped and counted), idle clients
//!   forgotten after `idle_timeout`; held and delayed datagrams are bounded
//!   by `max_delay` / `reorder_hold`.
//!
//! The faults themselves, and the draws that decide them, are in `faults.rs`;
//! this file is the relay: its settings, counters and fault log, and the
//! thread's event loop.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

mod faults;

pub use faults::*;

/// Which way a datagram travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client to upstream server.
    ToServer,
    /// Upstream server to client.
    ToClient,
}

/// Settings of a [`Relay`].
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where clients send (port 0: the kernel picks).
    pub listen: SocketAddr,
    /// The server datagrams are forwarded to.
    pub upstream: SocketAddr,
    /// Faults on the way to the server.
    pub to_server: Faults,
    /// Faults on the way back to clients.
    pub to_client: Faults,
    /// Seed of every PRNG.
    pub seed: u64,
    /// Longest delay of a delayed datagram.
    pub max_delay: Duration,
    /// Longest time a reordered datagram is held waiting for the next one.
    pub reorder_hold: Duration,
    /// The relay stops by itself after this long.
    pub max_duration: Duration,
    /// Most clients at once; datagrams of more are dropped and counted.
    pub max_clients: usize,
    /// A client silent this long is forgotten (its upstream socket closed).
    pub idle_timeout: Duration,
    /// Keep a log of the faults applied to the first this many datagrams
    /// (see [`Relay::log`]); 0 for none.
    pub log_limit: usize,
}

impl RelayConfig {
    /// A transparent relay for `upstream`, listening on the loopback address
    /// of the same family, seed 1, stopping after 60 s.
    pub fn new(upstream: SocketAddr) -> RelayConfig {
        let ip: std::net::IpAddr = if upstream.is_ipv6() {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        RelayConfig {
            listen: SocketAddr::new(ip, 0),
            upstream,
            to_server: Faults::NONE,
            to_client: Faults::NONE,
            seed: 1,
            max_delay: Duration::from_millis(20),
            reorder_hold: Duration::from_millis(50),
            max_duration: Duration::from_secs(60),
            max_clients: 1024,
            idle_timeout: Duration::from_secs(30),
            log_limit: 0,
        }
    }
    /// The same faults both ways.
    pub fn faults(mut self, f: Faults) -> Self {
        self.to_server = f;
        self.to_client = f;
        self
    }
    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams received from the sender.
    pub received: u64,
    /// Datagrams sent on (duplicates included).
    pub sent: u64,
    /// Dropped on purpose.
    pub dropped: u64,
    /// Duplicated (one extra copy each).
    pub duplicated: u64,
    /// Held and released after a later datagram (or the hold time).
    pub reordered: u64,
    /// Sent late.
    pub delayed: u64,
    /// Cut short.
    pub truncated: u64,
    /// Bytes flipped.
    pub corrupted: u64,
    /// Sends that failed (the datagram is lost; counted, not retried).
    pub send_errors: u64,
}

/// Counters of a relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to server.
    pub to_server: DirStats,
    /// Server to clients.
    pub to_client: DirStats,
    /// Clients seen (each got an upstream socket).
    pub clients: u64,
    /// Datagrams of clients beyond `max_clients`, dropped.
    pub refused_clients: u64,
}

impl RelayStats {
    /// The counters of one direction.
    pub fn dir(&self, d: Dir) -> &DirStats {
        match d {
            Dir::ToServer => &self.to_server,
            Dir::ToClient => &self.to_client,
        }
    }
    fn dir_mut(&mut self, d: Dir) -> &mut DirStats {
        match d {
            Dir::ToServer => &mut self.to_server,
            Dir::ToClient => &mut self.to_client,
        }
    }
}

impl fmt::Display for DirStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {} sent {} dropped {} duplicated {} reordered {} delayed {} \
             truncated {} corrupted {} send_errors {}",
            self.received,
            self.sent,
            self.dropped,
            self.duplicated,
            self.reordered,
            self.delayed,
            self.truncated,
            self.corrupted,
            self.send_errors
        )
    }
}

/// One line of the fault log: datagram number `index` (from 0) of client
/// number `client` (in order of first appearance) in direction `dir`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LogEntry {
    /// The client's number.
    pub client: u64,
    /// The direction.
    pub dir: Dir,
    /// The datagram's number in that client's direction.
    pub index: u64,
    /// Its length on arrival.
    pub len: usize,
    /// What was done to it.
    pub decision: Decision,
}

/// Asks for 4 MiB socket buffers (the kernel caps it at net.core.rmem_max /
/// wmem_max), so bursts are not lost in the relay's own sockets.
fn big_buffers(s: &UdpSocket) {
    let r = socket2::SockRef::from(s);
    let _ = r.set_recv_buffer_size(4 << 20);
    let _ = r.set_send_buffer_size(4 << 20);
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CLIENT: usize = 2;
/// Datagrams read from one socket per turn.
const BUDGET: usize = 256;

struct Client {
    addr: SocketAddr,
    upstream: UdpSocket,
    number: u64,
    rng: [Rng; 2],
    count: [u64; 2],
    held: [Option<(Vec<u8>, Instant)>; 2],
    last_seen: Instant,
}

fn di(d: Dir) -> usize {
    match d {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

struct Shared {
    stats: RelayStats,
    log: Vec<LogEntry>,
}

/// A running relay; dropping it stops the thread.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Binds the listening socket and starts the relay thread.
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        config.to_server.check().map_err(io::Error::other)?;
        config.to_client.check().map_err(io::Error::other)?;
        let mut listener = UdpSocket::bind(config.listen)?;
        big_buffers(&listener);
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared {
            stats: RelayStats::default(),
            log: Vec::new(),
        }));
        let mut worker = Worker {
            config,
            poll,
            listener,
            clients: Vec::new(),
            by_addr: HashMap::new(),
            next_number: 0,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            stats: RelayStats::default(),
            log: Vec::new(),
            shared: shared.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("fault-relay".into())
            .spawn(move || {
                if let Err(e) = worker.run() {
                    eprintln!("fault relay stopped: {e}");
                }
                worker.publish();
            })?;
        Ok(Relay {
            addr,
            stop,
            waker,
            shared,
            thread: Some(thread),
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    /// The fault log so far (empty unless `log_limit` was set).
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .clone()
    }

    /// Whether the thread is still relaying.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread and returns the final counters.
    pub fn stop(mut self) -> RelayStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Timer {
    /// A delayed datagram: send it.
    Send {
        client: usize,
        number: u64,
        dir: Dir,
        data: Vec<u8>,
    },
    /// A reordered datagram may have waited long enough.
    Release {
        client: usize,
        number: u64,
        dir: Dir,
    },
}

struct Worker {
    config: RelayConfig,
    poll: Poll,
    listener: UdpSocket,
    clients: Vec<Option<Client>>,
    by_addr: HashMap<SocketAddr, usize>,
    next_number: u64,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_seq: u64,
    stats: RelayStats,
    log: Vec<LogEntry>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn publish(&mut self) {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        s.stats = self.stats;
        if s.log.len() < self.log.len() {
            let from = s.log.len();
            s.log.extend_from_slice(&self.log[from..]);
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let end = Instant::now() + self.config.max_duration;
        let mut events = Events::with_capacity(256);
        let mut pending: HashMap<u64, Timer> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        let mut last_sweep = Instant::now();
        // Sockets whose budget ran out before WouldBlock.
        let mut again: Vec<Token> = Vec::new();
        let mut ready: Vec<Token> = Vec::new();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let mut wait = end - now;
            if let Some(Reverse((t, _))) = self.timers.peek() {
                wait = wait.min(t.saturating_duration_since(now));
            }
            wait = wait.min(Duration::from_secs(1));
            if !again.is_empty() {
                wait = Duration::ZERO;
            }
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            ready.clear();
            ready.append(&mut again);
            ready.extend(events.iter().map(|ev| ev.token()));
            ready.sort_unstable();
            ready.dedup();
            for &token in &ready {
                let more = match token {
                    WAKER => false,
                    LISTENER => self.drain_listener(&mut buf, &mut pending),
                    Token(t) => self.drain_upstream(t - FIRST_CLIENT, &mut buf, &mut pending),
                };
                if more {
                    again.push(token);
                }
            }
            // Timers due.
            let now = Instant::now();
            while let Some(Reverse((t, id))) = self.timers.peek().copied() {
                if t > now {
                    break;
                }
                self.timers.pop();
                match pending.remove(&id) {
                    Some(Timer::Send {
                        client,
                        number,
                        dir,
                        data,
                    }) if self.alive(client, number) => self.send(client, dir, &data),
                    Some(Timer::Release {
                        client,
                        number,
                        dir,
                    }) if self.alive(client, number) => self.release_if_due(client, dir, now),
                    // Timers of clients forgotten since.
                    _ => {}
                }
            }
            if now.duration_since(last_sweep) >= Duration::from_millis(500) {
                last_sweep = now;
                self.sweep(now);
            }
            self.publish();
        }
        Ok(())
    }

    fn alive(&self, client: usize, number: u64) -> bool {
        matches!(self.clients.get(client), Some(Some(c)) if c.number == number)
    }

    fn sweep(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            let idle = matches!(&self.clients[i],
                Some(c) if now.duration_since(c.last_seen) >= self.config.idle_timeout);
            if idle {
                if let Some(mut c) = self.clients[i].take() {
                    let _ = self.poll.registry().deregister(&mut c.upstream);
                    self.by_addr.remove(&c.addr);
                }
            }
        }
    }

    fn client_for(&mut self, addr: SocketAddr) -> Option<usize> {
        if let Some(&i) = self.by_addr.get(&addr) {
            return Some(i);
        }
        if self.by_addr.len() >= self.config.max_clients {
            return None;
        }
        let local = SocketAddr::new(
            if self.config.upstream.is_ipv6() {
                std::net::Ipv6Addr::LOCALHOST.into()
            } else {
                std::net::Ipv4Addr::LOCALHOST.into()
            },
            0,
        );
        let open = || -> io::Result<UdpSocket> {
            let s = UdpSocket::bind(local)?;
            big_buffers(&s);
            s.connect(self.config.upstream)?;
            Ok(s)
        };
        let mut upstream = match open() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("fault relay: no upstream socket for {addr}: {e}");
                return None;
            }
        };
        let i = match self.clients.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.clients.push(None);
                self.clients.len() - 1
            }
        };
        if self
            .poll
            .registry()
            .register(&mut upstream, Token(i + FIRST_CLIENT), Interest::READABLE)
            .is_err()
        {
            return None;
        }
        let number = self.next_number;
        self.next_number += 1;
        let base = splitmix64(self.config.seed ^ splitmix64(number));
        self.clients[i] = Some(Client {
            addr,
            upstream,
            number,
            rng: [Rng::new(base), Rng::new(base ^ 0xD1B5_4A32_D192_ED03)],
            count: [0, 0],
            held: [None, None],
            last_seen: Instant::now(),
        });
        self.by_addr.insert(addr, i);
        self.stats.clients += 1;
        Some(i)
    }

    /// Reads the listener until WouldBlock or the budget ends; true when it
    /// must be drained again (mio reports readiness again only after
    /// WouldBlock).
    fn drain_listener(&mut self, buf: &mut [u8], pending: &mut HashMap<u64, Timer>) -> bool {
        // Bounded work per turn, so timers and the other sockets get theirs.
        for _ in 0..BUDGET {
            match self.listener.recv_from(buf) {
                Ok((n, from)) => {
                    let Some(i) = self.client_for(from) else {
                        self.stats.refused_clients += 1;
                        continue;
                    };
                    let data = buf[..n].to_vec();
                    self.relay(i, Dir::ToServer, data, pending);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors reported on the listener: nothing to do.
                Err(_) => {}
            }
        }
        true
    }

    /// Like [`Self::drain_listener`], for client `i`'s upstream socket.
    fn drain_upstream(
        &mut self,
        i: usize,
        buf: &mut [u8],
        pending: &mut HashMap<u64, Timer>,
    ) -> bool {
        for _ in 0..BUDGET {
            let r = match self.clients.get(i) {
                Some(Some(c)) => c.upstream.recv(buf),
                _ => return false,
            };
            match r {
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    self.relay(i, Dir::ToClient, data, pending);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ConnectionRefused when the server is not there (yet): the
                // datagram that caused it is lost, like on a real path.
                Err(_) => {}
            }
        }
        true
    }

    fn relay(&mut self, i: usize, dir: Dir, mut data: Vec<u8>, pending: &mut HashMap<u64, Timer>) {
        let now = Instant::now();
        let faults = match dir {
            Dir::ToServer => self.config.to_server,
            Dir::ToClient => self.config.to_client,
        };
        let max_delay = self.config.max_delay;
        let Some(Some(c)) = self.clients.get_mut(i) else {
            return;
        };
        c.last_seen = now;
        let len = data.len();
        let index = c.count[di(dir)];
        c.count[di(dir)] += 1;
        let decision = decide(&mut c.rng[di(dir)], &faults, max_delay, &mut data);
        let number = c.number;
        if self.log.len() < self.config.log_limit {
            self.log.push(LogEntry {
                client: number,
                dir,
                index,
                len,
                decision,
            });
        }
        let st = self.stats.dir_mut(dir);
        st.received += 1;
        if decision.drop {
            st.dropped += 1;
            return;
        }
        if decision.truncate.is_some() {
            st.truncated += 1;
        }
        if decision.corrupt > 0 {
            st.corrupted += 1;
        }
        if decision.duplicate {
            st.duplicated += 1;
            self.send(i, dir, &data);
        }
        if let Some(ms) = decision.delay_ms {
            self.stats.dir_mut(dir).delayed += 1;
            self.schedule(
                now + Duration::from_millis(ms),
                Timer::Send {
                    client: i,
                    number,
                    dir,
                    data,
                },
                pending,
            );
            return;
        }
        let held = self.clients[i]
            .as_mut()
            .and_then(|c| c.held[di(dir)].take());
        if decision.reorder && held.is_none() {
            self.stats.dir_mut(dir).reordered += 1;
            if let Some(c) = self.clients[i].as_mut() {
                c.held[di(dir)] = Some((data, now + self.config.reorder_hold));
            }
            self.schedule(
                now + self.config.reorder_hold,
                Timer::Release {
                    client: i,
                    number,
                    dir,
                },
                pending,
            );
            return;
        }
        // The next datagram: send it, then release the one held before it.
        self.send(i, dir, &data);
        if let Some((h, _)) = held {
            self.send(i, dir, &h);
        }
    }

    fn release_if_due(&mut self, i: usize, dir: Dir, now: Instant) {
        let due = matches!(&self.clients[i], Some(c)
            if matches!(&c.held[di(dir)], Some((_, t)) if *t <= now));
        if due {
            if let Some((h, _)) = self.clients[i]
                .as_mut()
                .and_then(|c| c.held[di(dir)].take())
            {
                self.send(i, dir, &h);
            }
        }
    }

    fn schedule(&mut self, at: Instant, t: Timer, pending: &mut HashMap<u64, Timer>) {
        let id = self.timer_seq;
        self.timer_seq += 1;
        pending.insert(id, t);
        self.timers.push(Reverse((at, id)));
    }

    fn send(&mut self, i: usize, dir: Dir, data: &[u8]) {
        let Some(Some(c)) = self.clients.get(i) else {
            return;
        };
        let r = match dir {
            Dir::ToServer => c.upstream.send(data),
            Dir::ToClient => self.listener.send_to(data, c.addr),
        };
        let st = self.stats.dir_mut(dir);
        match r {
            Ok(_) => st.sent += 1,
            Err(_) => st.send_errors += 1,
        }
    }
}
