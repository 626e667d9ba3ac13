//! Floods and garbage against a listening server, in the four variants.
//!
//! The tests of this file measure the process's memory (resident, and the
//! heap's live bytes through a counting allocator), so they run one at a
//! time (a lock) and in their own test binary.

mod common;
mod socket_util;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{four_ways, Variant};
use dtls_reactor::{ConnStats, Connection, DtlsListener, Error, RECENT_HELLOS};
use socket_util::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The system allocator, counting the bytes allocated and not yet freed:
/// a leak shows there whatever the allocator's arenas and caches do to the
/// resident size (which moves by megabytes with the number of threads).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counter only observes the sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's layout obligations pass on to System.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc`/`realloc` above with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: as for `alloc` and `dealloc`: the caller's obligations pass on.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            LIVE.fetch_add(new, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes allocated (by Rust code) and not freed.
fn live_heap() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A cookie-less ClientHello, as a real client sends it first.
fn client_hello() -> Vec<u8> {
    let mut c = Connection::client(&client_cfg(), None).unwrap();
    c.poll_transmit().unwrap()
}

/// Source addresses for sender `i`: distinct IPv4 loopback addresses (all of
/// 127.0.0.0/8 is local on Linux); IPv6 has only ::1, so distinct ports.
fn source(v: Variant, i: usize) -> SocketAddr {
    match v.ip() {
        IpAddr::V4(_) => SocketAddr::new(
            Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8, 1 + (i % 7) as u8).into(),
            0,
        ),
        IpAddr::V6(_) => SocketAddr::new(v.ip(), 0),
    }
}

/// Server side of the tests: an accept loop; each connection echoes in its
/// own thread and reports its counters when it ends.
struct Server {
    listener: Arc<DtlsListener>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    stats: mpsc::Receiver<ConnStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(v: Variant) -> Server {
        let listener = listen(v, &server_cfg());
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, stats) = mpsc::channel();
        let (l, st, acc) = (listener.clone(), stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(Some((mut s, _))) => {
                        acc.fetch_add(1, Ordering::Relaxed);
                        let tx = tx.clone();
                        std::thread::spawn(move || {
                            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = s.recv(&mut buf) {
                                if s.send(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = tx.send(s.stats());
                        });
                    }
                    Ok(None) | Err(Error::ReadTimeout) => {}
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Server {
            listener,
            stop,
            accepted,
            stats,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo_ok(c: &mut dtls_reactor::DtlsSocket, msg: &[u8]) {
    c.send(msg).unwrap();
    let mut buf = [0u8; 2048];
    // Under load an echo may be lost (UDP): retry a few times.
    for _ in 0..20 {
        match c.recv(&mut buf) {
            Ok(n) if &buf[..n] == msg => return,
            Ok(_) => {}
            Err(Error::ReadTimeout) => {
                c.send(msg).unwrap();
            }
            Err(e) => panic!("echo failed: {e}"),
        }
    }
    panic!("no echo");
}

/// 50,000 cookie-less ClientHellos from many sources: only HelloVerifyRequests
/// come back, no connection is made, memory stays flat, and an honest client
/// completes its handshake during the flood.
fn flood_of_cookieless_hellos(v: Variant) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const TOTAL: usize = 50_000;
    const PER_SOURCE: usize = 100;
    let server = Server::start(v);
    let addr = server.listener.local_addr().unwrap();
    let hello = client_hello();

    let flood = |from: usize, count: usize| -> (usize, usize) {
        let (mut sent, mut replies) = (0, 0);
        let mut buf = [0u8; 2048];
        let mut socks = Vec::new();
        let mut drain = |sock: &UdpSocket, replies: &mut usize| {
            while let Ok((n, _)) = sock.recv_from(&mut buf) {
                // A HelloVerifyRequest: handshake record, type 3.
                assert!(n > 25 && buf[0] == 22 && buf[13] == 3, "unexpected reply");
                *replies += 1;
            }
        };
        for s in 0..count.div_ceil(PER_SOURCE) {
            let sock = UdpSocket::bind(source(v, from + s)).unwrap();
            sock.set_nonblocking(true).unwrap();
            for _ in 0..PER_SOURCE.min(count - s * PER_SOURCE) {
                if sock.send_to(&hello, addr).is_ok() {
                    sent += 1;
                }
            }
            // Pace a little so the listener's buffer is not the only thing measured.
            std::thread::sleep(Duration::from_micros(200));
            socks.push(sock);
        }
        std::thread::sleep(Duration::from_millis(300));
        for sock in &socks {
            drain(sock, &mut replies);
        }
        (sent, replies)
    };
    // Warm up (allocator, OpenSSL lazies, thread stacks), then measure.
    flood(10_000, 2_000);
    let rss_before = rss_bytes();

    let honest = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut c = connect(addr, &client_cfg()).expect("honest client connects during the flood");
        echo_ok(&mut c, b"honest");
        c
    });
    let (sent, replies) = flood(0, TOTAL);
    let mut c = honest.join().expect("honest client");
    let rss_after = rss_bytes();

    assert!(sent >= TOTAL * 9 / 10, "only {sent} hellos sent");
    assert!(replies <= sent, "more replies than hellos");
    assert!(replies > 0, "no HelloVerifyRequest came back");
    let stats = server.listener.stats();
    assert_eq!(
        server.accepted.load(Ordering::Relaxed),
        1,
        "only the honest client gets a connection"
    );
    assert!(stats.admission.hello_verify as usize >= replies);
    assert!(server.listener.demux().counters().links_open <= 1);
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "{v:?}: {sent} hellos sent, {replies} HelloVerifyRequests received, {} answered by the server, RSS growth {growth} bytes",
        stats.admission.hello_verify
    );
    assert!(
        growth < 2 * 1024 * 1024,
        "resident memory grew by {growth} bytes during the flood"
    );
    echo_ok(&mut c, b"still there");
    let _ = c.shutdown();
}

/// Random, truncated and malformed datagrams: 100,000 to the listener from
/// unknown peers and 100,000 into an established connection (from the
/// client's own address): nothing panics, the session survives, drops are counted.
fn garbage_to_listener_and_connection(v: Variant) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const EACH: usize = 100_000;
    let server = Server::start(v);
    let addr = server.listener.local_addr().unwrap();
    let mut c = connect(addr, &client_cfg()).expect("connect");
    echo_ok(&mut c, b"before");
    let hello = client_hello();

    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(addr.port());
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut datagram = |i: usize| -> Vec<u8> {
        let r = next();
        match i % 4 {
            // Random bytes of random length (including empty).
            0 => (0..(r % 1500) as usize).map(|_| next() as u8).collect(),
            // A real ClientHello cut short.
            1 => hello[..(r as usize % hello.len())].to_vec(),
            // A ClientHello with a few bytes flipped.
            2 => {
                let mut h = hello.clone();
                for _ in 0..3 {
                    let p = next() as usize % h.len();
                    h[p] ^= (next() as u8) | 1;
                }
                h
            }
            // A record header promising more than the datagram holds, any type and epoch.
            _ => {
                let mut d = vec![(20 + r % 5) as u8, 0xfe, 0xfd, 0, (r >> 8) as u8 % 3];
                d.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
                d.extend_from_slice(&(((r >> 16) as u16) | 0x100).to_be_bytes());
                d.extend((0..(r >> 32) % 64).map(|_| next() as u8));
                d
            }
        }
    };
    let strangers: Vec<UdpSocket> = (0..4)
        .map(|i| {
            let s = UdpSocket::bind(source(v, 900 + i)).unwrap();
            s.connect(addr).unwrap();
            s
        })
        .collect();
    let own = socket2::SockRef::from(&c);
    for i in 0..EACH {
        let d = datagram(i);
        let _ = strangers[i % strangers.len()].send(&d);
        let d = datagram(i + 1);
        let _ = own.send(&d);
        if i % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // The client's own socket may have got nothing (the server drops garbage
    // silently); the session must still echo.
    echo_ok(&mut c, b"after the garbage");
    let stats = server.listener.stats();
    assert!(
        stats.admission.dropped > 0,
        "listener drops are counted: {stats:?}"
    );
    assert_eq!(stats.admission.accepted, 1, "garbage made no connection");
    c.shutdown().expect("clean close");
    let conn = server
        .stats
        .recv_timeout(Duration::from_secs(10))
        .expect("server connection ended");
    assert!(conn.dropped > 0, "connection drops are counted: {conn:?}");
}

four_ways!(
    flood_of_cookieless_hellos,
    garbage_to_listener_and_connection
);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Connect / echo / close cycles against one listener: descriptors come back
/// to where they started and the heap stays flat over 6,000 cycles once the
/// front door's bounded memory of recent hellos ([`RECENT_HELLOS`] entries)
/// is full (OpenSSL's own allocations go through libc, not this counter; the
/// resident size, which covers them, is bounded loosely: it moves with the
/// allocator's arenas).
fn connect_close_cycles(v: Variant) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const CYCLES: usize = 6_000;
    let server = Server::start(v);
    let addr = server.listener.local_addr().unwrap();
    let cfg = client_cfg();
    let cycle = |i: usize| {
        let mut c = connect(addr, &cfg).unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        echo_ok(&mut c, b"cycle");
        c.shutdown()
            .unwrap_or_else(|e| panic!("cycle {i}: shutdown: {e}"));
        // The server's connection thread ends after close_notify.
        server
            .stats
            .recv_timeout(Duration::from_secs(10))
            .expect("server side closed");
    };
    // Warm up (the recent hellos fill up too), then take the starting level.
    for i in 0..RECENT_HELLOS + 200 {
        cycle(i);
    }
    std::thread::sleep(Duration::from_millis(50));
    let (fds_before, rss_before, heap_before) = (open_fds(), rss_bytes(), live_heap());
    for i in 0..CYCLES {
        cycle(i);
    }
    std::thread::sleep(Duration::from_millis(50));
    let (fds_after, rss_after, heap_after) = (open_fds(), rss_bytes(), live_heap());
    eprintln!(
        "{v:?}: {CYCLES} cycles; fds {fds_before} -> {fds_after}; RSS {rss_before} -> \
         {rss_after}; live heap {heap_before} -> {heap_after}"
    );
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert_eq!(server.listener.demux().counters().links_open, 0);
    // 48 KiB over 6,000 cycles: a leak of 8 bytes a cycle shows.
    assert!(
        heap_after.saturating_sub(heap_before) < 48 * 1024,
        "the heap grew by {} bytes over {CYCLES} cycles",
        heap_after.saturating_sub(heap_before)
    );
    // OpenSSL's own allocations (libc's malloc): a leak of 2 KiB a cycle shows.
    assert!(
        rss_after.saturating_sub(rss_before) < 12 * 1024 * 1024,
        "resident memory grew by {} bytes over {CYCLES} cycles",
        rss_after.saturating_sub(rss_before)
    );
}

four_ways!(connect_close_cycles);
