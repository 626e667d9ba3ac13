//! The reactor under load: 1,000 concurrent sessions, retransmission through
//! a lossy relay, and the connection / half-open caps under a flood of
//! ClientHellos that never finish. Each test in the four variants.

mod common;
mod reactor_support;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{six_ways, Variant};
use dtls_reactor::{CloseCause, ConnId, Ctx, Handler, Limits};
use reactor_support::*;

const T: Duration = Duration::from_secs(30);

/// Echo server that counts.
#[derive(Default)]
struct Echo {
    data: u64,
    closed_by_peer: u64,
}

impl Handler for Echo {
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        self.data += 1;
        ctx.send(id, data).expect("echo");
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, cause: &CloseCause) {
        if *cause == CloseCause::PeerClosed {
            self.closed_by_peer += 1;
        }
    }
}

/// Many sessions from one reactor: each sends `count` numbered datagrams one
/// after the other (the next when the echo of the last arrives); when every
/// session is done, all close and the reactor stops.
struct Sessions {
    /// Where to connect, and how many connections are still to start (a
    /// timer starts them 20 at a time, so the ClientHellos do not all land
    /// in the listener's receive buffer at once).
    addr: SocketAddr,
    cfg: dtls_reactor::ClientConfig,
    to_start: usize,
    count: u32,
    total: usize,
    /// Datagrams in flight across all sessions are capped at `window` (all
    /// Router traffic shares the listener's receive buffer: 1,000 datagrams
    /// at once would overflow it, and UDP loss of application data is not
    /// what this test is about). Sessions wait in `queue` for their turn.
    window: usize,
    in_flight: usize,
    closing: Vec<ConnId>,
    queue: std::collections::VecDeque<(ConnId, u32)>,
    sent: HashMap<ConnId, u32>,
    done: usize,
    echoes: u64,
    wrong: u64,
    failed: u64,
}

impl Sessions {
    fn pump(&mut self, ctx: &mut Ctx<'_>) {
        while self.in_flight < self.window {
            let Some((id, n)) = self.queue.pop_front() else {
                return;
            };
            self.sent.insert(id, n + 1);
            self.in_flight += 1;
            ctx.send(id, &n.to_be_bytes()).unwrap();
        }
    }
}

impl Handler for Sessions {
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _t: dtls_reactor::TimerId, token: u64) {
        if token == 1 {
            // Close 50 at a time too: 1,000 close_notify at once would
            // overflow a Router listener's receive buffer.
            for _ in 0..50 {
                match self.closing.pop() {
                    Some(id) => ctx.close(id),
                    None => break,
                }
            }
            if self.closing.is_empty() {
                ctx.stop();
            } else {
                ctx.set_timer(Duration::from_millis(5), 1);
            }
            return;
        }
        for _ in 0..self.to_start.min(20) {
            self.to_start -= 1;
            ctx.connect(self.addr, &self.cfg).unwrap();
        }
        if self.to_start > 0 {
            ctx.set_timer(Duration::from_millis(5), 0);
        }
    }
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.sent.insert(id, 0);
        self.queue.push_back((id, 0));
        self.pump(ctx);
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        self.echoes += 1;
        self.in_flight -= 1;
        let n = self.sent.get(&id).copied().unwrap_or(0);
        if data != (n - 1).to_be_bytes() {
            self.wrong += 1;
        }
        if n < self.count {
            self.queue.push_back((id, n));
            self.pump(ctx);
        } else {
            self.done += 1;
            self.pump(ctx);
            if self.done == self.total {
                self.closing = self.sent.keys().copied().collect();
                ctx.set_timer(Duration::ZERO, 1);
            }
        }
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, _id: ConnId, cause: &CloseCause) {
        if *cause != CloseCause::Local && *cause != CloseCause::Stopped {
            self.failed += 1;
            eprintln!("session failed: {cause:?}");
            if self.failed > 10 {
                ctx.stop();
            }
        }
    }
}

/// 1,000 concurrent sessions on one server reactor, 10 echoes each: every
/// datagram arrives, in order, and the server held all 1,000 at once.
fn thousand_sessions(v: Variant) {
    raise_nofile(20_000);
    const N: usize = 1000;
    let server = serve(
        v,
        &server_cfg(),
        Limits::default().max_handshakes(N),
        Echo::default(),
    );
    let ccfg = common::client().build().unwrap();
    let handler = Sessions {
        addr: server.addr.unwrap(),
        cfg: ccfg,
        to_start: N,
        count: 10,
        total: N,
        window: 100,
        in_flight: 0,
        closing: Vec::new(),
        queue: Default::default(),
        sent: HashMap::new(),
        done: 0,
        echoes: 0,
        wrong: 0,
        failed: 0,
    };
    let client = spawn(None, move || {
        let mut r = dtls_reactor::Reactor::new(handler).unwrap();
        r.set_timer(Duration::ZERO, 0);
        r
    });
    let cst = client.handle.clone();
    let t0 = Instant::now();
    let c = if !wait_for(Duration::from_secs(50), || client.is_finished()) {
        eprintln!(
            "server {:?}\nclient {:?}",
            server.handle.stats(),
            cst.stats()
        );
        client.stop()
    } else {
        client.join_within(T)
    };
    eprintln!("{v:?}: 1000 sessions in {:?}", t0.elapsed());
    assert_eq!(c.failed, 0);
    assert_eq!(c.wrong, 0);
    assert_eq!(c.echoes, (N * 10) as u64);
    assert_eq!(c.done, N);
    assert!(wait_for(T, || server.handle.stats().connections == 0));
    let st = server.handle.stats();
    let s = server.stop();
    assert_eq!(s.data, (N * 10) as u64);
    assert_eq!(s.closed_by_peer, N as u64);
    assert_eq!(st.accepted, N as u64);
    assert_eq!(
        st.peak_connections, N as u64,
        "all sessions were open at once"
    );
}

/// The identity of a handshake flight in a datagram: direction, the first
/// record's content type and (for handshake records) its message_seq.
/// Application data and alerts are never dropped (DTLS does not resend them).
fn flight_key(to_server: bool, d: &[u8]) -> Option<(bool, u8, u16)> {
    let ty = *d.first()?;
    match ty {
        20 => Some((to_server, ty, 0)),
        22 if d.len() >= 13 + 6 => Some((to_server, ty, u16::from_be_bytes([d[17], d[18]]))),
        _ => None,
    }
}

/// A relay between client and server that drops every handshake flight once
/// (the first datagram with a new flight key): both reactors' timers must
/// resend each flight.
fn relay(server: SocketAddr, stop: Arc<AtomicBool>, dropped: Arc<AtomicU64>) -> SocketAddr {
    let bind: SocketAddr = SocketAddr::new(server.ip(), 0);
    let front = UdpSocket::bind(bind).unwrap();
    let back = UdpSocket::bind(bind).unwrap();
    back.connect(server).unwrap();
    front.set_nonblocking(true).unwrap();
    back.set_nonblocking(true).unwrap();
    let addr = front.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut client: Option<SocketAddr> = None;
        let mut seen = std::collections::HashSet::new();
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        let mut first_time = |to_server: bool, d: &[u8]| match flight_key(to_server, d) {
            Some(k) => seen.insert(k),
            None => false,
        };
        while !stop.load(Ordering::Relaxed) && start.elapsed() < T {
            let mut idle = true;
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                idle = false;
                client = Some(from);
                if first_time(true, &buf[..n]) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = back.send(&buf[..n]);
                }
            }
            if let Ok(n) = back.recv(&mut buf) {
                idle = false;
                if first_time(false, &buf[..n]) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                } else if let Some(c) = client {
                    let _ = front.send_to(&buf[..n], c);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    addr
}

fn retransmit_through_relay(v: Variant) {
    let scfg = common::server()
        .initial_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let slog: Log = Default::default();
    let mut sh = Rec::new(slog.clone());
    sh.echo = true;
    let server = serve(v, &scfg, Limits::default(), sh);
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let via = relay(server.addr.unwrap(), stop.clone(), dropped.clone());
    let ccfg = common::client()
        .initial_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let clog: Log = Default::default();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"through".to_vec()];
    ch.close_after = Some(1);
    ch.stop_on_close = true;
    let client = clients(via, &ccfg, 1, Limits::default(), ch);
    let cstats = client.handle.clone();
    client.join_within(T);
    stop.store(true, Ordering::Relaxed);
    let cev = events(&clog);
    assert!(cev.contains(&Ev::Connected), "{cev:?}");
    assert!(cev.contains(&Ev::Data(b"through".to_vec())), "{cev:?}");
    let st = server.handle.stats();
    server.stop();
    let sev = events(&slog);
    assert!(sev.contains(&Ev::Connected), "{sev:?}");
    // Client flights: ClientHello, ClientHello+cookie, its Finished flight;
    // server: HelloVerifyRequest, its flight, its Finished: each dropped once.
    assert!(dropped.load(Ordering::Relaxed) >= 6, "{dropped:?}");
    let cst = cstats.stats();
    assert!(cst.retransmissions >= 2, "client {cst:?}");
    assert!(st.retransmissions >= 1, "server {st:?}");
    assert!(cev.contains(&Ev::Timeout(dtls_reactor::DtlsTimeout::Retransmitted)));
    assert!(sev.contains(&Ev::Timeout(dtls_reactor::DtlsTimeout::Retransmitted)));
}

/// Sends `n` ClientHellos that pass the cookie exchange and then go silent,
/// in batches; returns how many got their HelloVerifyRequest answered. The
/// sockets stay open (returned) so the server sees no ICMP errors.
fn flood(server: SocketAddr, n: usize) -> (usize, Vec<UdpSocket>) {
    let ccfg = common::client().build().unwrap();
    let bind: SocketAddr = SocketAddr::new(server.ip(), 0);
    let mut kept = Vec::with_capacity(n);
    let mut answered = 0;
    let mut buf = [0u8; 2048];
    let mut left = n;
    while left > 0 {
        let batch = left.min(100);
        left -= batch;
        let mut socks = Vec::with_capacity(batch);
        for _ in 0..batch {
            let s = UdpSocket::bind(bind).unwrap();
            s.connect(server).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut c = dtls_reactor::Connection::client(&ccfg, None).unwrap();
            let hello = c.poll_transmit().unwrap();
            let _ = s.send(&hello);
            socks.push((s, Some(c)));
        }
        let start = Instant::now();
        let mut pending = batch;
        while pending > 0 && start.elapsed() < Duration::from_secs(2) {
            let mut idle = true;
            for (s, c) in socks.iter_mut() {
                let Some(conn) = c.as_mut() else { continue };
                if let Ok(len) = s.recv(&mut buf) {
                    idle = false;
                    if conn.feed(&buf[..len]).is_ok() {
                        if let Some(h2) = conn.poll_transmit() {
                            let _ = s.send(&h2);
                            answered += 1;
                        }
                    }
                    *c = None;
                    pending -= 1;
                }
            }
            if idle {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        kept.extend(socks.into_iter().map(|x| x.0));
    }
    (answered, kept)
}

fn caps_hold_under_flood(v: Variant) {
    raise_nofile(20_000);
    const MAX_CONNS: usize = 80;
    const MAX_HS: usize = 30;
    const ESTABLISHED: usize = 60;
    let limits = Limits::default()
        .max_connections(MAX_CONNS)
        .max_handshakes(MAX_HS);
    let scfg = common::server()
        .handshake_silence(Some(Duration::from_millis(1500)))
        .build()
        .unwrap();
    let server = serve(v, &scfg, limits, Echo::default());
    let addr = server.addr.unwrap();

    // Phase 1: nothing established; the half-open cap stops the flood.
    let (answered, socks) = flood(addr, 2500);
    assert!(
        answered > 2000,
        "only {answered} cookie exchanges completed"
    );
    let st = server.handle.stats();
    assert!(st.peak_handshakes <= MAX_HS as u64, "{st:?}");
    assert!(st.peak_connections <= MAX_CONNS as u64, "{st:?}");
    assert!(st.limit_handshakes > 0, "{st:?}");
    // The half-open connections time out.
    assert!(
        wait_for(T, || server.handle.stats().connections == 0),
        "{:?}",
        server.handle.stats()
    );
    drop(socks);
    let st = server.handle.stats();
    assert_eq!(st.handshakes, 0);
    assert!(st.silent_peers >= st.accepted.min(MAX_HS as u64));

    // Phase 2: 60 established sessions use most of the connection cap.
    let ccfg = common::client().build().unwrap();
    let mut held: Vec<HandClient> = (0..ESTABLISHED)
        .map(|_| HandClient::new(addr, &ccfg))
        .collect();
    for c in held.iter_mut() {
        assert!(c.handshake(Duration::from_secs(10)), "legit client blocked");
    }
    let (_, socks) = flood(addr, 2500);
    let st = server.handle.stats();
    assert!(st.peak_connections <= MAX_CONNS as u64, "{st:?}");
    assert!(st.peak_handshakes <= MAX_HS as u64, "{st:?}");
    assert!(st.limit_connections > 0, "{st:?}");
    // The established sessions still work.
    for c in held.iter_mut().take(5) {
        c.send(b"still here");
        assert_eq!(
            c.recv(Duration::from_secs(5)).unwrap().as_deref(),
            Some(&b"still here"[..])
        );
    }
    drop(socks);
    assert!(wait_for(T, || server.handle.stats().handshakes == 0));
    assert_eq!(server.handle.stats().connections, ESTABLISHED as u64);
    server.stop();
}

six_ways!(
    thousand_sessions,
    retransmit_through_relay,
    caps_hold_under_flood
);
