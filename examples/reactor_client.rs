//! Many concurrent DTLS echo sessions from one thread, on the reactor.
//!
//! ```text
//! cargo run --release --example reactor_client -- 127.0.0.1 28000 --sessions 64 --count 1000 --size 100
//! cargo run --release --example reactor_client -- 127.0.0.1 28000 --sessions 1000 --count 0   # handshakes only
//! cargo run --release --example reactor_client -- 127.0.0.1 28000 --raw --sessions 64 --count 1000
//! cargo run --release --example reactor_client -- 127.0.0.1 28000 --shared --sessions 20000 --count 1
//! ```
//!
//! Each session runs its handshake; once every session is connected, each runs
//! `--count` round trips of one `--size`-byte datagram (the next sent when the
//! echo of the last arrives), then closes. Round trips per second count from
//! that moment; handshakes per second from the start to the last handshake. At most `--parallel` handshakes run at once. Prints a summary
//! and exits non-zero if any session failed (an error, a wrong echo, or not
//! done within `--timeout`). `--raw` runs the same sessions as plain UDP
//! sessions of the same reactor (`Reactor::connect_plain`) against
//! `reactor_echo --raw`: the baseline of the bench. `--shared` runs every
//! session on one socket (`Reactor::connect_via` on a wildcard
//! `SharedSocket`), session i from 127.1.0.1 + i (IPv4 servers; each 127/8
//! address is the loopback's): no descriptor per session, so no limit from
//! `ulimit -n`.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dtls_reactor::{ClientConfig, CloseCause, ConnId, Ctx, Handler, Limits, Reactor, TimerId};

#[derive(Parser, Debug)]
#[command(about = "Concurrent DTLS echo sessions from one reactor thread")]
struct Args {
    /// Server host name or address.
    host: String,
    /// Server port.
    port: u16,
    #[command(flatten)]
    client: common::ClientOpts,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Echo round trips per session (0: handshake, then close).
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// Bytes per datagram.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Most handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Plain UDP instead of DTLS (baseline).
    #[arg(long)]
    raw: bool,
    /// Pin the thread to this CPU.
    #[arg(long)]
    pin: Option<usize>,
    /// All sessions on one shared socket, each from its own 127.x address
    /// (IPv4 servers only).
    #[arg(long)]
    shared: bool,
}

const START: u64 = 0;
const GIVE_UP: u64 = 1;

struct Sessions {
    addr: SocketAddr,
    /// The shared socket every session runs on (`--shared`), and the next
    /// session's index (its local address).
    via: Option<dtls_reactor::ListenerId>,
    next_local: usize,
    /// `None`: plain UDP sessions.
    cfg: Option<ClientConfig>,
    payload: Vec<u8>,
    count: u64,
    total: usize,
    parallel: usize,
    to_start: usize,
    handshaking: usize,
    done: HashMap<ConnId, u64>,
    ok: usize,
    failed: usize,
    round_trips: u64,
    connected: usize,
    first_connect: Option<Instant>,
    last_connect: Option<Instant>,
    started: Instant,
    echo_start: Option<Instant>,
    waiting: Vec<ConnId>,
    /// Plain sessions waiting for their first round trip.
    warming: std::collections::HashSet<ConnId>,
    finished: Option<Instant>,
}

impl Sessions {
    fn start_more(&mut self, ctx: &mut Ctx<'_>) {
        while self.to_start > 0 && self.handshaking < self.parallel {
            self.to_start -= 1;
            let r = common::connect_session(
                ctx,
                self.via,
                &mut self.next_local,
                self.addr,
                self.cfg.as_ref(),
            );
            match r {
                Ok(_) => self.handshaking += 1,
                Err(e) => {
                    eprintln!("connect: {e}");
                    self.failed += 1;
                }
            }
        }
        self.check_done(ctx);
    }
    fn check_done(&mut self, ctx: &mut Ctx<'_>) {
        if self.ok + self.failed == self.total && self.finished.is_none() {
            self.finished = Some(Instant::now());
            ctx.stop();
        }
    }
    /// Once every session connected (or failed), the echo phase starts for all.
    fn maybe_start_echo(&mut self, ctx: &mut Ctx<'_>) {
        if self.count == 0 || self.echo_start.is_some() {
            return;
        }
        if self.connected + self.failed >= self.total {
            self.echo_start = Some(Instant::now());
            for id in std::mem::take(&mut self.waiting) {
                if let Err(e) = ctx.send(id, &self.payload) {
                    eprintln!("send: {e}");
                }
            }
        }
    }

    /// A session is set up (handshake done, or first plain round trip back).
    fn ready(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let now = Instant::now();
        self.first_connect.get_or_insert(now);
        self.last_connect = Some(now);
        self.handshaking -= 1;
        self.connected += 1;
        self.done.insert(id, 0);
        if self.count == 0 {
            self.finish(ctx, id);
        } else {
            self.waiting.push(id);
            self.maybe_start_echo(ctx);
        }
        self.start_more(ctx);
    }

    fn echo(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if data != self.payload.as_slice() {
            eprintln!("{id}: wrong echo ({} bytes)", data.len());
            self.done.remove(&id);
            self.failed += 1;
            ctx.close(id);
            self.check_done(ctx);
            return;
        }
        self.round_trips += 1;
        let n = match self.done.get_mut(&id) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => return,
        };
        if n >= self.count {
            self.finish(ctx, id);
        } else if let Err(e) = ctx.send(id, &self.payload) {
            eprintln!("send: {e}");
        }
    }
    fn finish(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.done.remove(&id);
        self.ok += 1;
        ctx.close(id);
        self.check_done(ctx);
    }
}

impl Handler for Sessions {
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _t: TimerId, token: u64) {
        match token {
            START => self.start_more(ctx),
            _ => {
                eprintln!(
                    "timeout: {} session(s) unfinished",
                    self.total - self.ok - self.failed
                );
                self.failed = self.total - self.ok;
                self.check_done(ctx);
            }
        }
    }
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if self.cfg.is_none() {
            // Plain UDP: the session counts as set up once a first round trip
            // (the counterpart of a handshake) came back.
            self.warming.insert(id);
            if let Err(e) = ctx.send(id, &self.payload) {
                eprintln!("send: {e}");
            }
            return;
        }
        self.ready(ctx, id);
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if self.warming.remove(&id) {
            self.ready(ctx, id);
            return;
        }
        self.echo(ctx, id, data);
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cause: &CloseCause) {
        if *cause == CloseCause::Local || *cause == CloseCause::Stopped {
            return;
        }
        eprintln!("{id}: {cause:?}");
        self.warming.remove(&id);
        if self.done.remove(&id).is_none() {
            // Closed during its handshake.
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        self.waiting.retain(|w| *w != id);
        self.failed += 1;
        self.start_more(ctx);
        self.maybe_start_echo(ctx);
        self.check_done(ctx);
    }
    fn on_error(&mut self, _ctx: &mut Ctx<'_>, id: Option<ConnId>, error: &dtls_reactor::Error) {
        eprintln!("error ({id:?}): {error}");
    }
}

fn pin(cpu: usize) {
    if let Err(e) = common::pin_to_cpu(cpu) {
        eprintln!("pin to CPU {cpu}: {e}");
    }
}

fn main() -> ExitCode {
    common::init_log();
    let args = Args::parse();
    common::raise_nofile();
    if let Some(cpu) = args.pin {
        pin(cpu);
    }
    let addr = match (args.host.as_str(), args.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) => a,
        None => {
            eprintln!("cannot resolve {}", args.host);
            return ExitCode::FAILURE;
        }
    };
    let t0 = Instant::now();
    let cfg = if args.raw {
        None
    } else {
        match args.client.config(&args.host) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("configuration: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if args.shared && !addr.is_ipv4() {
        eprintln!("--shared: sessions leave from 127.x addresses; the server must be IPv4");
        return ExitCode::FAILURE;
    }
    let handler = Sessions {
        addr,
        via: None,
        next_local: 0,
        cfg,
        payload: vec![0x5a; args.size],
        count: args.count,
        total: args.sessions,
        parallel: args.parallel.max(1),
        to_start: args.sessions,
        handshaking: 0,
        done: HashMap::new(),
        ok: 0,
        failed: 0,
        round_trips: 0,
        connected: 0,
        first_connect: None,
        last_connect: None,
        started: t0,
        echo_start: None,
        waiting: Vec::new(),
        warming: Default::default(),
        finished: None,
    };
    let limits = Limits::default()
        .max_connections(args.sessions + 16)
        .idle_timeout(None);
    let mut r = match Reactor::with_limits(handler, limits) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reactor: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.shared {
        let socket = match dtls_demux::SharedSocket::bind("0.0.0.0:0".parse().unwrap()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("shared socket: {e}");
                return ExitCode::FAILURE;
            }
        };
        match r.add_client_socket(socket) {
            Ok(via) => r.handler_mut().via = Some(via),
            Err(e) => {
                eprintln!("shared socket: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    r.set_timer(Duration::ZERO, START);
    r.set_timer(Duration::from_secs(args.timeout), GIVE_UP);
    if let Err(e) = r.run() {
        eprintln!("reactor: {e}");
        return ExitCode::FAILURE;
    }
    let st = r.stats();
    let h = r.into_handler();
    let end = h.finished.unwrap_or_else(Instant::now);
    let secs = (end - h.echo_start.unwrap_or(h.started)).as_secs_f64();
    let hs_secs = match (h.first_connect, h.last_connect) {
        (Some(_), Some(l)) => (l - h.started).as_secs_f64(),
        _ => 0.0,
    };
    let all_secs = (end - h.started).as_secs_f64();
    println!(
        "{}: sessions {} ok / {} failed, {} connected; {} round trips in {secs:.3} s: {:.0} round trips/s; handshakes {:.0}/s (all {} connected after {hs_secs:.3} s); {:.0} sessions/s overall; retransmissions {}",
        if args.raw { "raw" } else { "dtls" },
        h.ok,
        h.failed,
        h.connected,
        h.round_trips,
        h.round_trips as f64 / secs,
        if hs_secs > 0.0 { h.connected as f64 / hs_secs } else { 0.0 },
        h.connected,
        h.ok as f64 / all_secs,
        st.retransmissions
    );
    if h.failed == 0 && h.ok == h.total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
