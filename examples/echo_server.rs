//! A threaded DTLS echo server: an accept loop on the main thread and one
//! thread per connection. Serves until killed, or until `--max-clients`
//! connections have ended.
//!
//! ```text
//! cargo run --example echo_server -- --port 28000 --demux router
//! cargo run --example echo_server -- --psk device-1:30313233343536373839616263646566 --ciphers PSK-AES128-CCM8
//! ```
//!
//! A refused handshake is logged with OpenSSL's reason (see
//! `common::init_server_log`; `RUST_LOG` overrides the default filter).

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dtls_reactor::{DtlsListener, DtlsSocket, Error};

/// Echo every datagram of every DTLS client, one thread per client.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: common::ServerOpts,
    /// Exit after this many connections have ended (for scripts).
    #[arg(long)]
    max_clients: Option<u64>,
    /// Close a connection whose client sends nothing for this many seconds.
    #[arg(long, default_value_t = 60)]
    idle: u64,
}

fn serve(mut conn: DtlsSocket, idle: Duration) -> dtls_reactor::Result<u64> {
    conn.set_read_timeout(Some(idle))?;
    conn.set_write_timeout(Some(idle))?;
    let mut buf = vec![0u8; 65536];
    let mut n = 0;
    loop {
        match conn.recv(&mut buf) {
            Ok(len) => {
                conn.send(&buf[..len])?;
                n += 1;
            }
            Err(Error::ClosedByPeer) => return Ok(n),
            Err(Error::ReadTimeout) => {
                let _ = conn.shutdown();
                return Ok(n);
            }
            Err(e) => return Err(e),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_server_log();
    let args = Args::parse();
    let cfg = args.server.config()?;
    let addr = SocketAddr::new(args.server.bind, args.server.port);
    let listener = DtlsListener::bind(addr, &cfg, args.server.demux.socket_kind()?)?;
    // Wake up now and then to check --max-clients.
    listener.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!(
        "echo_server: listening on {} ({})",
        listener.local_addr()?,
        args.server.demux
    );
    let ended = Arc::new(AtomicU64::new(0));
    let idle = Duration::from_secs(args.idle.max(1));
    let mut started = 0u64;
    loop {
        if let Some(max) = args.max_clients {
            if ended.load(Ordering::Relaxed) >= max {
                break;
            }
        }
        // This loop also forwards datagrams to connections (Router).
        match listener.accept() {
            Ok(Some((conn, peer))) => {
                started += 1;
                let ended = ended.clone();
                std::thread::spawn(move || {
                    match serve(conn, idle) {
                        Ok(n) => println!("{peer}: echoed {n} datagrams, closed"),
                        Err(e) => println!("{peer}: {e}"),
                    }
                    ended.fetch_add(1, Ordering::Relaxed);
                });
            }
            Ok(None) | Err(Error::ReadTimeout) => {}
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    let st = listener.stats();
    println!(
        "served {started} connections; cookie exchanges {}, refused {}, dropped {}",
        st.admission.hello_verify, st.admission.refused, st.admission.dropped
    );
    Ok(())
}
