//! The handler's own event sources in the reactor's loop (`Ctx::sources`,
//! `Handler::on_source`): one reactor serves a TCP control port and DTLS peers
//! at once (in the four variants: IPv4/IPv6 x OsNet/Router), and a
//! deregistered source hears nothing more.

mod common;
mod reactor_support;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{six_ways, Variant};
use dtls_reactor::mio::net::{TcpListener, TcpStream, UnixStream};
use dtls_reactor::mio::Interest;
use dtls_reactor::{ConnId, Ctx, Handler, Reactor, Readiness, SourceId, SourceToken};
use reactor_support::*;

const T: Duration = Duration::from_secs(10);

/// The TCP listener's token: numerically the waker's mio token on 64-bit
/// targets, and the streams' tokens count from 0 like connection slab keys:
/// the reactor maps them, so nothing collides.
const LISTEN: SourceToken = SourceToken(u64::MAX - 1);

/// A DTLS echo server with a line-based TCP control port: `stats` answers
/// with the DTLS datagrams echoed so far, any other line is echoed.
struct Mixed {
    listener: Option<(TcpListener, SourceId)>,
    streams: HashMap<SourceToken, (TcpStream, SourceId, Vec<u8>)>,
    next: u64,
    echoed: usize,
    /// TCP streams that ended (seen by the test thread).
    tcp_closed: Arc<AtomicUsize>,
}

impl Mixed {
    fn accept(&mut self, ctx: &mut Ctx<'_>) {
        let Some((l, _)) = &self.listener else {
            return;
        };
        loop {
            match l.accept() {
                Ok((mut s, _)) => {
                    let token = SourceToken(self.next);
                    self.next += 1;
                    let id = ctx
                        .sources()
                        .register(&mut s, token, Interest::READABLE)
                        .expect("register stream");
                    self.streams.insert(token, (s, id, Vec::new()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Reads the stream to WouldBlock (edge-triggered) and answers each line.
    fn serve(&mut self, ctx: &mut Ctx<'_>, token: SourceToken) {
        let echoed = self.echoed;
        let Some((s, id, buf)) = self.streams.get_mut(&token) else {
            return;
        };
        let mut eof = false;
        let mut chunk = [0u8; 1024];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            let reply = if line == "stats" {
                format!("echoed {echoed} connections {}\n", ctx.connections())
            } else {
                format!("{line}\n")
            };
            // Small replies on loopback: the socket buffer takes them whole.
            s.write_all(reply.as_bytes()).expect("reply");
        }
        if eof {
            ctx.sources().deregister(s, *id).expect("deregister stream");
            self.streams.remove(&token);
            self.tcp_closed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Handler for Mixed {
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        ctx.send(id, data).expect("echo");
        self.echoed += 1;
    }
    fn on_source(&mut self, ctx: &mut Ctx<'_>, token: SourceToken, readiness: Readiness) {
        assert!(readiness.is_readable() || readiness.is_read_closed() || readiness.is_error());
        if token == LISTEN {
            self.accept(ctx);
        } else {
            self.serve(ctx, token);
        }
    }
}

/// A blocking TCP client of the control port, one line per request.
struct Control {
    reader: BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

impl Control {
    fn connect(addr: SocketAddr) -> Self {
        let s = std::net::TcpStream::connect(addr).expect("tcp connect");
        s.set_read_timeout(Some(T)).unwrap();
        Control {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }
    fn ask(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let mut got = String::new();
        self.reader.read_line(&mut got).expect("tcp reply");
        got.trim_end().to_string()
    }
}

/// One reactor, one thread: TCP control clients and DTLS peers are served
/// side by side (requests interleaved, connections open across each other).
fn tcp_and_dtls_in_one_reactor(v: Variant) {
    let port = ServerPort::bind(v);
    let dtls_addr = port.local_addr();
    let mut tcp = TcpListener::bind(v.any_port()).expect("tcp bind");
    let tcp_addr = tcp.local_addr().unwrap();
    let tcp_closed = Arc::new(AtomicUsize::new(0));
    let closed = tcp_closed.clone();
    let cfg = common::server().build().unwrap();
    let server = spawn(Some(dtls_addr), move || {
        let mut r = Reactor::new(Mixed {
            listener: None,
            streams: HashMap::new(),
            next: 0,
            echoed: 0,
            tcp_closed: closed,
        })
        .expect("reactor");
        port.listen(&mut r, &cfg);
        // Registered before run, then moved into the handler.
        let id = r
            .sources()
            .register(&mut tcp, LISTEN, Interest::READABLE)
            .expect("register listener");
        r.handler_mut().listener = Some((tcp, id));
        r
    });

    let mut one = Control::connect(tcp_addr);
    assert_eq!(one.ask("hello"), "hello");
    assert_eq!(one.ask("stats"), "echoed 0 connections 0");

    let client_cfg = common::client()
        .initial_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut peer = HandClient::new(dtls_addr, &client_cfg);
    assert!(peer.handshake(T), "DTLS handshake");
    let mut two = Control::connect(tcp_addr);
    peer.send(b"ping");
    assert_eq!(peer.recv(T).unwrap().as_deref(), Some(&b"ping"[..]));
    assert_eq!(two.ask("two"), "two");
    assert_eq!(one.ask("stats"), "echoed 1 connections 1");
    peer.send(b"pong");
    assert_eq!(peer.recv(T).unwrap().as_deref(), Some(&b"pong"[..]));
    assert_eq!(two.ask("stats"), "echoed 2 connections 1");

    drop(one);
    drop(two);
    assert!(
        wait_for(T, || tcp_closed.load(Ordering::SeqCst) == 2),
        "TCP streams' ends seen: {}",
        tcp_closed.load(Ordering::SeqCst)
    );
    let h = server.stop();
    assert!(h.streams.is_empty());
    assert_eq!(h.echoed, 2);
}

six_ways!(tcp_and_dtls_in_one_reactor);

/// Drains the stream to WouldBlock.
fn drain(s: &mut UnixStream) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Three sources; the first callback deregisters the other of `a` / `b`.
#[derive(Default)]
struct Pairs {
    srcs: HashMap<SourceToken, (UnixStream, SourceId)>,
    /// Deregistered sources, kept open (their peers still write).
    kept: Vec<UnixStream>,
    calls: Vec<SourceToken>,
}

const A: SourceToken = SourceToken(1);
const B: SourceToken = SourceToken(2);
const MARK: SourceToken = SourceToken(3);

impl Handler for Pairs {
    fn on_source(&mut self, ctx: &mut Ctx<'_>, token: SourceToken, _r: Readiness) {
        self.calls.push(token);
        if let Some((s, _)) = self.srcs.get_mut(&token) {
            drain(s);
        }
        if self.calls.len() == 1 {
            // The other one is readable in this same poll: its event must
            // not reach us once it is deregistered.
            let other = if token == A { B } else { A };
            let (mut s, id) = self.srcs.remove(&other).unwrap();
            ctx.sources().deregister(&mut s, id).expect("deregister");
            // A stale id is refused.
            assert!(ctx.sources().deregister(&mut s, id).is_err());
            self.kept.push(s);
        }
    }
}

/// Turns until `n` callbacks were seen (bounded).
fn turn_until(r: &mut Reactor<Pairs>, n: usize) {
    let start = Instant::now();
    while r.handler().calls.len() < n {
        assert!(start.elapsed() < T, "callbacks: {:?}", r.handler().calls);
        r.turn(Some(Duration::from_millis(100))).unwrap();
    }
}

/// A source deregistered inside a callback (with its readiness already
/// polled in that turn) or from the reactor gets no more callbacks; the
/// sources still registered keep theirs.
#[test]
fn deregistered_source_gets_no_callbacks() {
    let mut r = Reactor::new(Pairs::default()).unwrap();
    let mut peers = HashMap::new();
    for t in [A, B, MARK] {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let id = r
            .sources()
            .register(&mut ours, t, Interest::READABLE)
            .unwrap();
        r.handler_mut().srcs.insert(t, (ours, id));
        peers.insert(t, theirs);
    }
    let mut poke = |t: SourceToken| peers.get_mut(&t).unwrap().write_all(b"x").unwrap();

    // A and B both readable before the poll: one callback, which
    // deregisters the other.
    poke(A);
    poke(B);
    turn_until(&mut r, 1);
    let first = r.handler().calls[0];
    let gone = if first == A { B } else { A };
    // A later turn must not bring the other's stale event either: MARK
    // becomes readable after it, and is reported.
    poke(MARK);
    turn_until(&mut r, 2);
    assert_eq!(r.handler().calls, vec![first, MARK]);

    // Readiness of the deregistered one again, then of the live ones.
    poke(gone);
    poke(first);
    turn_until(&mut r, 3);
    assert_eq!(r.handler().calls, vec![first, MARK, first]);

    // Deregistered from the reactor (outside callbacks): nothing more for
    // it; MARK, poked after it, still is reported.
    let (mut s, id) = r.handler_mut().srcs.remove(&first).unwrap();
    r.sources().deregister(&mut s, id).unwrap();
    poke(first);
    poke(gone);
    poke(MARK);
    turn_until(&mut r, 4);
    assert_eq!(r.handler().calls, vec![first, MARK, first, MARK]);

    // Registered again: a new id, and callbacks again under its token.
    let id2 = r
        .sources()
        .register(&mut s, first, Interest::READABLE)
        .unwrap();
    assert_ne!(id, id2);
    r.handler_mut().srcs.insert(first, (s, id2));
    // Data already waits on it: edge-triggered registration reports it.
    turn_until(&mut r, 5);
    assert_eq!(r.handler().calls, vec![first, MARK, first, MARK, first]);
}
