//! A peer that restarts from the same address and port (RFC 6347 section
//! 4.2.8), against the reactor: each test in the four variants (IPv4/IPv6 x
//! OsNet/Router).

mod common;
mod reactor_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{six_ways, Variant};
use dtls_reactor::{CloseCause, ConnId, Connection, Limits};
use reactor_support::*;

const T: Duration = Duration::from_secs(10);

/// An echoing server on its own thread, with its log.
fn echo_server(v: Variant) -> (Running<Rec>, Log) {
    let slog: Log = Default::default();
    let mut sh = Rec::new(slog.clone());
    sh.echo = true;
    (serve(v, &server_cfg(), Limits::default(), sh), slog)
}

/// Sends `msg` on the session and checks the echo (bounded).
fn echo_ok(c: &mut HandClient, msg: &[u8]) {
    c.send(msg);
    let got = c.recv(T).expect("session alive");
    assert_eq!(got.as_deref(), Some(msg), "echo of {msg:?}");
}

/// The next datagram on the client's socket that is not DTLS-protected
/// (epoch 0), within `limit`. Protected ones (echoes, retransmissions) are skipped.
fn next_plain_record(sock: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < limit {
        if let Ok(n) = sock.recv(&mut buf) {
            if n >= 13 && buf[3] == 0 && buf[4] == 0 {
                return Some(buf[..n].to_vec());
            }
        }
    }
    None
}

/// A HelloVerifyRequest: an epoch-0 handshake record of type hello_verify_request (3).
fn is_hello_verify(d: &[u8]) -> bool {
    d.len() > 13 && d[0] == 22 && d[1] == 0xfe && d[3] == 0 && d[4] == 0 && d[13] == 3
}

/// The ids of the server's log, in order of first appearance.
fn ids(log: &Log) -> Vec<ConnId> {
    let mut out = Vec::new();
    for (id, _) in log.lock().unwrap().iter() {
        if let Some(id) = id {
            if !out.contains(id) {
                out.push(*id);
            }
        }
    }
    out
}

fn events_of(log: &Log, id: ConnId) -> Vec<Ev> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|x| x.0 == Some(id))
        .map(|x| x.1.clone())
        .collect()
}

/// A client echoes, loses its state and handshakes again from the same address
/// and port: the new handshake completes and echoes, and the server's handler
/// saw the old session closed with `PeerRestarted` and a new one accepted.
fn client_restarts(v: Variant) {
    let (server, slog) = echo_server(v);
    let addr = server.addr.unwrap();
    let cfg = client_cfg();
    let mut c1 = HandClient::new(addr, &cfg);
    assert!(c1.handshake(T), "first handshake");
    echo_ok(&mut c1, b"before the restart");
    let local: SocketAddr = c1.sock.local_addr().unwrap();
    drop(c1);

    // The restarted client: a new socket on the same address and port.
    let s = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        None,
    )
    .unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&local.into()).unwrap();
    let sock: UdpSocket = s.into();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut c2 = HandClient {
        sock,
        conn: Connection::client(&cfg, None).unwrap(),
    };
    assert!(c2.handshake(T), "handshake after the restart");
    echo_ok(&mut c2, b"after the restart");
    echo_ok(&mut c2, b"and again");

    let st = server.handle.stats();
    let s = server.stop();
    let all = events(&s.log);
    let accepts: Vec<_> = all
        .iter()
        .filter_map(|e| match e {
            Ev::Accept(p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(accepts.len(), 2, "{all:?}");
    assert_eq!(accepts[0], accepts[1], "same peer: {all:?}");
    assert_eq!(accepts[0].port(), local.port());
    let ids = ids(&slog);
    assert_eq!(ids.len(), 2, "{all:?}");
    assert_eq!(
        events_of(&slog, ids[0]),
        vec![
            Ev::Connected,
            Ev::Data(b"before the restart".to_vec()),
            Ev::Close(CloseCause::PeerRestarted),
        ]
    );
    assert_eq!(
        events_of(&slog, ids[1]),
        vec![
            Ev::Connected,
            Ev::Data(b"after the restart".to_vec()),
            Ev::Data(b"and again".to_vec()),
            Ev::Close(CloseCause::Stopped),
        ]
    );
    // The old session ended before the new one was accepted and connected.
    let pos = |want: &Ev| all.iter().position(|e| e == want).unwrap();
    let second_accept = all
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Ev::Accept(_)))
        .nth(1)
        .unwrap()
        .0;
    assert!(second_accept < pos(&Ev::Close(CloseCause::PeerRestarted)));
    assert!(
        pos(&Ev::Close(CloseCause::PeerRestarted)) < pos(&Ev::Data(b"after the restart".to_vec()))
    );
    assert_eq!(st.peer_restarts, 1);
    assert_eq!(st.accepted, 2);
    assert_eq!(st.connections, 1);
    assert_eq!(st.handshakes, 0);
    assert!(st.hello_verify >= 2, "{st:?}");
}

/// A ClientHello without a cookie, then one with a wrong cookie, from the
/// established peer's own address and port: each earns a HelloVerifyRequest
/// on the peer's socket, and the session goes on untouched.
fn forged_hello_keeps_session(v: Variant) {
    let (server, slog) = echo_server(v);
    let addr = server.addr.unwrap();
    let cfg = client_cfg();
    let mut c = HandClient::new(addr, &cfg);
    assert!(c.handshake(T));
    echo_ok(&mut c, b"before");

    let mut forger = Connection::client(&cfg, None).unwrap();
    let hello = forger.poll_transmit().unwrap();
    socket2::SockRef::from(&c.sock).send(&hello).unwrap();
    let hvr = next_plain_record(&c.sock, T).expect("an answer to the forged hello");
    assert!(is_hello_verify(&hvr), "{hvr:?}");
    echo_ok(&mut c, b"after the cookie-less hello");

    // The forger learns the cookie (it does receive at the address here), but
    // sends a corrupted one.
    forger.feed(&hvr).unwrap();
    let mut bad = forger.poll_transmit().expect("hello with cookie");
    let sid_len = usize::from(bad[13 + 12 + 2 + 32]);
    let cookie_at = 13 + 12 + 2 + 32 + 1 + sid_len;
    assert!(bad[cookie_at] > 0, "the hello carries a cookie");
    bad[cookie_at + 1] ^= 0xff;
    socket2::SockRef::from(&c.sock).send(&bad).unwrap();
    let again = next_plain_record(&c.sock, T).expect("an answer to the bad cookie");
    assert!(is_hello_verify(&again), "{again:?}");
    echo_ok(&mut c, b"after the wrong cookie");

    let st = server.handle.stats();
    assert_eq!(st.peer_restarts, 0);
    assert_eq!(st.connections, 1);
    assert_eq!(st.accepted, 1);
    assert!(st.hello_verify >= 3, "{st:?}");
    let s = server.stop();
    let sev = events(&s.log);
    assert_eq!(
        &sev[1..],
        &[
            Ev::Connected,
            Ev::Data(b"before".to_vec()),
            Ev::Data(b"after the cookie-less hello".to_vec()),
            Ev::Data(b"after the wrong cookie".to_vec()),
            Ev::Close(CloseCause::Stopped),
        ]
    );
    assert_eq!(ids(&slog).len(), 1);
}

/// A late copy of the cookie-carrying ClientHello that opened the session
/// (the network duplicated it) carries a valid cookie, but is not a restart:
/// the session stays.
fn duplicate_hello_is_not_a_restart(v: Variant) {
    let (server, slog) = echo_server(v);
    let addr = server.addr.unwrap();
    let mut c = HandClient::new(addr, &client_cfg());
    c.flush();
    let hvr = next_plain_record(&c.sock, T).expect("HelloVerifyRequest");
    assert!(is_hello_verify(&hvr));
    c.conn.feed(&hvr).unwrap();
    let hello = c.conn.poll_transmit().expect("hello with cookie");
    c.sock.send(&hello).unwrap();
    assert!(c.handshake(T));
    echo_ok(&mut c, b"before");

    c.sock.send(&hello).unwrap();
    echo_ok(&mut c, b"after the duplicate");

    let st = server.handle.stats();
    assert_eq!(st.peer_restarts, 0);
    assert_eq!(st.accepted, 1);
    assert!(st.cookie_dropped >= 1, "{st:?}");
    let s = server.stop();
    let sev = events(&s.log);
    assert_eq!(
        &sev[1..],
        &[
            Ev::Connected,
            Ev::Data(b"before".to_vec()),
            Ev::Data(b"after the duplicate".to_vec()),
            Ev::Close(CloseCause::Stopped),
        ]
    );
    assert_eq!(ids(&slog).len(), 1);
}

six_ways!(
    client_restarts,
    forged_hello_keeps_session,
    duplicate_hello_is_not_a_restart,
);
