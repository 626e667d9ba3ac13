//! The performance suite: raw UDP, DTLS, TCP and TLS on loopback, one-way and
//! echo, as ratios against the raw transport measured in the same run.
//!
//! ```sh
//! cargo run --release --example perf -- --seconds 2 --repeat 3 --csv perf.csv --svg perf.svg
//! cargo run --release --example perf -- --chart-from perf.csv --svg perf.svg   # redraw only
//! ```
//!
//! Suites:
//! - `udp`: `std::net::UdpSocket`, blocking.
//! - `udp-batch` (one-way only): raw UDP with the reactor's batching
//!   (`dtls_demux::batch`: 64 datagrams per `sendmmsg`, runs of equal size as
//!   one UDP GSO message; `recvmmsg` with GRO on the receiver): what the
//!   batched reactor suites should be compared with besides blocking `udp`.
//! - `dtls`: the dtls-reactor engine (`Connection`) over the same blocking UDP
//!   sockets, one session (the cookie exchange and handshake happen before timing).
//! - `tcp`: `std::net::TcpStream`, records written back to back (`TCP_NODELAY`).
//! - `tls`: rust-openssl TLS 1.2 over TCP (ECDHE-ECDSA-AES128-GCM-SHA256).
//! - `reactor-udp`: a [`Reactor`] serving plain UDP (`listen_plain` on an OsNet
//!   demux) and a client reactor with `--sessions` plain sessions
//!   (`connect_plain`): the baseline of the reactor suites.
//! - `reactor-osnet`, `reactor-router`: a [`Reactor`] serving DTLS over each
//!   demux, and a client reactor with `--sessions` DTLS sessions (handshakes
//!   done, 64 at a time, before timing).
//! - `tokio-udp`, `tokio` (feature `tokio`): tokio's `UdpSocket`, and this
//!   crate's `tokio::DtlsStream` / `DtlsListener`, a current-thread runtime per
//!   side (`tokio.rs`); `tokio-udp` is `tokio`'s baseline.
//! - `webrtc-dtls`: webrtc-rs's DTLS (on tokio) against itself in the same
//!   shape, run as a separate process (`peers/webrtc-dtls-bench`, built with
//!   `cargo build --release --manifest-path peers/webrtc-dtls-bench/Cargo.toml`;
//!   skipped with a note when not built; `webrtc.rs`);
//!   its baseline is `tokio-udp`.
//! - `reactor-shared-udp`, `reactor-shared`: the same on one shared socket per
//!   side (`SharedSocket`: `listen_plain_shared` / `listen_shared` on the server,
//!   `connect_via` for the client's sessions, each from its own 127.x address);
//!   `reactor-shared-udp` is `reactor-shared`'s baseline. Not through the fault
//!   relay (skipped at `--loss` above 0).
//!
//! In the reactor suites one client reactor thread drives all sessions: in
//! `oneway` it sends round-robin over the sessions as fast as the sockets take
//! the datagrams (the server counts decrypted records); in `echo` each session
//! has one record in flight (the next is sent when its echo arrives; timing
//! starts when every session got a first echo back; a record not answered in
//! 50 ms plus 100 us per session is sent again, which shows as lost). Reactor figures are ratios to
//! `reactor-udp` with the same mode, size and sessions.
//!
//! Modes: `oneway` (a sender thread sends as fast as it can for the duration;
//! the receiver counts what it got, decrypted for DTLS/TLS) and `echo` (one
//! client thread does request/response round trips; a lost datagram is resent
//! after 50 ms and counted as lost). The sender/client is pinned to CPU 0 and
//! the receiver/server to CPU 1 unless `--no-pin`; the placement is printed.
//! Every configuration runs `--repeat` times; the table gives the median and
//! the min-max, and each DTLS (TLS) figure as a ratio to UDP (TCP) of the same
//! mode and size from this run.
//!
//! Loss: `--loss 0,0.01,0.05` runs every configuration at each loss rate. At 0
//! (the default) nothing changes: client and server sockets talk directly. At
//! a rate p > 0 the datagram suites (`udp`, `dtls`, `reactor-*`) run through
//! the fault relay of `tests/common/relay/`, which drops each datagram with
//! probability p in both directions, deterministically from `--seed` (every
//! run's relay starts from that seed; the seed is printed). `tcp` and `tls`
//! are skipped at p > 0 (the relay carries datagrams only; a note says so).
//! The relay's forwarding thread is a third busy thread, started unpinned
//! (the process's initial CPU set) whatever the other threads are pinned to;
//! the placement says so. Each row at p > 0 is compared with its raw
//! transport at the same p from the same run (`dtls` at 5 % against `udp` at
//! 5 %), and the relay's own counts (datagrams in, dropped on purpose) are
//! printed under the table, so the loss in socket buffers is the rest. The
//! echo modes resend after their timeout as at 0, a resend counting as lost.
//! Through the relay the DTLS handshakes (done before timing) retransmit
//! after 50 ms doubling up to 1 s instead of 1 s up to 60 s, and the `dtls`
//! suite starts a failed handshake again (at most 3 times). Rates up to 0.5
//! are accepted; above a few percent one-way rows measure the relay and
//! single-session echo rows the resend timeout more than the transport. The
//! chart labels bars at p > 0 with `@` and the rate (`udp 1200B @5%`).
//!
//! Files: `main.rs` (options, suites, the runs), `datagram.rs` (`udp`,
//! `udp-batch`, `dtls`), `stream.rs` (`tcp`, `tls`), `reactor.rs` (the
//! reactor suites' server and client handlers), `tokio.rs`, `webrtc.rs`,
//! `loss.rs` (the path through the fault relay), `report.rs` (rows, the
//! table, the CSV, the chart).

#[path = "../common/mod.rs"]
mod common;
mod datagram;
mod loss;
mod reactor;
#[path = "../../tests/common/relay/mod.rs"]
mod relay;
mod report;
mod stream;
#[cfg(feature = "tokio")]
mod tokio;
mod webrtc;

use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use datagram::{echo_datagrams, oneway_dtls, oneway_udp};
use dtls_demux::DemuxKind;
use dtls_reactor::{ClientConfig, ServerConfig};
use loss::{initial_affinity, LossPath};
use reactor::reactor_run;
use relay::RelayStats;
use report::{add_run, chart, rows_from_csv, Row};
use stream::{echo_stream, oneway_stream};

#[derive(Parser, Debug)]
#[command(about = "DTLS vs UDP, TLS vs TCP on loopback: goodput and ratios")]
struct Args {
    /// Suites to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_values = ["udp", "udp-batch", "dtls", "tcp", "tls", "reactor-udp", "reactor-osnet", "reactor-router"]
    )]
    suites: Vec<Suite>,
    /// Modes to run.
    #[arg(long, value_delimiter = ',', default_values = ["oneway", "echo"])]
    modes: Vec<Mode>,
    /// Concurrent sessions of the reactor suites (a list: one row per value;
    /// the other suites always run one session).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize])]
    sessions: Vec<usize>,
    /// Record (datagram payload) sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = vec![64usize, 1200])]
    sizes: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Runs per configuration (median and min-max are reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Write every run as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write a chart (median rate by suite and size) as SVG to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Loss rates (a list: one row per value), each a probability in
    /// 0..=0.5 or a percentage (`5%`). Above 0 the datagram suites run
    /// through a fault relay dropping each datagram with that probability in
    /// both directions, and tcp/tls are skipped; 0: no relay.
    #[arg(long, value_delimiter = ',', value_parser = common::loss_rate, default_values_t = vec![0.0f64])]
    loss: Vec<f64>,
    /// Seed of the fault relay's drops (every run's relay starts from it).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Redraw the `--svg` chart from a CSV this tool wrote, without running
    /// anything.
    #[arg(long)]
    chart_from: Option<PathBuf>,
    /// Do not pin threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// DTLS sessions keep OpenSSL's record layer after the handshake
    /// (`ConfigBuilder::openssl_record_layer`) instead of moving to the
    /// engine's.
    #[arg(long)]
    openssl_record_layer: bool,
}

/// `--openssl-record-layer`, for the configurations.
static OPENSSL_RECORD_LAYER: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn openssl_layer() -> bool {
    OPENSSL_RECORD_LAYER.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Suite {
    Udp,
    UdpBatch,
    Dtls,
    Tcp,
    Tls,
    ReactorUdp,
    ReactorOsnet,
    ReactorRouter,
    ReactorSharedUdp,
    ReactorShared,
    /// tokio's `UdpSocket` (the `tokio` suite's baseline; feature `tokio`).
    TokioUdp,
    /// `dtls_reactor::tokio` (feature `tokio`).
    Tokio,
    /// webrtc-dtls against itself (the `peers/webrtc-dtls-bench` process).
    WebrtcDtls,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Udp => "udp",
            Suite::UdpBatch => "udp-batch",
            Suite::Dtls => "dtls",
            Suite::Tcp => "tcp",
            Suite::Tls => "tls",
            Suite::ReactorUdp => "reactor-udp",
            Suite::ReactorOsnet => "reactor-osnet",
            Suite::ReactorRouter => "reactor-router",
            Suite::ReactorSharedUdp => "reactor-shared-udp",
            Suite::ReactorShared => "reactor-shared",
            Suite::TokioUdp => "tokio-udp",
            Suite::Tokio => "tokio",
            Suite::WebrtcDtls => "webrtc-dtls",
        }
    }
    fn baseline(self) -> Suite {
        match self {
            Suite::Udp | Suite::UdpBatch | Suite::Dtls => Suite::Udp,
            Suite::Tcp | Suite::Tls => Suite::Tcp,
            Suite::ReactorUdp | Suite::ReactorOsnet | Suite::ReactorRouter => Suite::ReactorUdp,
            Suite::ReactorSharedUdp | Suite::ReactorShared => Suite::ReactorSharedUdp,
            Suite::TokioUdp | Suite::Tokio | Suite::WebrtcDtls => Suite::TokioUdp,
        }
    }
    /// Suites that can run through the fault relay (`--loss` above 0).
    fn is_datagram(self) -> bool {
        matches!(
            self,
            Suite::Udp
                | Suite::UdpBatch
                | Suite::Dtls
                | Suite::ReactorUdp
                | Suite::ReactorOsnet
                | Suite::ReactorRouter
        )
    }
    fn is_reactor(self) -> bool {
        matches!(
            self,
            Suite::ReactorUdp
                | Suite::ReactorOsnet
                | Suite::ReactorRouter
                | Suite::ReactorSharedUdp
                | Suite::ReactorShared
                | Suite::TokioUdp
                | Suite::Tokio
                | Suite::WebrtcDtls
        )
    }
    /// Both sides on one shared socket (`SharedSocket`): the client's
    /// sessions each from their own 127.x address, which the fault relay
    /// (one relay socket per session, one address) does not carry.
    fn is_shared(self) -> bool {
        matches!(self, Suite::ReactorSharedUdp | Suite::ReactorShared)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Oneway,
    Echo,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Oneway => "oneway",
            Mode::Echo => "echo",
        }
    }
}

/// One run's counts.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    sent: u64,
    received: u64,
    elapsed: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.max(1e-9)
    }
}

/// CPUs available when the program started (pinning later narrows what
/// `available_parallelism` reports for the pinned thread).
fn ncpu() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// CPUs for the sender/client and the receiver/server.
fn cpus() -> (usize, usize) {
    if ncpu() >= 2 {
        (0, 1)
    } else {
        (0, 0)
    }
}

/// Handshake retransmission timeouts through the fault relay (without it:
/// the defaults, 1 s doubling up to 60 s): the first after 50 ms, doubling
/// up to 1 s. Handshakes happen before timing; this keeps the setup at high
/// loss to seconds, with enough retransmissions within the 60 s handshake
/// deadline.
const LOSSY_RETRANSMIT: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// The lossy retransmission timers when `loss` is above 0.
fn timers_for<R>(b: dtls_reactor::ConfigBuilder<R>, loss: f64) -> dtls_reactor::ConfigBuilder<R> {
    if loss > 0.0 {
        b.initial_timeout(LOSSY_RETRANSMIT.0)
            .max_timeout(LOSSY_RETRANSMIT.1)
    } else {
        b
    }
}

fn server_config(loss: f64) -> ServerConfig {
    let b = ServerConfig::builder()
        .certificate_chain_pem(common::TEST_CERT)
        .private_key_pem(common::TEST_KEY)
        .ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        .openssl_record_layer(openssl_layer());
    timers_for(b, loss).build().expect("server config")
}

fn client_config(loss: f64) -> ClientConfig {
    let b = ClientConfig::builder()
        .ca_pem(common::TEST_CA)
        .server_name("localhost")
        .ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        .openssl_record_layer(openssl_layer());
    timers_for(b, loss).build().expect("client config")
}

/// The tokio suites (`tokio.rs`).
#[cfg(feature = "tokio")]
fn tokio_run(
    suite: Suite,
    mode: Mode,
    size: usize,
    sessions: usize,
    dur: Duration,
    pinning: bool,
) -> (Run, String) {
    let dtls = (suite == Suite::Tokio).then(|| (server_config(0.0), client_config(0.0)));
    let (m, placed) = tokio::run(
        dtls,
        mode == Mode::Echo,
        size,
        sessions,
        dur,
        pinning,
        cpus(),
    );
    (
        Run {
            sent: m.sent,
            received: m.received,
            elapsed: m.elapsed.max(1e-9),
        },
        placed,
    )
}

#[cfg(not(feature = "tokio"))]
fn tokio_run(
    suite: Suite,
    _mode: Mode,
    _size: usize,
    _sessions: usize,
    _dur: Duration,
    _pinning: bool,
) -> (Run, String) {
    eprintln!(
        "{}: built without the `tokio` feature (cargo run --features tokio --example perf)",
        suite.name()
    );
    std::process::exit(2)
}

fn run_one(
    suite: Suite,
    mode: Mode,
    size: usize,
    sessions: usize,
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
) -> (Run, String) {
    match (suite, mode) {
        (
            Suite::ReactorUdp
            | Suite::ReactorOsnet
            | Suite::ReactorRouter
            | Suite::ReactorSharedUdp
            | Suite::ReactorShared,
            _,
        ) => {
            let kind = match suite {
                Suite::ReactorOsnet => Some(DemuxKind::OsNet),
                Suite::ReactorRouter => Some(DemuxKind::Router),
                Suite::ReactorShared => Some(DemuxKind::OsNet),
                _ => None,
            };
            let shared = suite.is_shared();
            reactor_run(kind, shared, mode, size, sessions, dur, pinning, path)
        }
        (Suite::TokioUdp | Suite::Tokio, _) => tokio_run(suite, mode, size, sessions, dur, pinning),
        (Suite::WebrtcDtls, _) => {
            let ((sent, received, elapsed), placed) =
                webrtc::run(mode == Mode::Echo, size, sessions, dur, pinning, cpus());
            let elapsed = elapsed.max(1e-9);
            (
                Run {
                    sent,
                    received,
                    elapsed,
                },
                placed,
            )
        }
        (Suite::Udp, Mode::Oneway) => oneway_udp(size, dur, pinning, path, false),
        (Suite::UdpBatch, Mode::Oneway) => oneway_udp(size, dur, pinning, path, true),
        // One record in flight: nothing to batch; never configured (see main).
        (Suite::UdpBatch, Mode::Echo) => echo_datagrams(size, dur, pinning, false, path),
        (Suite::Dtls, Mode::Oneway) => oneway_dtls(size, dur, pinning, path),
        (Suite::Udp, Mode::Echo) => echo_datagrams(size, dur, pinning, false, path),
        (Suite::Dtls, Mode::Echo) => echo_datagrams(size, dur, pinning, true, path),
        (Suite::Tcp, Mode::Oneway) => oneway_stream(size, dur, pinning, false),
        (Suite::Tls, Mode::Oneway) => oneway_stream(size, dur, pinning, true),
        (Suite::Tcp, Mode::Echo) => echo_stream(size, dur, pinning, false),
        (Suite::Tls, Mode::Echo) => echo_stream(size, dur, pinning, true),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_log();
    let args = Args::parse();
    if let Some(csv) = &args.chart_from {
        let svg = args.svg.as_ref().ok_or("--chart-from needs --svg")?;
        let rows = rows_from_csv(csv)?;
        let mut modes: Vec<Mode> = Vec::new();
        for r in &rows {
            if !modes.contains(&r.mode) {
                modes.push(r.mode);
            }
        }
        chart(svg, &rows, &modes)?;
        println!("wrote {}", svg.display());
        return Ok(());
    }
    common::raise_nofile();
    OPENSSL_RECORD_LAYER.store(
        args.openssl_record_layer,
        std::sync::atomic::Ordering::Relaxed,
    );
    println!(
        "DTLS records: {} record layer",
        if args.openssl_record_layer {
            "OpenSSL's"
        } else {
            "the engine's"
        }
    );
    ncpu();
    let dur = Duration::from_secs_f64(args.seconds);
    let pinning = !args.no_pin;
    initial_affinity();
    let mut configs = Vec::new();
    // Suites not run at some loss rate above 0 (the relay carries datagrams).
    let mut skipped: Vec<&str> = Vec::new();
    let webrtc_missing = if args.suites.contains(&Suite::WebrtcDtls) {
        webrtc::missing()
    } else {
        None
    };
    for &mode in &args.modes {
        for &size in &args.sizes {
            for &loss in &args.loss {
                for &suite in &args.suites {
                    if suite == Suite::UdpBatch && mode == Mode::Echo {
                        // One record in flight per session: nothing to batch.
                        continue;
                    }
                    if suite == Suite::WebrtcDtls && webrtc_missing.is_some() {
                        continue;
                    }
                    if loss > 0.0 && !suite.is_datagram() {
                        if !skipped.contains(&suite.name()) {
                            skipped.push(suite.name());
                        }
                        continue;
                    }
                    if suite.is_reactor() {
                        for &n in &args.sessions {
                            configs.push((suite, mode, size, n.max(1), loss));
                        }
                    } else {
                        configs.push((suite, mode, size, 1, loss));
                    }
                }
            }
        }
    }
    let total = (configs.len() * args.repeat.max(1)) as u64;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} {msg} (eta {eta})",
    )?);
    println!(
        "machine: {} CPUs, {}; runs of {:.1} s, repeated {} times",
        ncpu(),
        dtls_reactor::openssl_version(),
        args.seconds,
        args.repeat
    );
    if args.loss.iter().any(|&p| p > 0.0) {
        println!(
            "loss: fault relay (tests/common/relay/) dropping each datagram with the row's \
             probability in both directions, seed {} (every run's relay starts from it); its \
             thread is unpinned, a third busy thread on {} CPUs",
            args.seed,
            ncpu()
        );
    }
    if let Some(why) = &webrtc_missing {
        println!("note: {why}");
    }
    if !skipped.is_empty() {
        println!(
            "note: {} skipped at loss > 0 (the fault relay carries datagrams only)",
            skipped.join(", ")
        );
    }
    let mut rows: Vec<Row> = Vec::new();
    // Repeats are interleaved so a slow minute hits every suite alike.
    for rep in 0..args.repeat.max(1) {
        for &(suite, mode, size, sessions, loss) in &configs {
            bar.set_message(format!(
                "{} {} {}B x{} loss {} #{}",
                suite.name(),
                mode.name(),
                size,
                sessions,
                common::loss_label(loss),
                rep + 1
            ));
            let mut path = LossPath::new(loss, args.seed);
            let (run, placement) = run_one(suite, mode, size, sessions, dur, pinning, &mut path);
            let relay: Vec<RelayStats> = path.stats.into_iter().collect();
            add_run(
                &mut rows,
                Row::new(suite, mode, size, sessions, loss, placement),
                run,
                relay,
            );
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    report::print_table(&rows);
    if let Some(path) = &args.csv {
        report::write_csv(path, &rows)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        chart(path, &rows, &args.modes)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
