//! Resident memory per idle established server session.
//!
//! `--mode reactor` (default): a server [`Reactor`] in this process, N client
//! sessions from a child process (this program again, over loopback UDP).
//! After a warm-up of 64 sessions and again after all N are established and
//! quiet for longer than `Limits::shrink_after` (so they gave their buffers
//! back), it reads this process's resident set and heap in use; the growth per
//! session is the cost of one idle session in one reactor: the OpenSSL
//! session, the `Connection`, the reactor entry, the demux link (kernel socket
//! memory is not in it). `--no-shrink` keeps the buffers, for comparison.
//!
//! With `--demux shared` the server listens on one `SharedSocket` and the
//! client process runs every session on one wildcard socket, session i from
//! 127.1.0.1 + i: no descriptor per session on either side, so `--nofile
//! 1024` (the server's `ulimit -n`) does not limit the count. Before the
//! second measurement's sessions are added and after, the client runs an
//! echo phase (every session in turn, one round trip each, 64 outstanding):
//! the echo rate with 64 sessions and with all of them. The server's CPU
//! time per handshake is read every 1,000 connections: the first and the
//! last window are printed.
//!
//! `--mode engine`: N sessions in memory (client and server in this process,
//! no sockets), the clients dropped and freed heap returned (`malloc_trim`),
//! growth per remaining server `Connection`; this includes heap fragmentation
//! left by the freed clients.
//!
//! `cargo run --release --example memory -- --sessions 10000`
//! `cargo run --release --example memory -- --sessions 100000 --demux shared --nofile 1024`

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use dtls_reactor::{
    Admission, Admitted, ClientConfig, ConnId, Connection, Ctx, Datagram, FrontDoor, Handler,
    Limits, Reactor, ServerConfig, TimerId,
};

#[derive(Parser)]
#[command(about = "Resident bytes per idle established DTLS server session")]
struct Args {
    /// Sessions to establish.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Reactor)]
    mode: Mode,
    /// Demux of the reactor's listener.
    #[arg(long, value_enum, default_value_t = Kind::Osnet)]
    demux: Kind,
    /// Keep OpenSSL's buffers of idle sessions (reactor: no
    /// `Limits::shrink_after`; engine: no `Connection::shrink`).
    #[arg(long)]
    no_shrink: bool,
    /// The server's soft limit of open files (`ulimit -n`), set once the
    /// client process is started: with `--demux shared` the server needs no
    /// descriptor per session.
    #[arg(long)]
    nofile: Option<u64>,
    /// Keep OpenSSL's record layer (and its session) after the handshake
    /// (`ConfigBuilder::openssl_record_layer`), for comparison with the
    /// engine's own.
    #[arg(long)]
    openssl_record_layer: bool,
    /// Internal: run as the client process of `--mode reactor`, connecting
    /// to this address.
    #[arg(long, hide = true)]
    child_of: Option<SocketAddr>,
    /// Internal: the client process runs every session on one shared socket.
    #[arg(long, hide = true)]
    child_shared: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Reactor,
    Engine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Osnet,
    Router,
    /// One socket for every peer (`SharedSocket`), on both sides.
    Shared,
}

/// Sessions established before the first measurement.
const WARM: usize = 64;
/// Quiet time before a session gives its buffers back.
const QUIET: Duration = Duration::from_millis(500);

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Bytes of heap in use (glibc's `mallinfo2().uordblks`).
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
    unsafe { libc::mallinfo2().uordblks as u64 }
}

fn trim() {
    // SAFETY: glibc's malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_log();
    let args = Args::parse();
    common::raise_nofile();
    if let Some(addr) = args.child_of {
        return child(
            addr,
            args.sessions,
            args.child_shared,
            args.openssl_record_layer,
        );
    }
    match args.mode {
        Mode::Reactor => reactor_mode(&args),
        Mode::Engine => engine_mode(&args),
    }
}

fn server_config(openssl_layer: bool) -> Result<ServerConfig, dtls_reactor::Error> {
    ServerConfig::builder()
        .certificate_chain_pem(common::TEST_CERT)
        .private_key_pem(common::TEST_KEY)
        .openssl_record_layer(openssl_layer)
        .build()
}

fn client_config(openssl_layer: bool) -> Result<ClientConfig, dtls_reactor::Error> {
    ClientConfig::builder()
        .ca_pem(common::TEST_CA)
        .server_name("localhost")
        .openssl_record_layer(openssl_layer)
        .build()
}

/// Server CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t);
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Server connections established so far and the server thread's CPU time at
/// every `CHECK`th one: (connections, CPU ns, when).
type Checkpoints = Arc<Mutex<Vec<(usize, u64, Instant)>>>;
const CHECK: usize = 1000;

/// The server's handler: echoes, and keeps the CPU checkpoints.
struct ServerEcho {
    connected: usize,
    checks: Checkpoints,
}

impl Handler for ServerEcho {
    fn on_connected(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId) {
        self.connected += 1;
        if self.connected % CHECK == 0 {
            let c = (self.connected, thread_cpu_ns(), Instant::now());
            self.checks.lock().unwrap().push(c);
        }
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        let _ = ctx.send(id, data);
    }
}

/// The child's report of an echo phase: round trips, seconds, lost.
fn parse_echoed(line: &str) -> Result<(u64, f64, u64), Box<dyn std::error::Error>> {
    let mut it = line.split_whitespace();
    if it.next() != Some("echoed") {
        return Err(format!("client process: expected an echo report, got {line:?}").into());
    }
    let rt = it.next().ok_or("echo report")?.parse()?;
    let secs = it.next().ok_or("echo report")?.parse()?;
    let lost = it.next().ok_or("echo report")?.parse()?;
    Ok((rt, secs, lost))
}

fn reactor_mode(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let n = args.sessions.max(WARM + 1);
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let limits = Limits::default()
        .max_connections(n + 16)
        .max_handshakes(1000)
        .idle_timeout(None)
        .shrink_after((!args.no_shrink).then_some(QUIET));
    let checks: Checkpoints = Default::default();
    let mut reactor = Reactor::with_limits(
        ServerEcho {
            connected: 0,
            checks: checks.clone(),
        },
        limits,
    )?;
    let addr = match args.demux {
        Kind::Shared => {
            let s = dtls_demux::SharedSocket::bind(listen)?;
            let a = s.local_addr();
            reactor.listen_shared(s, &server_config(args.openssl_record_layer)?)?;
            a
        }
        k => {
            let kind = if k == Kind::Router {
                dtls_demux::DemuxKind::Router
            } else {
                dtls_demux::DemuxKind::OsNet
            };
            let demux = dtls_demux::bind(kind, listen)?;
            let a = demux.local_addr()?;
            reactor.listen(demux, &server_config(args.openssl_record_layer)?)?;
            a
        }
    };
    let handle = reactor.handle();
    let mut child_args = vec![
        "--child-of".to_string(),
        addr.to_string(),
        "--sessions".to_string(),
        n.to_string(),
    ];
    if args.demux == Kind::Shared {
        child_args.push("--child-shared".into());
    }
    if args.openssl_record_layer {
        child_args.push("--openssl-record-layer".into());
    }
    // The child raises its own limit back to the hard limit (it needs a
    // socket per session unless it shares one).
    let mut child = Command::new(std::env::current_exe()?)
        .args(&child_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    if let Some(limit) = args.nofile {
        common::set_nofile(limit)?;
    }
    let server = std::thread::spawn(move || reactor.run());
    let mut to_child = child.stdin.take().expect("child stdin");
    let mut from_child = std::io::BufReader::new(child.stdout.take().expect("child stdout"));
    let mut line = String::new();
    let mut read = |line: &mut String| -> Result<String, Box<dyn std::error::Error>> {
        line.clear();
        from_child.read_line(line)?;
        Ok(line.trim().to_string())
    };
    let expect = |got: String, what: &str| -> Result<(), Box<dyn std::error::Error>> {
        if got != what {
            return Err(format!("client process: expected {what:?}, got {got:?}").into());
        }
        Ok(())
    };
    let settle = |handle: &dtls_reactor::ReactorHandle, sessions: usize| {
        // Every session quiet long enough to have given its buffers back.
        let end = Instant::now() + Duration::from_secs(120);
        let want = if args.no_shrink { 0 } else { sessions as u64 };
        while Instant::now() < end
            && (handle.stats().connections < sessions as u64 || handle.stats().shrunk < want)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(QUIET * 2);
        trim();
    };
    expect(read(&mut line)?, "warm")?;
    settle(&handle, WARM);
    writeln!(to_child, "echo")?;
    let (rt0, secs0, lost0) = parse_echoed(&read(&mut line)?)?;
    settle(&handle, WARM);
    let (rss0, heap0) = (rss_bytes(), heap_in_use());
    let start = Instant::now();
    writeln!(to_child, "go")?;
    expect(read(&mut line)?, "ready")?;
    let took = start.elapsed();
    settle(&handle, n);
    let (rss1, heap1) = (rss_bytes(), heap_in_use());
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    writeln!(to_child, "echo")?;
    let (rt1, secs1, lost1) = parse_echoed(&read(&mut line)?)?;
    // The same traffic on the first WARM sessions only: the tables, timers
    // and queues of all of them, the memory touched of few.
    writeln!(to_child, "echo {WARM}")?;
    let (rt2, secs2, _) = parse_echoed(&read(&mut line)?)?;
    let stats = handle.stats();
    drop(to_child);
    let _ = child.wait();
    handle.stop()?;
    server.join().expect("server thread")?;
    let added = (n - WARM) as f64;
    let rss_per = rss1.saturating_sub(rss0) as f64 / added;
    let heap_per = heap1.saturating_sub(heap0) as f64 / added;
    println!(
        "reactor ({:?}, {} record layer{}), {} sessions established in {:.1} s after a warm-up of {WARM}; {} connections open, {} buffer releases{}; {fds} descriptors open in the server process",
        args.demux,
        layer_name(args.openssl_record_layer),
        args.nofile
            .map(|l| format!(", server ulimit -n {l}"))
            .unwrap_or_default(),
        n - WARM,
        took.as_secs_f64(),
        stats.connections,
        stats.shrunk,
        if args.no_shrink { " (shrink off)" } else { "" }
    );
    println!(
        "rss: {:.1} MiB -> {:.1} MiB; heap in use: {:.1} MiB -> {:.1} MiB",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        heap0 as f64 / 1048576.0,
        heap1 as f64 / 1048576.0
    );
    println!(
        "resident bytes per idle session: {rss_per:.0} ({:.1} KiB); heap bytes: {heap_per:.0} ({:.1} KiB)",
        rss_per / 1024.0,
        heap_per / 1024.0
    );
    let rate0 = rt0 as f64 / secs0;
    let rate1 = rt1 as f64 / secs1;
    println!(
        "echo, 64 round trips outstanding, every session in turn: {WARM} sessions {rate0:.0}/s ({rt0} in {secs0:.2} s, {lost0} lost); {n} sessions {rate1:.0}/s ({rt1} in {secs1:.2} s, {lost1} lost): {:.2}x",
        rate1 / rate0
    );
    let rate2 = rt2 as f64 / secs2;
    println!(
        "echo on {WARM} of the {n} sessions (the others idle): {rate2:.0}/s: {:.2}x of {WARM} sessions alone",
        rate2 / rate0
    );
    let checks = checks.lock().unwrap().clone();
    let window = |k: usize| -> Option<(f64, f64)> {
        let (c0, t0, w0) = *checks.get(k)?;
        let (c1, t1, w1) = *checks.get(k + 1)?;
        let hs = (c1 - c0) as f64;
        Some(((t1 - t0) as f64 / 1000.0 / hs, hs / (w1 - w0).as_secs_f64()))
    };
    if checks.len() >= 3 {
        let (first_cpu, first_rate) = window(0).unwrap();
        let last = checks.len() - 2;
        let (last_cpu, last_rate) = window(last).unwrap();
        println!(
            "server CPU per handshake (its one echo and buffer release included): {first_cpu:.0} us with {}-{} open, {last_cpu:.0} us with {}-{} open ({:.2}x); handshakes/s {first_rate:.0} and {last_rate:.0}; server busy {:.0} % and {:.0} % of the time",
            checks[0].0,
            checks[1].0,
            checks[last].0,
            checks[last + 1].0,
            last_cpu / first_cpu,
            first_cpu * first_rate / 1e4,
            last_cpu * last_rate / 1e4,
        );
    }
    Ok(())
}

/// The client process: `WARM` sessions, "warm"; then on each line from the
/// parent: "echo" (an echo phase over every session; "echo N": over the first
/// N; then "echoed ROUND_TRIPS SECONDS LOST"),
/// "go" (the rest of the sessions, then "ready"); until the parent closes
/// stdin.
fn child(
    addr: SocketAddr,
    total: usize,
    shared: bool,
    openssl_layer: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let cmd = Arc::new(Mutex::new(None::<String>));
    let load = Load {
        addr,
        cfg: client_config(openssl_layer)?,
        via: None,
        total,
        started: 0,
        in_flight: 0,
        echoed: 0,
        go: false,
        said_warm: false,
        ids: Vec::new(),
        echo: None,
        cmd: cmd.clone(),
    };
    let limits = Limits::default()
        .max_connections(total + 16)
        .max_handshakes(1000)
        .idle_timeout(None)
        .shrink_after(Some(QUIET));
    let mut r = Reactor::with_limits(load, limits)?;
    if shared {
        let s = dtls_demux::SharedSocket::bind("0.0.0.0:0".parse()?)?;
        let via = r.add_client_socket(s)?;
        r.handler_mut().via = Some(via);
    }
    r.set_timer(Duration::ZERO, 0);
    let handle = r.handle();
    let t = std::thread::spawn(move || r.run());
    for line in std::io::stdin().lock().lines() {
        *cmd.lock().unwrap() = Some(line?.trim().to_string());
    }
    handle.stop()?;
    t.join().expect("client thread")?;
    Ok(())
}

/// An echo phase of the client process: every session in turn sends one
/// datagram, at most `WINDOW` waiting for their echo, until every session
/// echoed once and at least `ECHO_MIN` passed.
struct EchoPhase {
    /// The sessions taken in turn: the first `span` of them.
    span: usize,
    next: usize,
    outstanding: usize,
    round_trips: u64,
    lost: u64,
    start: Instant,
    progress: Instant,
}

const WINDOW: usize = 64;
const ECHO_MIN: Duration = Duration::from_secs(1);

struct Load {
    addr: SocketAddr,
    cfg: ClientConfig,
    via: Option<dtls_reactor::ListenerId>,
    total: usize,
    started: usize,
    in_flight: usize,
    echoed: usize,
    go: bool,
    said_warm: bool,
    ids: Vec<ConnId>,
    echo: Option<EchoPhase>,
    cmd: Arc<Mutex<Option<String>>>,
}

impl Load {
    fn say(&self, what: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{what}");
        let _ = out.flush();
    }

    /// Keeps the echo phase's window full; reports and ends it when done.
    fn pump_echo(&mut self, ctx: &mut Ctx<'_>) {
        let Some(e) = self.echo.as_mut() else {
            return;
        };
        let span = e.span.min(self.ids.len());
        let finishing = e.next >= span && e.start.elapsed() >= ECHO_MIN;
        if !finishing {
            while e.outstanding < WINDOW && span > 0 {
                let id = self.ids[e.next % span];
                e.next += 1;
                if ctx.send(id, b"echo").is_ok() {
                    e.outstanding += 1;
                }
            }
        }
        if finishing && e.outstanding == 0 {
            let secs = e.start.elapsed().as_secs_f64();
            let report = format!("echoed {} {secs:.6} {}", e.round_trips, e.lost);
            self.echo = None;
            self.say(&report);
        }
    }
}

impl Handler for Load {
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.ids.push(id);
        let _ = ctx.send(id, b"x");
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, _id: ConnId, _data: &[u8]) {
        if let Some(e) = self.echo.as_mut() {
            e.outstanding = e.outstanding.saturating_sub(1);
            e.round_trips += 1;
            e.progress = Instant::now();
            self.pump_echo(ctx);
            return;
        }
        self.in_flight -= 1;
        self.echoed += 1;
        if self.echoed == WARM && !self.said_warm {
            self.said_warm = true;
            self.say("warm");
        }
        if self.echoed == self.total {
            self.say("ready");
        }
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, cause: &dtls_reactor::CloseCause) {
        if *cause != dtls_reactor::CloseCause::Stopped {
            eprintln!("client session closed: {cause:?}");
        }
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _t: TimerId, _token: u64) {
        let cmd = self.cmd.lock().unwrap().take();
        match cmd.as_deref() {
            Some("go") => self.go = true,
            Some(c) if c.starts_with("echo") => {
                let now = Instant::now();
                self.echo = Some(EchoPhase {
                    span: c
                        .strip_prefix("echo ")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX),
                    next: 0,
                    outstanding: 0,
                    round_trips: 0,
                    lost: 0,
                    start: now,
                    progress: now,
                });
            }
            _ => {}
        }
        if let Some(e) = self.echo.as_mut() {
            // Loopback loses nothing unless a buffer overflowed: the window
            // refills after a second without an echo.
            if e.outstanding > 0 && e.progress.elapsed() > Duration::from_secs(1) {
                e.lost += e.outstanding as u64;
                e.outstanding = 0;
                e.progress = Instant::now();
            }
        }
        self.pump_echo(ctx);
        let limit = if self.go { self.total } else { WARM };
        while self.started < limit && self.in_flight < 64 {
            let r = match self.via {
                Some(via) => {
                    let local = std::net::IpAddr::V4(common::session_local_v4(self.started));
                    ctx.connect_via(via, Some(local), self.addr, &self.cfg)
                }
                None => ctx.connect(self.addr, &self.cfg),
            };
            if let Err(e) = r {
                eprintln!("connect: {e}");
                break;
            }
            self.started += 1;
            self.in_flight += 1;
        }
        ctx.set_timer(Duration::from_millis(5), 0);
    }
}

fn layer_name(openssl_layer: bool) -> &'static str {
    if openssl_layer {
        "OpenSSL's"
    } else {
        "the engine's"
    }
}

fn engine_mode(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let s = server_config(args.openssl_record_layer)?;
    let c = client_config(args.openssl_record_layer)?;
    let mut stage = FrontDoor::new(&s, &Admission::default())?;
    // Warm up allocator and OpenSSL's lazy state with one session.
    drop(pair(&mut stage, &c, 0, true));
    trim();
    let before = rss_bytes();
    let heap_before = heap_in_use();
    let mut servers = Vec::with_capacity(args.sessions);
    let mut clients = Vec::with_capacity(args.sessions);
    let start = Instant::now();
    for i in 0..args.sessions {
        let (cl, sv) = pair(&mut stage, &c, i, !args.no_shrink);
        clients.push(cl);
        servers.push(sv);
    }
    let took = start.elapsed();
    let with_both = rss_bytes();
    drop(clients);
    trim();
    let after = rss_bytes();
    let heap_after = heap_in_use();
    let per = (after.saturating_sub(before)) as f64 / args.sessions as f64;
    println!(
        "sessions: {} on {} record layer (handshakes took {:.1} s)",
        args.sessions,
        layer_name(args.openssl_record_layer),
        took.as_secs_f64()
    );
    println!(
        "rss before: {:.1} MiB, with clients and servers: {:.1} MiB, servers only: {:.1} MiB",
        before as f64 / 1048576.0,
        with_both as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!("resident bytes per idle server session: {:.0} ({:.1} KiB; includes heap fragmentation left by the freed clients)", per, per / 1024.0);
    let heap_per = heap_after.saturating_sub(heap_before) as f64 / args.sessions as f64;
    println!(
        "heap bytes in use per idle server session: {:.0} ({:.1} KiB)",
        heap_per,
        heap_per / 1024.0
    );
    assert!(servers.iter().all(|s| s.is_established()));
    assert!(servers
        .iter()
        .all(|s| s.engine_record_layer() != args.openssl_record_layer));
    println!(
        "parts: Connection value {} bytes (its boxed state and queues are on the heap)",
        std::mem::size_of::<Connection>()
    );
    evp_part(args.sessions);
    Ok(())
}

/// The part of a session on the engine's record layer that is OpenSSL's:
/// two EVP AES-128-GCM contexts with their keys set (one per direction),
/// measured alone on as many sessions.
fn evp_part(sessions: usize) {
    use openssl::cipher::Cipher;
    use openssl::cipher_ctx::CipherCtx;
    trim();
    let before = heap_in_use();
    let ctxs: Vec<(CipherCtx, CipherCtx)> = (0..sessions)
        .map(|_| {
            let mut w = CipherCtx::new().unwrap();
            w.encrypt_init(Some(Cipher::aes_128_gcm()), Some(&[1; 16]), None)
                .unwrap();
            let mut r = CipherCtx::new().unwrap();
            r.decrypt_init(Some(Cipher::aes_128_gcm()), Some(&[2; 16]), None)
                .unwrap();
            (w, r)
        })
        .collect();
    let per = heap_in_use().saturating_sub(before) as f64 / sessions as f64;
    println!(
        "parts: two EVP AES-128-GCM contexts (one per direction): {per:.0} heap bytes per session ({:.1} KiB)",
        per / 1024.0
    );
    drop(ctxs);
}

fn pair(
    stage: &mut FrontDoor,
    c: &ClientConfig,
    i: usize,
    shrink: bool,
) -> (Connection, Connection) {
    let peer = SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 1024 + (i % 60000) as u16));
    let mut client = Connection::client(c, None).expect("client");
    let mut server: Option<Box<Connection>> = None;
    for _ in 0..16 {
        while let Some(d) = client.poll_transmit() {
            match server.as_mut() {
                Some(s) => s.feed(&d).expect("feed"),
                None => match stage.admit(peer, &Datagram::parse(&d)) {
                    Admitted::Reply(h) => client.feed(&h).expect("hvr"),
                    Admitted::Accepted(s) => server = Some(s),
                    other => panic!("{other:?}"),
                },
            }
        }
        if let Some(s) = server.as_mut() {
            while let Some(d) = s.poll_transmit() {
                client.feed(&d).expect("feed");
            }
            if s.is_established() && client.is_established() {
                break;
            }
        }
    }
    let mut server = *server.expect("server");
    // The server sees the client's Finished through a read.
    let mut buf = [0u8; 64];
    let _ = server.recv(&mut buf);
    if shrink {
        server.shrink();
    }
    (client, server)
}
