//! The perf tool's `webrtc-dtls` suite: webrtc-rs's pure-Rust DTLS (also on
//! tokio) against itself, as a peer to compare the `tokio` suite with. It runs
//! in its own process, `peers/webrtc-dtls-bench` (a crate outside the
//! workspace, so `cargo test --workspace` never builds webrtc-dtls), once per
//! run: the same shape as `tokio.rs` (a current-thread runtime per side,
//! the server's thread on `cpus.1`, the client's on `cpus.0`, loopback,
//! ECDHE-ECDSA-AES128-GCM with P-256, the sessions' handshakes before
//! timing), which prints one line `... sent=N received=N seconds=F
//! placement=...`. Its baseline is `tokio-udp`. Included by `main.rs`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The command that builds the peer, for the note printed when it is missing.
pub(crate) const BUILD: &str =
    "cargo build --release --manifest-path peers/webrtc-dtls-bench/Cargo.toml";

/// The peer's binary: `$WEBRTC_DTLS_BENCH` when set (a peer built with
/// another target directory), else where [`BUILD`] puts it.
pub(crate) fn binary() -> PathBuf {
    match std::env::var_os("WEBRTC_DTLS_BENCH") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("peers/webrtc-dtls-bench/target/release/webrtc-dtls-bench"),
    }
}

/// Why the suite cannot run (the peer is not built), or `None`.
pub(crate) fn missing() -> Option<String> {
    let bin = binary();
    if bin.is_file() {
        None
    } else {
        Some(format!(
            "webrtc-dtls skipped: no peer binary at {} (build it with `{BUILD}`)",
            bin.display()
        ))
    }
}

/// One run of the peer: (sent, received, seconds) and where its runtimes ran.
/// Panics, like the other suites' setup failures, when the peer fails or
/// does not finish within a minute past `dur`.
pub(crate) fn run(
    echo: bool,
    size: usize,
    sessions: usize,
    dur: Duration,
    pin: bool,
    cpus: (usize, usize),
) -> ((u64, u64, f64), String) {
    let mut cmd = Command::new(binary());
    cmd.args(["--mode", if echo { "echo" } else { "oneway" }])
        .args(["--size", &size.to_string()])
        .args(["--sessions", &sessions.to_string()])
        .args(["--seconds", &format!("{}", dur.as_secs_f64())])
        .args(["--client-cpu", &cpus.0.to_string()])
        .args(["--server-cpu", &cpus.1.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !pin {
        cmd.arg("--no-pin");
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("webrtc-dtls: cannot start {}: {e}", binary().display()));
    let deadline = Instant::now() + dur + Duration::from_secs(60);
    // The pipes hold the one line it prints; polling every 100 ms costs the
    // measured threads nothing noticeable.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("webrtc-dtls: the peer did not finish within a minute past the run");
            }
            Err(e) => panic!("webrtc-dtls: waiting for the peer: {e}"),
        }
    }
    let out = child.wait_with_output().expect("webrtc-dtls: peer output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        panic!("webrtc-dtls: the peer failed ({}): {stderr}", out.status);
    }
    parse(&stdout).unwrap_or_else(|| panic!("webrtc-dtls: unexpected output {stdout:?}"))
}

/// The peer's result line: `sent=`, `received=`, `seconds=`, `placement=`.
fn parse(out: &str) -> Option<((u64, u64, f64), String)> {
    let line = out.lines().find(|l| l.starts_with("webrtc-dtls "))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
    };
    let sent = field("sent")?.parse().ok()?;
    let received = field("received")?.parse().ok()?;
    let seconds = field("seconds")?.parse().ok()?;
    let placed = field("placement")?
        .replace("client-runtime:", "client runtime ")
        .replace(",server-runtime:", ", server runtime ");
    Some(((sent, received, seconds), format!("peer process: {placed}")))
}
