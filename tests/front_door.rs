//! The front door's rules, tested once against every front end: the socket
//! API's `DtlsListener` and the reactor, each four ways (IPv4/IPv6 x
//! OsNet/Router). The same scenario body runs against both; only how the
//! server is started and read differs.
//!
//! - caps: at `max_handshakes`, ClientHellos that carry valid cookies from
//!   more addresses than the cap start no OpenSSL handshake (the door's
//!   `incoming` and `accepted` stay at the cap), while HelloVerifyRequests
//!   are still answered;
//! - late copies of an admitted ClientHello, during the session and after it
//!   ended, are dropped and counted; the session goes on;
//! - a peer restart (same address and port) without a cookie earns a
//!   HelloVerifyRequest and leaves the session; with one it replaces it;
//! - a hello that cannot be served (no shared cipher) is refused with an
//!   alert and counted; nothing is kept.

mod common;
mod reactor_support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{four_ways, six_ways, Variant};
use dtls_reactor::{
    Admission, AdmissionLimits, AdmissionStats, ClientConfig, CloseReason, Connection,
    DtlsListener, Error, Limits, ReactorHandle, ServerConfig, State,
};
use reactor_support::{serve, wait_for, HandClient, Rec, Running};

/// Bound of every wait.
const T: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Front {
    Socket,
    Reactor,
}

/// A server of either front end that echoes every datagram.
struct Served {
    addr: SocketAddr,
    inner: Inner,
}

enum Inner {
    Socket {
        listener: Arc<DtlsListener>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
    Reactor(Option<Running<Rec>>, ReactorHandle),
}

impl Served {
    fn start(front: Front, v: Variant, cfg: &ServerConfig, limits: AdmissionLimits) -> Served {
        match front {
            Front::Socket => {
                let demux = dtls_demux::bind(v.demux, v.any_port()).expect("bind");
                let l = DtlsListener::with_admission(demux, cfg, &Admission::new(limits))
                    .expect("listener");
                l.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                let listener = Arc::new(l);
                let addr = listener.local_addr().unwrap();
                let stop = Arc::new(AtomicBool::new(false));
                let (l, st) = (listener.clone(), stop.clone());
                let thread = std::thread::spawn(move || {
                    let mut workers = Vec::new();
                    while !st.load(Ordering::Relaxed) {
                        match l.accept() {
                            Ok(Some((mut s, _))) => {
                                let st = st.clone();
                                workers.push(std::thread::spawn(move || {
                                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                                    let mut buf = [0u8; 2048];
                                    while !st.load(Ordering::Relaxed) {
                                        match s.recv(&mut buf) {
                                            Ok(n) => {
                                                let _ = s.send(&buf[..n]);
                                            }
                                            Err(Error::ReadTimeout)
                                            | Err(Error::HandshakeTimeout) => {}
                                            Err(_) => return,
                                        }
                                    }
                                }));
                            }
                            Ok(None) | Err(Error::ReadTimeout) => {}
                            Err(e) => panic!("accept: {e}"),
                        }
                    }
                    for w in workers {
                        let _ = w.join();
                    }
                });
                Served {
                    addr,
                    inner: Inner::Socket {
                        listener,
                        stop,
                        thread: Some(thread),
                    },
                }
            }
            Front::Reactor => {
                let limits = Limits::default()
                    .max_connections(limits.max_connections)
                    .max_handshakes(limits.max_handshakes);
                let mut rec = Rec::new(reactor_support::log());
                rec.echo = true;
                let r = serve(v, cfg, limits, rec);
                let addr = r.addr.unwrap();
                let handle = r.handle.clone();
                Served {
                    addr,
                    inner: Inner::Reactor(Some(r), handle),
                }
            }
        }
    }

    fn stats(&self) -> AdmissionStats {
        match &self.inner {
            Inner::Socket { listener, .. } => listener.stats().admission,
            Inner::Reactor(_, h) => h.admission_stats(),
        }
    }

    /// Waits until `f` holds of the stats; panics with them otherwise.
    fn wait(&self, what: &str, f: impl Fn(&AdmissionStats) -> bool) {
        if !wait_for(T, || f(&self.stats())) {
            panic!("{what}: {:?}", self.stats());
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Socket { stop, thread, .. } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Inner::Reactor(r, _) => {
                if let Some(r) = r.take() {
                    r.stop();
                }
            }
        }
    }
}

fn server_cfg() -> ServerConfig {
    // Silent peers keep their slot for the whole test (the caps scenario).
    common::server()
        .initial_timeout(Duration::from_millis(100))
        .handshake_silence(None)
        .build()
        .unwrap()
}

fn client_cfg() -> ClientConfig {
    common::client()
        .initial_timeout(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// A client on its own socket that stops after sending its cookie hello:
/// returns the socket (to keep the address) and the hello with the cookie.
fn cookie_hello(sock: &UdpSocket, cfg: &ClientConfig) -> Vec<u8> {
    let mut c = Connection::client(cfg, None).unwrap();
    let hello = c.poll_transmit().unwrap();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < T, "no HelloVerifyRequest");
        sock.send(&hello).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            c.feed(&buf[..n]).unwrap();
            if let Some(h2) = c.poll_transmit() {
                return h2;
            }
        }
    }
}

fn client_sock(v: Variant, server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(v.any_port()).unwrap();
    s.connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// At the half-open cap, cookie-carrying hellos from many more addresses
/// than the cap start nothing: no OpenSSL session, no signature.
fn caps(front: Front, v: Variant) {
    const CAP: usize = 4;
    const FLOOD: usize = 40;
    const COPIES: usize = 3;
    let limits = AdmissionLimits::default().max_handshakes(CAP);
    let srv = Served::start(front, v, &server_cfg(), limits);
    let ccfg = client_cfg();
    // CAP peers pass the cookie and go silent: the cap is reached.
    let silent: Vec<UdpSocket> = (0..CAP)
        .map(|_| {
            let s = client_sock(v, srv.addr);
            let h2 = cookie_hello(&s, &ccfg);
            s.send(&h2).unwrap();
            s
        })
        .collect();
    srv.wait("cap reached", |s| s.accepted == CAP as u64);
    assert_eq!(srv.stats().handshakes, CAP as u64);
    // The flood: every source gets its HelloVerifyRequest (stateless), then
    // sends the valid cookie COPIES times.
    let flood: Vec<UdpSocket> = (0..FLOOD)
        .map(|_| {
            let s = client_sock(v, srv.addr);
            let h2 = cookie_hello(&s, &ccfg);
            for _ in 0..COPIES {
                s.send(&h2).unwrap();
            }
            s
        })
        .collect();
    srv.wait("every capped hello counted", |s| {
        s.limit_handshakes == (FLOOD * COPIES) as u64
    });
    let st = srv.stats();
    assert_eq!(
        st.incoming, CAP as u64,
        "no cookie was checked past the cap: {st:?}"
    );
    assert_eq!(
        st.accepted, CAP as u64,
        "no handshake was started past the cap: {st:?}"
    );
    assert_eq!(st.handshakes, CAP as u64);
    assert!(st.hello_verify >= (CAP + FLOOD) as u64, "{st:?}");
    assert!(st.peak_handshakes <= CAP as u64, "{st:?}");
    drop((silent, flood));
}

/// Late copies of an admitted ClientHello: dropped during the session (it
/// goes on) and after it ended (no new connection).
fn late_copies(front: Front, v: Variant) {
    let srv = Served::start(front, v, &server_cfg(), AdmissionLimits::default());
    let ccfg = client_cfg();
    let mut c = HandClient::new(srv.addr, &ccfg);
    // Keep the cookie hello as it went out.
    c.flush_with(|_| ());
    let mut copy = None;
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while !c.conn.is_established() {
        assert!(start.elapsed() < T, "handshake");
        if let Ok(n) = c.sock.recv(&mut buf) {
            let _ = c.conn.feed(&buf[..n]);
        }
        let _ = c.conn.handle_timeout(Instant::now());
        c.flush_with(|d| {
            let v = dtls_reactor::Datagram::parse(d);
            if v.carries_cookie() {
                copy = Some(d.to_vec());
            }
        });
    }
    let copy = copy.expect("the cookie hello");
    c.send(b"one");
    assert_eq!(c.recv(T).unwrap().as_deref(), Some(&b"one"[..]));
    let before = srv.stats();
    for _ in 0..3 {
        c.sock.send(&copy).unwrap();
    }
    srv.wait("copies during the session", |s| {
        s.duplicate_hellos == before.duplicate_hellos + 3
    });
    c.send(b"two");
    assert_eq!(
        c.recv(T).unwrap().as_deref(),
        Some(&b"two"[..]),
        "session goes on"
    );
    // End the session; the server's side goes.
    c.conn.close();
    c.flush();
    srv.wait("session over", |s| s.connections == 0);
    c.sock.send(&copy).unwrap();
    srv.wait("copy after the session", |s| {
        s.duplicate_hellos == before.duplicate_hellos + 4
    });
    let st = srv.stats();
    assert_eq!(st.accepted, 1, "{st:?}");
    assert_eq!(st.connections, 0, "{st:?}");
}

/// A restart without a cookie earns a HelloVerifyRequest and leaves the
/// session; with the cookie, the new session replaces the old one.
fn restart(front: Front, v: Variant) {
    let srv = Served::start(front, v, &server_cfg(), AdmissionLimits::default());
    let ccfg = client_cfg();
    let mut c = HandClient::new(srv.addr, &ccfg);
    assert!(c.handshake(T));
    c.send(b"first");
    assert_eq!(c.recv(T).unwrap().as_deref(), Some(&b"first"[..]));
    // The same address and port, a new client: its first hello has no cookie.
    let mut fresh = Connection::client(&ccfg, None).unwrap();
    let hello = fresh.poll_transmit().unwrap();
    c.sock.send(&hello).unwrap();
    let mut buf = [0u8; 2048];
    let n = c
        .sock
        .recv(&mut buf)
        .expect("HelloVerifyRequest on the link");
    fresh.feed(&buf[..n]).unwrap();
    let hello2 = fresh.poll_transmit().expect("the hello with the cookie");
    let mid = srv.stats();
    assert_eq!((mid.peer_restarts, mid.accepted), (0, 1), "{mid:?}");
    c.send(b"still");
    assert_eq!(
        c.recv(T).unwrap().as_deref(),
        Some(&b"still"[..]),
        "session kept"
    );
    // With the cookie: a new session from the same address and port.
    c.sock.send(&hello2).unwrap();
    c.conn = fresh;
    assert!(c.handshake(T), "restarted handshake");
    c.send(b"second");
    assert_eq!(c.recv(T).unwrap().as_deref(), Some(&b"second"[..]));
    let st = srv.stats();
    assert_eq!((st.peer_restarts, st.accepted), (1, 2), "{st:?}");
    srv.wait("the old session's slot went to the new one", |s| {
        s.connections == 1
    });
}

/// A hello that cannot be served is refused with an alert; nothing is kept.
fn refused(front: Front, v: Variant) {
    let srv = Served::start(front, v, &server_cfg(), AdmissionLimits::default());
    // The server's key is ECDSA: a client that offers only RSA suites shares none.
    let ccfg = common::client()
        .ciphers("ECDHE-RSA-AES128-GCM-SHA256")
        .initial_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut c = HandClient::new(srv.addr, &ccfg);
    assert!(!c.handshake(T));
    // Ended by the server's alert, not by the client's own timers.
    assert!(
        matches!(c.conn.state(), State::Closed(CloseReason::Failed(why)) if why.contains("alert")),
        "{:?}",
        c.conn.state()
    );
    let st = srv.stats();
    assert_eq!(
        (st.refused, st.accepted, st.connections),
        (1, 0, 0),
        "{st:?}"
    );
}

fn caps_socket(v: Variant) {
    caps(Front::Socket, v)
}
fn caps_reactor(v: Variant) {
    caps(Front::Reactor, v)
}
fn late_copies_socket(v: Variant) {
    late_copies(Front::Socket, v)
}
fn late_copies_reactor(v: Variant) {
    late_copies(Front::Reactor, v)
}
fn restart_socket(v: Variant) {
    restart(Front::Socket, v)
}
fn restart_reactor(v: Variant) {
    restart(Front::Reactor, v)
}
fn refused_socket(v: Variant) {
    refused(Front::Socket, v)
}
fn refused_reactor(v: Variant) {
    refused(Front::Reactor, v)
}

four_ways!(
    caps_socket,
    late_copies_socket,
    restart_socket,
    refused_socket
);
six_ways!(
    caps_reactor,
    late_copies_reactor,
    restart_reactor,
    refused_reactor
);
