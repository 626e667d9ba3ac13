//! A single-threaded DTLS echo server in the select-loop style: the
//! listener and every connection are non-blocking and polled together with
//! the `polling` crate; `accept()` may return `None` (a datagram handled, read on) or `WouldBlock` (nothing left); each connection's DTLS
//! deadline is tracked and acted on with `handle_timeout()`.
//!
//! ```text
//! cargo run --example select_loop -- --port 28000
//! ```

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use dtls_reactor::{DtlsListener, DtlsSocket, Error};
use polling::{Event, Events, Poller};

/// Echo every datagram of every DTLS client from one thread.
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

const LISTENER: usize = 0;
/// Datagrams read from the listener per turn, so connections get their turn too.
const ACCEPT_BUDGET: usize = 64;

struct Conn {
    sock: DtlsSocket,
    peer: SocketAddr,
    last: Instant,
    echoed: u64,
}

/// Reads and echoes everything ready on one connection. `Some(reason)` when it ended.
fn service(c: &mut Conn, buf: &mut [u8]) -> Option<String> {
    loop {
        match c.sock.recv(buf) {
            Ok(n) => {
                c.last = Instant::now();
                if let Err(e) = c.sock.send(&buf[..n]) {
                    return Some(format!("send: {e}"));
                }
                c.echoed += 1;
            }
            Err(Error::WouldBlock) => return None,
            Err(Error::ClosedByPeer) => return Some("closed by peer".into()),
            Err(e) => return Some(e.to_string()),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_log();
    let args = Args::parse();
    let cfg = args.server.config()?;
    let addr = SocketAddr::new(args.server.bind, args.server.port);
    let listener = DtlsListener::bind(addr, &cfg, args.server.demux.socket_kind()?)?;
    listener.set_nonblocking(true)?;
    println!(
        "select_loop: listening on {} ({})",
        listener.local_addr()?,
        args.server.demux
    );
    let idle = Duration::from_secs(args.idle.max(1));
    let poller = Poller::new()?;
    // SAFETY: the listener outlives the poller; it is deleted before drop.
    unsafe { poller.add(&listener, Event::readable(LISTENER))? };
    let mut conns: HashMap<usize, Conn> = HashMap::new();
    let mut next_key = LISTENER + 1;
    let mut ended = 0u64;
    let mut events = Events::new();
    let mut buf = vec![0u8; 65536];
    while args.max_clients.is_none_or(|m| ended < m) {
        // Sleep until a descriptor is ready, the earliest DTLS deadline, or
        // the earliest idle deadline; not at all when memory queues hold data.
        let now = Instant::now();
        let mut wait = Duration::from_secs(1);
        for c in conns.values() {
            if let Some(t) = c.sock.next_timeout() {
                wait = wait.min(t);
            }
            wait = wait.min((c.last + idle).saturating_duration_since(now));
            if c.sock.has_pending() {
                wait = Duration::ZERO;
            }
        }
        if listener.has_pending() {
            wait = Duration::ZERO;
        }
        events.clear();
        poller.wait(&mut events, Some(wait))?;
        let mut ready: Vec<usize> = events.iter().map(|e| e.key).collect();
        if listener.has_pending() {
            ready.push(LISTENER);
        }
        ready.extend(
            conns
                .iter()
                .filter(|(_, c)| c.sock.has_pending())
                .map(|(k, _)| *k),
        );
        ready.sort_unstable();
        ready.dedup();
        let mut finished: Vec<(usize, String)> = Vec::new();
        for key in ready {
            if key == LISTENER {
                for _ in 0..ACCEPT_BUDGET {
                    match listener.accept() {
                        Ok(Some((mut sock, peer))) => {
                            sock.set_nonblocking(true)?;
                            let k = next_key;
                            next_key += 1;
                            // SAFETY: deleted from the poller before the socket drops.
                            unsafe { poller.add(&sock, Event::readable(k))? };
                            println!("accepted {peer}");
                            conns.insert(
                                k,
                                Conn {
                                    sock,
                                    peer,
                                    last: Instant::now(),
                                    echoed: 0,
                                },
                            );
                            // Its first datagrams may already be queued.
                            if let Some(c) = conns.get_mut(&k) {
                                if let Some(why) = service(c, &mut buf) {
                                    finished.push((k, why));
                                }
                            }
                        }
                        // A cookie exchange or a datagram routed to a
                        // connection: read on.
                        Ok(None) => {}
                        // Nothing left: poll again.
                        Err(dtls_reactor::Error::WouldBlock) => break,
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                }
                poller.modify(&listener, Event::readable(LISTENER))?;
            } else if let Some(c) = conns.get_mut(&key) {
                match service(c, &mut buf) {
                    Some(why) => finished.push((key, why)),
                    None => poller.modify(&c.sock, Event::readable(key))?,
                }
            }
        }
        // DTLS timers and idle connections.
        let now = Instant::now();
        for (k, c) in conns.iter_mut() {
            if c.sock.next_timeout() == Some(Duration::ZERO) {
                if let Err(e) = c.sock.handle_timeout() {
                    finished.push((*k, format!("timer: {e}")));
                    continue;
                }
            }
            if now >= c.last + idle {
                finished.push((*k, "idle".into()));
            }
        }
        for (k, why) in finished {
            if let Some(mut c) = conns.remove(&k) {
                poller.delete(&c.sock)?;
                // Non-blocking: sends our close_notify, does not wait.
                let _ = c.sock.shutdown();
                println!("{}: {why}, echoed {} datagrams", c.peer, c.echoed);
                ended += 1;
            }
        }
    }
    for c in conns.values() {
        poller.delete(&c.sock)?;
    }
    poller.delete(&listener)?;
    println!("select_loop: {ended} connections served");
    Ok(())
}
