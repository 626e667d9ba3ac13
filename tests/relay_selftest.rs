//! The fault-injecting relay (tests/common/relay/) tested on its own, with
//! a plain UDP echo server behind it, in IPv4 and IPv6.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::relay::{decide, Dir, Faults, Relay, RelayConfig, Rng};

const FAMILIES: [&str; 2] = ["127.0.0.1:0", "[::1]:0"];

/// What the echo server received: (sender, bytes), in order.
type Seen = Arc<Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP server that records what it receives (sender, bytes) and echoes it.
struct Echo {
    addr: SocketAddr,
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(bind: &str) -> Echo {
        let sock = UdpSocket::bind(bind).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let end = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    seen2.lock().unwrap().push((from, buf[..n].to_vec()));
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }
    fn seen(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn client(bind: &str, relay: &Relay) -> UdpSocket {
    let c = UdpSocket::bind(bind).unwrap();
    c.connect(relay.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c
}

/// Datagram `i`: its number, then filler, 20..=219 bytes.
fn datagram(i: u32) -> Vec<u8> {
    let mut d = i.to_be_bytes().to_vec();
    d.resize(20 + (i as usize * 7) % 200, (i % 251) as u8);
    d
}

/// Reads until `want` datagrams came or nothing arrives for 300 ms.
fn read_all(c: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    let end = Instant::now() + Duration::from_secs(10);
    while got.len() < want && Instant::now() < end {
        match c.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    got
}

/// Sends `n` datagrams, pacing (5 a millisecond) so that no socket buffer
/// overflows on a busy machine: the kernel's losses are not the relay's.
fn send_all(c: &UdpSocket, n: u32) {
    for i in 0..n {
        c.send(&datagram(i)).unwrap();
        if i % 5 == 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Sends `n` datagrams in windows of 25, reading each window's echoes
/// before the next, and returns everything that came back.
fn exchange(c: &UdpSocket, n: u32) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for w in (0..n).step_by(25) {
        let end = n.min(w + 25);
        for i in w..end {
            c.send(&datagram(i)).unwrap();
        }
        got.extend(read_all(c, (end - w) as usize));
    }
    got
}

#[test]
fn without_faults_it_is_transparent_and_ordered() {
    for bind in FAMILIES {
        let echo = Echo::start(bind);
        let relay = Relay::start(RelayConfig::new(echo.addr)).unwrap();
        let c = client(bind, &relay);
        let got = exchange(&c, 500);
        let want: Vec<Vec<u8>> = (0..500).map(datagram).collect();
        assert_eq!(got.len(), 500, "{bind}: all echoed");
        assert!(got == want, "{bind}: same bytes, same order");
        let s = relay.stop();
        for d in [Dir::ToServer, Dir::ToClient] {
            let st = s.dir(d);
            assert_eq!((st.received, st.sent), (500, 500), "{bind} {d:?}: {st}");
            assert_eq!(
                st.dropped
                    + st.duplicated
                    + st.reordered
                    + st.delayed
                    + st.truncated
                    + st.corrupted
                    + st.send_errors,
                0,
                "{bind} {d:?}: {st}"
            );
        }
        assert_eq!(s.clients, 1);
    }
}

#[test]
fn with_full_loss_nothing_passes() {
    for bind in FAMILIES {
        let echo = Echo::start(bind);
        let relay = Relay::start(RelayConfig::new(echo.addr).faults(Faults::loss(1.0))).unwrap();
        let c = client(bind, &relay);
        send_all(&c, 200);
        assert!(read_all(&c, 1).is_empty(), "{bind}: nothing comes back");
        let s = relay.stop();
        assert!(echo.seen().is_empty(), "{bind}: the server saw nothing");
        assert!(s.to_server.received > 0);
        assert_eq!(s.to_server.dropped, s.to_server.received);
        assert_eq!(s.to_server.sent, 0);
        assert_eq!(s.to_client.received, 0);
    }
}

#[test]
fn each_server_side_peer_is_distinct() {
    for bind in FAMILIES {
        let echo = Echo::start(bind);
        let relay = Relay::start(RelayConfig::new(echo.addr)).unwrap();
        let (a, b) = (client(bind, &relay), client(bind, &relay));
        a.send(b"from a").unwrap();
        assert_eq!(read_all(&a, 1), vec![b"from a".to_vec()]);
        b.send(b"from b").unwrap();
        assert_eq!(read_all(&b, 1), vec![b"from b".to_vec()]);
        a.send(b"a again").unwrap();
        assert_eq!(read_all(&a, 1), vec![b"a again".to_vec()]);
        let seen = echo.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[0].0, seen[2].0,
            "{bind}: one upstream socket per client"
        );
        assert_ne!(seen[0].0, seen[1].0, "{bind}: two clients, two peers");
        for (from, _) in &seen {
            assert_ne!(*from, a.local_addr().unwrap());
            assert_ne!(*from, b.local_addr().unwrap());
            assert_ne!(*from, relay.local_addr());
        }
        assert_eq!(relay.stop().clients, 2);
    }
}

fn mixed() -> Faults {
    "drop=0.2,dup=0.1,reorder=0.1,delay=0.1,truncate=0.05,corrupt=0.05"
        .parse()
        .unwrap()
}

/// The fault log of the client-to-server direction for `seed`.
fn server_bound_log(bind: &str, seed: u64) -> Vec<common::relay::LogEntry> {
    let echo = Echo::start(bind);
    let mut cfg = RelayConfig::new(echo.addr).faults(mixed()).seed(seed);
    cfg.log_limit = 10_000;
    let relay = Relay::start(cfg).unwrap();
    let c = client(bind, &relay);
    send_all(&c, 400);
    // Until every datagram reached the relay (or 10 s).
    let end = Instant::now() + Duration::from_secs(10);
    while relay.stats().to_server.received < 400 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = relay.log();
    drop(relay);
    log.into_iter().filter(|e| e.dir == Dir::ToServer).collect()
}

#[test]
fn the_same_seed_gives_the_same_faults() {
    for bind in FAMILIES {
        let a = server_bound_log(bind, 42);
        let b = server_bound_log(bind, 42);
        let c = server_bound_log(bind, 43);
        assert_eq!(a.len(), 400, "{bind}: every datagram logged");
        assert_eq!(a, b, "{bind}: same seed, same faults");
        assert_ne!(a, c, "{bind}: another seed, other faults");
        let faulty = a
            .iter()
            .filter(|e| e.decision != Default::default())
            .count();
        assert!(faulty > 0, "{bind}: some faults were applied");
    }
}

#[test]
fn decisions_are_deterministic_and_close_to_the_probabilities() {
    let f = mixed();
    let run = |seed| {
        let mut rng = Rng::new(seed);
        (0..20_000)
            .map(|i| {
                let mut d = datagram(i);
                (decide(&mut rng, &f, Duration::from_millis(20), &mut d), d)
            })
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert!(a == run(7));
    let drops = a.iter().filter(|(d, _)| d.drop).count() as f64 / a.len() as f64;
    assert!((0.18..0.22).contains(&drops), "drop rate {drops}");
    for (d, data) in &a {
        if let Some(n) = d.truncate {
            assert_eq!(data.len(), n);
        }
        if let Some(ms) = d.delay_ms {
            assert!((1..=20).contains(&ms));
        }
        assert!(!(d.reorder && d.delay_ms.is_some()));
        assert!(d.corrupt <= 4);
    }
}

#[test]
fn each_fault_does_what_it_says() {
    let bind = "127.0.0.1:0";
    let only = |s: &str| -> (Vec<Vec<u8>>, common::relay::RelayStats) {
        let echo = Echo::start(bind);
        let mut cfg = RelayConfig::new(echo.addr);
        cfg.to_server = s.parse().unwrap();
        // Held datagrams wait for the next one however slow the machine is.
        cfg.reorder_hold = Duration::from_secs(10);
        let relay = Relay::start(cfg).unwrap();
        let c = client(bind, &relay);
        for i in 0..40 {
            c.send(&datagram(i)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let held and delayed datagrams out.
        std::thread::sleep(Duration::from_millis(150));
        let stats = relay.stop();
        let seen = echo.seen().into_iter().map(|(_, d)| d).collect();
        (seen, stats)
    };
    let want: Vec<Vec<u8>> = (0..40).map(datagram).collect();

    let (seen, s) = only("dup=1");
    assert_eq!(seen.len(), 80);
    assert_eq!(s.to_server.duplicated, 40);
    for (i, pair) in seen.chunks(2).enumerate() {
        assert!(pair[0] == want[i] && pair[1] == want[i], "copy {i}");
    }

    let (seen, s) = only("truncate=1");
    assert_eq!(s.to_server.truncated, 40);
    for (got, w) in seen.iter().zip(&want) {
        assert!(got.len() < w.len() && w.starts_with(got));
    }

    let (seen, s) = only("corrupt=1");
    assert_eq!(s.to_server.corrupted, 40);
    assert_eq!(seen.len(), 40);
    for (got, w) in seen.iter().zip(&want) {
        let diff = got.iter().zip(w).filter(|(a, b)| a != b).count();
        assert!(
            got.len() == w.len() && (1..=4).contains(&diff),
            "{diff} bytes differ"
        );
    }

    // Always reorder: each held datagram is released after the next one.
    let (seen, s) = only("reorder=1");
    assert_eq!(seen.len(), 40, "nothing lost");
    assert_eq!(s.to_server.reordered, 20);
    for (i, pair) in seen.chunks(2).enumerate() {
        assert!(
            pair[0] == want[2 * i + 1] && pair[1] == want[2 * i],
            "pair {i}"
        );
    }

    let (mut seen, s) = only("delay=1");
    assert_eq!(s.to_server.delayed, 40);
    seen.sort();
    let mut w = want.clone();
    w.sort();
    assert!(seen == w, "all delivered, late");

    let (seen, s) = only("drop=0.5");
    assert_eq!(seen.len() as u64, 40 - s.to_server.dropped);
    assert!(s.to_server.dropped > 0 && s.to_server.dropped < 40);
}

#[test]
fn it_stops_on_drop_and_after_its_duration() {
    let echo = Echo::start("127.0.0.1:0");
    let mut cfg = RelayConfig::new(echo.addr);
    cfg.max_duration = Duration::from_millis(100);
    let relay = Relay::start(cfg).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while relay.is_running() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!relay.is_running(), "stopped by itself");
    let c = client("127.0.0.1:0", &relay);
    c.send(b"late").unwrap();
    assert!(read_all(&c, 1).is_empty(), "a stopped relay relays nothing");

    let relay = Relay::start(RelayConfig::new(echo.addr)).unwrap();
    let addr = relay.local_addr();
    let t = Instant::now();
    drop(relay);
    // The thread is woken, not left to its next timer (a generous bound:
    // this checks that drop does not wait for `max_duration`).
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "drop joins the thread"
    );
    // The port is free again: the listener was closed.
    UdpSocket::bind(addr).expect("port released");
}

#[test]
fn fault_specs_parse() {
    let f: Faults = "drop=30%,dup=0.1,reorder=0.2,delay=0,truncate=1,corrupt=0.5"
        .parse()
        .unwrap();
    assert_eq!(f.drop, 0.3);
    assert_eq!(
        (f.duplicate, f.reorder, f.truncate, f.corrupt),
        (0.1, 0.2, 1.0, 0.5)
    );
    assert_eq!("none".parse::<Faults>().unwrap(), Faults::NONE);
    assert!("drop=1.5".parse::<Faults>().is_err());
    assert!("bogus=0.1".parse::<Faults>().is_err());
    assert!("drop".parse::<Faults>().is_err());
}
