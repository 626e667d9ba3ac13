//! Handshakes under loss with the default settings: for each server/client
//! pair and each fault setting, `--count` DTLS 1.2 handshakes through the
//! deterministic fault relay (`tests/common/relay/`), and how many
//! complete, in what median / p90 / max time.
//!
//! ```sh
//! cargo run --release --example handshake_loss -- --csv handshake_loss.csv
//! cargo run --release --example handshake_loss -- --pairs reactor --loss 30% --no-mixed
//! ```
//!
//! Nothing is shortened: the servers and clients run with the settings a user
//! gets by default (`ServerConfig`/`ClientConfig` timers: 1 s doubling to
//! 60 s, 60 s handshake deadline, a server's 10 s silence limit; the reactor
//! with `Limits::default()`). Pairs (`--pairs`):
//! - `reactor`: an in-process [`Reactor`] (`Limits::default()`, OsNet demux,
//!   the test certificate, the same configuration as `reactor_echo`'s
//!   defaults) and our client, [`DtlsSocket::connect`] with the default
//!   `ClientConfig` (as `echo_client` builds it);
//! - `reactor-s_client`: the same server and `openssl s_client -dtls1_2`
//!   (a process per handshake; done when it prints `CONNECTION ESTABLISHED`,
//!   its `-brief` line after the handshake);
//! - `socket`: a [`DtlsListener`] accept loop with a thread per connection
//!   (`handshake()`, then echo) and our client;
//! - `gnutls`: `gnutls-serv --udp --echo` and our client, the peer to compare
//!   against. `gnutls-serv` serves one UDP client at a time, so each
//!   handshake gets its own `gnutls-serv` process (started, and seen
//!   listening, before the handshake's clock starts). It cannot be given an
//!   address: it binds the wildcard on a free port; the traffic still only
//!   crosses loopback (the relay sends to 127.0.0.1).
//!
//! Faults: `--loss` rates (default 0, 10 %, 30 %, 50 %) dropped each way
//! (the relay's `drop=`, both directions), and for each `--mixed` rate
//! (default 30 %) a row with `dup=0.1,reorder=0.1` added. Every handshake has
//! its own relay, so its own upstream socket (a new peer for the server) and
//! its own seed: handshake `i` of every row uses relay seed `--seed + i`.
//!
//! Time to complete: from the first datagram the relay receives from the
//! client (its first ClientHello, seen by polling the relay's counters every
//! 0.2 ms) to the client reporting the handshake done (`connect` returned, or
//! s_client's line read from its pipe). Median, p90 (nearest rank) and max
//! are over the completed handshakes only. A handshake is a failure when the
//! client reports one (our client: its 60 s deadline or retransmission
//! limit) or when it has not completed `--give-up` seconds (default 90) after
//! its client started (s_client has no deadline of its own before its 12th
//! retransmission, minutes away).
//!
//! `--parallel` handshakes (default 50) run at a time; a row ends when its
//! last handshake does, so it takes at most `ceil(count / parallel)` times
//! `--give-up`, 180 s with the defaults, and the whole table (20 rows) at most
//! an hour. The full default run took 1,344 s (22 minutes) here on
//! 2026-12-01 (2 vCPUs shared with other builds; README, "Handshakes under
//! loss"): rows whose handshakes all complete end with their slowest one,
//! rows with failures at the client's 60 s deadline or at `--give-up`.
//!
//! `--trace` prints, for every failed handshake, each datagram the relay saw
//! and what it did to it: with `--count 1 --seed S` it replays handshake
//! `S - 1` of a default run (the seed is also in the CSV).
//!
//! Under the table, per row: what the relay carried (datagrams received and
//! dropped each way) and what the server saw (the reactor's counters and
//! the causes that ended its unfinished handshakes; the listener's per
//! connection `handshake()` results). `--csv` writes one line per handshake.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/relay/mod.rs"]
mod relay;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dtls_demux::{DemuxKind, OsNet};
use dtls_reactor::{
    ClientConfig, CloseCause, ConnId, Ctx, DtlsListener, DtlsSocket, Error, Handler, Limits,
    Protocol, Reactor, ReactorHandle, ServerConfig,
};
use relay::{Faults, Relay, RelayConfig, RelayStats};

const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs");

#[derive(Parser, Debug)]
#[command(
    about = "DTLS handshakes through a lossy relay with default settings: success rate and time"
)]
struct Args {
    /// Server/client pairs to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_values = ["reactor", "reactor-s-client", "socket", "gnutls"]
    )]
    pairs: Vec<Pair>,
    /// Loss rates each way (a list: one row per value; `30%` or `0.3`).
    #[arg(long, value_delimiter = ',', value_parser = common::loss_rate,
          default_values_t = vec![0.0f64, 0.1, 0.3, 0.5])]
    loss: Vec<f64>,
    /// Loss rates of the extra rows that add dup=0.1,reorder=0.1 each way.
    #[arg(long, value_delimiter = ',', value_parser = common::loss_rate,
          default_values_t = vec![0.3f64])]
    mixed: Vec<f64>,
    /// No dup/reorder rows.
    #[arg(long)]
    no_mixed: bool,
    /// Handshakes per row.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Handshakes at a time.
    #[arg(long, default_value_t = 50)]
    parallel: usize,
    /// Seconds after which an unfinished handshake counts as failed.
    #[arg(long, default_value_t = 90)]
    give_up: u64,
    /// Relay seed of handshake 0 (handshake i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write one line per handshake as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Print the relay's fault log of every failed handshake (each datagram:
    /// direction, number, length and what was done to it).
    #[arg(long)]
    trace: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Pair {
    /// In-process Reactor with default Limits; our client.
    Reactor,
    /// The same reactor; `openssl s_client -dtls1_2`.
    ReactorSClient,
    /// DtlsListener + a thread per connection; our client.
    Socket,
    /// `gnutls-serv --udp`; our client.
    Gnutls,
}

impl Pair {
    fn server(self) -> &'static str {
        match self {
            Pair::Reactor | Pair::ReactorSClient => "reactor (Limits::default())",
            Pair::Socket => "DtlsListener + thread per connection",
            Pair::Gnutls => "gnutls-serv --udp",
        }
    }
    fn client(self) -> &'static str {
        match self {
            Pair::ReactorSClient => "openssl s_client -dtls1_2",
            _ => "DtlsSocket::connect",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Pair::Reactor => "reactor",
            Pair::ReactorSClient => "reactor-s-client",
            Pair::Socket => "socket",
            Pair::Gnutls => "gnutls",
        }
    }
}

/// The faults of one row, the same both ways.
#[derive(Clone, Copy, Debug)]
struct Condition {
    loss: f64,
    mixed: bool,
}

impl Condition {
    fn faults(self) -> Faults {
        let extra = if self.mixed { 0.1 } else { 0.0 };
        Faults {
            drop: self.loss,
            duplicate: extra,
            reorder: extra,
            ..Faults::NONE
        }
    }
    fn label(self) -> String {
        let mut s = format!("drop={}", common::loss_label(self.loss));
        if self.mixed {
            s.push_str(",dup=10%,reorder=10%");
        }
        s
    }
}

/// Our client's configuration: `echo_client`'s defaults.
fn client_config() -> ClientConfig {
    common::ClientOpts {
        dtls: Protocol::Dtls1_2,
        ca: None,
        insecure: false,
        cert: None,
        key: None,
        psk: None,
        ciphers: None,
    }
    .config("localhost")
    .expect("client config")
}

/// Our servers' configuration: `reactor_echo`'s and `echo_server`'s defaults.
fn server_config() -> ServerConfig {
    common::ServerOpts {
        bind: Ipv4Addr::LOCALHOST.into(),
        port: 0,
        demux: common::DemuxChoice::Kind(DemuxKind::OsNet),
        dtls: Protocol::Dtls1_2,
        cert: None,
        key: None,
        psk: Vec::new(),
        ciphers: None,
    }
    .config()
    .expect("server config")
}

/// Counts by name (causes, results), printed as `name n; name n`.
#[derive(Default)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn add(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
    fn text(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        let v: Vec<String> = self.0.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        v.join("; ")
    }
}

type Shared = Arc<Mutex<Tally>>;

/// The reactor's handler: echoes, and counts why server handshakes that
/// never completed ended.
struct Echo {
    connected: HashSet<ConnId>,
    unfinished: Shared,
}

impl Handler for Echo {
    fn on_connected(&mut self, _ctx: &mut Ctx<'_>, id: ConnId) {
        self.connected.insert(id);
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        let _ = ctx.send(id, data);
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, cause: &CloseCause) {
        if !self.connected.remove(&id) {
            let c = match cause {
                CloseCause::Failed(s) => format!("Failed({s})"),
                other => format!("{other:?}"),
            };
            self.unfinished.lock().unwrap().add(c);
        }
    }
}

/// The server of one row.
enum Server {
    Reactor {
        addr: SocketAddr,
        handle: ReactorHandle,
        thread: thread::JoinHandle<()>,
        unfinished: Shared,
    },
    Socket {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: thread::JoinHandle<DtlsListener>,
        results: Shared,
    },
    /// A gnutls-serv per handshake.
    Gnutls,
}

impl Server {
    fn start(pair: Pair) -> Server {
        match pair {
            Pair::Reactor | Pair::ReactorSClient => {
                let unfinished = Shared::default();
                let u = unfinished.clone();
                let (tx, rx) = mpsc::channel();
                let thread = thread::spawn(move || {
                    let echo = Echo {
                        connected: HashSet::new(),
                        unfinished: u,
                    };
                    let mut r = Reactor::with_limits(echo, Limits::default()).expect("reactor");
                    let demux = OsNet::bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
                    let id = r.listen(demux, &server_config()).expect("listen");
                    tx.send((r.local_addr(id).expect("address"), r.handle()))
                        .unwrap();
                    if let Err(e) = r.run() {
                        eprintln!("reactor: {e}");
                    }
                });
                let (addr, handle) = rx.recv().expect("reactor started");
                Server::Reactor {
                    addr,
                    handle,
                    thread,
                    unfinished,
                }
            }
            Pair::Socket => {
                let l = DtlsListener::bind(
                    (Ipv4Addr::LOCALHOST, 0).into(),
                    &server_config(),
                    DemuxKind::OsNet,
                )
                .expect("listener");
                l.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let addr = l.local_addr().unwrap();
                let stop = Arc::new(AtomicBool::new(false));
                let results = Shared::default();
                let (s, r) = (stop.clone(), results.clone());
                let thread = thread::spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok(Some((conn, _))) => {
                                let r = r.clone();
                                thread::spawn(move || serve(conn, r));
                            }
                            Ok(None) | Err(Error::ReadTimeout) => {}
                            Err(e) => log::warn!("accept: {e}"),
                        }
                    }
                    l
                });
                Server::Socket {
                    addr,
                    stop,
                    thread,
                    results,
                }
            }
            Pair::Gnutls => Server::Gnutls,
        }
    }

    fn addr(&self) -> Option<SocketAddr> {
        match self {
            Server::Reactor { addr, .. } | Server::Socket { addr, .. } => Some(*addr),
            Server::Gnutls => None,
        }
    }

    /// Stops the server; what it saw, for the notes under the table.
    fn finish(self) -> String {
        match self {
            Server::Reactor {
                handle,
                thread,
                unfinished,
                ..
            } => {
                let st = handle.stats();
                let _ = handle.stop();
                let _ = thread.join();
                let u = unfinished.lock().unwrap();
                format!(
                    "reactor: HelloVerifyRequests {}, accepted {}, connected {}, \
                     handshake_timeouts {}, silent_peers {}, retransmissions {}; \
                     unfinished handshakes ended by: {}",
                    st.hello_verify,
                    st.accepted,
                    st.connected,
                    st.handshake_timeouts,
                    st.silent_peers,
                    st.retransmissions,
                    u.text()
                )
            }
            Server::Socket {
                stop,
                thread,
                results,
                ..
            } => {
                stop.store(true, Ordering::Relaxed);
                let l = thread.join().expect("accept thread");
                let st = l.stats();
                let r = results.lock().unwrap();
                format!(
                    "listener: HelloVerifyRequests {}, accepted {}; per connection \
                     handshake(): {}; still running {}",
                    st.admission.hello_verify,
                    st.accepted,
                    r.text(),
                    st.accepted.saturating_sub(r.total())
                )
            }
            Server::Gnutls => String::new(),
        }
    }
}

/// One accepted connection of the socket API server: the handshake, then
/// echo until the peer closes or is quiet for 90 s (the connection must
/// outlive the handshake: a client whose last flight was lost retransmits it,
/// and only this connection can answer).
fn serve(mut conn: DtlsSocket, results: Shared) {
    let r = conn.handshake();
    results.lock().unwrap().add(match &r {
        Ok(()) => "completed".to_string(),
        Err(e) => e.to_string(),
    });
    if r.is_err()
        || conn
            .set_read_timeout(Some(Duration::from_secs(90)))
            .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = conn.recv(&mut buf) {
        if conn.send(&buf[..n]).is_err() {
            break;
        }
    }
}

/// What a client reports.
enum Msg {
    Done(Instant),
    Failed(Instant, String),
}

/// A child process (s_client, gnutls-serv) whose output lines are watched
/// for `needle`; killed on drop.
struct Proc {
    child: Child,
    _stdin: Option<ChildStdin>,
}

impl Proc {
    /// Starts `bin args`; sends `Done` the first time a line of its stdout or
    /// stderr contains `needle`, and `Failed` with its last line when both
    /// end first.
    fn spawn(bin: &str, args: &[&str], needle: &'static str, tx: mpsc::Sender<Msg>) -> Proc {
        let mut child = match Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot start {bin}: {e} (apt-get install openssl gnutls-bin)");
                std::process::exit(2);
            }
        };
        let seen = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(String::new()));
        let open = Arc::new(AtomicUsize::new(2));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (tx, seen, last, open) = (tx.clone(), seen.clone(), last.clone(), open.clone());
            let bin = bin.to_string();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log::debug!("{bin}: {line}");
                    if line.contains(needle) && !seen.swap(true, Ordering::SeqCst) {
                        let _ = tx.send(Msg::Done(Instant::now()));
                    }
                    if !line.trim().is_empty() {
                        *last.lock().unwrap() = line;
                    }
                }
                if open.fetch_sub(1, Ordering::SeqCst) == 1 && !seen.load(Ordering::SeqCst) {
                    let l = last.lock().unwrap().clone();
                    let _ = tx.send(Msg::Failed(Instant::now(), format!("{bin} exited: {l}")));
                }
            });
        }
        Proc {
            _stdin: child.stdin.take(),
            child,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `gnutls-serv --udp --echo` on a free port, seen listening (bounded).
fn gnutls_serv() -> Result<(Proc, SocketAddr), String> {
    let cert = format!("{CERTS}/server.pem");
    let key = format!("{CERTS}/server.key");
    for _ in 0..3 {
        // A free port: bound and released; gnutls-serv binds it next.
        let addr = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .map_err(|e| e.to_string())?;
        let port = addr.port().to_string();
        let (tx, rx) = mpsc::channel();
        let p = Proc::spawn(
            "gnutls-serv",
            &[
                "--udp",
                "--echo",
                "--port",
                &port,
                "--x509certfile",
                &cert,
                "--x509keyfile",
                &key,
            ],
            "listening",
            tx,
        );
        if let Ok(Msg::Done(_)) = rx.recv_timeout(Duration::from_secs(10)) {
            return Ok((p, addr));
        }
    }
    Err("gnutls-serv did not start".into())
}

/// Why our client's handshake failed, short.
fn client_cause(e: &Error) -> String {
    match e {
        Error::HandshakeTimeout => "client handshake deadline (60 s)".into(),
        Error::RetransmitLimit => "client retransmission limit".into(),
        other => format!("client: {other}"),
    }
}

/// One handshake's result.
struct Outcome {
    ok: bool,
    /// To completion (or to the failure), in milliseconds.
    ms: f64,
    cause: String,
    relay: RelayStats,
    /// The relay's fault log (with `--trace`).
    log: Vec<relay::LogEntry>,
}

/// Handshake `i` of a row: its own relay (seed `seed`), its client, bounded
/// by `give_up`.
fn handshake(
    pair: Pair,
    cond: Condition,
    server: Option<SocketAddr>,
    seed: u64,
    give_up: Duration,
    client: &ClientConfig,
    trace: bool,
) -> Outcome {
    let fail = |cause: String| Outcome {
        ok: false,
        ms: 0.0,
        cause,
        relay: RelayStats::default(),
        log: Vec::new(),
    };
    let mut _gnutls = None;
    let upstream = match server {
        Some(a) => a,
        None => match gnutls_serv() {
            Ok((p, a)) => {
                _gnutls = Some(p);
                a
            }
            Err(e) => return fail(e),
        },
    };
    let mut rc = RelayConfig::new(upstream).faults(cond.faults()).seed(seed);
    rc.max_clients = 4;
    rc.max_duration = give_up + Duration::from_secs(30);
    rc.idle_timeout = rc.max_duration;
    if trace {
        rc.log_limit = 10_000;
    }
    let relay = match Relay::start(rc) {
        Ok(r) => r,
        Err(e) => return fail(format!("relay: {e}")),
    };
    let via = relay.local_addr();
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let _s_client = match pair {
        Pair::ReactorSClient => {
            let ca = format!("{CERTS}/ca.pem");
            let connect = via.to_string();
            Some(Proc::spawn(
                "openssl",
                &[
                    "s_client",
                    "-dtls1_2",
                    "-connect",
                    &connect,
                    "-servername",
                    "localhost",
                    "-CAfile",
                    &ca,
                    "-verify_return_error",
                    "-brief",
                ],
                "CONNECTION ESTABLISHED",
                tx,
            ))
        }
        _ => {
            let cfg = client.clone();
            thread::spawn(move || {
                let r = DtlsSocket::connect(via, &cfg);
                let t = Instant::now();
                let _ = tx.send(match &r {
                    Ok(_) => Msg::Done(t),
                    Err(e) => Msg::Failed(t, client_cause(e)),
                });
            });
            None
        }
    };
    let mut first: Option<Instant> = None;
    let msg = loop {
        if first.is_none() && relay.stats().to_server.received > 0 {
            first = Some(Instant::now());
        }
        let wait = if first.is_none() {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(20)
        };
        match rx.recv_timeout(wait) {
            Ok(m) => break m,
            Err(mpsc::RecvTimeoutError::Timeout) if start.elapsed() >= give_up => {
                break Msg::Failed(
                    Instant::now(),
                    format!("not done after {} s (gave up)", give_up.as_secs()),
                )
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Msg::Failed(Instant::now(), "client vanished".into())
            }
        }
    };
    let t0 = first.unwrap_or(start);
    let (ok, t1, cause) = match msg {
        Msg::Done(t) => (true, t, String::new()),
        Msg::Failed(t, c) => (false, t, c),
    };
    let log = relay.log();
    Outcome {
        ok,
        ms: t1.saturating_duration_since(t0).as_secs_f64() * 1e3,
        cause,
        relay: relay.stop(),
        log,
    }
}

/// A row's handshakes, `parallel` at a time.
fn run_row(pair: Pair, cond: Condition, args: &Args, server: Option<SocketAddr>) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..args.count).map(|_| None).collect());
    let client = client_config();
    let give_up = Duration::from_secs(args.give_up.max(1));
    thread::scope(|s| {
        for _ in 0..args.parallel.clamp(1, args.count.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.count {
                    break;
                }
                let seed = args.seed.wrapping_add(i as u64);
                let o = handshake(pair, cond, server, seed, give_up, &client, args.trace);
                out.lock().unwrap()[i] = Some(o);
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(|o| o.expect("every handshake ran"))
        .collect()
}

/// Nearest-rank percentile of sorted `v` (`q` in 0..=1).
fn percentile(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args = Args::parse();
    common::raise_nofile();
    let mut conds: Vec<Condition> = args
        .loss
        .iter()
        .map(|&loss| Condition { loss, mixed: false })
        .collect();
    if !args.no_mixed {
        conds.extend(
            args.mixed
                .iter()
                .map(|&loss| Condition { loss, mixed: true }),
        );
    }
    let mut csv = match &args.csv {
        Some(p) => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
            writeln!(
                f,
                "pair,faults,index,seed,ok,ms,cause,to_server_received,to_server_dropped,\
                 to_client_received,to_client_dropped"
            )?;
            Some(f)
        }
        None => None,
    };
    println!(
        "machine: {} CPUs, load average {} at start, {}; {} handshakes per row, {} at a time, \
         given up after {} s; relay seed of handshake i: {} + i; default timers everywhere",
        thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg(),
        dtls_reactor::openssl_version(),
        args.count,
        args.parallel,
        args.give_up,
        args.seed
    );
    let began = Instant::now();
    let mut table = Vec::new();
    let mut notes = Vec::new();
    for &pair in &args.pairs {
        for &cond in &conds {
            let t = Instant::now();
            let server = Server::start(pair);
            let outcomes = run_row(pair, cond, &args, server.addr());
            let seen = server.finish();
            let mut times: Vec<f64> = outcomes.iter().filter(|o| o.ok).map(|o| o.ms).collect();
            times.sort_by(|a, b| a.total_cmp(b));
            let mut causes = Tally::default();
            let mut rs = RelayStats::default();
            for (i, o) in outcomes.iter().enumerate() {
                if !o.ok {
                    causes.add(o.cause.clone());
                    if args.trace {
                        eprintln!(
                            "{} / {} / handshake {i}: {}",
                            pair.name(),
                            cond.label(),
                            o.cause
                        );
                        for e in &o.log {
                            eprintln!("  {:?} #{} {} B {:?}", e.dir, e.index, e.len, e.decision);
                        }
                    }
                }
                rs.to_server.received += o.relay.to_server.received;
                rs.to_server.dropped += o.relay.to_server.dropped;
                rs.to_client.received += o.relay.to_client.received;
                rs.to_client.dropped += o.relay.to_client.dropped;
                if let Some(f) = csv.as_mut() {
                    writeln!(
                        f,
                        "{},\"{}\",{i},{},{},{:.1},\"{}\",{},{},{},{}",
                        pair.name(),
                        cond.label(),
                        args.seed.wrapping_add(i as u64),
                        o.ok,
                        o.ms,
                        o.cause.replace('"', "'"),
                        o.relay.to_server.received,
                        o.relay.to_server.dropped,
                        o.relay.to_client.received,
                        o.relay.to_client.dropped
                    )?;
                }
            }
            let ms = |q: f64| {
                if times.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.0}", percentile(&times, q))
                }
            };
            let row = format!(
                "| {} | {} | {} | {}/{} | {} | {} | {} | {} |",
                pair.server(),
                pair.client(),
                cond.label(),
                times.len(),
                outcomes.len(),
                ms(0.5),
                ms(0.9),
                ms(1.0),
                causes.text()
            );
            eprintln!(
                "{row}  ({:.0} s, load {})",
                t.elapsed().as_secs_f64(),
                loadavg()
            );
            table.push(row);
            let mut note = format!(
                "{} / {} / {}: relay to server {} received, {} dropped; to client {} received, \
                 {} dropped",
                pair.name(),
                cond.label(),
                format_args!("{:.0} s", t.elapsed().as_secs_f64()),
                rs.to_server.received,
                rs.to_server.dropped,
                rs.to_client.received,
                rs.to_client.dropped
            );
            if !seen.is_empty() {
                note.push_str(&format!("; {seen}"));
            }
            notes.push(note);
        }
    }
    println!(
        "\n| server | client | faults each way | completed | median ms | p90 ms | max ms | failures |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &table {
        println!("{r}");
    }
    println!();
    for n in &notes {
        println!("- {n}");
    }
    println!(
        "\nwhole run {:.0} s; load average {} at the end",
        began.elapsed().as_secs_f64(),
        loadavg()
    );
    if let Some(mut f) = csv {
        f.flush()?;
    }
    Ok(())
}
