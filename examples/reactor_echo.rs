//! A DTLS echo server on the reactor: one reactor per thread, all on one port.
//!
//! ```text
//! cargo run --release --example reactor_echo -- --port 28000 --threads 2
//! cargo run --release --example reactor_echo -- --demux router --in-memory
//! cargo run --release --example reactor_echo -- --demux shared   # one socket for every peer
//! cargo run --release --example reactor_echo -- --raw     # plain UDP echo, same loop shape
//! cargo run --release --example reactor_echo -- --psk device-1:30313233343536373839616263646566 --ciphers PSK-AES128-CCM8
//! ```
//!
//! A refused handshake and a failed connection are printed with OpenSSL's
//! reason (`on_error`, `on_close`).
//!
//! With `--threads N` the port is served by N reactors: OsNet listeners form one
//! reuseport group whose BPF program spreads peers by address and port
//! (`OsNet::bind_group`); Router listeners are N `SO_REUSEPORT` sockets (the
//! kernel's own hash by address and port); shared sockets form a reuseport
//! group like OsNet's (`SharedSocket::bind_group`). `--raw` echoes plain UDP on the same
//! reactors, demux and limits (`Reactor::listen_plain`): the bench's baseline.
//! `--pin` pins thread i to CPU i (modulo the CPUs available).

#[path = "common/mod.rs"]
mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::DemuxChoice;
use dtls_demux::{Demux, DemuxKind, OsNet, Router, RouterOptions, SharedSocket};
use dtls_reactor::{CloseCause, ConnId, Ctx, Error, Handler, Limits, Reactor, TimerId};

#[derive(Parser, Debug)]
#[command(about = "DTLS echo server on the dtls-reactor reactor")]
struct Args {
    #[command(flatten)]
    server: common::ServerOpts,
    /// Reactors (threads) serving the port.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Router only: hand datagrams to links in memory instead of through the kernel.
    #[arg(long)]
    in_memory: bool,
    /// Echo plain UDP (no DTLS) on the same reactor: the baseline for benchmarks.
    #[arg(long)]
    raw: bool,
    /// Pin reactor thread i to CPU i.
    #[arg(long)]
    pin: bool,
    /// Print each reactor's counters every this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    stats: u64,
    /// Most connections per reactor.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Close sessions idle for this many seconds.
    #[arg(long, default_value_t = 300)]
    idle: u64,
    /// Most handshakes in flight per reactor.
    #[arg(long, default_value_t = 1_000)]
    max_handshakes: usize,
}

struct Echo {
    index: usize,
    stats_every: Duration,
}

impl Handler for Echo {
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if let Err(e) = ctx.send(id, data) {
            log::debug!("echo to {id}: {e}");
        }
    }
    fn on_error(&mut self, _ctx: &mut Ctx<'_>, id: Option<ConnId>, error: &Error) {
        match id {
            Some(id) => eprintln!("reactor {}: {id}: {error}", self.index),
            None => eprintln!("reactor {}: handshake refused: {error}", self.index),
        }
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, cause: &CloseCause) {
        if let CloseCause::Failed(reason) = cause {
            eprintln!("reactor {}: {id} failed: {reason}", self.index);
        }
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _t: TimerId, _token: u64) {
        eprintln!("reactor {}: {:?}", self.index, ctx.stats());
        ctx.set_timer(self.stats_every, 0);
    }
}

fn pin(i: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Err(e) = common::pin_to_cpu(i % cpus) {
        eprintln!("pin to CPU {}: {e}", i % cpus);
    }
}

/// What one reactor serves: a demux's listener, or a shared socket.
enum Port {
    Demux(Arc<dyn Demux>),
    Shared(Arc<SharedSocket>),
}

impl Port {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Port::Demux(d) => d.local_addr(),
            Port::Shared(s) => Ok(s.local_addr()),
        }
    }
}

fn listeners(args: &Args, addr: SocketAddr) -> io::Result<Vec<Port>> {
    let n = args.threads.max(1);
    let kind = match args.server.demux {
        DemuxChoice::Shared => {
            return Ok(SharedSocket::bind_group(addr, n)?
                .into_iter()
                .map(Port::Shared)
                .collect())
        }
        DemuxChoice::Kind(k) => k,
    };
    let demuxes: Vec<Arc<dyn Demux>> = match kind {
        DemuxKind::OsNet => OsNet::bind_group(addr, n)?
            .into_iter()
            .map(|d| d as Arc<dyn Demux>)
            .collect(),
        DemuxKind::Router => {
            let opts = RouterOptions::default().in_memory(args.in_memory);
            let mut v: Vec<Arc<dyn Demux>> = Vec::new();
            let mut port = addr.port();
            for _ in 0..n {
                let s = reuseport_socket(SocketAddr::new(addr.ip(), port))?;
                port = s.local_addr()?.port();
                v.push(Router::from_socket_with(s, opts)?);
            }
            v
        }
    };
    Ok(demuxes.into_iter().map(Port::Demux).collect())
}

fn reuseport_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_server_log();
    let args = Args::parse();
    common::raise_nofile();
    let addr = SocketAddr::new(args.server.bind, args.server.port);
    let cfg = if args.raw {
        None
    } else {
        Some(args.server.config()?)
    };
    let demuxes = listeners(&args, addr)?;
    let mut threads = Vec::new();
    eprintln!(
        "{} echo on {} ({} demux{}), {} reactor(s)",
        if args.raw { "plain UDP" } else { "DTLS" },
        demuxes[0].local_addr()?,
        args.server.demux,
        if args.in_memory { ", in memory" } else { "" },
        demuxes.len()
    );
    let limits = Limits::default()
        .max_connections(args.max_connections)
        .max_handshakes(args.max_handshakes)
        .idle_timeout(Some(Duration::from_secs(args.idle.max(1))));
    for (i, demux) in demuxes.into_iter().enumerate() {
        let cfg = cfg.clone();
        let stats = args.stats;
        let pin_it = args.pin;
        threads.push(std::thread::spawn(move || -> dtls_reactor::Result<()> {
            if pin_it {
                pin(i);
            }
            let every = Duration::from_secs(stats.max(1));
            let mut r = Reactor::with_limits(
                Echo {
                    index: i,
                    stats_every: every,
                },
                limits,
            )?;
            match (demux, &cfg) {
                (Port::Demux(d), Some(cfg)) => r.listen(d, cfg)?,
                (Port::Demux(d), None) => r.listen_plain(d)?,
                (Port::Shared(s), Some(cfg)) => r.listen_shared(s, cfg)?,
                (Port::Shared(s), None) => r.listen_plain_shared(s)?,
            };
            if stats > 0 {
                r.set_timer(every, 0);
            }
            r.run()
        }));
    }
    for t in threads {
        t.join().expect("reactor thread")?;
    }
    Ok(())
}
