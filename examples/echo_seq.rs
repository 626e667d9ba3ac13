//! The seed's sequence with the socket API: listen, accept one client, echo
//! every datagram unchanged until the client closes, shut down.
//!
//! ```text
//! cargo run --example echo_seq                      # 127.0.0.1:28000, embedded test cert
//! cargo run --example echo_client -- 127.0.0.1 28000
//! openssl s_client -dtls1_2 -connect 127.0.0.1:28000
//! ```

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dtls_reactor::{DtlsListener, Error};

/// Echo one DTLS client: listen, accept, echo until close_notify, shut down.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: common::ServerOpts,
    /// Give up when the client sends nothing for this many seconds (0: wait forever).
    #[arg(long, default_value_t = 0)]
    idle: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_log();
    let args = Args::parse();
    let cfg = args.server.config()?;
    let addr = SocketAddr::new(args.server.bind, args.server.port);
    let listener = Arc::new(DtlsListener::bind(
        addr,
        &cfg,
        args.server.demux.socket_kind()?,
    )?);
    println!(
        "echo_seq: listening on {} ({}, DTLS {:?})",
        listener.local_addr()?,
        args.server.demux,
        args.server.dtls
    );

    // accept() answers cookie exchanges with None; wait for the connection.
    let (mut conn, peer) = loop {
        if let Some(c) = listener.accept()? {
            break c;
        }
    };
    println!("accepted {peer}");

    // Someone must keep reading the listener: with Router it forwards this
    // client's datagrams; it also turns away further clients.
    let stop = Arc::new(AtomicBool::new(false));
    listener.set_read_timeout(Some(Duration::from_millis(100)))?;
    let pump = {
        let (l, stop) = (listener.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(Some((mut other, p))) => {
                        // Finish its handshake and close it, off this thread
                        // so forwarding does not pause.
                        println!("busy: closing the connection of {p}");
                        std::thread::spawn(move || {
                            other.set_read_timeout(Some(Duration::from_secs(1))).ok();
                            let _ = other.handshake().and_then(|_| other.shutdown());
                        });
                    }
                    Ok(None) | Err(Error::ReadTimeout) => {}
                    Err(e) => eprintln!("accept: {e}"),
                }
            }
        })
    };

    if args.idle > 0 {
        conn.set_read_timeout(Some(Duration::from_secs(args.idle)))?;
    }
    conn.handshake()?;
    println!(
        "handshake done: {} {}",
        conn.version().unwrap_or("?"),
        conn.cipher().unwrap_or_default()
    );
    let mut buf = vec![0u8; 65536];
    let (mut datagrams, mut bytes) = (0u64, 0u64);
    let result = loop {
        match conn.recv(&mut buf) {
            Ok(n) => {
                conn.send(&buf[..n])?;
                datagrams += 1;
                bytes += n as u64;
            }
            Err(Error::ClosedByPeer) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    match &result {
        Ok(()) => println!("{peer} closed the connection (close_notify)"),
        Err(e) => println!("connection ended: {e}"),
    }
    // The close_notify exchange (done already when the peer closed first).
    if let Err(e) = conn.shutdown() {
        println!("shutdown: {e}");
    }
    println!("echoed {datagrams} datagrams, {bytes} bytes");
    stop.store(true, Ordering::Relaxed);
    let _ = pump.join();
    result.map_err(Into::into)
}
