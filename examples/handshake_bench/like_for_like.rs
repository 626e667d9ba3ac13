//! `--like-for-like`: server CPU per full handshake with the settings of the
//! bare-OpenSSL anchor (self-signed ECDSA P-256 certificate, no verification,
//! no session cache, no tickets; cookie on and off), for bare OpenSSL in memory,
//! our engine in memory and our engine over loopback UDP, all in one run; then
//! the default configuration's extra cost, one factor added per row.
//!
//! Runs of every row are interleaved (row 1 run 1, row 2 run 1, ..., row 1
//! run 2, ...), so a slow minute of the shared machine hits every row alike.

use std::fs;
use std::thread;
use std::time::Duration;

use dtls_reactor::{ClientConfig, ServerConfig, Verify};
use openssl::ssl::{SslOptions, SslSessionCacheMode};

use crate::memory::{self, Bare, Engine, Meter};
use crate::{common, cpus, median_min_max, udp, CIPHER};

/// A self-signed ECDSA P-256 certificate (`tests/certs/selfsigned.pem`).
const SELF_SIGNED_CERT: &[u8] = include_bytes!("../../tests/certs/selfsigned.pem");
/// Its key. A test key: never use it for anything real.
const SELF_SIGNED_KEY: &[u8] = include_bytes!("../../tests/certs/selfsigned.key");
/// A leaf issued by the test intermediate CA (ECDSA P-256).
const CHAIN_LEAF: &[u8] = include_bytes!("../../tests/certs/chain-server.pem");
/// The intermediate, issued by the test root (`common::TEST_CA`).
const CHAIN_INTER: &[u8] = include_bytes!("../../tests/certs/inter.pem");
/// The leaf's key. A test key: never use it for anything real.
const CHAIN_KEY: &[u8] = include_bytes!("../../tests/certs/chain-server.key");

/// Handshakes run, uncounted, before each in-memory run (OpenSSL's lazy
/// initialisation, the allocator's first growth).
const WARM_UP: usize = 5;

/// One configuration of our engine. The anchor's is all false.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Setup {
    /// The server sends a leaf and an intermediate instead of one
    /// self-signed certificate.
    chain: bool,
    /// The client verifies the chain (to the test root) and the name.
    verify: bool,
    /// OpenSSL's server session cache (on unless turned off).
    cache: bool,
    /// Session tickets (issued unless `SSL_OP_NO_TICKET`).
    tickets: bool,
    /// The HelloVerifyRequest cookie exchange.
    cookie: bool,
}

impl Setup {
    fn anchor(cookie: bool) -> Setup {
        Setup {
            chain: false,
            verify: false,
            cache: false,
            tickets: false,
            cookie,
        }
    }

    fn label(&self) -> String {
        let mut parts = vec![if self.chain { "chain" } else { "self-signed" }];
        parts.push(if self.verify { "verify" } else { "no-verify" });
        parts.push(if self.cache { "cache" } else { "no-cache" });
        parts.push(if self.tickets {
            "tickets"
        } else {
            "no-tickets"
        });
        parts.push(if self.cookie { "cookie" } else { "no-cookie" });
        parts.join(" ")
    }

    fn server(&self) -> ServerConfig {
        let (chain, key) = if self.chain {
            ([CHAIN_LEAF, CHAIN_INTER].concat(), CHAIN_KEY)
        } else {
            (SELF_SIGNED_CERT.to_vec(), SELF_SIGNED_KEY)
        };
        let (cache, tickets) = (self.cache, self.tickets);
        ServerConfig::builder()
            .certificate_chain_pem(&chain)
            .private_key_pem(key)
            .ciphers(CIPHER)
            .groups("P-256")
            .require_cookie(self.cookie)
            .configure_context(move |ctx| {
                if !cache {
                    ctx.set_session_cache_mode(SslSessionCacheMode::OFF);
                }
                if !tickets {
                    ctx.set_options(SslOptions::NO_TICKET);
                }
                Ok(())
            })
            .build()
            .expect("server config")
    }

    fn client(&self) -> ClientConfig {
        let b = ClientConfig::builder().ciphers(CIPHER).groups("P-256");
        let b = if self.verify {
            b.ca_pem(common::TEST_CA).server_name("localhost")
        } else {
            b.verify(Verify::None)
        };
        b.build().expect("client config")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Bare OpenSSL, in memory (anchor setups only).
    Bare,
    /// Bare OpenSSL, loopback UDP (anchor setups only; our engine's client).
    BareUdp,
    /// Our engine, in memory.
    Memory,
    /// Our engine, loopback UDP (`udp.rs`).
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Row {
    kind: Kind,
    setup: Setup,
}

impl Row {
    fn name(&self) -> String {
        let k = match self.kind {
            Kind::Bare => "bare-openssl memory",
            Kind::BareUdp => "bare-openssl udp",
            Kind::Memory => "engine memory",
            Kind::Udp => "engine udp",
        };
        format!("{k} {}", self.setup.label())
    }
}

/// One run of one row.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    completed: u64,
    failed: u64,
    /// Server CPU µs per completed handshake.
    us: f64,
    /// UDP: the part inside the front door and connections.
    engine_us: f64,
    /// Memory: timed server calls per handshake.
    calls: f64,
    /// Memory: CPU µs per handshake of the one thread (client, server,
    /// passing datagrams).
    pair_us: f64,
}

fn per_us(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn from_memory(run: memory::Run) -> Sample {
    Sample {
        completed: run.completed,
        failed: run.failed,
        us: per_us(run.server.cpu, run.completed),
        engine_us: per_us(run.server.cpu, run.completed),
        calls: run.server.calls as f64 / run.completed.max(1) as f64,
        pair_us: per_us(run.pair, run.completed + run.failed),
    }
}

/// Runs `f` on a thread pinned to the server's CPU.
fn on_server_cpu<T: Send + 'static>(pinning: bool, f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::spawn(move || {
        common::placement(cpus().0, pinning);
        f()
    })
    .join()
    .expect("benchmark thread")
}

fn run_row(row: Row, count: usize, pinning: bool) -> Sample {
    let setup = row.setup;
    match row.kind {
        Kind::Bare => on_server_cpu(pinning, move || {
            let bare = Bare::new(SELF_SIGNED_CERT, SELF_SIGNED_KEY, "P-256", setup.cookie);
            bare.run(WARM_UP);
            from_memory(bare.run(count))
        }),
        Kind::BareUdp => {
            let bare = Bare::new(SELF_SIGNED_CERT, SELF_SIGNED_KEY, "P-256", setup.cookie);
            let server = udp::Server::Bare(bare.server_context());
            from_udp(udp::run(server, setup.client(), false, count, pinning))
        }
        Kind::Memory => on_server_cpu(pinning, move || {
            let mut engine = Engine::new(&setup.server(), setup.client());
            engine.run(WARM_UP);
            from_memory(engine.run(count))
        }),
        Kind::Udp => {
            let server = udp::Server::Engine(setup.server());
            from_udp(udp::run(server, setup.client(), false, count, pinning))
        }
    }
}

fn from_udp((s, c): (udp::ServerSide, udp::ClientSide)) -> Sample {
    Sample {
        completed: s.completed,
        failed: s.failed + c.failed,
        us: per_us(s.cpu, s.completed),
        engine_us: per_us(s.engine, s.completed),
        calls: 0.0,
        pair_us: 0.0,
    }
}

/// Busy and total jiffies of every CPU (`/proc/stat`), and their steal.
fn cpu_jiffies() -> Vec<(u64, u64, u64)> {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = v.iter().sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle, total, v.get(7).copied().unwrap_or(0))
        })
        .collect()
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// This process's user + system CPU time.
fn process_cpu() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills the one we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What an empty timed server call costs (its two clock readings): the bias
/// in every in-memory figure, once per timed call.
fn clock_cost() -> f64 {
    let mut m = Meter::default();
    for _ in 0..20_000 {
        memory::server_call(&mut m, || ());
    }
    m.cpu.as_secs_f64() * 1e6 / m.calls as f64
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    lo: f64,
    hi: f64,
    engine: f64,
    engine_lo: f64,
    engine_hi: f64,
    calls: f64,
    pair: f64,
    completed: u64,
    failed: u64,
}

fn stats(samples: &[Sample]) -> Stats {
    let (median, lo, hi) = median_min_max(samples.iter().map(|s| s.us).collect());
    let (engine, engine_lo, engine_hi) =
        median_min_max(samples.iter().map(|s| s.engine_us).collect());
    Stats {
        median,
        lo,
        hi,
        engine,
        engine_lo,
        engine_hi,
        calls: median_min_max(samples.iter().map(|s| s.calls).collect()).0,
        pair: median_min_max(samples.iter().map(|s| s.pair_us).collect()).0,
        completed: samples.iter().map(|s| s.completed).sum(),
        failed: samples.iter().map(|s| s.failed).sum(),
    }
}

/// The like-for-like mode: runs every row `repeat` times and prints both tables.
pub fn main(
    count: usize,
    repeat: usize,
    pinning: bool,
    memory_only: bool,
    only: Option<&str>,
    list: bool,
) {
    let anchor = |cookie| Setup::anchor(cookie);
    // The breakdown: each setup adds one factor to the one before.
    let mut steps = vec![("like for like (anchor's settings)", anchor(false))];
    let mut s = anchor(false);
    s.chain = true;
    steps.push(("+ certificate chain (leaf + intermediate)", s));
    s.verify = true;
    steps.push(("+ client verifies chain and name", s));
    s.cache = true;
    steps.push(("+ server session cache", s));
    s.tickets = true;
    steps.push(("+ session tickets", s));
    s.cookie = true;
    steps.push(("+ cookie exchange (= default configuration)", s));
    let default = s;

    let mut rows = Vec::new();
    for cookie in [false, true] {
        rows.push(Row {
            kind: Kind::Bare,
            setup: anchor(cookie),
        });
        rows.push(Row {
            kind: Kind::BareUdp,
            setup: anchor(cookie),
        });
        rows.push(Row {
            kind: Kind::Memory,
            setup: anchor(cookie),
        });
        rows.push(Row {
            kind: Kind::Udp,
            setup: anchor(cookie),
        });
    }
    for (_, setup) in &steps {
        rows.push(Row {
            kind: Kind::Memory,
            setup: *setup,
        });
    }
    rows.push(Row {
        kind: Kind::Udp,
        setup: default,
    });
    let mut seen = Vec::new();
    rows.retain(|r| {
        let new = !seen.contains(r);
        seen.push(*r);
        new
    });
    if memory_only {
        rows.retain(|r| matches!(r.kind, Kind::Bare | Kind::Memory));
    }
    if let Some(f) = only {
        rows.retain(|r| r.name().contains(f));
    }
    if list {
        for r in &rows {
            println!("{}", r.name());
        }
        return;
    }

    let clock = on_server_cpu(pinning, clock_cost);
    let on = |cpu: usize| {
        if pinning {
            format!(" on cpu{cpu}")
        } else {
            " (unpinned)".to_string()
        }
    };
    let (server_cpu, client_cpu) = cpus();
    println!(
        "machine: {} CPUs, {}; {count} full handshakes per run, {repeat} runs per row, \
         interleaved; {CIPHER}, P-256 key exchange, ECDSA P-256 certificates; in memory: \
         one thread{}, only the server's calls timed ({clock:.2} us per timed call is the \
         clock's own reading); UDP: server thread{}, client thread{}",
        thread::available_parallelism().map_or(1, |n| n.get()),
        dtls_reactor::openssl_version(),
        on(server_cpu),
        on(server_cpu),
        on(client_cpu),
    );
    let load_start = load_average();
    let (jiffies0, cpu0, wall0) = (cpu_jiffies(), process_cpu(), std::time::Instant::now());

    let mut results: Vec<(Row, Vec<Sample>)> = rows.iter().map(|&r| (r, Vec::new())).collect();
    for rep in 0..repeat {
        for (row, samples) in results.iter_mut() {
            eprint!("\r{} #{}                    ", row.name(), rep + 1);
            samples.push(run_row(*row, count, pinning));
        }
    }
    eprintln!("\r{:80}", "");

    let wall = wall0.elapsed().as_secs_f64();
    let ours = (process_cpu() - cpu0).as_secs_f64();
    let jiffies1 = cpu_jiffies();
    let busy: Vec<String> = jiffies0
        .iter()
        .zip(&jiffies1)
        .enumerate()
        .map(|(i, (a, b))| {
            let total = (b.1 - a.1).max(1) as f64;
            format!(
                "cpu{i} {:.0} % busy ({:.0} % steal)",
                100.0 * (b.0 - a.0) as f64 / total,
                100.0 * (b.2 - a.2) as f64 / total
            )
        })
        .collect();
    println!(
        "load during the runs ({wall:.0} s): {}, all processes; this process {:.0} % of one CPU; \
         load average {load_start} at the start, {} at the end",
        busy.join(", "),
        100.0 * ours / wall,
        load_average()
    );

    let find = |kind, setup| {
        results
            .iter()
            .find(|(r, _)| r.kind == kind && r.setup == setup)
            .map(|(_, s)| stats(s))
    };
    let cell = |s: &Stats| format!("{:.0} ({:.0}-{:.0})", s.median, s.lo, s.hi);
    let ratio = |s: &Stats, base: &Option<Stats>| match base {
        Some(b) => format!("{:.2}x", s.median / b.median),
        None => "-".into(),
    };

    println!(
        "\n| server | transport | cookie | server CPU us per full handshake, median (min-max) | vs bare OpenSSL in memory | vs bare OpenSSL, same transport | inside OpenSSL / the engine us | timed calls per handshake | client + server us (memory: one thread) | completed | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for cookie in [false, true] {
        let bare = find(Kind::Bare, anchor(cookie));
        let bare_udp = find(Kind::BareUdp, anchor(cookie));
        for (kind, what, transport) in [
            (Kind::Bare, "bare OpenSSL", "memory"),
            (Kind::Memory, "our engine", "memory"),
            (Kind::BareUdp, "bare OpenSSL", "loopback UDP"),
            (Kind::Udp, "our engine", "loopback UDP"),
        ] {
            let Some(s) = find(kind, anchor(cookie)) else {
                continue;
            };
            let udp = matches!(kind, Kind::BareUdp | Kind::Udp);
            println!(
                "| {what} | {transport} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if cookie { "on" } else { "off" },
                cell(&s),
                ratio(&s, &bare),
                ratio(&s, if udp { &bare_udp } else { &bare }),
                if udp {
                    format!("{:.0}", s.engine)
                } else {
                    "(all)".into()
                },
                if udp {
                    "-".into()
                } else {
                    format!("{:.1}", s.calls)
                },
                if udp {
                    "-".into()
                } else {
                    format!("{:.0}", s.pair)
                },
                s.completed,
                s.failed
            );
        }
    }

    println!(
        "\n| configuration (each row adds one factor to the row above) | transport | server CPU us, median (min-max) | delta us | vs bare OpenSSL in memory (same cookie setting) | completed | failed |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut prev: Option<f64> = None;
    let line = |prev: &mut Option<f64>, what: &str, transport: &str, s: &Stats, cookie: bool| {
        let bare = find(Kind::Bare, anchor(cookie));
        println!(
            "| {what} | {transport} | {} | {} | {} | {} | {} |",
            cell(s),
            prev.map_or("-".into(), |p| format!("{:+.0}", s.median - p)),
            ratio(s, &bare),
            s.completed,
            s.failed
        );
        *prev = Some(s.median);
    };
    for (what, setup) in &steps {
        match find(Kind::Memory, *setup) {
            Some(s) => line(&mut prev, what, "memory", &s, setup.cookie),
            None => prev = None,
        }
    }
    if let Some(s) = find(Kind::Udp, default) {
        // The engine's calls alone, then the whole loop: socket calls, waits.
        let engine = Stats {
            median: s.engine,
            lo: s.engine_lo,
            hi: s.engine_hi,
            ..s
        };
        line(
            &mut prev,
            "+ served from a socket: the engine's calls only (own thread, woken per datagram)",
            "UDP",
            &engine,
            true,
        );
        line(
            &mut prev,
            "+ the socket calls and the server loop",
            "UDP",
            &s,
            true,
        );
    }
    println!(
        "\nTarget: our engine at most 1.1x bare OpenSSL, like for like (the anchor measured 269 us \
         for bare OpenSSL in memory on this machine)."
    );
}
