//! Server CPU per ClientHello at the half-open cap, next to the CPU per
//! HelloVerifyRequest, measured end to end through a reactor on loopback.
//!
//! ```sh
//! cargo run --release --example cap_cost -- --sources 1000 --copies 3 --cap 10
//! ```
//!
//! A reactor (default limits but `max_handshakes = --cap`) runs on its own
//! thread; its CPU time is that thread's clock (`pthread_getcpuclockid`),
//! system calls included. Three phases, each from `--sources` fresh loopback
//! sockets:
//! 1. every source sends a ClientHello without a cookie: the reactor answers
//!    each with a HelloVerifyRequest (CPU per HelloVerifyRequest);
//! 2. `--cap` sources complete the cookie exchange and go silent: the cap is
//!    reached;
//! 3. every source sends its ClientHello with a valid cookie `--copies` times:
//!    the front door drops each before OpenSSL (CPU per capped hello).
//!
//! The ratio capped / HelloVerifyRequest is the figure of merit (issue goal:
//! at most 2x; before the front door, a capped hello cost a key exchange and
//! a signature, 13-17x).

#[path = "common/mod.rs"]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use dtls_reactor::{ClientConfig, Connection, Handler, Limits, Reactor, ReactorHandle};

#[derive(Parser, Debug)]
#[command(about = "Server CPU per capped ClientHello vs per HelloVerifyRequest")]
struct Args {
    /// Distinct source addresses (sockets) per phase.
    #[arg(long, default_value_t = 1000)]
    sources: usize,
    /// Times each source sends its cookie-carrying hello at the cap.
    #[arg(long, default_value_t = 3)]
    copies: usize,
    /// The reactor's max_handshakes.
    #[arg(long, default_value_t = 10)]
    cap: usize,
}

struct Quiet;
impl Handler for Quiet {}

/// CPU time of the thread whose clock is `clock`.
fn cpu(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec we own; `clock` came from
    // pthread_getcpuclockid of a thread that is still running.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A source: its socket and a client whose first hello is ready.
struct Source {
    sock: UdpSocket,
    conn: Connection,
    hello: Vec<u8>,
}

fn source(server: SocketAddr, cfg: &ClientConfig) -> Source {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = Connection::client(cfg, None).unwrap();
    let hello = conn.poll_transmit().unwrap();
    Source { sock, conn, hello }
}

/// Sends the source's hello and reads the HelloVerifyRequest: the hello with
/// the cookie.
fn cookie(s: &mut Source) -> Vec<u8> {
    s.sock.send(&s.hello).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.sock.recv(&mut buf).expect("HelloVerifyRequest");
    s.conn.feed(&buf[..n]).unwrap();
    s.conn.poll_transmit().expect("hello with cookie")
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    let server_cfg = dtls_reactor::ServerConfig::builder()
        .certificate_chain_pem(common::TEST_CERT)
        .private_key_pem(common::TEST_KEY)
        .build()
        .expect("server config");
    let client_cfg = ClientConfig::builder()
        .ca_pem(common::TEST_CA)
        .server_name("localhost")
        .build()
        .expect("client config");
    let demux = dtls_demux::bind(dtls_demux::DemuxKind::OsNet, "127.0.0.1:0".parse().unwrap())
        .expect("bind");
    let server = demux.local_addr().unwrap();
    let (tx, rx) = mpsc::channel::<(ReactorHandle, libc::clockid_t)>();
    let cap = args.cap;
    let thread = std::thread::spawn(move || {
        let limits = Limits::default().max_handshakes(cap);
        let mut r = Reactor::with_limits(Quiet, limits).expect("reactor");
        r.listen(demux, &server_cfg).expect("listen");
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self() is this running thread; `clock` is ours to write.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        assert_eq!(rc, 0, "pthread_getcpuclockid");
        tx.send((r.handle(), clock)).unwrap();
        r.run().expect("run");
    });
    let (handle, clock) = rx.recv().unwrap();

    // 1. HelloVerifyRequests.
    let mut sources: Vec<Source> = (0..args.sources)
        .map(|_| source(server, &client_cfg))
        .collect();
    let t0 = cpu(clock);
    let hellos: Vec<Vec<u8>> = sources.iter_mut().map(cookie).collect();
    wait("HelloVerifyRequests", || {
        handle.admission_stats().hello_verify >= args.sources as u64
    });
    let per_hvr = (cpu(clock) - t0) / args.sources as u32;

    // 2. Fill the cap with silent peers.
    let mut silent: Vec<Source> = (0..cap).map(|_| source(server, &client_cfg)).collect();
    for s in &mut silent {
        let h2 = cookie(s);
        s.sock.send(&h2).unwrap();
    }
    wait("cap reached", || {
        handle.admission_stats().handshakes >= cap as u64
    });

    // 3. Cookie-carrying hellos at the cap.
    let before = handle.admission_stats();
    let t1 = cpu(clock);
    for _ in 0..args.copies {
        for (s, h) in sources.iter().zip(&hellos) {
            s.sock.send(h).unwrap();
        }
    }
    let n = (args.sources * args.copies) as u64;
    wait("capped hellos counted", || {
        handle.admission_stats().limit_handshakes >= before.limit_handshakes + n
    });
    let per_capped = (cpu(clock) - t1) / n as u32;
    let after = handle.admission_stats();
    handle.stop().unwrap();
    thread.join().unwrap();

    println!(
        "sources {} copies {} cap {}: server CPU per HelloVerifyRequest {:.2} µs, \
         per capped hello {:.2} µs, ratio {:.2}; handshakes started past the cap: {}",
        args.sources,
        args.copies,
        cap,
        per_hvr.as_secs_f64() * 1e6,
        per_capped.as_secs_f64() * 1e6,
        per_capped.as_secs_f64() / per_hvr.as_secs_f64(),
        after.accepted - before.accepted,
    );
}
