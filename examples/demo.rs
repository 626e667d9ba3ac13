//! The main job in one command: a DTLS echo server and a client talking to it
//! over loopback, with the embedded test certificate.
//!
//! `cargo run --release --example demo [-- --demux router --count 10]`

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use dtls_demux::DemuxKind;
use dtls_reactor::{ClientConfig, DtlsListener, DtlsSocket, Error, ServerConfig};

#[derive(Parser)]
#[command(about = "A DTLS echo server and client on loopback, in one process")]
struct Args {
    /// How the server routes each peer's datagrams.
    #[arg(long, default_value = "osnet")]
    demux: DemuxKind,
    /// Address to serve on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Echoes the client asks for.
    #[arg(long, default_value_t = 5)]
    count: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_log();
    let args = Args::parse();
    let server_cfg = ServerConfig::builder()
        .certificate_chain_pem(common::TEST_CERT)
        .private_key_pem(common::TEST_KEY)
        .build()?;
    let client_cfg = ClientConfig::builder()
        .ca_pem(common::TEST_CA)
        .server_name("localhost")
        .build()?;

    // The server: an accept loop (with Router it also forwards every
    // datagram to its connection) and a thread per connection.
    let listener = DtlsListener::bind(args.bind, &server_cfg, args.demux)?;
    listener.set_read_timeout(Some(Duration::from_millis(100)))?;
    let addr = listener.local_addr()?;
    println!("server: listening on {addr} ({} demux)", args.demux);
    std::thread::spawn(move || loop {
        match listener.accept() {
            Ok(Some((mut conn, peer))) => {
                println!("server: new peer {peer}");
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 2048];
                    loop {
                        match conn.recv(&mut buf) {
                            Ok(n) => {
                                if let Err(e) = conn.send(&buf[..n]) {
                                    println!("server: send to {peer} failed: {e}");
                                    return;
                                }
                            }
                            Err(Error::ClosedByPeer) => {
                                println!("server: {peer} closed (close_notify)");
                                return;
                            }
                            Err(e) => {
                                println!("server: {peer}: {e}");
                                return;
                            }
                        }
                    }
                });
            }
            Ok(None) | Err(Error::ReadTimeout) => {}
            Err(e) => {
                println!("server: accept failed: {e}");
                return;
            }
        }
    });

    // The client.
    let start = Instant::now();
    let mut client = DtlsSocket::connect_timeout(addr, &client_cfg, Duration::from_secs(5))?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    println!(
        "client: connected in {:.1} ms: {} {}",
        start.elapsed().as_secs_f64() * 1e3,
        client.version().unwrap_or("?"),
        client.cipher().unwrap_or_default()
    );
    if let Some(cert) = client.peer_certificate() {
        println!(
            "client: server certificate {:?}, {:?}",
            cert.common_name().unwrap_or_default(),
            cert.subject_alt_names()
        );
    }
    let mut buf = vec![0u8; 2048];
    for i in 0..args.count {
        let msg = format!("hello #{i} over DTLS");
        client.send(msg.as_bytes())?;
        let n = client.recv(&mut buf)?;
        println!("client: echoed {:?}", String::from_utf8_lossy(&buf[..n]));
        if buf[..n] != *msg.as_bytes() {
            return Err("the echo differs".into());
        }
    }
    client.shutdown()?;
    println!("client: closed (close_notify exchanged)");
    // Let the server thread print its line.
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}
