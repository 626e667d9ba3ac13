//! The sans-IO engine over real loopback UDP, driven by a minimal loop in
//! this file (no socket API, no reactor): a server thread runs the
//! `FrontDoor` and a `HashMap<peer, Connection>` on one `UdpSocket` and
//! echoes every datagram of plaintext; clients drive `Connection::client` on
//! a connected `UdpSocket` whose read timeout is the DTLS deadline.
//!
//! - Under loss: 30 % loss each way plus duplication, reordering, delay
//!   (through the fault relay of tests/common/relay.rs), 50 sequential
//!   handshakes with 20 echoes each.
//! - Replayed application records are not delivered twice.
//! - 200,000 random, truncated and malformed datagrams, half from unknown
//!   peers, half from an established peer's own socket mixed with real
//!   traffic: no panic, the session survives, every drop is counted.
//!
//! Each runs in IPv4 and IPv6. These tests drive the engine, not a demux,
//! so the OsNet/Router variants do not apply.

mod common;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::relay::{Faults, Relay, RelayConfig, Rng};
use dtls_reactor::{
    Admission, AdmissionStats, Admitted, ClientConfig, ConnStats, Connection, Datagram, Error,
    FrontDoor, Refusal, ServerConfig,
};

const V4: &str = "127.0.0.1:0";
const V6: &str = "[::1]:0";

// ---------------------------------------------------------------------------
// The server loop.

/// What the server thread tells the tests.
#[derive(Default)]
struct Shared {
    /// Datagrams read from the socket, from peers without / with a connection.
    unknown_in: u64,
    known_in: HashMap<SocketAddr, u64>,
    /// The cookie stage's counters.
    stage: AdmissionStats,
    /// Plaintext datagrams echoed, per peer.
    echoes: HashMap<SocketAddr, u64>,
    /// Every plaintext received, to catch one delivered twice.
    payloads: HashSet<Vec<u8>>,
    duplicates: u64,
    /// Live connections: established?, counters.
    conns: HashMap<SocketAddr, (bool, ConnStats)>,
    /// Connections that ended, with the reason.
    closed: Vec<(SocketAddr, String)>,
    /// Largest number of connections held at once.
    max_conns: usize,
}

struct Server {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(bind: &str, config: ServerConfig) -> Server {
        let sock = UdpSocket::bind(bind).unwrap();
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
        let addr = sock.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("dtls-echo-server".into())
            .spawn(move || serve(sock, config, sh, st))
            .unwrap();
        Server {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&Shared) -> R) -> R {
        f(&self.shared.lock().unwrap())
    }

    /// Waits (up to 5 s) until `cond` holds on the server's state.
    fn wait_for(&self, what: &str, cond: impl Fn(&Shared) -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !self.with(&cond) {
            assert!(Instant::now() < end, "server never reached: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send_all(sock: &UdpSocket, to: SocketAddr, conn: &mut Connection) {
    while let Some(d) = conn.poll_transmit() {
        let _ = sock.send_to(&d, to);
    }
}

fn serve(sock: UdpSocket, config: ServerConfig, shared: Arc<Mutex<Shared>>, stop: Arc<AtomicBool>) {
    let mut stage = FrontDoor::new(&config, &Admission::default()).unwrap();
    let mut conns: HashMap<SocketAddr, Connection> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 2048];
    let end = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::SeqCst) && Instant::now() < end {
        // Timers.
        let now = Instant::now();
        let mut next = now + Duration::from_millis(20);
        let mut ended = Vec::new();
        for (peer, c) in conns.iter_mut() {
            if let Some(d) = c.deadline() {
                if d <= now {
                    let _ = c.handle_timeout(now);
                    send_all(&sock, *peer, c);
                } else {
                    next = next.min(d);
                }
            }
            if c.is_closed() {
                ended.push(*peer);
            }
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).unwrap();
        let mut sh = shared.lock().unwrap();
        for peer in ended {
            if let Some(c) = conns.remove(&peer) {
                sh.closed.push((peer, format!("{:?}", c.state())));
                sh.conns.remove(&peer);
            }
        }
        drop(sh);
        // One blocking read, then whatever else is queued (bounded).
        for i in 0..256 {
            if i == 1 {
                sock.set_nonblocking(true).unwrap();
            }
            let (n, peer) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(_) => break,
            };
            let d = &buf[..n];
            let mut sh = shared.lock().unwrap();
            match conns.get_mut(&peer) {
                Some(c) => {
                    *sh.known_in.entry(peer).or_default() += 1;
                    let _ = c.feed(d);
                    loop {
                        match c.recv(&mut plain) {
                            Ok(Some(m)) => {
                                if !sh.payloads.insert(plain[..m].to_vec()) {
                                    sh.duplicates += 1;
                                }
                                *sh.echoes.entry(peer).or_default() += 1;
                                let _ = c.send(&plain[..m]);
                            }
                            Ok(None) => break,
                            Err(_) => break,
                        }
                    }
                    send_all(&sock, peer, c);
                    let closed = c.is_closed();
                    let stats = (c.is_established(), c.stats());
                    if closed {
                        let c = conns.remove(&peer).unwrap();
                        sh.closed.push((peer, format!("{:?}", c.state())));
                        sh.conns.remove(&peer);
                    } else {
                        sh.conns.insert(peer, stats);
                    }
                }
                None => {
                    sh.unknown_in += 1;
                    match stage.admit(peer, &Datagram::parse(d)) {
                        Admitted::Reply(h) => {
                            let _ = sock.send_to(&h, peer);
                        }
                        Admitted::Accepted(c) => {
                            let mut c = *c;
                            send_all(&sock, peer, &mut c);
                            sh.conns.insert(peer, (c.is_established(), c.stats()));
                            conns.insert(peer, c);
                            sh.max_conns = sh.max_conns.max(conns.len());
                        }
                        Admitted::Refused(Refusal { alert, .. }) => {
                            if let Some(a) = alert {
                                let _ = sock.send_to(&a, peer);
                            }
                        }
                        Admitted::Drop(_) => {}
                        other => panic!("unexpected verdict {other:?}"),
                    }
                    sh.stage = stage.admission().stats();
                }
            }
        }
        sock.set_nonblocking(false).unwrap();
    }
}

// ---------------------------------------------------------------------------
// The client side.

/// Retransmission timeouts start at `initial` and double up to 2 x `initial`
/// (a lossy-link setting: after a loss the next try comes soon; OpenSSL
/// still gives up after 12 timeouts in a row).
fn server_config(initial: Duration) -> ServerConfig {
    common::server()
        .initial_timeout(initial)
        .max_timeout(2 * initial)
        .build()
        .unwrap()
}

/// See [`server_config`].
fn client_config(initial: Duration) -> ClientConfig {
    common::client()
        .initial_timeout(initial)
        .max_timeout(2 * initial)
        .build()
        .unwrap()
}

fn client_socket(bind: &str, to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(bind).unwrap();
    s.connect(to).unwrap();
    s
}

fn flush(sock: &UdpSocket, conn: &mut Connection) {
    while let Some(d) = conn.poll_transmit() {
        // A refused send (ICMP from an earlier datagram) loses this one:
        // the retransmission timer covers it.
        let _ = sock.send(&d);
    }
}

/// Waits for one datagram until `until` (or the DTLS deadline, if earlier)
/// and feeds it; acts on the DTLS deadline when it passes.
fn pump(
    sock: &UdpSocket,
    conn: &mut Connection,
    until: Instant,
    buf: &mut [u8],
) -> Result<(), Error> {
    let mut until = until;
    if let Some(d) = conn.deadline() {
        until = until.min(d);
    }
    let wait = until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    sock.set_read_timeout(Some(wait)).unwrap();
    match sock.recv(buf) {
        Ok(n) => conn.feed(&buf[..n])?,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        // ICMP port unreachable from a lost race: like a lost datagram.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) => return Err(Error::Io(e)),
    }
    conn.handle_timeout(Instant::now())?;
    flush(sock, conn);
    Ok(())
}

/// Runs a client handshake on `sock` to completion (or error, or 30 s).
fn handshake(sock: &UdpSocket, cfg: &ClientConfig) -> Result<Connection, Error> {
    let mut conn = Connection::client(cfg, None)?;
    flush(sock, &mut conn);
    let end = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 65536];
    while !conn.is_established() {
        if Instant::now() >= end {
            return Err(Error::HandshakeTimeout);
        }
        pump(sock, &mut conn, end, &mut buf)?;
    }
    Ok(conn)
}

/// Counters of one client's echo phase.
#[derive(Debug, Default)]
struct EchoReport {
    /// Requests sent again because no reply came in time.
    retries: u64,
    /// Replies to a request answered already (the answer to an earlier attempt).
    late: u64,
}

/// Sends `count` echo requests (all at once), resending every one without a
/// reply after `retry`, until each is answered. Every attempt carries a
/// distinct payload, so any plaintext seen twice is a replay that got
/// through. Application data is not retransmitted by DTLS: this is the
/// application's retry.
fn echo_all(
    sock: &UdpSocket,
    conn: &mut Connection,
    tag: &str,
    count: usize,
    retry: Duration,
) -> EchoReport {
    let mut report = EchoReport::default();
    let mut done = vec![false; count];
    let mut attempts = vec![0u32; count];
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 2048];
    let end = Instant::now() + Duration::from_secs(30);
    while done.iter().any(|d| !d) {
        assert!(
            Instant::now() < end,
            "{tag}: echoes unanswered after 30 s: {done:?}"
        );
        for m in 0..count {
            if !done[m] {
                if attempts[m] > 0 {
                    report.retries += 1;
                }
                let msg = format!("{tag} m{m} a{}", attempts[m]);
                attempts[m] += 1;
                conn.send(msg.as_bytes()).expect("send");
            }
        }
        flush(sock, conn);
        let round_end = Instant::now() + retry;
        while Instant::now() < round_end && done.iter().any(|d| !d) {
            pump(sock, conn, round_end, &mut buf).expect("session lost during echoes");
            while let Some(n) = conn.recv(&mut plain).expect("recv") {
                let text = String::from_utf8(plain[..n].to_vec()).expect("utf-8 echo");
                assert!(seen.insert(text.clone()), "{tag}: `{text}` delivered twice");
                let m: usize = text
                    .strip_prefix(tag)
                    .and_then(|r| r.trim_start().strip_prefix('m'))
                    .and_then(|r| r.split(' ').next())
                    .and_then(|r| r.parse().ok())
                    .unwrap_or_else(|| panic!("{tag}: unexpected echo `{text}`"));
                if done[m] {
                    report.late += 1;
                } else {
                    done[m] = true;
                }
            }
        }
    }
    report
}

// ---------------------------------------------------------------------------
// Under loss.

fn loss(bind: &str, seed: u64) {
    let rto = Duration::from_millis(100);
    let server = Server::start(bind, server_config(rto));
    let faults: Faults = "drop=0.3,dup=0.1,reorder=0.1,delay=0.05".parse().unwrap();
    let mut cfg = RelayConfig::new(server.addr).faults(faults).seed(seed);
    cfg.max_delay = Duration::from_millis(20);
    cfg.reorder_hold = Duration::from_millis(20);
    cfg.max_duration = Duration::from_secs(240);
    let relay = Relay::start(cfg).unwrap();
    let ccfg = client_config(rto);
    let start = Instant::now();
    let (mut retries, mut late, mut restarts, mut rtx) = (0, 0, 0, 0);
    let mut hs_time = Duration::ZERO;
    for h in 0..50 {
        // OpenSSL gives up on a flight after 12 timeouts; at 30 % loss each
        // way a round trip fails about half the time, so now and then
        // (about 1 handshake in 1,000) a handshake meets its limit. An
        // application reconnects; so do we, and count it.
        let mut attempt = 0;
        let t0 = Instant::now();
        let (sock, mut conn) = loop {
            let sock = client_socket(bind, relay.local_addr());
            match handshake(&sock, &ccfg) {
                Ok(c) => break (sock, c),
                Err(Error::RetransmitLimit) if attempt < 2 => {
                    attempt += 1;
                    restarts += 1;
                    eprintln!("{bind}: handshake {h} hit the retransmission limit; reconnecting");
                }
                Err(e) => panic!("{bind}: handshake {h} failed: {e:?}"),
            }
        };
        rtx += conn.stats().retransmissions;
        hs_time += t0.elapsed();
        let r = echo_all(
            &sock,
            &mut conn,
            &format!("h{h}"),
            20,
            // A reply comes back within a millisecond on loopback unless the
            // relay lost or held it (up to 20 ms): retry after 25 ms.
            Duration::from_millis(25),
        );
        retries += r.retries;
        late += r.late;
        conn.close();
        flush(&sock, &mut conn);
    }
    let relay_stats = relay.stop();
    let elapsed = start.elapsed();
    eprintln!(
        "{bind}: 50 handshakes x 20 echoes in {elapsed:?} (handshakes {hs_time:?}): \
         client retransmissions {rtx}, \
         echo retries {retries}, late replies {late}, reconnects {restarts}"
    );
    eprintln!("{bind}: relay to server: {}", relay_stats.to_server);
    eprintln!("{bind}: relay to client: {}", relay_stats.to_client);
    server.with(|s| {
        eprintln!(
            "{bind}: server stage {:?}, echoes {}, connections closed {}",
            s.stage,
            s.echoes.values().sum::<u64>(),
            s.closed.len()
        );
        assert_eq!(
            s.duplicates, 0,
            "a plaintext was delivered twice to the server"
        );
        assert!(s.stage.accepted >= 50);
    });
    assert!(
        restarts <= 3,
        "{restarts} reconnects: far more than the odds allow"
    );
    // The faults really happened.
    for d in [&relay_stats.to_server, &relay_stats.to_client] {
        assert!(
            d.dropped > 0 && d.duplicated > 0 && d.reordered > 0 && d.delayed > 0,
            "{d}"
        );
    }
}

#[test]
fn loss_30_percent_each_way_v4() {
    loss(V4, 0x5eed_0004);
}

#[test]
fn loss_30_percent_each_way_v6() {
    loss(V6, 0x5eed_0006);
}

// ---------------------------------------------------------------------------
// Replays.

fn replay(bind: &str) {
    let rto = Duration::from_millis(100);
    let server = Server::start(bind, server_config(rto));
    let sock = client_socket(bind, server.addr);
    let mut conn = handshake(&sock, &client_config(rto)).expect("handshake");
    let peer = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    let mut plain = [0u8; 2048];

    // One real exchange, capturing the request record and the reply record.
    conn.send(b"only once").unwrap();
    let record = conn.poll_transmit().expect("a record");
    assert!(conn.poll_transmit().is_none());
    sock.send(&record).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = sock.recv(&mut buf).expect("the echo");
    let reply = buf[..n].to_vec();
    conn.feed(&reply).unwrap();
    let m = conn.recv(&mut plain).unwrap().expect("plaintext");
    assert_eq!(&plain[..m], b"only once");
    server.wait_for("one echo", |s| s.echoes.get(&peer) == Some(&1));
    let (discarded_before, in_before) =
        server.with(|s| (s.conns[&peer].1.discarded, s.known_in[&peer]));

    // The captured request, resent raw five times: nothing new is delivered.
    for _ in 0..5 {
        sock.send(&record).unwrap();
    }
    server.wait_for("five more datagrams", |s| {
        s.known_in[&peer] >= in_before + 5
    });
    server.with(|s| {
        assert_eq!(s.echoes[&peer], 1, "a replayed record was delivered");
        assert_eq!(s.duplicates, 0);
        assert_eq!(
            s.conns[&peer].1.discarded,
            discarded_before + 5,
            "each replay counted"
        );
        assert!(s.conns[&peer].0, "still established");
    });
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(sock.recv(&mut buf).is_err(), "no echo for a replay");

    // The reply, replayed into the client: not delivered again either.
    let before = conn.stats().discarded;
    for _ in 0..3 {
        conn.feed(&reply).unwrap();
        assert_eq!(conn.recv(&mut plain).unwrap(), None);
    }
    assert_eq!(conn.stats().discarded, before + 3);

    // The session still works.
    let r = echo_all(&sock, &mut conn, "after", 3, Duration::from_millis(500));
    assert_eq!(r.late, 0);
    server.with(|s| assert_eq!(s.echoes[&peer], 1 + 3 + r.retries));
}

#[test]
fn replayed_records_are_not_delivered_twice_v4() {
    replay(V4);
}

#[test]
fn replayed_records_are_not_delivered_twice_v6() {
    replay(V6);
}

// ---------------------------------------------------------------------------
// Garbage.

/// The smallest protected record body under AES-GCM (8-byte explicit nonce,
/// 16-byte tag): the suite the default configurations negotiate here.
const GCM_MIN_BODY: usize = 24;

/// The oracle of the engine's framing check: `None` when `d` is not a
/// sequence of whole DTLS records (or has a protected record shorter than
/// an AES-GCM record can be), else (records, application records).
fn frames(d: &[u8]) -> Option<(u64, u64)> {
    let (mut rest, mut all, mut app) = (d, 0, 0);
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        if rest.len() < 13 || !(20..=23).contains(&rest[0]) || rest[1] != 0xfe {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let end = 13 + len;
        if end > rest.len() {
            return None;
        }
        if u16::from_be_bytes([rest[3], rest[4]]) > 0 && len < GCM_MIN_BODY {
            return None;
        }
        all += 1;
        if rest[0] == 23 {
            app += 1;
        }
        rest = &rest[end..];
    }
    Some((all, app))
}

/// One hostile datagram, made from `real` (genuine datagrams of the
/// session or a handshake) and the PRNG.
fn garbage(rng: &mut Rng, real: &[Vec<u8>]) -> Vec<u8> {
    let pick = &real[rng.below(real.len() as u64) as usize];
    match rng.below(8) {
        // Random bytes, now and then a large datagram.
        0 | 1 => {
            let len = if rng.below(500) == 0 {
                20_000 + rng.below(40_000)
            } else {
                rng.below(1500)
            };
            (0..len).map(|_| rng.next_u64() as u8).collect()
        }
        // A genuine datagram cut short (possibly to nothing).
        2 => pick[..rng.below(pick.len() as u64) as usize].to_vec(),
        // A genuine datagram with 1 to 4 bytes flipped.
        3 | 4 => {
            let mut d = pick.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(d.len() as u64) as usize;
                d[i] ^= 1 + (rng.below(255) as u8);
            }
            d
        }
        // A well-formed header with a forged body: passes the framing
        // check (unless shorter than any authentic record), fails
        // authentication in OpenSSL. Some short, some very long.
        5 => {
            let len = match rng.below(8) {
                0 | 1 => rng.below(40) as usize,
                2 => 16_000 + rng.below(40_000) as usize,
                _ => 1 + rng.below(300) as usize,
            };
            let ty = [23, 23, 21, 22, 20][rng.below(5) as usize];
            let mut d = vec![ty, 0xfe, 0xfd, 0, 1];
            d.extend_from_slice(&rng.next_u64().to_be_bytes()[2..]);
            d.extend_from_slice(&(len as u16).to_be_bytes());
            d.extend((0..len).map(|_| rng.next_u64() as u8));
            d
        }
        // A genuine datagram again (a replay).
        6 => pick.clone(),
        // A genuine datagram with random bytes appended.
        _ => {
            let mut d = pick.clone();
            d.extend((0..1 + rng.below(40)).map(|_| rng.next_u64() as u8));
            d
        }
    }
}

fn garbage_storm(bind: &str, seed: u64) {
    const PER_TARGET: u64 = 100_000;
    let start = Instant::now();
    let rto = Duration::from_millis(100);
    let server = Server::start(bind, server_config(rto));
    let ccfg = client_config(rto);
    let sock = client_socket(bind, server.addr);
    let mut conn = handshake(&sock, &ccfg).expect("handshake");
    assert!(
        conn.cipher().unwrap().contains("-GCM-"),
        "the oracle knows AES-GCM"
    );
    let peer = sock.local_addr().unwrap();
    let mut rng = Rng::new(seed);

    // Genuine material: handshake datagrams of another client (for the
    // unknown-peer side), application records of this session.
    let mut hello_client = Connection::client(&ccfg, None).unwrap();
    let mut stage_real = vec![hello_client.poll_transmit().unwrap()];
    let mut records = Vec::new();
    for i in 0..8 {
        conn.send(format!("genuine {i}").as_bytes()).unwrap();
        records.push(conn.poll_transmit().unwrap());
    }
    // Deliver them once (and read their echoes), so they are replays from
    // now on.
    for r in &records {
        sock.send(r).unwrap();
    }
    server.wait_for("the genuine records", |s| s.echoes.get(&peer) == Some(&8));
    let mut plain = [0u8; 2048];
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0;
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while echoed < 8 {
        let n = sock.recv(&mut buf).expect("echo of a genuine record");
        conn.feed(&buf[..n]).unwrap();
        while conn.recv(&mut plain).unwrap().is_some() {
            echoed += 1;
        }
    }
    stage_real.push({
        // A ClientHello with a cookie for another address.
        let mut st = FrontDoor::new(&server_config(rto), &Admission::default()).unwrap();
        let other: SocketAddr = if bind == V4 {
            "127.0.0.9:999"
        } else {
            "[::1]:999"
        }
        .parse()
        .unwrap();
        let Admitted::Reply(hvr) = st.admit(other, &Datagram::parse(&stage_real[0])) else {
            panic!("no HVR")
        };
        hello_client.feed(&hvr).unwrap();
        hello_client.poll_transmit().unwrap()
    });

    let before = server.with(|s| (s.unknown_in, s.stage, s.known_in[&peer], s.conns[&peer].1));

    // 1. Unknown peers: eight unconnected sockets.
    let strangers: Vec<UdpSocket> = (0..8).map(|_| UdpSocket::bind(bind).unwrap()).collect();
    let mut honest_done = false;
    for i in 0..PER_TARGET {
        let d = garbage(&mut rng, &stage_real);
        let s = &strangers[(i % 8) as usize];
        let _ = s.send_to(&d, server.addr);
        if i % 256 == 255 {
            // Let the server keep up (its socket buffer is finite): wait
            // until it has read what we sent, give or take kernel losses.
            let target = before.0 + i + 1;
            let end = Instant::now() + Duration::from_millis(200);
            while server.with(|s| s.unknown_in) + 64 < target && Instant::now() < end {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if i == PER_TARGET / 2 && !honest_done {
            // An honest client during the flood.
            let hs = client_socket(bind, server.addr);
            let mut c = handshake(&hs, &ccfg).expect("honest handshake during the flood");
            echo_all(&hs, &mut c, "honest", 2, Duration::from_millis(200));
            honest_done = true;
        }
    }

    // 2. The established peer's own socket: garbage mixed with real echoes.
    let mut real_echoes = 0u64;
    let mut sent_garbage = Vec::new();
    for i in 0..PER_TARGET {
        let d = garbage(&mut rng, &records);
        let _ = sock.send(&d);
        sent_garbage.push(d);
        if i % 1000 == 999 {
            let r = echo_all(
                &sock,
                &mut conn,
                &format!("g{i}"),
                1,
                Duration::from_millis(200),
            );
            real_echoes += 1 + r.retries;
        }
        if i % 256 == 255 {
            let end = Instant::now() + Duration::from_millis(200);
            while server.with(|s| s.known_in[&peer]) < before.2 + i + 1 - 64 && Instant::now() < end
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    // Let the server read the rest.
    std::thread::sleep(Duration::from_millis(300));
    let r = echo_all(&sock, &mut conn, "final", 3, Duration::from_millis(200));
    real_echoes += 3 + r.retries;

    let (unknown_in, stage, known_in, stats, closed, dups) = server.with(|s| {
        (
            s.unknown_in,
            s.stage,
            s.known_in[&peer],
            s.conns.get(&peer).map(|c| c.1),
            s.closed.clone(),
            s.duplicates,
        )
    });
    let stats = stats.expect("the session was lost");
    assert!(conn.is_established(), "client session lost");
    assert_eq!(dups, 0, "a plaintext was delivered twice");
    assert!(
        closed.is_empty() || closed.iter().all(|(p, _)| *p != peer),
        "{closed:?}"
    );

    // Unknown peers: every datagram the server read got exactly one verdict,
    // and none created a connection (the honest client's excepted).
    let got = unknown_in - before.0;
    let verdicts = (stage.hello_verify + stage.accepted + stage.refused + stage.dropped)
        - (before.1.hello_verify + before.1.accepted + before.1.refused + before.1.dropped);
    assert_eq!(verdicts, got, "one verdict per datagram");
    assert_eq!(
        stage.accepted - before.1.accepted,
        1,
        "only the honest client got in"
    );
    assert!(
        got > PER_TARGET / 2,
        "the server read {got} of {PER_TARGET}"
    );

    // The established peer: datagrams in = read by the server; of those not
    // genuine, every one is either dropped before OpenSSL (framing) or
    // counted as a discarded application record, except forged
    // non-application records that pass the framing check (OpenSSL drops
    // those silently; the oracle counts them).
    let fed = known_in - before.2;
    assert_eq!(stats.datagrams_in - before.3.datagrams_in, fed);
    let (mut exp_dropped, mut exp_discarded, mut silent, mut most) = (0u64, 0u64, 0u64, 1u64);
    for d in &sent_garbage {
        match frames(d) {
            None => exp_dropped += 1,
            Some((all, app)) => {
                exp_discarded += app;
                silent += all - app;
                most = most.max(app);
            }
        }
    }
    let dropped = stats.dropped - before.3.dropped;
    let discarded = stats.discarded - before.3.discarded;
    eprintln!(
        "{bind}: {} datagrams in {:?}; unknown peers: read {got}, verdicts {verdicts} \
         ({:?}); established peer: read {fed}, dropped {dropped}, discarded {discarded}, \
         real echoes {real_echoes}, forged non-application records {silent}",
        2 * PER_TARGET,
        start.elapsed(),
        stage,
    );
    // The kernel may lose datagrams on the way (socket buffers), never add
    // any: with no loss the counts are exact; with some, each lost datagram
    // explains at most its own records.
    let lost = (PER_TARGET + real_echoes).saturating_sub(fed);
    assert!(dropped <= exp_dropped && discarded <= exp_discarded);
    assert!(
        (exp_dropped - dropped) + (exp_discarded - discarded) <= lost * most,
        "uncounted drops: expected dropped {exp_dropped} discarded {exp_discarded}, \
         counted {dropped} {discarded}, {lost} lost in the kernel"
    );
    if lost == 0 {
        assert_eq!((dropped, discarded), (exp_dropped, exp_discarded));
    }
}

#[test]
fn garbage_storm_v4() {
    garbage_storm(V4, 0xbad_0004);
}

#[test]
fn garbage_storm_v6() {
    garbage_storm(V6, 0xbad_0006);
}

/// The counters themselves, in memory: a forged application record and a
/// replay are counted as discarded, a broken datagram as dropped.
#[test]
fn drop_and_discard_counters() {
    let mut p = common::handshake(
        &common::server().build().unwrap(),
        &common::client().build().unwrap(),
    );
    assert!(p.ok());
    let server = p.server.as_mut().unwrap();
    p.client.send(b"real").unwrap();
    let rec = p.client.poll_transmit().unwrap();
    let mut buf = [0u8; 2048];
    let s0 = server.stats();
    server.feed(&rec).unwrap();
    assert_eq!(server.recv(&mut buf).unwrap(), Some(4));
    assert_eq!(server.recv(&mut buf).unwrap(), None);
    assert_eq!(server.stats().discarded, s0.discarded);
    // Replay, forgery (one flipped byte in the body), broken framing.
    server.feed(&rec).unwrap();
    let mut forged = rec.clone();
    *forged.last_mut().unwrap() ^= 1;
    server.feed(&forged).unwrap();
    server.feed(&rec[..rec.len() - 1]).unwrap();
    server.feed(&[0x17, 0x03, 0x03, 0, 0]).unwrap();
    assert_eq!(server.recv(&mut buf).unwrap(), None);
    let s1 = server.stats();
    assert_eq!(s1.discarded - s0.discarded, 2, "replay and forgery");
    assert_eq!(s1.dropped - s0.dropped, 2, "truncated and not DTLS");
    assert_eq!(s1.datagrams_in - s0.datagrams_in, 5);
    assert!(server.is_established());
    common::echo(&mut p);
}

/// OpenSSL 3.0 ends a DTLS session with a fatal alert when a protected
/// record is shorter than its cipher's overhead (GCM: under 24 bytes), so a
/// single forged datagram could end any session. The engine drops such
/// records first. Every body length from 0 to 120 bytes, forged, in the
/// current epoch with a fresh sequence number, for AEAD and CBC suites:
/// the session survives, and each datagram is counted once (dropped below
/// the cipher's minimum, discarded by OpenSSL at or above it).
#[test]
fn short_protected_records_do_not_end_the_session() {
    use dtls_reactor::Protocol;
    let suites = [
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", 24),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES256-GCM-SHA384", 24),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", 16),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-CCM", 24),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-CCM8", 16),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-SHA", 48),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES256-SHA384", 80),
        (Protocol::Dtls1_0, "ECDHE-ECDSA-AES128-SHA", 48),
    ];
    for (proto, suite, min) in suites {
        let s = common::server()
            .protocol(proto)
            .ciphers(suite)
            .build()
            .unwrap();
        let c = common::client()
            .protocol(proto)
            .ciphers(suite)
            .build()
            .unwrap();
        let mut p = common::handshake(&s, &c);
        assert!(p.ok(), "{suite}: {:?} {:?}", p.client_err, p.server_err);
        assert_eq!(p.client.cipher().as_deref(), Some(suite));
        let minor = if proto == Protocol::Dtls1_0 {
            0xff
        } else {
            0xfd
        };
        let mut buf = [0u8; 2048];
        for (side, conn) in [
            ("server", p.server.as_mut().unwrap()),
            ("client", &mut p.client),
        ] {
            let before = conn.stats();
            for (i, len) in (0..=120usize).enumerate() {
                for ty in [23u8, 21, 22] {
                    let mut d = vec![ty, 0xfe, minor, 0, 1, 0, 0, 0x10, 0, i as u8, ty];
                    d.extend_from_slice(&(len as u16).to_be_bytes());
                    d.extend((0..len).map(|j| (j * 31 + i) as u8));
                    conn.feed(&d)
                        .unwrap_or_else(|e| panic!("{suite} {side} len {len}: {e}"));
                    let got = conn
                        .recv(&mut buf)
                        .unwrap_or_else(|e| panic!("{suite} {side} type {ty} len {len}: {e}"));
                    assert_eq!(got, None, "{suite} {side}: a forged record was delivered");
                    assert!(conn.is_established(), "{suite} {side}: type {ty} len {len}");
                }
            }
            let st = conn.stats();
            assert_eq!(
                st.dropped - before.dropped,
                3 * min as u64,
                "{suite} {side}"
            );
            assert_eq!(
                st.discarded - before.discarded,
                (121 - min) as u64,
                "{suite} {side}: application records"
            );
        }
        common::echo(&mut p);
    }
}
