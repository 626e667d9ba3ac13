//! Full and resumed DTLS 1.2 handshakes: handshakes per second and the
//! server's CPU time per handshake.
//!
//! ```sh
//! cargo run --release --example handshake_bench -- --count 500 --repeat 3
//! ```
//!
//! Transport: real loopback UDP sockets. The server thread (pinned to CPU 1
//! unless `--no-pin`) owns one unconnected socket and runs the sans-IO
//! [`FrontDoor`] and [`Connection`]s; the client thread (pinned to CPU 0)
//! runs the handshakes one after another, each from a fresh connected socket
//! (a new address, as a new peer would have). The server's CPU time is the
//! thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) of its whole loop, system calls
//! included, divided by the handshakes it completed; the `engine` column counts
//! only the time spent inside the cookie stage and the connections (OpenSSL),
//! without the socket calls.
//!
//! Cases: cookie exchange on and off (`ServerConfig::builder().require_cookie`),
//! key exchange over P-256 (`groups("P-256")`) or X25519 (`groups("X25519:P-256")`
//! on both sides; the certificate is ECDSA P-256 so P-256 stays in the list), and
//! resumed sessions (`ClientConfig::builder().resume_sessions(true)`: the first
//! handshake of a run is full and not counted, every counted one must report
//! `Connection::session_reused()` on both sides). The group used is checked on
//! the client (`peer_tmp_key`).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use dtls_reactor::{
    Admission, Admitted, ClientConfig, Connection, Datagram, FrontDoor, Refusal, ServerConfig,
};
use openssl::pkey::Id;

#[derive(Parser, Debug)]
#[command(about = "DTLS handshakes per second and server CPU per handshake, on loopback UDP")]
struct Args {
    /// Handshakes per run.
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Runs per case (median and min-max are reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Do not pin the client and server threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Only the cases whose name contains this text.
    #[arg(long)]
    only: Option<String>,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    cookie: bool,
    x25519: bool,
    resume: bool,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{} {} {}",
            if self.resume { "resumed" } else { "full" },
            if self.cookie { "cookie" } else { "no-cookie" },
            if self.x25519 { "X25519" } else { "P-256" },
        )
    }
    fn groups(&self) -> &'static str {
        if self.x25519 {
            "X25519:P-256"
        } else {
            "P-256"
        }
    }
    fn server(&self) -> ServerConfig {
        ServerConfig::builder()
            .certificate_chain_pem(common::TEST_CERT)
            .private_key_pem(common::TEST_KEY)
            .ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
            .groups(self.groups())
            .require_cookie(self.cookie)
            .build()
            .expect("server config")
    }
    fn client(&self) -> ClientConfig {
        ClientConfig::builder()
            .ca_pem(common::TEST_CA)
            .server_name("localhost")
            .ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
            .groups(self.groups())
            .resume_sessions(self.resume)
            // The client reads the negotiated group from OpenSSL's session
            // after the handshake, so it keeps OpenSSL's record layer.
            .openssl_record_layer(true)
            .build()
            .expect("client config")
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What the server thread measured.
#[derive(Default)]
struct ServerSide {
    completed: u64,
    reused: u64,
    failed: u64,
    cpu: Duration,
    engine: Duration,
    placement: String,
}

/// What the client thread measured.
struct ClientSide {
    completed: u64,
    reused: u64,
    failed: u64,
    cpu: Duration,
    elapsed: Duration,
    group: String,
    placement: String,
}

fn drain_to(sock: &UdpSocket, conn: &mut Connection, to: SocketAddr) {
    while let Some(d) = conn.peek_transmit() {
        let _ = sock.send_to(d, to);
        conn.pop_transmit();
    }
}

fn server_loop(
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
                *group = Some(
                    match conn
                        .ssl()
                        .expect("OpenSSL's session")
                        .peer_tmp_key()
                        .map(|k| k.id())
                    {
                        Ok(Id::X25519) => "X25519".into(),
                        Ok(Id::EC) => "P-256".into(),
                        Ok(other) => format!("{other:?}"),
                        Err(_) => "none (resumed)".into(),
                    },
                );
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

fn run(case: Case, count: usize, pinning: bool) -> (ServerSide, ClientSide) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ccpu, scpu) = if thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        (0, 1)
    } else {
        (0, 0)
    };
    let sconfig = case.server();
    let stop2 = stop.clone();
    let server = thread::spawn(move || server_loop(sock, sconfig, stop2, scpu, pinning));
    let cconfig = case.client();
    let client = thread::spawn(move || {
        let placement = common::placement(ccpu, pinning);
        let mut buf = vec![0u8; 65536];
        let mut group = None;
        if case.resume {
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
    if case.resume {
        // The uncounted first full handshake.
        s.completed = s.completed.saturating_sub(1);
    }
    (s, c)
}

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    common::init_log();
    let args = Args::parse();
    let pinning = !args.no_pin;
    let mut cases = Vec::new();
    for resume in [false, true] {
        for cookie in [true, false] {
            for x25519 in [false, true] {
                cases.push(Case {
                    cookie,
                    x25519,
                    resume,
                });
            }
        }
    }
    if let Some(f) = &args.only {
        cases.retain(|c| c.name().contains(f.as_str()));
    }
    println!(
        "machine: {} CPUs, {}; {} handshakes per run, {} runs per case; loopback UDP, \
         ECDHE-ECDSA-AES128-GCM-SHA256, ECDSA P-256 certificate",
        thread::available_parallelism().map_or(1, |n| n.get()),
        dtls_reactor::openssl_version(),
        args.count,
        args.repeat
    );
    let mut results: Vec<(Case, Vec<(ServerSide, ClientSide)>)> =
        cases.iter().map(|&c| (c, Vec::new())).collect();
    // Runs interleaved across cases so a slow minute hits every case alike.
    for rep in 0..args.repeat.max(1) {
        for (case, runs) in results.iter_mut() {
            eprint!("\r{} #{}          ", case.name(), rep + 1);
            runs.push(run(*case, args.count, pinning));
        }
    }
    eprintln!("\r                                        ");
    println!(
        "\n| case | group used | handshakes/s median (min-max) | server CPU us/handshake median (min-max) | server engine us | client CPU us | vs OpenSSL server 269 us | completed | resumed (client/server) | failed | placement |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, runs) in &results {
        let (hs, hs_lo, hs_hi) = median_min_max(
            runs.iter()
                .map(|(_, c)| c.completed as f64 / c.elapsed.as_secs_f64())
                .collect(),
        );
        let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let (cpu, cpu_lo, cpu_hi) =
            median_min_max(runs.iter().map(|(s, _)| per(s.cpu, s.completed)).collect());
        let (eng, _, _) = median_min_max(
            runs.iter()
                .map(|(s, _)| per(s.engine, s.completed))
                .collect(),
        );
        let (ccpu, _, _) =
            median_min_max(runs.iter().map(|(_, c)| per(c.cpu, c.completed)).collect());
        let completed: u64 = runs.iter().map(|(_, c)| c.completed).sum();
        let creused: u64 = runs.iter().map(|(_, c)| c.reused).sum();
        let sreused: u64 = runs.iter().map(|(s, _)| s.reused).sum();
        let failed: u64 = runs.iter().map(|(s, c)| s.failed + c.failed).sum();
        let (s, c) = &runs[0];
        println!(
            "| {} | {} | {:.0} ({:.0}-{:.0}) | {:.0} ({:.0}-{:.0}) | {:.0} | {:.0} | {:.2}x | {} | {}/{} | {} | client {}, server {} |",
            case.name(),
            c.group,
            hs,
            hs_lo,
            hs_hi,
            cpu,
            cpu_lo,
            cpu_hi,
            eng,
            ccpu,
            cpu / 269.0,
            completed,
            creused,
            sreused,
            failed,
            c.placement,
            s.placement
        );
    }
    println!(
        "\nAnchors: bare OpenSSL server CPU per full handshake 269 us (target at most 1.1x = 296 us); \
         webrtc-dtls 580-720 handshakes/s."
    );
}
