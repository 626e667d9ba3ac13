//! Socket API, server side: a select-loop (asyncore-style) server, a
//! ThreadingTCPServer-style framework serving a file, 100 concurrent
//! clients, and regression tests for PyDTLS 1.3.0's server defects. Four
//! variants each.

mod common;
mod socket_util;

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::final_flight::LosesFinalFlight;
use common::{four_ways, Variant};
use dtls_reactor::{Connection, DtlsListener, DtlsSocket, Error, Transport};
use polling::{Event, Events, Poller};
use socket_util::*;

#[derive(Debug, Default)]
struct LoopStats {
    accepted: usize,
    nones: usize,
    echoed: usize,
    unwrapped: usize,
    idled_out: usize,
    timer_calls: usize,
}

/// An asyncore-style server: one thread, non-blocking listener and
/// connections polled together; accept() may return None; each connection's
/// DTLS deadline is tracked; pending records drained; idle connections are
/// closed; closed ones unwrapped. Runs until `want` connections ended.
fn select_loop(listener: &DtlsListener, want: usize, idle: Duration) -> LoopStats {
    listener.set_nonblocking(true).unwrap();
    let poller = Poller::new().unwrap();
    // SAFETY: the listener outlives the poller (deleted before returning).
    unsafe { poller.add(listener, Event::readable(0)).unwrap() };
    let mut conns: HashMap<usize, (DtlsSocket, Instant)> = HashMap::new();
    let mut next_key = 1;
    let mut st = LoopStats::default();
    let mut events = Events::new();
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    while st.unwrapped + st.idled_out < want {
        assert!(start.elapsed() < T * 4, "select loop: no end, {st:?}");
        // Sleep until the earliest DTLS deadline or idle deadline.
        let mut wait = Duration::from_millis(200);
        let now = Instant::now();
        for (s, last) in conns.values() {
            if let Some(t) = s.next_timeout() {
                wait = wait.min(t);
            }
            wait = wait.min((*last + idle).saturating_duration_since(now));
            if s.has_pending() {
                wait = Duration::ZERO;
            }
        }
        if listener.has_pending() {
            wait = Duration::ZERO;
        }
        events.clear();
        poller.wait(&mut events, Some(wait)).unwrap();
        let mut ready: Vec<usize> = events.iter().map(|e| e.key).collect();
        if listener.has_pending() && !ready.contains(&0) {
            ready.push(0);
        }
        for (k, (s, _)) in &conns {
            if s.has_pending() && !ready.contains(k) {
                ready.push(*k);
            }
        }
        for key in ready {
            if key == 0 {
                // Up to a bounded number of datagrams per turn.
                for _ in 0..64 {
                    match listener.accept() {
                        Ok(Some((mut s, _peer))) => {
                            s.set_nonblocking(true).unwrap();
                            let k = next_key;
                            next_key += 1;
                            // SAFETY: deleted from the poller before the socket drops.
                            unsafe { poller.add(&s, Event::readable(k)).unwrap() };
                            conns.insert(k, (s, Instant::now()));
                            st.accepted += 1;
                        }
                        // A datagram handled: read on.
                        Ok(None) => st.nones += 1,
                        // Nothing left (edge-triggered: read until this).
                        Err(Error::WouldBlock) => break,
                        Err(e) => panic!("accept: {e}"),
                    }
                }
                poller.modify(listener, Event::readable(0)).unwrap();
                continue;
            }
            let Some((s, last)) = conns.get_mut(&key) else {
                continue;
            };
            // Drain every record that is ready.
            let mut end = None;
            loop {
                match s.recv(&mut buf) {
                    Ok(n) => {
                        *last = Instant::now();
                        match s.send(&buf[..n]) {
                            Ok(_) => st.echoed += 1,
                            Err(e) => {
                                end = Some(Err(e));
                                break;
                            }
                        }
                    }
                    Err(Error::WouldBlock) => break,
                    Err(Error::ClosedByPeer) => {
                        end = Some(Ok(()));
                        break;
                    }
                    Err(e) => {
                        end = Some(Err(e));
                        break;
                    }
                }
            }
            match end {
                None => poller.modify(&*s, Event::readable(key)).unwrap(),
                Some(r) => {
                    let (s, _) = conns.remove(&key).unwrap();
                    poller.delete(&s).unwrap();
                    r.expect("connection failed");
                    // The peer's close_notify came and ours went: unwrap at once.
                    let t = s.unwrap().expect("unwrap after close_notify");
                    assert!(matches!(t, Transport::Link(_)));
                    st.unwrapped += 1;
                }
            }
        }
        // Timers and idle connections.
        let now = Instant::now();
        let keys: Vec<usize> = conns.keys().copied().collect();
        for key in keys {
            let (s, last) = conns.get_mut(&key).unwrap();
            if s.next_timeout() == Some(Duration::ZERO) {
                st.timer_calls += 1;
                s.handle_timeout().expect("handle_timeout");
            }
            if now >= *last + idle {
                let (mut s, _) = conns.remove(&key).unwrap();
                poller.delete(&s).unwrap();
                // Non-blocking close: close_notify goes out, no waiting.
                let _ = s.shutdown();
                st.idled_out += 1;
            }
        }
    }
    poller.delete(listener).unwrap();
    st
}

/// The asyncore-style server with clients in other threads, blocking, with
/// timeouts; one more client goes idle and is closed by the server.
fn select_loop_server(v: Variant) {
    let l = listen(v, &server_cfg());
    let addr = l.local_addr().unwrap();
    let clients: Vec<_> = (0..5)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = connect(addr, &client_cfg()).expect("connect");
                echo_rounds(&mut c, 5, 10 + i * 100);
                c.shutdown().expect("shutdown");
            })
        })
        .collect();
    let idler = std::thread::spawn(move || {
        let mut c = connect(addr, &client_cfg()).expect("connect");
        echo_rounds(&mut c, 1, 10);
        // Stay silent: the server closes us.
        let r = c.recv(&mut [0u8; 100]);
        assert!(matches!(r, Err(Error::ClosedByPeer)), "{r:?}");
    });
    let st = select_loop(&l, 6, Duration::from_millis(700));
    for c in clients {
        c.join().unwrap();
    }
    idler.join().unwrap();
    assert_eq!(st.accepted, 6, "{st:?}");
    assert_eq!(st.unwrapped, 5, "{st:?}");
    assert_eq!(st.idled_out, 1, "{st:?}");
    assert_eq!(st.echoed, 26, "{st:?}");
    // Cookie exchanges (and, with Router, forwarded datagrams) gave None.
    assert!(st.nones >= 6, "{st:?}");
}

/// A minimal ThreadingTCPServer-style framework: a handler per connection
/// in its own thread, an accept loop serving until stopped.
struct ThreadingServer {
    inner: EcholessServer,
}

struct EcholessServer {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl ThreadingServer {
    fn serve<H>(v: Variant, handler: H) -> ThreadingServer
    where
        H: Fn(&mut DtlsSocket) -> dtls_reactor::Result<()> + Send + Sync + 'static,
    {
        let l = listen(v, &server_cfg());
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let handler = Arc::new(handler);
        let handle = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !st.load(Ordering::Relaxed) {
                if let Ok(Some((mut s, _))) = l.accept() {
                    let h = handler.clone();
                    workers.push(std::thread::spawn(move || {
                        s.set_read_timeout(Some(T)).unwrap();
                        s.set_write_timeout(Some(T)).unwrap();
                        h(&mut s).expect("handler");
                    }));
                }
            }
            let n = workers.len();
            for w in workers {
                w.join().expect("handler thread");
            }
            n
        });
        ThreadingServer {
            inner: EcholessServer {
                addr,
                stop,
                handle: Some(handle),
            },
        }
    }

    fn stop(mut self) -> usize {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner.handle.take().unwrap().join().unwrap()
    }
}

/// Serves a file over DTLS; the client reads until close_notify.
fn framework_serves_a_file(v: Variant) {
    let content: Arc<Vec<u8>> = Arc::new((0..60_000u32).map(|i| (i * 7 % 251) as u8).collect());
    let path = std::env::temp_dir().join(format!(
        "dtls-socket-file-{}-{}-{}",
        std::process::id(),
        v.demux,
        v.ip().is_ipv6()
    ));
    std::fs::write(&path, &*content).unwrap();
    let p2 = path.clone();
    let server = ThreadingServer::serve(v, move |s| {
        // The request names the file.
        let mut req = [0u8; 512];
        let n = s.recv(&mut req)?;
        assert_eq!(&req[..n], b"GET file");
        let data = std::fs::read(&p2)?;
        let chunk = s.data_mtu();
        for c in data.chunks(chunk) {
            s.send(c)?;
            // Pace the datagrams a little: UDP has no flow control.
            std::thread::sleep(Duration::from_micros(200));
        }
        s.shutdown()
    });
    let mut c = connect(server.inner.addr, &client_cfg()).unwrap();
    c.send(b"GET file").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("read until close_notify");
    assert_eq!(got.len(), content.len());
    assert!(got == *content, "file differs");
    assert_eq!(server.stop(), 1);
    let _ = std::fs::remove_file(&path);
}

/// 100 concurrent clients x 10 echoes each, through the threaded server.
fn hundred_clients(v: Variant) {
    let server = EchoServer::start(v, &server_cfg());
    let addr = server.addr;
    // 50 ms first retransmission: under a burst of 100 handshakes on a small
    // machine clients retransmit a lot, and late duplicate ClientHellos
    // reach the listener after their connection ended.
    let ccfg = client_cfg();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            let ccfg = ccfg.clone();
            std::thread::spawn(move || {
                let mut c = connect(addr, &ccfg).expect("connect");
                echo_rounds(&mut c, 10, 20 + i);
                c.shutdown().expect("shutdown");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    server.wait_done(100);
    assert_eq!(server.failures.load(Ordering::Relaxed), 0);
    assert_eq!(server.echoed.load(Ordering::Relaxed), 1000);
    // Every client was served exactly once: duplicates were routed to their
    // connection or, once it had ended, recognised and dropped.
    let st = server.listener.stats();
    eprintln!("100 clients: {st:?}");
    assert_eq!(st.accepted, 100, "{st:?}");
}

/// Raw DTLS client over a plain UDP socket (sans-IO), to misbehave on purpose.
fn raw_client(v: Variant) -> (UdpSocket, Connection) {
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    (sock, Connection::client(&client_cfg(), None).unwrap())
}

/// Handshake message type of a DTLS record (offset 13), if it is one.
fn hs_type(d: &[u8]) -> Option<u8> {
    (d.len() > 13 && d[0] == 22).then(|| d[13])
}

/// Regression: an unanswered ClientHello (with or without a cookie) never
/// stalls the server's established clients (PyDTLS 1.3.0 blocked in the
/// handshake of the silent peer).
fn unanswered_hello_does_not_stall(v: Variant) {
    let server = EchoServer::start(v, &server_cfg());
    let mut a = connect(server.addr, &client_cfg()).unwrap();
    echo_rounds(&mut a, 2, 50);
    // A peer that sends one ClientHello and never answers the cookie.
    let (silent1, mut c1) = raw_client(v);
    silent1
        .send_to(&c1.poll_transmit().unwrap(), server.addr)
        .unwrap();
    // A peer that passes the cookie exchange and then goes silent: the
    // server has a connection waiting for its next flight.
    let (silent2, mut c2) = raw_client(v);
    silent2
        .send_to(&c2.poll_transmit().unwrap(), server.addr)
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = silent2.recv(&mut buf).unwrap();
    assert_eq!(hs_type(&buf[..n]), Some(3), "HelloVerifyRequest");
    c2.feed(&buf[..n]).unwrap();
    silent2
        .send_to(&c2.poll_transmit().unwrap(), server.addr)
        .unwrap();
    let n = silent2.recv(&mut buf).unwrap();
    assert_eq!(hs_type(&buf[..n]), Some(2), "ServerHello: admitted");
    // The established client is served meanwhile, every time, while the
    // silent handshake is still pending (its deadline is 10 s away).
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let start = Instant::now();
    echo_rounds(&mut a, 20, 100);
    assert!(start.elapsed() < Duration::from_secs(9));
    // A second new client connects too.
    let mut b = connect(server.addr, &client_cfg()).unwrap();
    echo_rounds(&mut b, 2, 10);
    assert_eq!(server.listener.stats().accepted, 3);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    drop(c1);
}

/// CPU time used by this thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes one rusage struct into our zeroed local.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a local rusage.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(r, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Regression: an idle listener with a timeout sleeps (PyDTLS 1.3.0
/// busy-polled at about 75 % CPU); so does an idle connection.
fn idle_listener_sleeps(v: Variant) {
    let scfg = server_cfg();
    let l = DtlsListener::bind(v.any_port(), &scfg, v.demux).unwrap();
    l.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let r = l.accept();
    let wall = t0.elapsed();
    let cpu = thread_cpu() - cpu0;
    assert!(matches!(r, Err(Error::ReadTimeout)), "{r:?}");
    assert!(wall >= Duration::from_secs(1));
    eprintln!("idle accept: {wall:?} wall, {cpu:?} CPU");
    assert!(
        cpu < Duration::from_millis(100),
        "idle accept used {cpu:?} CPU"
    );

    // An idle established server-side connection waiting 1 s.
    let mut o = pair(v, &scfg, &client_cfg());
    let s = o.server();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let cpu0 = thread_cpu();
    let r = s.recv(&mut [0u8; 100]);
    let cpu = thread_cpu() - cpu0;
    assert!(matches!(r, Err(Error::ReadTimeout)), "{r:?}");
    eprintln!("idle recv: {cpu:?} CPU");
    assert!(
        cpu < Duration::from_millis(100),
        "idle recv used {cpu:?} CPU"
    );
}

/// Regression: the cookie is bound to the real peer address, with either
/// demux (PyDTLS's router did not bind it): a ClientHello carrying another
/// peer's cookie gets a new HelloVerifyRequest, not a connection.
fn cookie_bound_to_real_peer(v: Variant) {
    let l = DtlsListener::bind(v.any_port(), &server_cfg(), v.demux).unwrap();
    l.set_read_timeout(Some(T)).unwrap();
    let addr = l.local_addr().unwrap();
    let (a, mut ca) = raw_client(v);
    a.send_to(&ca.poll_transmit().unwrap(), addr).unwrap();
    assert!(l.accept().unwrap().is_none(), "cookie exchange gives None");
    let mut buf = [0u8; 2048];
    let n = a.recv(&mut buf).unwrap();
    ca.feed(&buf[..n]).unwrap();
    let hello_with_cookie = ca.poll_transmit().unwrap();
    // Replayed from another port: not admitted.
    let b = UdpSocket::bind(v.any_port()).unwrap();
    b.set_read_timeout(Some(T)).unwrap();
    b.send_to(&hello_with_cookie, addr).unwrap();
    assert!(l.accept().unwrap().is_none());
    let n = b.recv(&mut buf).unwrap();
    assert_eq!(hs_type(&buf[..n]), Some(3), "a fresh HelloVerifyRequest");
    assert_eq!(l.stats().accepted, 0);
    // From the peer it was issued to: admitted, with that peer's address.
    a.send_to(&hello_with_cookie, addr).unwrap();
    let (_s, peer) = l.accept().unwrap().expect("admitted");
    assert_eq!(peer.port(), a.local_addr().unwrap().port());
    let n = a.recv(&mut buf).unwrap();
    assert_eq!(hs_type(&buf[..n]), Some(2), "ServerHello");
    let st = l.stats();
    assert_eq!((st.accepted, st.admission.hello_verify), (1, 2), "{st:?}");
}

/// A listener over a socket bound by the caller (OsNet needs SO_REUSEPORT
/// set before bind, and says so when it is missing).
fn listener_from_socket(v: Variant) {
    use socket2::{Domain, Protocol, Socket, Type};
    let make = |reuseport: bool| -> UdpSocket {
        let s = Socket::new(
            Domain::for_address(v.any_port()),
            Type::DGRAM,
            Some(Protocol::UDP),
        )
        .unwrap();
        if v.ip().is_ipv6() {
            s.set_only_v6(true).unwrap();
        }
        if reuseport {
            s.set_reuse_port(true).unwrap();
        }
        s.bind(&v.any_port().into()).unwrap();
        s.into()
    };
    let scfg = server_cfg();
    if v.demux == dtls_demux::DemuxKind::OsNet {
        let e = DtlsListener::from_socket(make(false), &scfg, v.demux).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }
    let l = Arc::new(DtlsListener::from_socket(make(true), &scfg, v.demux).unwrap());
    l.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = l.local_addr().unwrap();
    let acc = AcceptLoop::start(l);
    let client = std::thread::spawn(move || {
        let mut c = connect(addr, &client_cfg()).unwrap();
        echo_rounds(&mut c, 3, 40);
        c.shutdown().unwrap();
    });
    let (s, _) = acc.next();
    assert_eq!(echo_until_closed(s).unwrap(), 3);
    client.join().unwrap();
}

/// A copy of an admitted ClientHello arriving after its connection ended
/// (it waited in the listener's queue) passes the stateless cookie check
/// again; the listener recognises it by its client random and drops it. A
/// new handshake from the same port is admitted.
fn late_duplicate_hello_dropped(v: Variant) {
    let l = DtlsListener::bind(v.any_port(), &server_cfg(), v.demux).unwrap();
    l.set_read_timeout(Some(T)).unwrap();
    let addr = l.local_addr().unwrap();
    let (a, mut ca) = raw_client(v);
    let mut buf = [0u8; 2048];
    a.send_to(&ca.poll_transmit().unwrap(), addr).unwrap();
    assert!(l.accept().unwrap().is_none());
    let n = a.recv(&mut buf).unwrap();
    ca.feed(&buf[..n]).unwrap();
    let hello2 = ca.poll_transmit().unwrap();
    a.send_to(&hello2, addr).unwrap();
    let (s, _) = l.accept().unwrap().expect("admitted");
    drop(s); // the connection ends; its link is gone
             // Drain the server's first flight.
    a.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while a.recv(&mut buf).is_ok() {}
    a.send_to(&hello2, addr).unwrap();
    assert!(
        l.accept().unwrap().is_none(),
        "late duplicate: no connection"
    );
    assert!(a.recv(&mut buf).is_err(), "and no answer");
    let st = l.stats();
    assert_eq!(
        (st.accepted, st.admission.duplicate_hellos),
        (1, 1),
        "{st:?}"
    );
    // A fresh handshake from the same port is a new connection.
    let mut cb = Connection::client(&client_cfg(), None).unwrap();
    a.set_read_timeout(Some(T)).unwrap();
    a.send_to(&cb.poll_transmit().unwrap(), addr).unwrap();
    assert!(l.accept().unwrap().is_none());
    let n = a.recv(&mut buf).unwrap();
    cb.feed(&buf[..n]).unwrap();
    a.send_to(&cb.poll_transmit().unwrap(), addr).unwrap();
    assert!(l.accept().unwrap().is_some(), "a new handshake is admitted");
}

/// A flood of garbage records never keeps a blocking recv past its
/// timeout, and a non-blocking recv returns after a bounded amount of work.
fn flood_respects_timeouts(v: Variant) {
    let ssock = UdpSocket::bind(v.any_port()).unwrap();
    let csock = UdpSocket::bind(v.any_port()).unwrap();
    ssock.connect(csock.local_addr().unwrap()).unwrap();
    csock.connect(ssock.local_addr().unwrap()).unwrap();
    let flooder = ssock.try_clone().unwrap();
    let mut srv = DtlsSocket::wrap_server(ssock, &server_cfg()).unwrap();
    srv.set_read_timeout(Some(T)).unwrap();
    let server = std::thread::spawn(move || {
        srv.handshake().unwrap();
        srv
    });
    let mut c = DtlsSocket::wrap_client(csock, &client_cfg(), Some("localhost")).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.handshake().unwrap();
    let _srv = server.join().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let flood = std::thread::spawn(move || {
        // Application-data records of epoch 1 with garbage: discarded by
        // OpenSSL one by one.
        let mut rec = vec![23u8, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 100];
        rec.extend_from_slice(&[0x5a; 100]);
        let mut sent = 0u64;
        while !st.load(Ordering::Relaxed) {
            rec[10] = sent as u8;
            let _ = flooder.send(&rec);
            sent += 1;
        }
        sent
    });
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let t0 = Instant::now();
    let r = c.recv(&mut [0u8; 2048]);
    let took = t0.elapsed();
    assert!(matches!(r, Err(Error::ReadTimeout)), "{r:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    c.set_nonblocking(true).unwrap();
    for _ in 0..10 {
        assert!(matches!(c.recv(&mut [0u8; 2048]), Err(Error::WouldBlock)));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent > 0);
    assert!(c.stats().datagrams_in > 0);
}

/// A server blocked in `recv` answers a client that lost the server's last
/// handshake flight and retransmits its own: the handshake completes and the
/// session echoes.
fn answers_a_retransmitted_final_flight(v: Variant) {
    let l = listen(v, &server_cfg());
    let addr = l.local_addr().unwrap();
    let acc = AcceptLoop::start(l);
    let server = std::thread::spawn(move || echo_until_closed(acc.next().0));
    let (mut c, ok) = LosesFinalFlight::handshake(addr, &client_cfg(), T);
    assert_eq!(c.lost, 1);
    assert!(ok, "the client's handshake did not complete");
    assert_eq!(c.echo(b"after", T).as_deref(), Some(&b"after"[..]));
    c.conn.close();
    c.flush();
    assert_eq!(server.join().unwrap().unwrap(), 1);
}

/// A server that only sends after the handshake (it never calls `recv`)
/// still answers a client that lost the server's last flight: `send` reads
/// for the peer while the peer may lack that flight.
fn send_only_server_answers_a_retransmitted_final_flight(v: Variant) {
    let l = listen(v, &server_cfg());
    let addr = l.local_addr().unwrap();
    let acc = AcceptLoop::start(l);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = acc.next();
        s.set_read_timeout(Some(T)).unwrap();
        s.set_write_timeout(Some(T)).unwrap();
        s.handshake().unwrap();
        let mut sent = 0;
        while !st.load(Ordering::Relaxed) {
            if s.send(b"tick").is_ok() {
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    });
    let (mut c, ok) = LosesFinalFlight::handshake(addr, &client_cfg(), T);
    assert_eq!(c.lost, 1);
    assert!(ok, "the client's handshake did not complete");
    assert_eq!(c.recv(T).as_deref(), Some(&b"tick"[..]));
    stop.store(true, Ordering::Relaxed);
    assert!(server.join().unwrap() > 0);
}

four_ways!(
    answers_a_retransmitted_final_flight,
    send_only_server_answers_a_retransmitted_final_flight,
    late_duplicate_hello_dropped,
    flood_respects_timeouts,
    listener_from_socket,
    select_loop_server,
    framework_serves_a_file,
    hundred_clients,
    unanswered_hello_does_not_stall,
    idle_listener_sleeps,
    cookie_bound_to_real_peer,
);
