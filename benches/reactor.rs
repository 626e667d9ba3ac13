//! Reactor bench: `reactor_client` against `reactor_echo`, DTLS over each demux
//! and a raw-UDP echo built with the same loop shape (the baseline), in one run.
//!
//! `cargo bench --bench reactor` builds both examples (release), then for each
//! server mode starts `reactor_echo` pinned to CPU 0 and runs `reactor_client`
//! pinned to CPU 1 (the last CPU if there is only one... then both share it):
//! aggregate echo round trips per second for 1, 64 and 1,000 concurrent
//! sessions (100-byte datagrams; the count starts when all sessions are
//! connected), and full handshakes per second (1,000 sessions, 64 handshakes in
//! flight, each closed right after). The baseline is the same reactor serving
//! plain UDP (`reactor_echo --raw`: `Reactor::listen_plain`, same demux, links
//! and limits; `reactor_client --raw`: `Reactor::connect_plain`); the raw
//! counterpart of a handshake is a new plain session's first round trip (also
//! at most 64 in flight; plain sessions likewise start their measured echoes
//! only when all completed that first round trip). Each figure is the median of 3 runs;
//! ratios are DTLS / raw from the same run of the bench.
//!
//! Set `REACTOR_BENCH_QUICK=1` for one repetition with smaller counts.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn examples_dir() -> PathBuf {
    // target/release/deps/reactor-<hash> -> target/release/examples
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("examples"))
        .expect("target dir")
}

fn build() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--example",
            "reactor_echo",
            "--example",
            "reactor_client",
        ])
        .status()
        .expect("cargo build");
    assert!(st.success(), "building the examples failed");
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(dir: &Path, port: u16, extra: &[&str]) -> Server {
    let child = Command::new(dir.join("reactor_echo"))
        .args(["--port", &port.to_string(), "--pin"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("reactor_echo");
    std::thread::sleep(Duration::from_millis(300));
    Server(child)
}

/// Runs the client; returns (round trips/s, handshakes/s or sessions/s).
/// A failed run (a session lost a plain datagram, say) is reported and run again,
/// at most twice.
fn client(dir: &Path, port: u16, cpu: usize, args: &[String]) -> (f64, f64) {
    let mut tries = 0;
    let out = loop {
        tries += 1;
        let out = Command::new(dir.join("reactor_client"))
            .args(["127.0.0.1", &port.to_string(), "--pin", &cpu.to_string()])
            .args(["--timeout", "20"])
            .args(args)
            .output()
            .expect("reactor_client");
        if out.status.success() {
            break out;
        }
        eprintln!(
            "reactor_client {args:?} failed (try {tries}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
        assert!(tries < 3, "reactor_client kept failing");
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let num_before = |marker: &str| -> f64 {
        text.split(marker)
            .next()
            .and_then(|s| s.split_whitespace().last())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0)
    };
    let rt = num_before(" round trips/s");
    // Plain sessions count as set up after their first round trip.
    let hs = text
        .split("handshakes ")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    (rt, hs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    build();
    let dir = examples_dir();
    let quick = std::env::var_os("REACTOR_BENCH_QUICK").is_some();
    let reps = if quick { 1 } else { 3 };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let client_cpu = if cpus > 1 { 1 } else { 0 };
    let scale = if quick { 4 } else { 1 };
    let loads: [(usize, u64); 3] = [
        (1, 20_000 / scale),
        (64, 400 / scale),
        (1000, 40 / scale as u64),
    ];
    let modes: [(&str, Vec<&str>); 4] = [
        (
            "plain UDP (same reactor, osnet)",
            vec!["--raw", "--idle", "60"],
        ),
        ("DTLS osnet", vec!["--demux", "osnet"]),
        ("DTLS router", vec!["--demux", "router"]),
        (
            "DTLS router in memory",
            vec!["--demux", "router", "--in-memory"],
        ),
    ];
    println!(
        "reactor bench: server reactor_echo pinned to CPU 0, reactor_client pinned to CPU {client_cpu} ({cpus} CPUs); median of {reps}"
    );
    let mut rows: Vec<(String, Vec<f64>, f64)> = Vec::new();
    for (name, extra) in &modes {
        let raw = extra.contains(&"--raw");
        let port = free_port();
        let srv = server(&dir, port, extra);
        let mut rates = Vec::new();
        for (sessions, count) in loads {
            let mut args = vec![
                "--sessions".to_string(),
                sessions.to_string(),
                "--count".to_string(),
                count.to_string(),
                "--size".to_string(),
                "100".to_string(),
            ];
            if raw {
                args.push("--raw".into());
            }
            let runs = (0..reps)
                .map(|_| client(&dir, port, client_cpu, &args).0)
                .collect();
            rates.push(median(runs));
        }
        let hs_args: Vec<String> = if raw {
            [
                "--raw",
                "--sessions",
                "1000",
                "--count",
                "1",
                "--parallel",
                "64",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        } else {
            ["--sessions", "1000", "--count", "0", "--parallel", "64"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        let hs = median(
            (0..reps)
                .map(|_| client(&dir, port, client_cpu, &hs_args).1)
                .collect(),
        );
        drop(srv);
        rows.push((name.to_string(), rates, hs));
    }
    let base = rows[0].clone();
    println!(
        "| server | 1 session rt/s (ratio) | 64 sessions rt/s (ratio) | 1,000 sessions rt/s (ratio) | handshakes/s (ratio to new plain sessions/s) |"
    );
    println!("|---|---|---|---|---|");
    for (name, rates, hs) in &rows {
        let cells: Vec<String> = rates
            .iter()
            .zip(&base.1)
            .map(|(r, b)| format!("{r:.0} ({:.2})", r / b))
            .collect();
        println!(
            "| {name} | {} | {} | {} | {hs:.0} ({:.3}) |",
            cells[0],
            cells[1],
            cells[2],
            hs / base.2
        );
    }
}
