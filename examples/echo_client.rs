//! A DTLS echo client: sends datagrams, checks each echo, prints a summary.
//! Exits non-zero when anything failed.
//!
//! ```text
//! cargo run --example echo_client -- 127.0.0.1 28000 --count 100 --size 512
//! cargo run --example echo_client -- localhost 28000 --ca my-ca.pem
//! cargo run --example echo_client -- 127.0.0.1 28000 --psk device-1:30313233343536373839616263646566 --ciphers PSK-AES128-CCM8
//! ```

#[path = "common/mod.rs"]
mod common;

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dtls_reactor::{DtlsSocket, Error};

/// Send COUNT datagrams of SIZE bytes to a DTLS echo server and check the echoes.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Server host name or address (also the name its certificate is checked against).
    host: String,
    /// Server UDP port.
    port: u16,
    /// Datagrams to send.
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// Bytes per datagram (at most the data MTU, about 1350 with the default MTU).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds to wait for the handshake and for each echo. Without it the
    /// handshake ends when the DTLS engine says so (its retransmission limit
    /// or the configuration's 60 s handshake deadline), and each echo waits
    /// 5 s.
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    client: common::ClientOpts,
}

/// How long an echo waits for its reply without `--timeout`.
const ECHO_WAIT: Duration = Duration::from_secs(5);

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let cfg = args.client.config(&args.host)?;
    let timeout = args.timeout.map(|t| Duration::from_secs(t.max(1)));
    // An echo is one datagram each way: DTLS does not retransmit it, so a
    // reply lost on the way is given up after this long.
    let echo_wait = timeout.unwrap_or(ECHO_WAIT);
    let addrs: Vec<_> = (args.host.as_str(), args.port).to_socket_addrs()?.collect();
    let start = Instant::now();
    let mut last = None;
    let mut sock = None;
    for a in addrs {
        let connected = match timeout {
            Some(t) => DtlsSocket::connect_timeout(a, &cfg, t),
            None => DtlsSocket::connect(a, &cfg),
        };
        match connected {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = Some(format!("{a}: {e}")),
        }
    }
    let Some(mut s) = sock else {
        return Err(last.unwrap_or_else(|| "no address".into()).into());
    };
    let handshake = start.elapsed();
    s.set_read_timeout(Some(echo_wait))?;
    s.set_write_timeout(Some(echo_wait))?;
    println!(
        "connected to {} from {} in {:.1} ms: {} {}",
        s.peer_addr()?,
        s.local_addr()?,
        handshake.as_secs_f64() * 1e3,
        s.version().unwrap_or("?"),
        s.cipher().unwrap_or_default()
    );
    if let Some(cert) = s.peer_certificate() {
        println!("server certificate: {:?}", cert.subject());
    }
    if args.size > s.data_mtu() {
        return Err(format!("--size {} exceeds the data MTU {}", args.size, s.data_mtu()).into());
    }
    let mut buf = vec![0u8; 65536];
    let (mut ok, mut bad, mut lost) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for i in 0..args.count {
        let msg: Vec<u8> = (0..args.size).map(|j| (i as usize + j) as u8).collect();
        s.send(&msg)?;
        match s.recv(&mut buf) {
            Ok(n) if buf[..n] == msg[..] => ok += 1,
            Ok(_) => bad += 1,
            Err(Error::ReadTimeout) => lost += 1,
            Err(e) => return Err(e.into()),
        }
    }
    let elapsed = t0.elapsed();
    let closed = s.shutdown();
    println!(
        "{ok}/{} echoes ok, {bad} wrong, {lost} lost; {} bytes each way in {:.1} ms ({:.0} round trips/s)",
        args.count,
        ok * args.size as u64,
        elapsed.as_secs_f64() * 1e3,
        ok as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    match closed {
        Ok(()) => println!("closed (close_notify exchanged)"),
        Err(e) => println!("close: {e}"),
    }
    Ok(ok == args.count)
}

fn main() -> ExitCode {
    common::init_log();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::from(2)
        }
    }
}
