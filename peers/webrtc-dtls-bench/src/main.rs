//! webrtc-dtls against itself on loopback, in the shape of dtls-reactor's
//! `tokio` perf suite (`examples/perf/tokio.rs`), so the perf tool's
//! `webrtc-dtls` suite can put both in one table.
//!
//! A server and a client, each a current-thread tokio runtime on its own
//! thread (server pinned to `--server-cpu`, client to `--client-cpu`, unless
//! `--no-pin`), on 127.0.0.1. Both offer only
//! TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 with a self-signed P-256
//! certificate each; the client does not verify the server's
//! (`insecure_skip_verify`). The `--sessions` handshakes (64 at a time) happen
//! before timing.
//!
//! - `--mode oneway`: the client sends `--size`-byte records round-robin over
//!   the sessions as fast as webrtc-dtls takes them for `--seconds`; the
//!   server counts the records it decrypted between its first and last.
//! - `--mode echo`: one record in flight per session (a task each), the
//!   server sends each back, the client counts round trips; an echo not back
//!   in 200 ms is given up and the next record sent.
//!
//! Prints one line: `webrtc-dtls mode=.. size=.. sessions=.. sent=N
//! received=N seconds=F placement=..`.
//!
//! ```sh
//! cargo build --release --manifest-path peers/webrtc-dtls-bench/Cargo.toml
//! peers/webrtc-dtls-bench/target/release/webrtc-dtls-bench --mode echo --size 64 --sessions 1 --seconds 2
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::{Config, ExtendedMasterSecretType};
use webrtc_dtls::conn::DTLSConn;
use webrtc_dtls::crypto::Certificate;
use webrtc_dtls::listener::listen;
use webrtc_util::conn::{Conn, Listener};

const USAGE: &str = "usage: webrtc-dtls-bench [--mode oneway|echo] [--size BYTES] \
[--sessions N] [--seconds S] [--client-cpu N] [--server-cpu N] [--no-pin]";

/// The flags that take a value.
const VALUED: [&str; 6] = [
    "--mode",
    "--size",
    "--sessions",
    "--seconds",
    "--client-cpu",
    "--server-cpu",
];

/// How long one handshake may take before the run fails.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Oneway,
    Echo,
}

struct Args {
    mode: Mode,
    size: usize,
    sessions: usize,
    seconds: f64,
    client_cpu: usize,
    server_cpu: usize,
    pin: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: Mode::Oneway,
        size: 1200,
        sessions: 1,
        seconds: 2.0,
        client_cpu: 0,
        server_cpu: 1,
        pin: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-pin" {
            a.pin = false;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        if !VALUED.contains(&flag.as_str()) {
            return Err(format!("unknown flag {flag}"));
        }
        let value = it.next().ok_or(format!("{flag}: needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--mode" => {
                a.mode = match value.as_str() {
                    "oneway" => Mode::Oneway,
                    "echo" => Mode::Echo,
                    _ => return Err(bad(&"oneway or echo")),
                }
            }
            "--size" => a.size = value.parse().map_err(|e| bad(&e))?,
            "--sessions" => a.sessions = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => a.seconds = value.parse().map_err(|e| bad(&e))?,
            "--client-cpu" => a.client_cpu = value.parse().map_err(|e| bad(&e))?,
            "--server-cpu" => a.server_cpu = value.parse().map_err(|e| bad(&e))?,
            _ => unreachable!("{flag} is in VALUED"),
        }
    }
    // webrtc-dtls reads datagrams into 8192-byte buffers (the listener's and
    // each connection's): a record and its 29 bytes of header, nonce and tag
    // must fit.
    if a.size == 0 || a.size > 8_000 {
        return Err(format!("--size {}: 1..=8000 bytes", a.size));
    }
    if a.sessions == 0 {
        return Err("--sessions: at least 1".into());
    }
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err(format!("--seconds {}: a positive number", a.seconds));
    }
    Ok(a)
}

/// Pins the calling thread to `cpu` when `pin`; returns where it runs.
fn placement(cpu: usize, pin: bool) -> String {
    if !pin {
        return "unpinned".into();
    }
    if cpu >= libc::CPU_SETSIZE as usize {
        return format!("cpu{cpu} (pin failed, unpinned)");
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write within the
    // local value (cpu is below CPU_SETSIZE) and sched_setaffinity reads it
    // for the calling thread (pid 0).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        format!("cpu{cpu}")
    } else {
        format!("cpu{cpu} (pin failed, unpinned)")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The configuration of either side: one P-256 certificate of its own, one
/// cipher suite, the library's defaults otherwise.
fn config() -> Result<Config, webrtc_dtls::Error> {
    let cert = Certificate::generate_self_signed_with_alg(
        vec!["localhost".to_owned()],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )?;
    Ok(Config {
        certificates: vec![cert],
        cipher_suites: vec![CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256],
        extended_master_secret: ExtendedMasterSecretType::Require,
        insecure_skip_verify: true,
        server_name: "localhost".to_owned(),
        ..Default::default()
    })
}

/// The server side's count of one-way records and the first and last.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    window: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Sink {
    fn got(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut w = self.window.lock().unwrap();
        w.0.get_or_insert(now);
        w.1 = Some(now);
    }
}

/// What a run measured.
struct Measured {
    sent: u64,
    received: u64,
    elapsed: f64,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("webrtc-dtls-bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok((m, placed)) => {
            println!(
                "webrtc-dtls mode={} size={} sessions={} sent={} received={} seconds={:.4} placement={}",
                if args.mode == Mode::Echo { "echo" } else { "oneway" },
                args.size,
                args.sessions,
                m.sent,
                m.received,
                m.elapsed,
                placed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("webrtc-dtls-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn run(args: &Args) -> Result<(Measured, String), BoxError> {
    let echo = args.mode == Mode::Echo;
    let dur = Duration::from_secs_f64(args.seconds);
    let sink = Arc::new(Sink::default());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_cfg = config()?;
    let client_cfg = config()?;
    let s2 = sink.clone();
    let (server_cpu, client_cpu, pin) = (args.server_cpu, args.client_cpu, args.pin);
    let server = thread::spawn(move || {
        let placed = placement(server_cpu, pin);
        runtime().block_on(async move {
            let l = match listen("127.0.0.1:0", server_cfg).await {
                Ok(l) => l,
                Err(e) => return addr_tx.send(Err(format!("listen: {e}"))).unwrap(),
            };
            match l.addr().await {
                Ok(a) => addr_tx.send(Ok(a)).unwrap(),
                Err(e) => return addr_tx.send(Err(format!("listener address: {e}"))).unwrap(),
            }
            // webrtc-dtls's listener runs each handshake inside `accept`.
            let accept = async {
                loop {
                    let conn = match l.accept().await {
                        Ok((c, _)) => c,
                        Err(
                            webrtc_util::Error::ErrClosedListener
                            | webrtc_util::Error::ErrClosedListenerAcceptCh,
                        ) => return,
                        // A failed handshake: the listener goes on.
                        Err(e) => {
                            eprintln!("webrtc-dtls-bench: server handshake: {e}");
                            continue;
                        }
                    };
                    let sink = s2.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16_384];
                        while let Ok(n) = conn.recv(&mut buf).await {
                            if echo {
                                if conn.send(&buf[..n]).await.is_err() {
                                    return;
                                }
                            } else {
                                sink.got();
                            }
                        }
                    });
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stop_rx => {}
            }
            let _ = l.close().await;
        });
        placed
    });
    let addr = match addr_rx.recv() {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err("server thread ended before listening".into()),
    };
    let (size, sessions) = (args.size, args.sessions);
    let client = thread::spawn(move || {
        let placed = placement(client_cpu, pin);
        let m = runtime().block_on(client_side(addr, client_cfg, echo, size, sessions, dur));
        m.map(|m| (m, placed))
    });
    let client_result = client.join().map_err(|_| "client thread panicked")?;
    let (mut m, placed_c) = match client_result {
        Ok(r) => r,
        Err(e) => {
            let _ = stop_tx.send(());
            let _ = server.join();
            return Err(e);
        }
    };
    if !echo {
        // Let the server drain what is queued.
        thread::sleep(Duration::from_millis(200));
        m.received = sink.received.load(Ordering::Relaxed);
        let w = *sink.window.lock().unwrap();
        m.elapsed = match w {
            (Some(a), Some(b)) => (b - a).as_secs_f64().max(dur.as_secs_f64() * 0.5),
            _ => dur.as_secs_f64(),
        };
    }
    let _ = stop_tx.send(());
    let placed_s = server.join().map_err(|_| "server thread panicked")?;
    Ok((
        m,
        format!("client-runtime:{placed_c},server-runtime:{placed_s}"),
    ))
}

async fn connect(addr: SocketAddr, cfg: Config) -> Result<DTLSConn, BoxError> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(addr).await?;
    let conn: Arc<dyn Conn + Send + Sync> = Arc::new(sock);
    match tokio::time::timeout(HANDSHAKE_DEADLINE, DTLSConn::new(conn, cfg, true, None)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("client handshake: {e}").into()),
        Err(_) => Err(format!("client handshake: not done in {HANDSHAKE_DEADLINE:?}").into()),
    }
}

async fn client_side(
    addr: SocketAddr,
    cfg: Config,
    echo: bool,
    size: usize,
    sessions: usize,
    dur: Duration,
) -> Result<Measured, BoxError> {
    let mut all = Vec::with_capacity(sessions);
    for chunk in 0..sessions.div_ceil(64) {
        let n = 64.min(sessions - chunk * 64);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            set.spawn(connect(addr, cfg.clone()));
        }
        while let Some(s) = set.join_next().await {
            all.push(Arc::new(s??));
        }
    }
    let payload = vec![0x42u8; size];
    let start = Instant::now();
    let end = start + dur;
    if !echo {
        let mut sent = 0u64;
        'send: while Instant::now() < end {
            for s in &all {
                if s.write(&payload, None).await.is_ok() {
                    sent += 1;
                }
                if sent.is_multiple_of(4096) {
                    tokio::task::yield_now().await;
                    if Instant::now() >= end {
                        break 'send;
                    }
                }
            }
        }
        return Ok(Measured {
            sent,
            received: 0,
            elapsed: start.elapsed().as_secs_f64(),
        });
    }
    let mut set = tokio::task::JoinSet::new();
    for s in all {
        let payload = payload.clone();
        set.spawn(async move {
            let mut buf = vec![0u8; 16_384];
            let (mut sent, mut got) = (0u64, 0u64);
            while Instant::now() < end {
                if s.write(&payload, None).await.is_err() {
                    break;
                }
                sent += 1;
                // An echo lost on the way is not retransmitted: the next
                // record goes after a short wait.
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf, None)).await
                {
                    Ok(Ok(_)) => got += 1,
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            (sent, got)
        });
    }
    let (mut sent, mut received) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (s, g) = r?;
        sent += s;
        received += g;
    }
    Ok(Measured {
        sent,
        received,
        elapsed: start.elapsed().as_secs_f64(),
    })
}
