//! A DTLS echo server and client on tokio (`dtls_reactor::tokio`, feature
//! `tokio`): the server accepts each handshaken peer into a task of its own;
//! the client runs `--clients` concurrent sessions, each `--count` round
//! trips, and checks every echo.
//!
//! ```text
//! cargo run --release --features tokio --example tokio_echo -- server --port 28000
//! cargo run --release --features tokio --example tokio_echo -- client 127.0.0.1 28000 --clients 64 --count 100
//! ```

#[path = "common/mod.rs"]
mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use dtls_reactor::tokio::{DtlsListener, DtlsStream};

#[derive(Parser, Debug)]
#[command(about = "DTLS echo server and client on tokio")]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Echo every record back.
    Server {
        #[command(flatten)]
        server: common::ServerOpts,
    },
    /// Concurrent echo sessions.
    Client {
        /// Server host name or address.
        host: String,
        /// Server port.
        port: u16,
        #[command(flatten)]
        client: common::ClientOpts,
        /// Concurrent sessions (one task each).
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Round trips per session.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Bytes per datagram.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
}

async fn server(opts: common::ServerOpts) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = opts.config()?;
    let listener = DtlsListener::bind(SocketAddr::new(opts.bind, opts.port), &cfg).await?;
    eprintln!("DTLS echo (tokio) on {}", listener.local_addr());
    loop {
        let (stream, peer) = listener.accept().await?;
        log::info!("{peer} connected ({})", stream.cipher().unwrap_or_default());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                match stream.recv(&mut buf).await {
                    Ok(n) => {
                        if let Err(e) = stream.send(&buf[..n]).await {
                            log::info!("{peer}: {e}");
                            return;
                        }
                    }
                    Err(e) => {
                        log::info!("{peer}: {e}");
                        return;
                    }
                }
            }
        });
    }
}

async fn client(
    addr: SocketAddr,
    cfg: dtls_reactor::ClientConfig,
    clients: usize,
    count: u64,
    size: usize,
) -> bool {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let s = DtlsStream::connect(addr, &cfg).await?;
            let payload = vec![(i % 251) as u8; size];
            let mut buf = vec![0u8; 2048];
            for _ in 0..count {
                s.send(&payload).await?;
                // An echo lost on the way is not retransmitted by DTLS.
                let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
                    .await
                    .map_err(|_| dtls_reactor::Error::ReadTimeout)??;
                if buf[..n] != payload[..] {
                    return Err(dtls_reactor::Error::Io(std::io::Error::other("wrong echo")));
                }
            }
            s.shutdown().await?;
            Ok::<u64, dtls_reactor::Error>(count)
        }));
    }
    let (mut ok, mut failed, mut trips) = (0, 0, 0);
    for t in tasks {
        match t.await {
            Ok(Ok(n)) => {
                ok += 1;
                trips += n;
            }
            Ok(Err(e)) => {
                eprintln!("session failed: {e}");
                failed += 1;
            }
            Err(e) => {
                eprintln!("task: {e}");
                failed += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{ok} sessions ok, {failed} failed; {trips} round trips in {secs:.2} s ({:.0}/s, handshakes included)",
        trips as f64 / secs
    );
    failed == 0
}

#[tokio::main]
async fn main() -> ExitCode {
    common::init_log();
    match Args::parse().role {
        Role::Server { server: opts } => {
            if let Err(e) = server(opts).await {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Role::Client {
            host,
            port,
            client: opts,
            clients,
            count,
            size,
        } => {
            let cfg = match opts.config(&host) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let Some(addr) = (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
            else {
                eprintln!("cannot resolve {host}");
                return ExitCode::FAILURE;
            };
            if client(addr, cfg, clients.max(1), count, size).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
