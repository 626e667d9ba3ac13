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
//! `--mode engine`: N sessions in memory (client and server in this process,
//! no sockets), the clients dropped and freed heap returned (`malloc_trim`),
//! growth per remaining server `Connection`; this includes heap fragmentation
//! left by the freed clients.
//!
//! `cargo run --release --example memory -- --sessions 10000`

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// Keep OpenSSL's record layer (and its session) after the handshake
    /// (`ConfigBuilder::openssl_record_layer`), for comparison with the
    /// engine's own.
    #[arg(long)]
    openssl_record_layer: bool,
    /// Internal: run as the client process of `--mode reactor`, connecting
    /// to this address.
    #[arg(long, hide = true)]
    child_of: Option<SocketAddr>,
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
        return child(addr, args.sessions, args.openssl_record_layer);
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

/// Echoes every record.
struct Echo;

impl Handler for Echo {
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        let _ = ctx.send(id, data);
    }
}

fn reactor_mode(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let n = args.sessions.max(WARM + 1);
    let kind = match args.demux {
        Kind::Osnet => dtls_demux::DemuxKind::OsNet,
        Kind::Router => dtls_demux::DemuxKind::Router,
    };
    let demux = dtls_demux::bind(kind, "127.0.0.1:0".parse()?)?;
    let addr = demux.local_addr()?;
    let limits = Limits::default()
        .max_connections(n + 16)
        .idle_timeout(None)
        .shrink_after((!args.no_shrink).then_some(QUIET));
    let mut reactor = Reactor::with_limits(Echo, limits)?;
    reactor.listen(demux, &server_config(args.openssl_record_layer)?)?;
    let handle = reactor.handle();
    let server = std::thread::spawn(move || reactor.run());
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--child-of",
            &addr.to_string(),
            "--sessions",
            &n.to_string(),
        ])
        .args(
            args.openssl_record_layer
                .then_some("--openssl-record-layer"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut to_child = child.stdin.take().expect("child stdin");
    let mut from_child = std::io::BufReader::new(child.stdout.take().expect("child stdout"));
    let mut line = String::new();
    let mut expect = |what: &str, line: &mut String| -> Result<(), Box<dyn std::error::Error>> {
        line.clear();
        from_child.read_line(line)?;
        if line.trim() != what {
            return Err(format!("client process: expected {what:?}, got {:?}", line.trim()).into());
        }
        Ok(())
    };
    let settle = |handle: &dtls_reactor::ReactorHandle, sessions: usize| {
        // Every session quiet long enough to have given its buffers back.
        let end = Instant::now() + Duration::from_secs(60);
        let want = if args.no_shrink { 0 } else { sessions as u64 };
        while Instant::now() < end
            && (handle.stats().connections < sessions as u64 || handle.stats().shrunk < want)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(QUIET * 2);
        trim();
    };
    expect("warm", &mut line)?;
    settle(&handle, WARM);
    let (rss0, heap0) = (rss_bytes(), heap_in_use());
    let start = Instant::now();
    writeln!(to_child, "go")?;
    expect("ready", &mut line)?;
    let took = start.elapsed();
    settle(&handle, n);
    let (rss1, heap1) = (rss_bytes(), heap_in_use());
    let stats = handle.stats();
    drop(to_child);
    let _ = child.wait();
    handle.stop()?;
    server.join().expect("server thread")?;
    let added = (n - WARM) as f64;
    let rss_per = rss1.saturating_sub(rss0) as f64 / added;
    let heap_per = heap1.saturating_sub(heap0) as f64 / added;
    println!(
        "reactor ({:?}, {} record layer), {} sessions established in {:.1} s after a warm-up of {WARM}; {} connections open, {} buffer releases{}",
        args.demux,
        layer_name(args.openssl_record_layer),
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
    Ok(())
}

/// The client process: `WARM` sessions, "warm", wait for "go", the rest,
/// "ready", then idle until the parent closes stdin.
fn child(
    addr: SocketAddr,
    total: usize,
    openssl_layer: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let go = Arc::new(AtomicBool::new(false));
    let load = Load {
        addr,
        cfg: client_config(openssl_layer)?,
        total,
        started: 0,
        in_flight: 0,
        echoed: 0,
        go: go.clone(),
        said_warm: false,
    };
    let limits = Limits::default()
        .max_connections(total + 16)
        .idle_timeout(None)
        .shrink_after(Some(QUIET));
    let mut r = Reactor::with_limits(load, limits)?;
    r.set_timer(Duration::ZERO, 0);
    let handle = r.handle();
    let t = std::thread::spawn(move || r.run());
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() == "go" {
        go.store(true, Ordering::Release);
        line.clear();
        // Stays connected until the parent closes stdin.
        let _ = std::io::stdin().lock().read_line(&mut line);
    }
    handle.stop()?;
    t.join().expect("client thread")?;
    Ok(())
}

struct Load {
    addr: SocketAddr,
    cfg: ClientConfig,
    total: usize,
    started: usize,
    in_flight: usize,
    echoed: usize,
    go: Arc<AtomicBool>,
    said_warm: bool,
}

impl Load {
    fn say(&self, what: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{what}");
        let _ = out.flush();
    }
}

impl Handler for Load {
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = ctx.send(id, b"x");
    }
    fn on_data(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _data: &[u8]) {
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
        let limit = if self.go.load(Ordering::Acquire) {
            self.total
        } else {
            WARM
        };
        while self.started < limit && self.in_flight < 64 {
            if ctx.connect(self.addr, &self.cfg).is_err() {
                break;
            }
            self.started += 1;
            self.in_flight += 1;
        }
        if self.echoed < self.total {
            ctx.set_timer(Duration::from_millis(5), 0);
        }
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
