//! A fault-injecting UDP relay: put it between a DTLS client and server to
//! see them cope with loss, duplication, reordering, delay, truncation and
//! corruption. Deterministic from `--seed`; stops after `--duration`.
//!
//! ```text
//! cargo run --example fault_relay -- --upstream 127.0.0.1:28000 \
//!     --listen 127.0.0.1:28001 --faults drop=0.3,dup=0.1,reorder=0.1 --seed 7
//! ```
//! Then point the client at 127.0.0.1:28001. Each client gets its own
//! upstream socket, so the server sees one peer per client.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/relay/mod.rs"]
mod relay;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use relay::{Faults, Relay, RelayConfig};

/// Relays UDP datagrams between clients and one server, injecting faults.
#[derive(Parser, Debug)]
#[command(version)]
struct Opts {
    /// Address clients send to.
    #[arg(long, default_value = "127.0.0.1:28001")]
    listen: SocketAddr,
    /// The server datagrams are forwarded to.
    #[arg(long, default_value = "127.0.0.1:28000")]
    upstream: SocketAddr,
    /// Faults both ways: `drop=0.3,dup=0.1,reorder=0.1,delay=0.05,truncate=0,corrupt=0.01`
    /// (probabilities or percentages such as `30%`; `none` for none).
    #[arg(long, default_value = "none")]
    faults: Faults,
    /// Faults on the way to the server (overrides --faults for that direction).
    #[arg(long)]
    to_server: Option<Faults>,
    /// Faults on the way back to clients (overrides --faults for that direction).
    #[arg(long)]
    to_client: Option<Faults>,
    /// Seed of the fault sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Longest delay of a delayed datagram, in milliseconds.
    #[arg(long, default_value_t = 20)]
    max_delay_ms: u64,
    /// Longest hold of a reordered datagram waiting for the next one, in milliseconds.
    #[arg(long, default_value_t = 50)]
    reorder_hold_ms: u64,
    /// Most clients at once.
    #[arg(long, default_value_t = 1024)]
    max_clients: usize,
    /// Print the counters every this many seconds (0: only at the end).
    #[arg(long, default_value_t = 5)]
    stats_every: u64,
}

fn print(stats: &relay::RelayStats) {
    println!(
        "clients {} (refused datagrams {})",
        stats.clients, stats.refused_clients
    );
    println!("  to server: {}", stats.to_server);
    println!("  to client: {}", stats.to_client);
}

fn main() {
    common::init_log();
    let o = Opts::parse();
    let mut cfg = RelayConfig::new(o.upstream);
    cfg.listen = o.listen;
    cfg.to_server = o.to_server.unwrap_or(o.faults);
    cfg.to_client = o.to_client.unwrap_or(o.faults);
    cfg.seed = o.seed;
    cfg.max_duration = Duration::from_secs(o.duration);
    cfg.max_delay = Duration::from_millis(o.max_delay_ms);
    cfg.reorder_hold = Duration::from_millis(o.reorder_hold_ms);
    cfg.max_clients = o.max_clients;
    let relay = match Relay::start(cfg.clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the relay on {}: {e}", o.listen);
            std::process::exit(1);
        }
    };
    println!(
        "relaying {} -> {} for {} s, seed {}\n  to server: {:?}\n  to client: {:?}",
        relay.local_addr(),
        o.upstream,
        o.duration,
        o.seed,
        cfg.to_server,
        cfg.to_client
    );
    let mut last = Instant::now();
    while relay.is_running() {
        std::thread::sleep(Duration::from_millis(100));
        if o.stats_every > 0 && last.elapsed() >= Duration::from_secs(o.stats_every) {
            last = Instant::now();
            print(&relay.stats());
        }
    }
    print(&relay.stop());
}
