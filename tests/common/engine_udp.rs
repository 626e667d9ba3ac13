//! The sans-IO engine over real loopback UDP, driven by a minimal loop (no
//! socket API, no reactor), for `tests/loss_engine.rs` and
//! `tests/hostile_engine.rs`: a server thread runs the `FrontDoor` and a
//! `HashMap<peer, Connection>` on one `UdpSocket` and echoes every datagram
//! of plaintext; clients drive `Connection::client` on a connected
//! `UdpSocket` whose read timeout is the DTLS deadline.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dtls_reactor::{
    Admission, AdmissionStats, Admitted, ClientConfig, ConnStats, Connection, Datagram, Error,
    FrontDoor, Refusal, ServerConfig,
};

/// Where to bind: the IPv4 loopback address, any port.
pub const V4: &str = "127.0.0.1:0";
/// Where to bind: the IPv6 loopback address, any port.
pub const V6: &str = "[::1]:0";

// ---------------------------------------------------------------------------
// The server loop.

/// What the server thread tells the tests.
#[derive(Default)]
pub struct Shared {
    /// Datagrams read from the socket, from peers without / with a connection.
    pub unknown_in: u64,
    pub known_in: HashMap<SocketAddr, u64>,
    /// The cookie stage's counters.
    pub stage: AdmissionStats,
    /// Plaintext datagrams echoed, per peer.
    pub echoes: HashMap<SocketAddr, u64>,
    /// Every plaintext received, to catch one delivered twice.
    pub payloads: HashSet<Vec<u8>>,
    pub duplicates: u64,
    /// Live connections: established?, counters.
    pub conns: HashMap<SocketAddr, (bool, ConnStats)>,
    /// Connections that ended, with the reason.
    pub closed: Vec<(SocketAddr, String)>,
    /// Largest number of connections held at once.
    pub max_conns: usize,
}

/// The echo server: its thread stops when this is dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds a socket on `bind` and starts the server thread on it.
    pub fn start(bind: &str, config: ServerConfig) -> Server {
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

    /// Runs `f` on the server's state.
    pub fn with<R>(&self, f: impl FnOnce(&Shared) -> R) -> R {
        f(&self.shared.lock().unwrap())
    }

    /// Waits (up to 5 s) until `cond` holds on the server's state.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&Shared) -> bool) {
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
pub fn server_config(initial: Duration) -> ServerConfig {
    super::server()
        .initial_timeout(initial)
        .max_timeout(2 * initial)
        .build()
        .unwrap()
}

/// See [`server_config`].
pub fn client_config(initial: Duration) -> ClientConfig {
    super::client()
        .initial_timeout(initial)
        .max_timeout(2 * initial)
        .build()
        .unwrap()
}

pub fn client_socket(bind: &str, to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(bind).unwrap();
    s.connect(to).unwrap();
    s
}

pub fn flush(sock: &UdpSocket, conn: &mut Connection) {
    while let Some(d) = conn.poll_transmit() {
        // A refused send (ICMP from an earlier datagram) loses this one:
        // the retransmission timer covers it.
        let _ = sock.send(&d);
    }
}

/// Waits for one datagram until `until` (or the DTLS deadline, if earlier)
/// and feeds it; acts on the DTLS deadline when it passes.
pub fn pump(
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
pub fn handshake(sock: &UdpSocket, cfg: &ClientConfig) -> Result<Connection, Error> {
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
pub struct EchoReport {
    /// Requests sent again because no reply came in time.
    pub retries: u64,
    /// Replies to a request answered already (the answer to an earlier attempt).
    pub late: u64,
}

/// Sends `count` echo requests (all at once), resending every one without a
/// reply after `retry`, until each is answered. Every attempt carries a
/// distinct payload, so any plaintext seen twice is a replay that got
/// through. Application data is not retransmitted by DTLS: this is the
/// application's retry.
pub fn echo_all(
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
