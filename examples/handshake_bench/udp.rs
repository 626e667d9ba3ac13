//! Handshakes over loopback UDP: a server thread with one unconnected socket
//! running the sans-IO `FrontDoor` and `Connection`s, and a client thread
//! starting each handshake from a fresh connected socket (a new address, as a
//! new peer would have).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dtls_reactor::{
    Admission, Admitted, ClientConfig, Connection, Datagram, FrontDoor, Refusal, ServerConfig,
};
use openssl::pkey::Id;
use openssl::ssl::{SslContext, SslStream};

use crate::common;
use crate::memory::{bare_stream, progress, Datagrams};
use crate::thread_cpu;

/// The server a run measures.
pub enum Server {
    /// Our engine: `FrontDoor` and `Connection`s.
    Engine(ServerConfig),
    /// Bare OpenSSL: one `SslStream` per peer over a queue of datagrams
    /// (`SSL_OP_COOKIE_EXCHANGE` in the context, if any, makes OpenSSL's own
    /// stateful cookie exchange).
    Bare(SslContext),
}

/// What the server thread measured.
#[derive(Default)]
pub struct ServerSide {
    /// Handshakes established.
    pub completed: u64,
    /// Of those, resumed sessions.
    pub reused: u64,
    /// Refused, failed or abandoned.
    pub failed: u64,
    /// The server thread's CPU time over its whole loop.
    pub cpu: Duration,
    /// The part of `cpu` inside the front door and the connections.
    pub engine: Duration,
    /// Where the thread ran.
    pub placement: String,
}

/// What the client thread measured.
pub struct ClientSide {
    /// Handshakes established.
    pub completed: u64,
    /// Of those, resumed sessions.
    pub reused: u64,
    /// Failed or timed out.
    pub failed: u64,
    /// The client thread's CPU time over the counted handshakes.
    pub cpu: Duration,
    /// Wall time of the counted handshakes.
    pub elapsed: Duration,
    /// The key exchange group of the first handshake.
    pub group: String,
    /// Where the thread ran.
    pub placement: String,
}

fn drain_to(sock: &UdpSocket, conn: &mut Connection, to: SocketAddr) {
    while let Some(d) = conn.peek_transmit() {
        let _ = sock.send_to(d, to);
        conn.pop_transmit();
    }
}

fn server_loop(
    sock: UdpSocket,
    server: Server,
    stop: Arc<AtomicBool>,
    cpu: usize,
    pinning: bool,
) -> ServerSide {
    match server {
        Server::Engine(config) => engine_loop(sock, config, stop, cpu, pinning),
        Server::Bare(ctx) => bare_loop(sock, ctx, stop, cpu, pinning),
    }
}

/// The bare OpenSSL server: each datagram goes to its peer's `SslStream`
/// (a new one for a new peer) and `SSL_do_handshake` runs; what it wrote is
/// sent back. No timers (nothing is lost on loopback).
fn bare_loop(
    sock: UdpSocket,
    ctx: SslContext,
    stop: Arc<AtomicBool>,
    cpu: usize,
    pinning: bool,
) -> ServerSide {
    let mut out = ServerSide {
        placement: common::placement(cpu, pinning),
        ..Default::default()
    };
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut conns: HashMap<SocketAddr, SslStream<Datagrams>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let start = thread_cpu();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let t0 = thread_cpu();
            let s = conns.entry(from).or_insert_with(|| bare_stream(&ctx, true));
            s.get_mut().inbound.push_back(buf[..n].to_vec());
            let r = progress(s.do_handshake());
            out.engine += thread_cpu() - t0;
            for d in s.get_mut().outbound.drain(..) {
                let _ = sock.send_to(&d, from);
            }
            match r {
                Some(true) => {
                    out.completed += 1;
                    out.reused += u64::from(s.ssl().session_reused());
                    conns.remove(&from);
                }
                Some(false) => {}
                None => {
                    out.failed += 1;
                    conns.remove(&from);
                }
            }
        }
    }
    out.cpu = thread_cpu() - start;
    out
}

fn engine_loop(
    sock: UdpSocket,
    config: ServerConfig,
    stop: Arc<AtomicBool>,
    cpu: usize,
    pinning: bool,
) -> ServerSide {
    let mut out = ServerSide {
        placement: common::placement(cpu, pinning),
        ..Default::default()
    };
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let mut stage = FrontDoor::new(&config, &Admission::default()).expect("cookie stage");
    let mut conns: HashMap<SocketAddr, Connection> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let start = thread_cpu();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let t0 = thread_cpu();
            match conns.get_mut(&from) {
                Some(c) => {
                    let _ = c.feed(&buf[..n]);
                    out.engine += thread_cpu() - t0;
                    drain_to(&sock, c, from);
                    if c.is_established() {
                        out.completed += 1;
                        out.reused += u64::from(c.session_reused());
                        conns.remove(&from);
                    } else if c.is_closed() {
                        out.failed += 1;
                        conns.remove(&from);
                    }
                }
                None => match stage.admit(from, &Datagram::parse(&buf[..n])) {
                    Admitted::Reply(h) => {
                        out.engine += thread_cpu() - t0;
                        let _ = sock.send_to(&h, from);
                    }
                    Admitted::Accepted(c) => {
                        out.engine += thread_cpu() - t0;
                        let mut c = *c;
                        drain_to(&sock, &mut c, from);
                        conns.insert(from, c);
                    }
                    Admitted::Refused(Refusal { alert, error }) => {
                        out.engine += thread_cpu() - t0;
                        eprintln!("server refused {from}: {error}");
                        out.failed += 1;
                        if let Some(a) = alert {
                            let _ = sock.send_to(&a, from);
                        }
                    }
                    // Dropped (or a verdict of a later version: dropped too).
                    _ => out.engine += thread_cpu() - t0,
                },
            }
        }
        // Retransmissions (none expected on loopback) and abandoned peers.
        let now = Instant::now();
        conns.retain(|from, c| {
            if c.deadline().is_some_and(|d| d <= now) {
                let _ = c.handle_timeout(now);
                drain_to(&sock, c, *from);
            }
            if c.is_closed() {
                out.failed += 1;
                return false;
            }
            true
        });
    }
    out.cpu = thread_cpu() - start;
    out
}

/// One handshake from a fresh socket; `Some(reused)` when it completed.
fn client_handshake(
    server: SocketAddr,
    config: &ClientConfig,
    buf: &mut [u8],
    group: &mut Option<String>,
) -> Option<bool> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.connect(server).ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .ok()?;
    let mut conn = Connection::client(config, None).ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(d) = conn.peek_transmit() {
            let _ = sock.send(d);
            conn.pop_transmit();
        }
        if conn.is_established() {
            if group.is_none() {
                let ssl = conn.ssl().expect("the client keeps OpenSSL's session");
                *group = Some(match ssl.peer_tmp_key().map(|k| k.id()) {
                    Ok(Id::X25519) => "X25519".into(),
                    Ok(Id::EC) => "P-256".into(),
                    Ok(other) => format!("{other:?}"),
                    Err(_) => "none (resumed)".into(),
                });
            }
            return Some(conn.session_reused());
        }
        if conn.is_closed() || Instant::now() > deadline {
            eprintln!("client handshake failed: {:?}", conn.error());
            return None;
        }
        if let Ok(n) = sock.recv(buf) {
            let _ = conn.feed(&buf[..n]);
        }
        let _ = conn.handle_timeout(Instant::now());
    }
}

/// `count` handshakes of clients of `cconfig` (our engine) with `server`;
/// with `resume`, one uncounted full handshake first, whose session the
/// counted ones resume.
pub fn run(
    server: Server,
    cconfig: ClientConfig,
    resume: bool,
    count: usize,
    pinning: bool,
) -> (ServerSide, ClientSide) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (scpu, ccpu) = crate::cpus();
    let stop2 = stop.clone();
    let server = thread::spawn(move || server_loop(sock, server, stop2, scpu, pinning));
    let client = thread::spawn(move || {
        let placement = common::placement(ccpu, pinning);
        let mut buf = vec![0u8; 65536];
        let mut group = None;
        if resume {
            // The full handshake whose session the counted ones resume.
            let mut g = None;
            client_handshake(addr, &cconfig, &mut buf, &mut g).expect("first handshake");
        }
        let (mut completed, mut reused, mut failed) = (0u64, 0u64, 0u64);
        let cpu0 = thread_cpu();
        let start = Instant::now();
        for _ in 0..count {
            match client_handshake(addr, &cconfig, &mut buf, &mut group) {
                Some(r) => {
                    completed += 1;
                    reused += u64::from(r);
                }
                None => failed += 1,
            }
        }
        ClientSide {
            completed,
            reused,
            failed,
            cpu: thread_cpu() - cpu0,
            elapsed: start.elapsed(),
            group: group.unwrap_or_default(),
            placement,
        }
    });
    let c = client.join().unwrap();
    // Let the server finish the last handshake (its Finished may still be queued).
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let mut s = server.join().unwrap();
    if resume {
        // The uncounted first full handshake.
        s.completed = s.completed.saturating_sub(1);
    }
    (s, c)
}
