//! Full and resumed DTLS 1.2 handshakes: handshakes per second and the
//! server's CPU time per handshake, ours and bare OpenSSL's.
//!
//! ```sh
//! cargo run --release --example handshake_bench -- --count 500 --repeat 3
//! cargo run --release --example handshake_bench -- --like-for-like --count 500 --repeat 7
//! ```
//!
//! Default mode (`udp.rs`): real loopback UDP sockets. The server thread
//! (pinned to CPU 1 unless `--no-pin`) owns one unconnected socket and runs the
//! sans-IO `FrontDoor` and `Connection`s; the client thread (pinned to CPU 0)
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
//!
//! `--like-for-like` (`like_for_like.rs`): full handshakes with the settings
//! of the bare-OpenSSL anchor, bare OpenSSL and our engine in memory
//! (`memory.rs`) and our engine over UDP, then the rest of the default
//! configuration's cost, one factor at a time.

#[path = "../common/mod.rs"]
mod common;
mod like_for_like;
mod memory;
mod udp;

use std::thread;
use std::time::Duration;

use clap::Parser;
use dtls_reactor::{ClientConfig, ServerConfig};

/// The cipher suite of every case (the anchor's).
pub const CIPHER: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";
/// The MTU of every SSL (our configuration's default).
pub const MTU: u32 = 1400;

#[derive(Parser, Debug)]
#[command(
    about = "DTLS handshakes per second and server CPU per handshake, ours and bare OpenSSL's"
)]
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
    /// Full handshakes with the anchor's settings (self-signed P-256
    /// certificate, no verification, no session cache or tickets, cookie on
    /// and off): bare OpenSSL in memory, our engine in memory and over UDP,
    /// and the breakdown of the default configuration's extra cost.
    #[arg(long)]
    like_for_like: bool,
    /// With --like-for-like: only the in-memory rows (one thread; for
    /// `valgrind --tool=callgrind`).
    #[arg(long, requires = "like_for_like")]
    memory_only: bool,
    /// Print the names of the cases that would run (after --only) and exit.
    #[arg(long)]
    list: bool,
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
            .ciphers(CIPHER)
            .groups(self.groups())
            .require_cookie(self.cookie)
            .build()
            .expect("server config")
    }
    fn client(&self) -> ClientConfig {
        ClientConfig::builder()
            .ca_pem(common::TEST_CA)
            .server_name("localhost")
            .ciphers(CIPHER)
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
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median, min and max of `v` (not empty).
pub fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The CPUs the server and the client run on: 1 and 0 with two or more.
pub fn cpus() -> (usize, usize) {
    if thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        (1, 0)
    } else {
        (0, 0)
    }
}

fn main() {
    common::init_log();
    let args = Args::parse();
    let pinning = !args.no_pin;
    if args.like_for_like {
        like_for_like::main(
            args.count,
            args.repeat.max(1),
            pinning,
            args.memory_only,
            args.only.as_deref(),
            args.list,
        );
        return;
    }
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
    if args.list {
        for c in &cases {
            println!("{}", c.name());
        }
        return;
    }
    println!(
        "machine: {} CPUs, {}; {} handshakes per run, {} runs per case; loopback UDP, \
         ECDHE-ECDSA-AES128-GCM-SHA256, ECDSA P-256 certificate",
        thread::available_parallelism().map_or(1, |n| n.get()),
        dtls_reactor::openssl_version(),
        args.count,
        args.repeat
    );
    let mut results: Vec<(Case, Vec<(udp::ServerSide, udp::ClientSide)>)> =
        cases.iter().map(|&c| (c, Vec::new())).collect();
    // Runs interleaved across cases so a slow minute hits every case alike.
    for rep in 0..args.repeat.max(1) {
        for (case, runs) in results.iter_mut() {
            eprint!("\r{} #{}          ", case.name(), rep + 1);
            runs.push(udp::run(
                udp::Server::Engine(case.server()),
                case.client(),
                case.resume,
                args.count,
                pinning,
            ));
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
        "\nAnchors: bare OpenSSL server CPU per full handshake 269 us, measured on another day \
         (`--like-for-like` measures bare OpenSSL in the same run, like for like); webrtc-dtls \
         580-720 handshakes/s."
    );
}
