//! Resident memory per idle established server session.
//!
//! Establishes N sessions in memory (client and server in this process),
//! drops the clients, returns freed heap to the OS (`malloc_trim`), and reports
//! the resident-set growth per remaining server session.
//!
//! `cargo run --release --example memory -- --sessions 10000`

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;

use clap::Parser;
use dtls_reactor::{ClientConfig, Connection, CookieStage, ServerConfig, Verdict};

#[derive(Parser)]
#[command(about = "Resident bytes per idle established DTLS server session")]
struct Args {
    /// Sessions to establish.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Bytes of heap in use (glibc's `mallinfo2().uordblks`).
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
    unsafe { libc::mallinfo2().uordblks as u64 }
}

fn trim() {
    // SAFETY: glibc's malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let s = ServerConfig::builder()
        .certificate_chain_pem(common::TEST_CERT)
        .private_key_pem(common::TEST_KEY)
        .build()?;
    let c = ClientConfig::builder()
        .ca_pem(common::TEST_CA)
        .server_name("localhost")
        .build()?;
    let mut stage = CookieStage::new(&s)?;
    // Warm up allocator and OpenSSL's lazy state with one session.
    drop(pair(&mut stage, &c, 0));
    trim();
    let before = rss_bytes();
    let heap_before = heap_in_use();
    let mut servers = Vec::with_capacity(args.sessions);
    let mut clients = Vec::with_capacity(args.sessions);
    let start = std::time::Instant::now();
    for i in 0..args.sessions {
        let (cl, sv) = pair(&mut stage, &c, i);
        clients.push(cl);
        servers.push(sv);
    }
    let took = start.elapsed();
    let with_both = rss_bytes();
    drop(clients);
    trim();
    let after = rss_bytes();
    let heap_after = heap_in_use();
    let per = (after.saturating_sub(before)) as f64 / args.sessions as f64;
    println!(
        "sessions: {} (handshakes took {:.1} s)",
        args.sessions,
        took.as_secs_f64()
    );
    println!(
        "rss before: {:.1} MiB, with clients and servers: {:.1} MiB, servers only: {:.1} MiB",
        before as f64 / 1048576.0,
        with_both as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!("resident bytes per idle server session: {:.0} ({:.1} KiB; includes heap fragmentation left by the freed clients)", per, per / 1024.0);
    let heap_per = heap_after.saturating_sub(heap_before) as f64 / args.sessions as f64;
    println!(
        "heap bytes in use per idle server session: {:.0} ({:.1} KiB)",
        heap_per,
        heap_per / 1024.0
    );
    assert!(servers.iter().all(|s| s.is_established()));
    Ok(())
}

fn pair(stage: &mut CookieStage, c: &ClientConfig, i: usize) -> (Connection, Connection) {
    let peer = SocketAddr::from(([127, 0, (i >> 8) as u8, i as u8], 1024 + (i % 60000) as u16));
    let mut client = Connection::client(c, None).expect("client");
    let mut server: Option<Box<Connection>> = None;
    for _ in 0..16 {
        while let Some(d) = client.poll_transmit() {
            match server.as_mut() {
                Some(s) => s.feed(&d).expect("feed"),
                None => match stage.handle(peer, &d) {
                    Verdict::HelloVerify(h) => client.feed(&h).expect("hvr"),
                    Verdict::Accept(s) => server = Some(s),
                    other => panic!("{other:?}"),
                },
            }
        }
        if let Some(s) = server.as_mut() {
            while let Some(d) = s.poll_transmit() {
                client.feed(&d).expect("feed");
            }
            if s.is_established() && client.is_established() {
                break;
            }
        }
    }
    let mut server = *server.expect("server");
    // The server sees the client's Finished through a read.
    let mut buf = [0u8; 64];
    let _ = server.recv(&mut buf);
    if std::env::var_os("NO_SHRINK").is_none() {
        server.shrink();
    }
    (client, server)
}
