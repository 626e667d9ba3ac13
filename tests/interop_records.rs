//! The engine's own record layer against independent DTLS 1.2
//! implementations, per AEAD suite and in both roles: OpenSSL's
//! `s_client`/`s_server` and GnuTLS's `gnutls-cli`/`gnutls-serv`. Also the
//! case the record layer must handle after OpenSSL's session is gone: this
//! side's last handshake flight is lost, the peer retransmits its own, and
//! the engine sends the kept flight again (a full handshake with our server,
//! a resumed one with our client).
//!
//! Missing peer binaries skip a test outside CI, as in `tests/interop.rs`.

mod common;
mod peer_util;
mod socket_util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{four_ways, Variant};
use dtls_reactor::{DtlsSocket, Error, ServerConfig};
use peer_util::*;
use socket_util::*;

/// The DTLS 1.2 AEAD suites with the test PKI's ECDSA server certificate:
/// OpenSSL's name, GnuTLS's cipher name.
const SUITES: [(&str, &str); 5] = [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "AES-128-GCM"),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "AES-256-GCM"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "CHACHA20-POLY1305"),
    ("ECDHE-ECDSA-AES128-CCM", "AES-128-CCM"),
    ("ECDHE-ECDSA-AES256-CCM8", "AES-256-CCM-8"),
];

fn gnutls_priority(cipher: &str) -> String {
    format!("NORMAL:-VERS-ALL:+VERS-DTLS1.2:-CIPHER-ALL:+{cipher}:-KX-ALL:+ECDHE-ECDSA")
}

/// What our server saw of one connection.
struct Served {
    engine: bool,
    cipher: Option<String>,
    echoed: usize,
    /// Flights sent again after the handshake completed (our kept last
    /// flight, for the peer's retransmitted final flight).
    resent_after_handshake: u64,
}

/// Our server on `v`'s loopback, in a thread: accepts one connection,
/// echoes until the peer closes, [`Serving::done`] is called or the peer
/// goes quiet, then reports.
struct Serving {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Served>,
}

impl Serving {
    fn done(self) -> Served {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

fn serve_one(v: Variant, cfg: &ServerConfig) -> Serving {
    let listener = listen(v, cfg);
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let handle = std::thread::spawn(move || {
        let start = Instant::now();
        let mut s = loop {
            match listener.accept() {
                Ok(Some((s, _))) => break s,
                Ok(None) | Err(Error::ReadTimeout) => {
                    assert!(start.elapsed() < WAIT * 2, "no connection came");
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        // Router forwards a link's datagrams when the listener is read:
        // keep reading it (later connections are not served).
        let done = Arc::new(AtomicBool::new(false));
        let (l, d) = (listener.clone(), done.clone());
        let reader = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                let _ = l.accept();
            }
        });
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let at_accept = s.stats().retransmissions;
        let mut echoed = 0;
        let mut buf = [0u8; 2048];
        let mut quiet = Instant::now();
        loop {
            match s.recv(&mut buf) {
                Ok(n) => {
                    quiet = Instant::now();
                    echoed += 1;
                    if s.send(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(Error::ReadTimeout) | Err(Error::WouldBlock) => {
                    if quiet.elapsed() > WAIT * 2 || st.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        done.store(true, Ordering::Relaxed);
        let _ = reader.join();
        let c = s.connection().expect("the connection");
        Served {
            engine: c.engine_record_layer(),
            cipher: c.cipher(),
            echoed,
            resent_after_handshake: c.stats().retransmissions - at_accept,
        }
    });
    Serving { addr, stop, handle }
}

fn server_for(suite: &str) -> ServerConfig {
    fast_server().ciphers(suite).build().unwrap()
}

/// Sends `msg` through `peer` (a client that writes stdin lines as records
/// and prints what comes back) until the echo shows.
fn echo_through(peer: &mut Peer, msg: &str) {
    let start = Instant::now();
    while !peer.wait_for(&format!("{msg}\n"), Duration::from_millis(300)) {
        assert!(
            start.elapsed() < WAIT * 2,
            "no echo via `{}`:\n{}",
            peer.what,
            peer.output()
        );
        peer.send_line(msg);
    }
}

fn s_client(to: SocketAddr, suite: &str) -> Peer {
    Peer::spawn(
        "openssl",
        &args(&[
            "s_client",
            "-dtls1_2",
            "-connect",
            &host_port(to),
            "-cipher",
            suite,
            "-CAfile",
            &cert("ca.pem"),
            "-verify_return_error",
            "-quiet",
        ]),
    )
}

fn gnutls_cli(to: SocketAddr, cipher: &str) -> Peer {
    Peer::spawn(
        "gnutls-cli",
        &args(&[
            "--udp",
            "--port",
            &to.port().to_string(),
            "--x509cafile",
            &cert("ca.pem"),
            "--priority",
            &gnutls_priority(cipher),
            &to.ip().to_string(),
        ]),
    )
}

fn check(served: Served, suite: &str, output: &str) {
    assert!(served.engine, "{suite}: not on the engine's record layer");
    assert_eq!(served.cipher.as_deref(), Some(suite));
    assert!(served.echoed >= 1, "{suite}:\n{output}");
}

/// `s_client` against our server, each suite.
fn s_client_each_suite(v: Variant) {
    if !have("openssl") {
        return;
    }
    for (suite, _) in SUITES {
        let srv = serve_one(v, &server_for(suite));
        let mut peer = s_client(srv.addr, suite);
        echo_through(&mut peer, &format!("s_client-{suite}"));
        let out = peer.output();
        drop(peer);
        check(srv.done(), suite, &out);
    }
}

/// `gnutls-cli` against our server, each suite.
fn gnutls_cli_each_suite(v: Variant) {
    if !have("gnutls-cli") {
        return;
    }
    for (suite, cipher) in SUITES {
        let srv = serve_one(v, &server_for(suite));
        let mut peer = gnutls_cli(srv.addr, cipher);
        assert!(
            peer.wait_for("Handshake was completed", WAIT),
            "{suite}:\n{}",
            peer.output()
        );
        echo_through(&mut peer, &format!("gnutls-{cipher}"));
        let out = peer.output();
        drop(peer);
        check(srv.done(), suite, &out);
    }
}

four_ways!(s_client_each_suite, gnutls_cli_each_suite);

/// Our client against `s_server`, each suite: a line each way.
fn our_client_to_s_server(v6: bool) {
    if !have("openssl") {
        return;
    }
    let ip = Variant::new(v6, dtls_demux::DemuxKind::OsNet).ip();
    for (suite, _) in SUITES {
        let (mut peer, addr) = s_server(ip, "-dtls1_2", &["-cipher", suite]);
        let c = fast_client().ciphers(suite).build().unwrap();
        let mut s = our_client(addr, &c);
        let conn = s.connection().unwrap();
        assert!(conn.engine_record_layer(), "{suite}");
        assert_eq!(conn.cipher().as_deref(), Some(suite));
        to_s_server_and_back(&mut s, &mut peer, suite);
    }
}

fn to_s_server_and_back(s: &mut DtlsSocket, peer: &mut Peer, what: &str) {
    s.send(format!("ours-{what}\n").as_bytes()).unwrap();
    assert!(
        peer.wait_for(&format!("ours-{what}"), WAIT),
        "s_server did not print our data:\n{}",
        peer.output()
    );
    peer.send_line(&format!("theirs-{what}"));
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(WAIT)).unwrap();
    let n = s.recv(&mut buf).expect("data from s_server");
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]).trim_end(),
        format!("theirs-{what}")
    );
}

#[test]
fn our_client_to_s_server_each_suite_v4() {
    our_client_to_s_server(false);
}

#[test]
fn our_client_to_s_server_each_suite_v6() {
    our_client_to_s_server(true);
}

/// Our client against `gnutls-serv --echo`, each suite.
fn our_client_to_gnutls_serv(v6: bool) {
    if !have("gnutls-serv") {
        return;
    }
    let ip = Variant::new(v6, dtls_demux::DemuxKind::OsNet).ip();
    for (suite, cipher) in SUITES {
        let addr = free_port(ip);
        let prio = gnutls_priority(cipher);
        let peer = gnutls_serv(addr, &["--priority", &prio]);
        let c = fast_client().ciphers(suite).build().unwrap();
        let mut s = our_client(addr, &c);
        assert!(s.connection().unwrap().engine_record_layer(), "{suite}");
        s.set_read_timeout(Some(WAIT)).unwrap();
        for i in 0..3 {
            let msg = format!("{suite}-{i}");
            s.send(msg.as_bytes()).unwrap();
            let mut buf = [0u8; 2048];
            let n = s.recv(&mut buf).expect("echo from gnutls-serv");
            assert_eq!(&buf[..n], msg.as_bytes(), "{}", peer.output());
        }
        let _ = s.shutdown();
    }
}

#[test]
fn our_client_to_gnutls_serv_each_suite_v4() {
    our_client_to_gnutls_serv(false);
}

#[test]
fn our_client_to_gnutls_serv_each_suite_v6() {
    our_client_to_gnutls_serv(true);
}

// --- Our last flight lost ---------------------------------------------------

/// A relay between one client and `upstream` that loses the `nth`
/// datagram (1-based) holding a protected handshake record (a Finished)
/// that `side` sends: the last flight of a handshake.
struct LoseFinished {
    addr: SocketAddr,
    lost: Arc<AtomicUsize>,
    /// Datagrams with a protected handshake record `side` sent, the lost
    /// one included.
    seen: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// Whether `d` holds a handshake record of an epoch above 0.
fn has_protected_handshake(mut d: &[u8]) -> bool {
    while d.len() >= 13 {
        if d[0] == 22 && u16::from_be_bytes([d[3], d[4]]) > 0 {
            return true;
        }
        let end = 13 + usize::from(u16::from_be_bytes([d[11], d[12]]));
        d = d.get(end..).unwrap_or_default();
    }
    false
}

impl LoseFinished {
    fn start(upstream: SocketAddr, side: Side, nth: usize) -> LoseFinished {
        let front = UdpSocket::bind(SocketAddr::new(upstream.ip(), 0)).unwrap();
        let up = UdpSocket::bind(SocketAddr::new(upstream.ip(), 0)).unwrap();
        up.connect(upstream).unwrap();
        for s in [&front, &up] {
            s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        }
        let addr = front.local_addr().unwrap();
        let lost = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, se, st) = (lost.clone(), seen.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65536];
            let started = Instant::now();
            while !st.load(Ordering::Relaxed) && started.elapsed() < WAIT * 6 {
                let lose = |from: Side, d: &[u8]| {
                    if from == side
                        && has_protected_handshake(d)
                        && se.fetch_add(1, Ordering::Relaxed) + 1 == nth
                    {
                        l.fetch_add(1, Ordering::Relaxed);
                        return true;
                    }
                    false
                };
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    client = Some(from);
                    if !lose(Side::Client, &buf[..n]) {
                        let _ = up.send(&buf[..n]);
                    }
                }
                if let Ok(n) = up.recv(&mut buf) {
                    if let Some(c) = client {
                        if !lose(Side::Upstream, &buf[..n]) {
                            let _ = front.send_to(&buf[..n], c);
                        }
                    }
                }
            }
        });
        LoseFinished {
            addr,
            lost,
            seen,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for LoseFinished {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Full handshake, `s_client` against our server; our CCS + Finished are
/// lost. `s_client` retransmits its final flight to a session the engine
/// already carries, which answers with the kept flight.
#[test]
fn our_servers_lost_last_flight_to_s_client() {
    if !have("openssl") {
        return;
    }
    let v = Variant::new(false, dtls_demux::DemuxKind::OsNet);
    for suite in [SUITES[0].0, SUITES[2].0] {
        let srv = serve_one(v, &server_for(suite));
        let relay = LoseFinished::start(srv.addr, Side::Upstream, 1);
        let mut peer = s_client(relay.addr, suite);
        echo_through(&mut peer, &format!("after-loss-{suite}"));
        assert_eq!(relay.lost.load(Ordering::Relaxed), 1);
        drop(peer);
        let served = srv.done();
        assert!(served.engine, "{suite}");
        assert!(
            served.resent_after_handshake >= 1,
            "{suite}: the kept flight was not sent again"
        );
    }
}

/// The same with `gnutls-cli`.
#[test]
fn our_servers_lost_last_flight_to_gnutls_cli() {
    if !have("gnutls-cli") {
        return;
    }
    let v = Variant::new(false, dtls_demux::DemuxKind::OsNet);
    let (suite, cipher) = SUITES[3];
    let srv = serve_one(v, &server_for(suite));
    let relay = LoseFinished::start(srv.addr, Side::Upstream, 1);
    let mut peer = gnutls_cli(relay.addr, cipher);
    assert!(
        peer.wait_for("Handshake was completed", WAIT * 2),
        "{}",
        peer.output()
    );
    echo_through(&mut peer, "gnutls-after-loss");
    assert_eq!(relay.lost.load(Ordering::Relaxed), 1);
    drop(peer);
    let served = srv.done();
    assert!(served.engine);
    assert!(served.resent_after_handshake >= 1);
}

/// A resumed handshake ends with the client's flight: our client's CCS +
/// Finished are lost, `gnutls-serv` retransmits its ServerHello, CCS and
/// Finished, and our client, already on the engine's record layer, sends
/// its flight again. (`s_server` serves one DTLS session and exits, so it
/// cannot resume one.)
#[test]
fn our_clients_lost_last_flight_to_gnutls_serv() {
    if !have("gnutls-serv") {
        return;
    }
    let ip = Variant::new(false, dtls_demux::DemuxKind::OsNet).ip();
    let (suite, cipher) = SUITES[1];
    let addr = free_port(ip);
    let prio = gnutls_priority(cipher);
    let peer = gnutls_serv(addr, &["--priority", &prio]);
    // Through the relay both times: sessions are kept per server address.
    let relay = LoseFinished::start(addr, Side::Client, 2);
    let c = fast_client()
        .ciphers(suite)
        .resume_sessions(true)
        .build()
        .unwrap();
    let mut first = our_client(relay.addr, &c);
    echo_until(&mut first, "first", &peer);
    let _ = first.shutdown();
    drop(first);
    let mut second = our_client(relay.addr, &c);
    let conn = second.connection().unwrap();
    assert!(conn.session_reused(), "{}", peer.output());
    assert!(conn.engine_record_layer());
    echo_until(&mut second, "second", &peer);
    assert_eq!(relay.lost.load(Ordering::Relaxed), 1);
    // On the wire: the first session's Finished, the lost one, and the
    // flight sent again by the engine (OpenSSL's session is gone by then:
    // a resumed client is established once its Finished is written).
    assert!(
        relay.seen.load(Ordering::Relaxed) >= 3,
        "the kept flight was not sent again:\n{}",
        peer.output()
    );
}

/// Sends `msg` to an echo server until it comes back (data sent before the
/// server has our last flight may be lost with it).
fn echo_until(s: &mut DtlsSocket, msg: &str, peer: &Peer) {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    loop {
        assert!(
            start.elapsed() < WAIT * 2,
            "no echo of {msg}:\n{}",
            peer.output()
        );
        s.send(msg.as_bytes()).unwrap();
        match s.recv(&mut buf) {
            Ok(n) if &buf[..n] == msg.as_bytes() => return,
            Ok(_) | Err(Error::ReadTimeout) | Err(Error::WouldBlock) => {}
            Err(e) => panic!("{msg}: {e}\n{}", peer.output()),
        }
    }
}
