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
//!   side (`examples/perf_suites/tokio.rs`); `tokio-udp` is `tokio`'s baseline.
//! - `webrtc-dtls`: webrtc-rs's DTLS (on tokio) against itself in the same
//!   shape, run as a separate process (`peers/webrtc-dtls-bench`, built with
//!   `cargo build --release --manifest-path peers/webrtc-dtls-bench/Cargo.toml`;
//!   skipped with a note when not built; `examples/perf_suites/webrtc.rs`);
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
//! the fault relay of `tests/common/relay.rs`, which drops each datagram with
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

#[path = "common/mod.rs"]
mod common;
#[cfg(feature = "tokio")]
#[path = "perf_suites/tokio.rs"]
mod perf_tokio;
#[path = "perf_suites/webrtc.rs"]
mod perf_webrtc;
#[path = "../tests/common/relay.rs"]
mod relay;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use std::collections::HashMap;

use dtls_demux::DemuxKind;
use dtls_reactor::{
    Admission, Admitted, ClientConfig, CloseCause, ConnId, Connection, Ctx, Datagram, FrontDoor,
    Handler, Limits, Reactor, ServerConfig, TimerId,
};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use relay::{Faults, Relay, RelayConfig, RelayStats};

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

/// The process's CPU set when it started, before any thread pinned itself
/// (threads inherit the affinity of the thread that spawns them).
fn initial_affinity() -> Option<libc::cpu_set_t> {
    static SET: std::sync::OnceLock<Option<libc::cpu_set_t>> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
        // size_of::<cpu_set_t>() bytes into our local value, for the calling
        // thread (pid 0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (rc == 0).then_some(set)
        }
    })
}

/// Placement of the fault relay's thread, appended to a run's placement.
const RELAY_PLACEMENT: &str = ", fault relay thread unpinned (a third busy thread)";
/// The same when the relay could not be given the initial CPU set.
const RELAY_PLACEMENT_INHERITED: &str =
    ", fault relay thread on the starting thread's CPUs (unpinning failed; a third busy thread)";

/// The path between client and server of one run: direct at loss 0 (no
/// relay), else through a fault relay dropping each datagram with
/// probability `loss` in both directions.
struct LossPath {
    loss: f64,
    seed: u64,
    /// The relay's counters, once the run stopped it.
    stats: Option<RelayStats>,
    /// Where the relay thread runs, for the placement.
    placement: std::cell::Cell<&'static str>,
}

impl LossPath {
    fn new(loss: f64, seed: u64) -> LossPath {
        LossPath {
            loss,
            seed,
            stats: None,
            placement: std::cell::Cell::new(""),
        }
    }

    /// Starts a relay to `upstream` for at most `clients` clients (one per
    /// client socket); `None` at loss 0. The relay thread inherits the
    /// affinity of the thread that starts it, and this thread may be pinned
    /// from an earlier run, so a fresh thread with the process's initial CPU
    /// set starts it: the relay runs unpinned.
    fn relay(&self, upstream: SocketAddr, clients: usize, dur: Duration) -> Option<Relay> {
        if self.loss <= 0.0 {
            return None;
        }
        let mut cfg = RelayConfig::new(upstream)
            .faults(Faults::loss(self.loss))
            .seed(self.seed);
        cfg.max_clients = clients + 16;
        // A safety net only (the run stops it): the duration plus the
        // longest setup (the reactor suites give up after 120 s).
        cfg.max_duration = dur + Duration::from_secs(180);
        let starter = thread::spawn(move || {
            let unpinned = initial_affinity().is_some_and(|set| {
                // SAFETY: sched_setaffinity reads size_of::<cpu_set_t>()
                // bytes of our local value, for the calling thread (pid 0).
                unsafe {
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
                }
            });
            (Relay::start(cfg), unpinned)
        });
        let (relay, unpinned) = starter.join().expect("relay starter thread");
        self.placement.set(if unpinned {
            RELAY_PLACEMENT
        } else {
            RELAY_PLACEMENT_INHERITED
        });
        Some(relay.expect("start the fault relay"))
    }

    /// Stops the relay (if any), keeps its counters, and returns the
    /// placement note for it ("" without a relay).
    fn finish(&mut self, relay: Option<Relay>) -> &'static str {
        match relay {
            Some(r) => {
                self.stats = Some(r.stop());
                self.placement.get()
            }
            None => "",
        }
    }
}

/// Where the client sends: the relay, or the server itself.
fn via(relay: &Option<Relay>, server: SocketAddr) -> SocketAddr {
    relay.as_ref().map_or(server, Relay::local_addr)
}

/// Through a relay the server sees the client at the relay's upstream socket
/// for it, known only once a datagram came through: the client sends probes
/// (never `size` bytes long, so the echo loops ignore a late one) until one
/// does. Returns that address.
fn probe_peer(client: &UdpSocket, server: &UdpSocket, size: usize) -> SocketAddr {
    let probe = vec![0u8; if size == 1 { 2 } else { 1 }];
    server
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..1000 {
        let _ = client.send(&probe);
        if let Ok((_, from)) = server.recv_from(&mut buf) {
            return from;
        }
    }
    panic!("no probe got through the fault relay in 1,000 tries");
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

/// One end of a DTLS session: its connected socket and its engine.
type DtlsEnd = (UdpSocket, Connection);

/// A DTLS session over two connected UDP sockets, handshake done (through
/// the relay returned, at loss above 0).
fn dtls_pair(path: &LossPath, dur: Duration) -> (DtlsEnd, DtlsEnd, Option<Relay>) {
    let ssock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = path.relay(ssock.local_addr().unwrap(), 4, dur);
    let client_socket = || {
        let csock = UdpSocket::bind("127.0.0.1:0").unwrap();
        csock
            .connect(via(&relay, ssock.local_addr().unwrap()))
            .unwrap();
        csock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        csock
    };
    let mut csock = client_socket();
    // Where the server sees the client: the client's socket, or the
    // relay's upstream socket for it (learnt from the first datagram).
    let mut caddr = csock.local_addr().unwrap();
    // Under loss a handshake can fail (OpenSSL gives up a flight after too
    // many retransmissions, or the 60 s deadline passes): it starts again
    // from a new client socket, at most 3 times; the addresses the server
    // saw the clients given up on at are ignored from then on.
    let mut restarts = 0;
    let mut stale: Vec<SocketAddr> = Vec::new();
    let limit = Duration::from_secs(if relay.is_some() { 250 } else { 10 });
    let scfg = server_config(path.loss);
    let ccfg = client_config(path.loss);
    let mut stage = FrontDoor::new(&scfg, &Admission::default()).unwrap();
    let mut client = Connection::client(&ccfg, None).unwrap();
    let mut server: Option<Connection> = None;
    ssock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 65536];
    let start = Instant::now();
    while !(client.is_established() && server.as_ref().is_some_and(|s| s.is_established())) {
        assert!(
            start.elapsed() < limit,
            "DTLS handshake did not finish in {limit:?}: client {:?} {:?}, server {:?}",
            client.state(),
            client.stats(),
            server.as_ref().map(|s| (s.state(), s.stats()))
        );
        while let Some(d) = client.poll_transmit() {
            csock.send(&d).unwrap();
        }
        if let Ok((n, from)) = ssock.recv_from(&mut buf) {
            if stale.contains(&from) {
                continue;
            }
            caddr = from;
            match server.as_mut() {
                Some(s) => s.feed(&buf[..n]).unwrap(),
                None => match stage.admit(from, &Datagram::parse(&buf[..n])) {
                    Admitted::Reply(h) => {
                        ssock.send_to(&h, from).unwrap();
                    }
                    Admitted::Accepted(c) => server = Some(*c),
                    other => panic!("cookie stage: {other:?}"),
                },
            }
            if let Some(s) = server.as_mut() {
                if s.is_established() {
                    // Once established, OpenSSL answers a resent client
                    // Finished (the client lost the server's last flight)
                    // only when it reads: let it, or the client never
                    // finishes. Nothing else arrives before the client is
                    // established, which ends this loop.
                    while let Ok(Some(_)) = s.recv(&mut plain) {}
                }
                while let Some(d) = s.poll_transmit() {
                    ssock.send_to(&d, from).unwrap();
                }
            }
        }
        if let Ok(n) = csock.recv(&mut buf) {
            client.feed(&buf[..n]).unwrap();
        }
        let now = Instant::now();
        let _ = client.handle_timeout(now);
        if let Some(s) = server.as_mut() {
            let _ = s.handle_timeout(now);
            while let Some(d) = s.poll_transmit() {
                ssock.send_to(&d, caddr).unwrap();
            }
        }
        let failed = client.is_closed() || server.as_ref().is_some_and(|s| s.is_closed());
        if failed && relay.is_some() {
            assert!(
                restarts < 3,
                "DTLS handshake through the fault relay failed 4 times: client {:?}",
                client.state()
            );
            eprintln!(
                "dtls: handshake through the fault relay failed ({:?}), starting again",
                client.state()
            );
            restarts += 1;
            if caddr != csock.local_addr().unwrap() {
                stale.push(caddr);
            }
            csock = client_socket();
            caddr = csock.local_addr().unwrap();
            client = Connection::client(&ccfg, None).unwrap();
            server = None;
        }
    }
    ssock.connect(caddr).unwrap();
    ((csock, client), (ssock, server.unwrap()), relay)
}

/// Sends one plaintext datagram through a DTLS session on a connected socket.
fn dtls_send(sock: &UdpSocket, conn: &mut Connection, msg: &[u8]) -> bool {
    if conn.send(msg).is_err() {
        return false;
    }
    let mut ok = true;
    while let Some(d) = conn.peek_transmit() {
        ok &= sock.send(d).is_ok();
        conn.pop_transmit();
    }
    ok
}

/// The one-way harness: `burst` runs on the sender thread (CPU 0) until `dur`
/// has passed and returns how many records each call sent; `receive` runs on
/// this thread (CPU 1) and returns the records of the expected size each call
/// got, `None` once nothing more arrives (its read timeout passed).
fn oneway(
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
    relay: Option<Relay>,
    mut burst: impl FnMut() -> u64 + Send + 'static,
    mut receive: impl FnMut() -> Option<u64>,
) -> (Run, String) {
    let (c0, c1) = cpus();
    let sender = thread::spawn(move || {
        let where_ = common::placement(c0, pinning);
        let end = Instant::now() + dur;
        let mut sent = 0u64;
        while Instant::now() < end {
            sent += burst();
        }
        (sent, where_)
    });
    let where_rx = common::placement(c1, pinning);
    let start = Instant::now();
    let mut received = 0u64;
    let mut last = start;
    while let Some(got) = receive() {
        if got > 0 {
            received += got;
            last = Instant::now();
        }
    }
    let (sent, where_tx) = sender.join().unwrap();
    let via_relay = path.finish(relay);
    let elapsed = (last - start).as_secs_f64().max(dur.as_secs_f64() * 0.5);
    (
        Run {
            sent,
            received,
            elapsed,
        },
        format!("sender {where_tx}, receiver {where_rx}{via_relay}"),
    )
}

/// Raw UDP one-way. `batched`: with the batching the reactor uses
/// (`dtls_demux::batch`): the sender hands 64 datagrams per `sendmmsg` (one UDP
/// GSO message per run), the receiver reads with `recvmmsg` and GRO on; the
/// fair baseline for batched DTLS. Otherwise blocking `send` / `recv`, one
/// datagram per call.
fn oneway_udp(
    size: usize,
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
    batched: bool,
) -> (Run, String) {
    use dtls_demux::batch::{enable_gro, recv_batch, send_batch, RecvBatch};
    use std::os::fd::AsRawFd;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = path.relay(rx.local_addr().unwrap(), 1, dur);
    tx.connect(via(&relay, rx.local_addr().unwrap())).unwrap();
    if batched {
        enable_gro(&rx).expect("UDP GRO");
    } else {
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let msg = vec![0x42u8; size];
    let burst = move || {
        let burst: [&[u8]; 64] = [&msg[..]; 64];
        if batched {
            match send_batch(&tx, None, &burst) {
                Ok(n) => n as u64,
                Err(_) => {
                    thread::yield_now();
                    0
                }
            }
        } else {
            burst.iter().filter(|d| tx.send(d).is_ok()).count() as u64
        }
    };
    let mut buf = vec![0u8; 65536];
    let mut batch = RecvBatch::new(if batched { 32 } else { 1 });
    let receive = move || {
        if !batched {
            return rx.recv(&mut buf).ok().map(|n| u64::from(n == size));
        }
        match recv_batch(&rx, &mut batch) {
            Ok(_) => Some(batch.iter().filter(|d| d.len() == size).count() as u64),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: rx.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                (unsafe { libc::poll(&mut pfd, 1, 200) } > 0).then_some(0)
            }
            Err(e) => panic!("recv_batch: {e}"),
        }
    };
    oneway(dur, pinning, path, relay, burst, receive)
}

fn oneway_dtls(size: usize, dur: Duration, pinning: bool, path: &mut LossPath) -> (Run, String) {
    let ((csock, mut client), (ssock, mut server), relay) = dtls_pair(path, dur);
    ssock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = vec![0x42u8; size];
    let burst = move || {
        (0..64)
            .filter(|_| dtls_send(&csock, &mut client, &msg))
            .count() as u64
    };
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 65536];
    let receive = move || {
        let n = ssock.recv(&mut buf).ok()?;
        server.feed(&buf[..n]).ok()?;
        let mut got = 0;
        while let Ok(Some(m)) = server.recv(&mut plain) {
            got += u64::from(m == size);
        }
        Some(got)
    };
    oneway(dur, pinning, path, relay, burst, receive)
}

/// Request/response over datagrams; `send`/`recv` abstract UDP vs DTLS.
fn echo_datagrams(
    size: usize,
    dur: Duration,
    pinning: bool,
    dtls: bool,
    path: &mut LossPath,
) -> (Run, String) {
    let (c0, c1) = cpus();
    let stop = Arc::new(AtomicBool::new(false));
    let (client_side, server_side, relay) = if dtls {
        let ((cs, c), (ss, s), relay) = dtls_pair(path, dur);
        ((cs, Some(c)), (ss, Some(s)), relay)
    } else {
        let ss = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cs = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = path.relay(ss.local_addr().unwrap(), 1, dur);
        cs.connect(via(&relay, ss.local_addr().unwrap())).unwrap();
        let peer = match relay {
            Some(_) => probe_peer(&cs, &ss, size),
            None => cs.local_addr().unwrap(),
        };
        ss.connect(peer).unwrap();
        ((cs, None), (ss, None), relay)
    };
    let stop2 = stop.clone();
    let server = thread::spawn(move || {
        let where_ = common::placement(c1, pinning);
        let (sock, mut conn) = server_side;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let mut plain = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            match conn.as_mut() {
                None => {
                    let _ = sock.send(&buf[..n]);
                }
                Some(c) => {
                    if c.feed(&buf[..n]).is_err() {
                        break;
                    }
                    while let Ok(Some(m)) = c.recv(&mut plain) {
                        dtls_send(&sock, c, &plain[..m]);
                    }
                }
            }
        }
        where_
    });
    let where_c = common::placement(c0, pinning);
    let (sock, mut conn) = client_side;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let msg = vec![0x42u8; size];
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 65536];
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < dur {
        sent += 1;
        match conn.as_mut() {
            None => {
                let _ = sock.send(&msg);
            }
            Some(c) => {
                dtls_send(&sock, c, &msg);
            }
        }
        // Wait for the reply (or give up after the read timeout: lost).
        'reply: while let Ok(n) = sock.recv(&mut buf) {
            match conn.as_mut() {
                None => {
                    if n == size {
                        received += 1;
                        break 'reply;
                    }
                }
                Some(c) => {
                    let _ = c.feed(&buf[..n]);
                    if let Ok(Some(m)) = c.recv(&mut plain) {
                        if m == size {
                            received += 1;
                            break 'reply;
                        }
                    }
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let where_s = server.join().unwrap();
    let via_relay = path.finish(relay);
    (
        Run {
            sent,
            received,
            elapsed,
        },
        format!("client {where_c}, server {where_s}{via_relay}"),
    )
}

/// A connected TCP pair, optionally wrapped in TLS.
type Stream = Box<dyn ReadWrite + Send>;
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn stream_pair(tls: bool) -> (Stream, Stream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let accept = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        if !tls {
            return Box::new(s) as Stream;
        }
        let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        a.set_certificate(&openssl::x509::X509::from_pem(common::TEST_CERT).unwrap())
            .unwrap();
        a.set_private_key(&openssl::pkey::PKey::private_key_from_pem(common::TEST_KEY).unwrap())
            .unwrap();
        a.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        a.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256").unwrap();
        Box::new(a.build().accept(s).unwrap()) as Stream
    });
    let c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let client: Stream = if tls {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        Box::new(b.build().connect("localhost", c).unwrap())
    } else {
        Box::new(c)
    };
    (client, accept.join().unwrap())
}

fn oneway_stream(size: usize, dur: Duration, pinning: bool, tls: bool) -> (Run, String) {
    let (mut tx, mut rx) = stream_pair(tls);
    let (c0, c1) = cpus();
    let sender = thread::spawn(move || {
        let where_ = common::placement(c0, pinning);
        let msg = vec![0x42u8; size];
        let end = Instant::now() + dur;
        let mut sent = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                if tx.write_all(&msg).is_err() {
                    return (sent, where_);
                }
                sent += 1;
            }
        }
        let _ = tx.flush();
        drop(tx);
        (sent, where_)
    });
    let where_rx = common::placement(c1, pinning);
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut last = start;
    while let Ok(n) = rx.read(&mut buf) {
        if n == 0 {
            break;
        }
        bytes += n as u64;
        last = Instant::now();
    }
    let (sent, where_tx) = sender.join().unwrap();
    (
        Run {
            sent,
            received: bytes / size as u64,
            elapsed: (last - start).as_secs_f64().max(1e-6),
        },
        format!("sender {where_tx}, receiver {where_rx}"),
    )
}

fn echo_stream(size: usize, dur: Duration, pinning: bool, tls: bool) -> (Run, String) {
    let (mut c, mut s) = stream_pair(tls);
    let (c0, c1) = cpus();
    let server = thread::spawn(move || {
        let where_ = common::placement(c1, pinning);
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
        where_
    });
    let where_c = common::placement(c0, pinning);
    let msg = vec![0x42u8; size];
    let mut buf = vec![0u8; size];
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < dur {
        sent += 1;
        if c.write_all(&msg).is_err() || c.read_exact(&mut buf).is_err() {
            break;
        }
        received += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(c);
    let where_s = server.join().unwrap();
    (
        Run {
            sent,
            received,
            elapsed,
        },
        format!("client {where_c}, server {where_s}"),
    )
}

/// The reactor server of the reactor suites: counts records of the expected
/// size (one-way) or echoes every record (echo).
struct Sink {
    echo: bool,
    size: usize,
    received: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Echoes waiting for their connection to be writable.
    blocked: HashMap<ConnId, Vec<u8>>,
    blocked_count: u64,
}

impl Handler for Sink {
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if let Some(d) = self.blocked.remove(&id) {
            if let Err(dtls_reactor::Error::WouldBlock) = ctx.send(id, &d) {
                self.blocked.insert(id, d);
            }
        }
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if self.echo {
            if let Err(dtls_reactor::Error::WouldBlock) = ctx.send(id, data) {
                // Sent from on_writable; one record in flight per session.
                self.blocked_count += 1;
                self.blocked.insert(id, data.to_vec());
            }
        } else if data.len() == self.size {
            let now = Instant::now();
            self.received += 1;
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
    }
}

const BURST: u64 = 0;
const CHECK: u64 = 1;
const END: u64 = 2;
const GIVE_UP: u64 = 3;
const START: u64 = 4;
/// Handshakes (or plain session starts) in flight at once.
const PARALLEL: usize = 64;
/// An echo not back after this is sent again (and shows as lost): 50 ms,
/// plus 100 us per session, as with many sessions each one's turn comes
/// less often.
fn resend_after(sessions: usize) -> Duration {
    Duration::from_millis(50) + Duration::from_micros(100) * sessions as u32
}

/// One session of the load reactor.
struct LoadSession {
    last_sent: Instant,
    echoed: bool,
    /// A record is in flight (its echo has not come back).
    awaiting: bool,
}

/// The client reactor of the reactor suites: `total` sessions to `addr`.
struct Load {
    addr: SocketAddr,
    /// `None`: plain UDP sessions.
    cfg: Option<ClientConfig>,
    /// Every session on this shared socket, session i from 127.1.0.1 + i.
    via: Option<dtls_reactor::ListenerId>,
    next_local: usize,
    oneway: bool,
    payload: Vec<u8>,
    dur: Duration,
    /// An echo not back after this is sent again.
    resend: Duration,
    total: usize,
    to_start: usize,
    starting: usize,
    ids: Vec<ConnId>,
    sessions: HashMap<ConnId, LoadSession>,
    warm: usize,
    next: usize,
    /// Echo sessions whose record waits for writability.
    blocked: std::collections::HashSet<ConnId>,
    start: Option<Instant>,
    end: Option<Instant>,
    sent: u64,
    received: u64,
    failed: usize,
}

impl Load {
    fn start_more(&mut self, ctx: &mut Ctx<'_>) {
        while self.to_start > 0 && self.starting < PARALLEL {
            self.to_start -= 1;
            let r = common::connect_session(
                ctx,
                self.via,
                &mut self.next_local,
                self.addr,
                self.cfg.as_ref(),
            );
            match r {
                Ok(_) => self.starting += 1,
                Err(e) => {
                    eprintln!("connect: {e}");
                    self.failed += 1;
                }
            }
        }
    }
    fn begin(&mut self, ctx: &mut Ctx<'_>) {
        self.start = Some(Instant::now());
        self.sent = 0;
        self.received = 0;
        ctx.set_timer(self.dur, END);
        if self.oneway {
            ctx.set_timer(Duration::ZERO, BURST);
        } else {
            // Every session had its first echo; now all send at once.
            for id in self.ids.clone() {
                self.send(ctx, id);
            }
        }
    }
    fn send(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if self.end.is_some() {
            return;
        }
        match ctx.send(id, &self.payload) {
            Ok(()) => self.sent += 1,
            // An earlier datagram waits for the socket: send from on_writable.
            Err(dtls_reactor::Error::WouldBlock) => {
                self.blocked.insert(id);
            }
            Err(_) => {}
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.last_sent = Instant::now();
            s.awaiting = true;
        }
    }
}

impl Handler for Load {
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.starting = self.starting.saturating_sub(1);
        self.ids.push(id);
        self.sessions.insert(
            id,
            LoadSession {
                last_sent: Instant::now(),
                echoed: false,
                awaiting: false,
            },
        );
        self.start_more(ctx);
        if self.oneway {
            if self.ids.len() + self.failed == self.total {
                self.begin(ctx);
            }
        } else {
            self.send(ctx, id);
        }
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if data.len() != self.payload.len() {
            return;
        }
        let first = match self.sessions.get_mut(&id) {
            Some(s) => {
                s.awaiting = false;
                !std::mem::replace(&mut s.echoed, true)
            }
            None => return,
        };
        if self.start.is_none() {
            // Warm-up: one round trip per session, then wait for the others
            // (no echo traffic while handshakes still run).
            if first {
                self.warm += 1;
                if self.warm + self.failed == self.total {
                    self.begin(ctx);
                }
            }
            return;
        }
        if self.end.is_none() {
            self.received += 1;
        }
        self.send(ctx, id);
    }
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if !self.oneway && self.blocked.remove(&id) {
            self.send(ctx, id);
        }
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _t: TimerId, token: u64) {
        match token {
            BURST if self.end.is_none() && !self.ids.is_empty() => {
                for _ in 0..64 {
                    let id = self.ids[self.next % self.ids.len()];
                    self.next = self.next.wrapping_add(1);
                    if ctx.send(id, &self.payload).is_ok() {
                        self.sent += 1;
                    }
                }
                ctx.set_timer(Duration::ZERO, BURST);
            }
            CHECK => {
                let now = Instant::now();
                let stale: Vec<ConnId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.awaiting && now - s.last_sent >= self.resend)
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    self.send(ctx, id);
                }
                ctx.set_timer(self.resend, CHECK);
            }
            START => self.start_more(ctx),
            END => {
                self.end = Some(Instant::now());
                ctx.stop();
            }
            GIVE_UP if self.start.is_none() => {
                eprintln!(
                    "reactor load: {} of {} sessions set up in time",
                    self.ids.len(),
                    self.total
                );
                ctx.stop();
            }
            _ => {}
        }
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cause: &CloseCause) {
        if matches!(cause, CloseCause::Stopped | CloseCause::Local) {
            return;
        }
        eprintln!("reactor load: session closed: {cause:?}");
        if self.sessions.remove(&id).is_none() {
            self.starting = self.starting.saturating_sub(1);
        }
        self.ids.retain(|x| *x != id);
        self.failed += 1;
        self.start_more(ctx);
    }
}

/// A reactor suite: a server reactor thread (DTLS over `kind`, plain UDP when
/// `None`; on a shared socket when `shared`, the client's sessions then on one
/// too) and a client reactor thread with `sessions` sessions.
#[allow(clippy::too_many_arguments)]
fn reactor_run(
    kind: Option<DemuxKind>,
    shared: bool,
    mode: Mode,
    size: usize,
    sessions: usize,
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
) -> (Run, String) {
    let (c0, c1) = cpus();
    let echo = mode == Mode::Echo;
    let sessions = sessions.max(1);
    let limits = Limits::default()
        .max_connections(sessions + 16)
        .max_handshakes(sessions.max(PARALLEL) + 16)
        .idle_timeout(None);
    let (tx, rx) = std::sync::mpsc::channel();
    let slimits = limits;
    let loss = path.loss;
    let server = thread::spawn(move || {
        let where_ = common::placement(c1, pinning);
        let mut r = Reactor::with_limits(
            Sink {
                echo,
                size,
                received: 0,
                first: None,
                last: None,
                blocked: HashMap::new(),
                blocked_count: 0,
            },
            slimits,
        )
        .expect("reactor");
        let l = if shared {
            let s = dtls_demux::SharedSocket::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            match kind {
                Some(_) => r.listen_shared(s, &server_config(loss)),
                None => r.listen_plain_shared(s),
            }
        } else {
            let demux = dtls_demux::bind(
                kind.unwrap_or(DemuxKind::OsNet),
                "127.0.0.1:0".parse().unwrap(),
            )
            .expect("bind");
            match kind {
                Some(_) => r.listen(demux, &server_config(loss)),
                None => r.listen_plain(demux),
            }
        }
        .expect("listen");
        tx.send((r.handle(), r.local_addr(l).expect("address")))
            .unwrap();
        if let Err(e) = r.run() {
            eprintln!("server reactor: {e}");
        }
        (r.into_handler(), where_)
    });
    let (handle, addr) = rx.recv().expect("server reactor started");
    // One relay client per client session (each has its own socket).
    let relay = path.relay(addr, sessions, dur);
    let addr = via(&relay, addr);
    let dtls = kind.is_some();
    let client = thread::spawn(move || {
        let where_ = common::placement(c0, pinning);
        let load = Load {
            addr,
            cfg: dtls.then(|| client_config(loss)),
            via: None,
            next_local: 0,
            oneway: !echo,
            payload: vec![0x42u8; size],
            dur,
            resend: resend_after(sessions),
            total: sessions,
            to_start: sessions,
            starting: 0,
            ids: Vec::new(),
            sessions: HashMap::new(),
            warm: 0,
            next: 0,
            blocked: Default::default(),
            start: None,
            end: None,
            sent: 0,
            received: 0,
            failed: 0,
        };
        let mut r = Reactor::with_limits(load, limits).expect("reactor");
        if shared {
            let s = dtls_demux::SharedSocket::bind("0.0.0.0:0".parse().unwrap()).expect("bind");
            let via = r.add_client_socket(s).expect("client socket");
            r.handler_mut().via = Some(via);
        }
        r.set_timer(Duration::ZERO, START);
        if echo {
            r.set_timer(resend_after(sessions), CHECK);
        }
        r.set_timer(Duration::from_secs(120), GIVE_UP);
        if let Err(e) = r.run() {
            eprintln!("client reactor: {e}");
        }
        (r.into_handler(), where_)
    });
    let (load, where_c) = client.join().expect("client thread");
    if !echo {
        // Let the server drain what is queued.
        thread::sleep(Duration::from_millis(200));
    }
    let _ = handle.stop();
    let (sink, where_s) = server.join().expect("server thread");
    let via_relay = path.finish(relay);
    if load.failed > 0 {
        eprintln!("reactor run: {} session(s) failed", load.failed);
    }
    log::debug!(
        "reactor run: server echoes deferred to on_writable: {}",
        sink.blocked_count
    );
    let run = if echo {
        let elapsed = match (load.start, load.end) {
            (Some(s), Some(e)) => (e - s).as_secs_f64(),
            _ => 0.0,
        };
        Run {
            sent: load.sent,
            received: load.received,
            elapsed: elapsed.max(1e-9),
        }
    } else {
        let elapsed = match (sink.first, sink.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => 0.0,
        };
        Run {
            sent: load.sent,
            received: sink.received,
            elapsed: elapsed.max(dur.as_secs_f64() * 0.5),
        }
    };
    (
        run,
        format!(
            "client reactor {where_c}, server reactor {where_s}{via_relay}{}",
            if load.start.is_none() {
                " (setup incomplete)"
            } else {
                ""
            }
        ),
    )
}

/// The tokio suites (`examples/perf_suites/tokio.rs`).
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
    let (m, placed) = perf_tokio::run(
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
                perf_webrtc::run(mode == Mode::Echo, size, sessions, dur, pinning, cpus());
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

struct Row {
    suite: Suite,
    mode: Mode,
    size: usize,
    sessions: usize,
    /// Loss rate of the fault relay (0: no relay).
    loss: f64,
    runs: Vec<Run>,
    /// The relay's counters of each run (empty at loss 0).
    relay: Vec<RelayStats>,
    placement: String,
}

/// Adds `run` to the row of its configuration (`key`'s), or `key` as a new row.
fn add_run(rows: &mut Vec<Row>, key: Row, run: Run, relay: Vec<RelayStats>) {
    let row = match rows.iter().position(|r| {
        r.suite == key.suite
            && r.mode == key.mode
            && r.size == key.size
            && r.sessions == key.sessions
            && r.loss.to_bits() == key.loss.to_bits()
    }) {
        Some(i) => &mut rows[i],
        None => {
            rows.push(key);
            rows.last_mut().expect("just pushed")
        }
    };
    row.runs.push(run);
    row.relay.extend(relay);
}

impl Row {
    /// A configuration without runs yet.
    fn new(
        suite: Suite,
        mode: Mode,
        size: usize,
        sessions: usize,
        loss: f64,
        placement: String,
    ) -> Row {
        Row {
            suite,
            mode,
            size,
            sessions,
            loss,
            runs: Vec::new(),
            relay: Vec::new(),
            placement,
        }
    }

    fn median(&self) -> f64 {
        let mut r: Vec<f64> = self.runs.iter().map(Run::rate).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        r[r.len() / 2]
    }
    fn min_max(&self) -> (f64, f64) {
        let r = self.runs.iter().map(Run::rate);
        let min = r.clone().fold(f64::INFINITY, f64::min);
        let max = r.fold(0.0, f64::max);
        (min, max)
    }
}

/// Rows (runs grouped by configuration) from a CSV written by `--csv`.
fn rows_from_csv(path: &PathBuf) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut rows: Vec<Row> = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 10 {
            return Err(format!("{}: short line {line:?}", path.display()).into());
        }
        let suite = Suite::from_str(f[0], true)?;
        let mode = Mode::from_str(f[1], true)?;
        let size: usize = f[2].parse()?;
        let sessions: usize = f[3].parse()?;
        let run = Run {
            sent: f[5].parse()?,
            received: f[6].parse()?,
            elapsed: f[7].parse()?,
        };
        let loss: f64 = f[9].trim_end_matches('%').parse()?;
        let key = Row::new(suite, mode, size, sessions, loss, String::new());
        add_run(&mut rows, key, run, Vec::new());
    }
    Ok(rows)
}

fn chart(path: &PathBuf, rows: &[Row], modes: &[Mode]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 420 * modes.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((modes.len(), 1));
    for (panel, mode) in panels.iter().zip(modes) {
        let sel: Vec<&Row> = rows.iter().filter(|r| r.mode == *mode).collect();
        let labels: Vec<String> = sel
            .iter()
            .map(|r| {
                let label = if r.suite.is_reactor() {
                    format!("{} {}B x{}", r.suite.name(), r.size, r.sessions)
                } else {
                    format!("{} {}B", r.suite.name(), r.size)
                };
                if r.loss > 0.0 {
                    format!("{label} @{}", common::loss_label(r.loss))
                } else {
                    label
                }
            })
            .collect();
        // Log scale: batched one-way rates are tens of times the others.
        let max = sel.iter().map(|r| r.min_max().1).fold(1.0, f64::max) / 1000.0;
        let min = 1.0;
        let mut c = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{}: thousand records per second (median, min-max; log scale)",
                    mode.name()
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0..sel.len(), (min..max * 1.5).log_scale())?;
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(sel.len())
            .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
            .y_desc("k/s")
            .draw()?;
        c.draw_series(sel.iter().enumerate().map(|(i, r)| {
            let color = match r.suite {
                Suite::Udp => BLUE,
                Suite::UdpBatch => RGBColor(0, 120, 200),
                Suite::Dtls => RED,
                Suite::Tcp => GREEN,
                Suite::Tls => MAGENTA,
                Suite::ReactorUdp => CYAN,
                Suite::ReactorOsnet => RGBColor(200, 100, 0),
                Suite::ReactorRouter => RGBColor(120, 60, 160),
                Suite::ReactorSharedUdp => RGBColor(0, 160, 160),
                Suite::ReactorShared => RGBColor(160, 120, 0),
                Suite::TokioUdp => RGBColor(90, 90, 90),
                Suite::Tokio => RGBColor(0, 0, 0),
                Suite::WebrtcDtls => RGBColor(220, 120, 160),
            };
            Rectangle::new(
                [(i, min), (i + 1, (r.median() / 1000.0).max(min))],
                color.mix(0.6).filled(),
            )
        }))?;
        c.draw_series(sel.iter().enumerate().map(|(i, r)| {
            let (lo, hi) = r.min_max();
            PathElement::new(
                vec![(i, (lo / 1000.0).max(min)), (i, (hi / 1000.0).max(min))],
                BLACK.stroke_width(3),
            )
        }))?;
    }
    root.present()?;
    Ok(())
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
        perf_webrtc::missing()
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
            "loss: fault relay (tests/common/relay.rs) dropping each datagram with the row's \
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

    println!(
        "\n| suite | mode | size | sessions | loss | median records/s | min-max | goodput MB/s | sent | received | lost | ratio to raw | placement |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let (min, max) = r.min_max();
        let sent: u64 = r.runs.iter().map(|x| x.sent).sum();
        let received: u64 = r.runs.iter().map(|x| x.received).sum();
        let base = rows.iter().find(|b| {
            b.suite == r.suite.baseline()
                && b.mode == r.mode
                && b.size == r.size
                && b.sessions == r.sessions
                && b.loss.to_bits() == r.loss.to_bits()
        });
        let ratio = match base {
            Some(b) if b.suite != r.suite && r.loss > 0.0 => format!(
                "{:.2}x {} at {}",
                r.median() / b.median(),
                b.suite.name(),
                common::loss_label(r.loss)
            ),
            Some(b) if b.suite != r.suite => {
                format!("{:.2}x {}", r.median() / b.median(), b.suite.name())
            }
            _ => "-".into(),
        };
        // One-way reactor rows also against blocking UDP and batched UDP (one
        // session, same size and loss), the issue's yardsticks for one-way.
        let mut ratio = ratio;
        if r.suite.is_reactor() && r.mode == Mode::Oneway {
            for other in [Suite::Udp, Suite::UdpBatch] {
                if let Some(b) = rows.iter().find(|b| {
                    b.suite == other
                        && b.mode == r.mode
                        && b.size == r.size
                        && b.loss.to_bits() == r.loss.to_bits()
                }) {
                    let x = format!("{:.2}x {}", r.median() / b.median(), other.name());
                    ratio = if ratio == "-" {
                        x
                    } else {
                        format!("{ratio}; {x}")
                    };
                }
            }
        }
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.0}-{:.0} | {:.1} | {} | {} | {} | {} | {} |",
            r.suite.name(),
            r.mode.name(),
            r.size,
            r.sessions,
            common::loss_label(r.loss),
            r.median(),
            min,
            max,
            r.median() * r.size as f64 / 1e6,
            sent,
            received,
            sent.saturating_sub(received),
            ratio,
            r.placement
        );
    }
    // What the relays dropped on purpose; the rest of `lost` was lost in
    // socket buffers (or, in echo, is a resend after a timeout).
    for r in rows.iter().filter(|r| !r.relay.is_empty()) {
        let sum = |f: fn(&RelayStats) -> u64| r.relay.iter().map(f).sum::<u64>();
        let (up_in, up_drop) = (sum(|s| s.to_server.received), sum(|s| s.to_server.dropped));
        let (down_in, down_drop) = (sum(|s| s.to_client.received), sum(|s| s.to_client.dropped));
        let pct = |d: u64, n: u64| 100.0 * d as f64 / n.max(1) as f64;
        println!(
            "relay, {} {} {} B x{} at {}: to server {} in, {} dropped ({:.2}%); to client {} in, {} dropped ({:.2}%); send errors {}; refused {}",
            r.suite.name(),
            r.mode.name(),
            r.size,
            r.sessions,
            common::loss_label(r.loss),
            up_in,
            up_drop,
            pct(up_drop, up_in),
            down_in,
            down_drop,
            pct(down_drop, down_in),
            sum(|s| s.to_server.send_errors + s.to_client.send_errors),
            sum(|s| s.refused_clients),
        );
    }
    if rows.iter().any(|r| !r.relay.is_empty()) {
        println!(
            "note: at loss > 0, one-way rates are bounded by the relay thread (what it did not \
             read, `sent` minus its `in`, was lost in its socket buffer) and echo rates by the \
             resend timeout (50 ms or more per lost datagram); compare rows of the same loss only"
        );
    }
    if let Some(path) = &args.csv {
        let mut f = std::fs::File::create(path)?;
        writeln!(
            f,
            "suite,mode,size,sessions,run,sent,received,seconds,records_per_s,loss,relay_dropped"
        )?;
        for r in &rows {
            for (i, x) in r.runs.iter().enumerate() {
                let dropped = r
                    .relay
                    .get(i)
                    .map_or(0, |s| s.to_server.dropped + s.to_client.dropped);
                writeln!(
                    f,
                    "{},{},{},{},{},{},{},{:.4},{:.1},{},{}",
                    r.suite.name(),
                    r.mode.name(),
                    r.size,
                    r.sessions,
                    i + 1,
                    x.sent,
                    x.received,
                    x.elapsed,
                    x.rate(),
                    r.loss,
                    dropped
                )?;
            }
        }
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        chart(path, &rows, &args.modes)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
