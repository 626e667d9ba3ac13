//! The engine on its own: a client and a server session in one process,
//! passing datagrams through memory (no sockets), then echoing a message.
//!
//! `cargo run --example demo`

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;

use dtls_reactor::{ClientConfig, Connection, CookieStage, ServerConfig, Verdict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server_cfg = ServerConfig::builder()
        .certificate_chain_pem(common::TEST_CERT)
        .private_key_pem(common::TEST_KEY)
        .build()?;
    let client_cfg = ClientConfig::builder()
        .ca_pem(common::TEST_CA)
        .server_name("localhost")
        .build()?;
    let peer: SocketAddr = "127.0.0.1:50000".parse()?;
    let mut stage = CookieStage::new(&server_cfg)?;
    let mut client = Connection::client(&client_cfg, None)?;
    let mut server: Option<Box<Connection>> = None;

    let mut datagrams = 0;
    while !client.is_established() || !server.as_ref().is_some_and(|s| s.is_established()) {
        while let Some(d) = client.poll_transmit() {
            datagrams += 1;
            match server.as_mut() {
                Some(s) => s.feed(&d)?,
                None => match stage.handle(peer, &d) {
                    Verdict::HelloVerify(hvr) => {
                        datagrams += 1;
                        client.feed(&hvr)?
                    }
                    Verdict::Accept(conn) => server = Some(conn),
                    other => return Err(format!("server said {other:?}").into()),
                },
            }
        }
        if let Some(s) = server.as_mut() {
            while let Some(d) = s.poll_transmit() {
                datagrams += 1;
                client.feed(&d)?;
            }
        }
        if client.is_closed() {
            return Err(format!("handshake failed: {:?}", client.error()).into());
        }
    }
    let server = server.as_mut().expect("established");
    println!("handshake done in {datagrams} datagrams");
    println!("version: {}", client.version());
    println!("cipher:  {}", client.cipher().unwrap_or_default());
    if let Some(cert) = client.peer_certificate() {
        println!(
            "server:  {:?} {:?}",
            cert.common_name(),
            cert.subject_alt_names()
        );
    }

    let mut buf = vec![0u8; 2048];
    client.send(b"hello, DTLS")?;
    while let Some(d) = client.poll_transmit() {
        server.feed(&d)?;
    }
    let n = server.recv(&mut buf)?.ok_or("nothing arrived")?;
    server.send(&buf[..n])?; // echo
    while let Some(d) = server.poll_transmit() {
        client.feed(&d)?;
    }
    let n = client.recv(&mut buf)?.ok_or("no echo")?;
    println!("echoed:  {}", String::from_utf8_lossy(&buf[..n]));
    Ok(())
}
