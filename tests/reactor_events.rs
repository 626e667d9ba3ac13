//! What a reactor's handler sees, session by session (each test in the four
//! variants: IPv4/IPv6 x OsNet/Router).

mod common;
mod reactor_support;

use std::time::Duration;

use common::final_flight::LosesFinalFlight;
use common::{six_ways, Variant};
use dtls_reactor::{CloseCause, Limits};
use reactor_support::*;

fn log() -> Log {
    Default::default()
}

const T: Duration = Duration::from_secs(10);

/// A client that sends three datagrams and closes: the server sees accept,
/// connected, the three datagrams in order, and the peer's close_notify.
fn normal_session(v: Variant) {
    let slog = log();
    let mut sh = Rec::new(slog.clone());
    sh.echo = true;
    let server = serve(v, &server_cfg(), Limits::default(), sh);
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
    ch.close_after = Some(3);
    ch.stop_on_close = true;
    let client = clients(
        server.addr.unwrap(),
        &client_cfg(),
        1,
        Limits::default(),
        ch,
    );
    client.join_within(T);
    assert!(
        wait_for(T, || events(&slog).len() >= 6),
        "server events: {:?}",
        events(&slog)
    );
    let s = server.stop();
    let sev = events(&s.log);
    assert!(matches!(sev[0], Ev::Accept(_)), "{sev:?}");
    assert_eq!(
        &sev[1..],
        &[
            Ev::Connected,
            Ev::Data(b"one".to_vec()),
            Ev::Data(b"two".to_vec()),
            Ev::Data(b"three".to_vec()),
            Ev::Close(CloseCause::PeerClosed),
        ]
    );
    assert_eq!(
        events(&clog),
        vec![
            Ev::Connected,
            Ev::Data(b"one".to_vec()),
            Ev::Data(b"two".to_vec()),
            Ev::Data(b"three".to_vec()),
            Ev::Close(CloseCause::Local),
        ]
    );
    // One id for the whole session on each side.
    let ids: std::collections::HashSet<_> =
        slog.lock().unwrap().iter().filter_map(|x| x.0).collect();
    assert_eq!(ids.len(), 1);
}

/// The server closes after the first datagram: the client sees PeerClosed.
fn close_from_server(v: Variant) {
    let slog = log();
    let mut sh = Rec::new(slog.clone());
    sh.close_after = Some(1);
    let server = serve(v, &server_cfg(), Limits::default(), sh);
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"bye".to_vec()];
    ch.stop_on_close = true;
    let client = clients(
        server.addr.unwrap(),
        &client_cfg(),
        1,
        Limits::default(),
        ch,
    );
    client.join_within(T);
    assert_eq!(
        events(&clog),
        vec![Ev::Connected, Ev::Close(CloseCause::PeerClosed)]
    );
    let s = server.stop();
    let sev = events(&s.log);
    assert_eq!(
        &sev[1..],
        &[
            Ev::Connected,
            Ev::Data(b"bye".to_vec()),
            Ev::Close(CloseCause::Local)
        ],
        "{sev:?}"
    );
}

/// The handler refuses the peer: it is asked (again on each retry), nothing
/// else is reported, and no connection is kept; the client gives up.
fn refused_peer(v: Variant) {
    let slog = log();
    let mut sh = Rec::new(slog.clone());
    sh.accept = false;
    let server = serve(v, &server_cfg(), Limits::default(), sh);
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.stop_on_close = true;
    let ccfg = common::client()
        .initial_timeout(Duration::from_millis(100))
        .handshake_timeout(Some(Duration::from_millis(600)))
        .build()
        .unwrap();
    let client = clients(server.addr.unwrap(), &ccfg, 1, Limits::default(), ch);
    client.join_within(T);
    // The client retransmits its ClientHello on its timers, then gives up.
    let cev = events(&clog);
    assert_eq!(cev.last(), Some(&Ev::Close(CloseCause::HandshakeTimeout)));
    assert!(cev.len() >= 2, "{cev:?}");
    assert!(cev[..cev.len() - 1]
        .iter()
        .all(|e| *e == Ev::Timeout(dtls_reactor::DtlsTimeout::Retransmitted)));
    let st = server.handle.stats();
    let s = server.stop();
    let sev = events(&s.log);
    assert!(!sev.is_empty());
    assert!(sev.iter().all(|e| matches!(e, Ev::Accept(_))), "{sev:?}");
    assert_eq!(st.handler_refused, sev.len() as u64);
    assert_eq!(st.accepted, 0);
    assert_eq!(st.connections, 0);
    assert!(st.hello_verify >= 1);
}

/// A peer that passes the cookie and goes silent: the handshake's silence
/// limit closes it.
fn never_finishes(v: Variant) {
    let slog = log();
    let scfg = common::server()
        .handshake_silence(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let server = serve(v, &scfg, Limits::default(), Rec::new(slog.clone()));
    let mut c = HandClient::new(server.addr.unwrap(), &client_cfg());
    // ClientHello, HelloVerifyRequest, ClientHello with the cookie, then silence.
    c.flush();
    let mut buf = [0u8; 2048];
    let hvr = {
        let mut got = None;
        for _ in 0..100 {
            if let Ok(n) = c.sock.recv(&mut buf) {
                got = Some(n);
                break;
            }
        }
        got.expect("HelloVerifyRequest")
    };
    c.conn.feed(&buf[..hvr]).unwrap();
    c.flush();
    assert!(
        wait_for(T, || events(&slog).len() >= 2),
        "{:?}",
        events(&slog)
    );
    // on_close runs just before the entry is removed and the gauge updated.
    assert!(wait_for(T, || server.handle.stats().connections == 0));
    let st = server.handle.stats();
    let s = server.stop();
    let sev = events(&s.log);
    assert!(matches!(sev[0], Ev::Accept(_)));
    assert_eq!(&sev[1..], &[Ev::Close(CloseCause::PeerSilent)]);
    assert_eq!((st.silent_peers, st.handshake_timeouts), (1, 0));
    assert_eq!(st.connections, 0);
    assert_eq!(st.handshakes, 0);
}

/// A peer that goes silent after the handshake: the idle timeout closes it,
/// and the peer receives close_notify.
fn idle_timeout(v: Variant) {
    let slog = log();
    let limits = Limits::default().idle_timeout(Some(Duration::from_millis(300)));
    let server = serve(v, &server_cfg(), limits, Rec::new(slog.clone()));
    let mut c = HandClient::new(server.addr.unwrap(), &client_cfg());
    assert!(c.handshake(T));
    c.send(b"last words");
    assert!(
        wait_for(T, || events(&slog).len() >= 4),
        "{:?}",
        events(&slog)
    );
    // The close_notify reaches the silent peer.
    let r = c.recv(T);
    assert!(matches!(r, Err(dtls_reactor::Error::ClosedByPeer)), "{r:?}");
    let st = server.handle.stats();
    let s = server.stop();
    let sev = events(&s.log);
    assert_eq!(
        &sev[1..],
        &[
            Ev::Connected,
            Ev::Data(b"last words".to_vec()),
            Ev::Close(CloseCause::IdleTimeout)
        ]
    );
    assert_eq!(st.idle_timeouts, 1);
}

/// Another thread stops the server: every connection is closed with
/// close_notify (the clients see PeerClosed) and `run` returns.
fn stop_from_thread(v: Variant) {
    let slog = log();
    let mut sh = Rec::new(slog.clone());
    sh.echo = true;
    let server = serve(v, &server_cfg(), Limits::default(), sh);
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"hi".to_vec()];
    let client = clients(
        server.addr.unwrap(),
        &client_cfg(),
        3,
        Limits::default(),
        ch,
    );
    assert!(wait_for(T, || events(&clog)
        .iter()
        .filter(|e| matches!(e, Ev::Data(_)))
        .count()
        == 3));
    let h = server.handle.clone();
    std::thread::spawn(move || h.stop().unwrap())
        .join()
        .unwrap();
    let s = server.join_within(T);
    let sev = events(&s.log);
    assert_eq!(
        sev.iter()
            .filter(|e| **e == Ev::Close(CloseCause::Stopped))
            .count(),
        3,
        "{sev:?}"
    );
    assert!(wait_for(T, || events(&clog)
        .iter()
        .filter(|e| **e == Ev::Close(CloseCause::PeerClosed))
        .count()
        == 3));
    let c = client.stop();
    let cev = events(&c.log);
    assert!(!cev.contains(&Ev::Close(CloseCause::Stopped)), "{cev:?}");
}

/// Another thread sends on a server connection and closes it through the
/// handle; a command for an unknown connection is reported to on_error.
fn handle_send_close(v: Variant) {
    let slog = log();
    let server = serve(v, &server_cfg(), Limits::default(), Rec::new(slog.clone()));
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"hello".to_vec()];
    let client = clients(
        server.addr.unwrap(),
        &client_cfg(),
        1,
        Limits::default(),
        ch,
    );
    assert!(wait_for(T, || events(&slog).contains(&Ev::Data(b"hello".to_vec()))));
    let id = slog.lock().unwrap().iter().find_map(|x| x.0).unwrap();
    let h = server.handle.clone();
    std::thread::spawn(move || h.send(id, b"pushed").unwrap())
        .join()
        .unwrap();
    assert!(wait_for(T, || events(&clog).contains(&Ev::Data(b"pushed".to_vec()))));
    server.handle.close(id).unwrap();
    assert!(wait_for(T, || events(&clog)
        .contains(&Ev::Close(CloseCause::PeerClosed))));
    // The id is gone now: a send through the handle is an error for the handler.
    server.handle.send(id, b"late").unwrap();
    assert!(wait_for(T, || events(&slog)
        .iter()
        .any(|e| matches!(e, Ev::Error(_)))));
    let s = server.stop();
    let sev = events(&s.log);
    assert!(sev.contains(&Ev::Close(CloseCause::Local)), "{sev:?}");
    client.stop();
}

/// Two records in one datagram: the second is plaintext OpenSSL holds after
/// the first read; the reactor delivers it without another readiness event.
fn two_records_one_datagram(v: Variant) {
    let slog = log();
    let server = serve(v, &server_cfg(), Limits::default(), Rec::new(slog.clone()));
    let mut c = HandClient::new(server.addr.unwrap(), &client_cfg());
    assert!(c.handshake(T));
    c.conn.send(b"first").unwrap();
    c.conn.send(b"second").unwrap();
    let mut both = c.conn.poll_transmit().unwrap();
    both.extend_from_slice(&c.conn.poll_transmit().unwrap());
    c.sock.send(&both).unwrap();
    assert!(
        wait_for(T, || events(&slog).len() >= 4),
        "{:?}",
        events(&slog)
    );
    let s = server.stop();
    let sev = events(&s.log);
    assert_eq!(
        &sev[1..4],
        &[
            Ev::Connected,
            Ev::Data(b"first".to_vec()),
            Ev::Data(b"second".to_vec())
        ]
    );
}

/// A server that never answers (its listener is bound, nobody reads it): the
/// client's DTLS timers resend the ClientHello until OpenSSL's limit, then
/// the handler hears LimitReached and the close.
fn retransmit_limit(v: Variant) {
    let silent = ServerPort::bind(v);
    let cfg = common::client()
        .initial_timeout(Duration::from_millis(10))
        .max_timeout(Duration::from_millis(20))
        .handshake_timeout(None)
        .build()
        .unwrap();
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.stop_on_close = true;
    let client = clients(silent.local_addr(), &cfg, 1, Limits::default(), ch);
    let st = client.handle.clone();
    client.join_within(T);
    let cev = events(&clog);
    let n = cev.len();
    assert!(n >= 4, "{cev:?}");
    assert_eq!(
        &cev[n - 2..],
        &[
            Ev::Timeout(dtls_reactor::DtlsTimeout::LimitReached),
            Ev::Close(CloseCause::RetransmitLimit)
        ]
    );
    assert!(cev[..n - 2]
        .iter()
        .all(|e| *e == Ev::Timeout(dtls_reactor::DtlsTimeout::Retransmitted)));
    assert_eq!(st.stats().retransmissions, (n - 2) as u64);
}

/// Plain UDP sessions on the same loop (the benchmarks' baseline): the same
/// event sequence without DTLS; UDP has no close message, the idle timeout
/// ends the server side.
fn plain_udp_session(v: Variant) {
    let port = ServerPort::bind(v);
    let addr = port.local_addr();
    let slog = log();
    let mut sh = Rec::new(slog.clone());
    sh.echo = true;
    let limits = Limits::default().idle_timeout(Some(Duration::from_millis(200)));
    let server = spawn(Some(addr), move || {
        let mut r = dtls_reactor::Reactor::with_limits(sh, limits).unwrap();
        port.listen_plain(&mut r);
        r
    });
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"plain one".to_vec(), b"plain two".to_vec()];
    ch.close_after = Some(2);
    ch.stop_on_close = true;
    let client = spawn(None, move || {
        let mut r = dtls_reactor::Reactor::new(ch).unwrap();
        r.connect_plain(addr).unwrap();
        r
    });
    client.join_within(T);
    assert_eq!(
        events(&clog),
        vec![
            Ev::Connected,
            Ev::Data(b"plain one".to_vec()),
            Ev::Data(b"plain two".to_vec()),
            Ev::Close(CloseCause::Local)
        ]
    );
    assert!(
        wait_for(T, || events(&slog).len() >= 5),
        "{:?}",
        events(&slog)
    );
    let st = server.handle.stats();
    let s = server.stop();
    let sev = events(&s.log);
    assert!(matches!(sev[0], Ev::Accept(_)));
    assert_eq!(
        &sev[1..],
        &[
            Ev::Connected,
            Ev::Data(b"plain one".to_vec()),
            Ev::Data(b"plain two".to_vec()),
            Ev::Close(CloseCause::IdleTimeout)
        ]
    );
    assert_eq!(st.hello_verify, 0);
}

/// User timers fire in order; a cancelled one does not.
fn user_timers(v: Variant) {
    struct Timers {
        fired: Vec<u64>,
    }
    impl dtls_reactor::Handler for Timers {
        fn on_timer(
            &mut self,
            ctx: &mut dtls_reactor::Ctx<'_>,
            _t: dtls_reactor::TimerId,
            token: u64,
        ) {
            self.fired.push(token);
            if token == 0 {
                ctx.set_timer(Duration::from_millis(30), 3);
                ctx.set_timer(Duration::from_millis(10), 2);
                let t = ctx.set_timer(Duration::from_millis(20), 99);
                assert!(ctx.cancel_timer(t));
                assert!(!ctx.cancel_timer(t));
            }
            if token == 3 {
                ctx.stop();
            }
        }
    }
    let mut r = dtls_reactor::Reactor::new(Timers { fired: vec![] }).unwrap();
    ServerPort::bind(v).listen(&mut r, &server_cfg());
    let h = r.handle();
    let guard = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        let _ = h.stop();
    });
    r.set_timer(Duration::ZERO, 0);
    r.run().unwrap();
    assert_eq!(r.handler().fired, vec![0, 2, 3]);
    drop(guard);
}

/// Malformed ClientHellos sent to the listener (OpenSSL rejects some with an
/// error on the thread's queue) must not disturb an established session served
/// by the same reactor thread: it keeps echoing (replayed records included).
fn malformed_hellos_spare_sessions(v: Variant) {
    let slog = log();
    let mut sh = Rec::new(slog.clone());
    sh.echo = true;
    let server = serve(v, &server_cfg(), Limits::default(), sh);
    let addr = server.addr.unwrap();
    let mut c = HandClient::new(addr, &client_cfg());
    assert!(c.handshake(T));
    let hello = {
        let mut x = dtls_reactor::Connection::client(&client_cfg(), None).unwrap();
        x.poll_transmit().unwrap()
    };
    let garbage = std::net::UdpSocket::bind(v.any_port()).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..5u8 {
        for i in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut h = hello.clone();
            if i % 2 == 0 {
                h.truncate(seed as usize % h.len());
            } else {
                let at = seed as usize % h.len();
                h[at] ^= (seed >> 32) as u8 | 1;
            }
            let _ = garbage.send_to(&h, addr);
        }
        let msg = [b'x', round];
        // The record twice: OpenSSL discards the replay and reports "no data
        // yet", which is where a stale error would be taken for a fatal one.
        c.conn.send(&msg).unwrap();
        let d = c.conn.poll_transmit().unwrap();
        c.sock.send(&d).unwrap();
        c.sock.send(&d).unwrap();
        let mut echoed = false;
        for _ in 0..3 {
            match c.recv(T) {
                Ok(Some(d)) if d == msg => {
                    echoed = true;
                    break;
                }
                Ok(_) => c.send(&msg),
                Err(e) => panic!("round {round}: session failed: {e}"),
            }
        }
        assert!(echoed, "round {round}: no echo; events {:?}", events(&slog));
    }
    let st = server.handle.stats();
    assert_eq!(st.connections, 1, "the session is still there");
    assert!(st.cookie_dropped > 0, "{st:?}");
    server.stop();
}

/// The reactor answers a client that lost the server's last handshake flight
/// and retransmits its own: the handshake completes and the session echoes.
fn answers_a_retransmitted_final_flight(v: Variant) {
    let mut sh = Rec::new(log());
    sh.echo = true;
    let server = serve(v, &server_cfg(), Limits::default(), sh);
    let (mut c, ok) = LosesFinalFlight::handshake(server.addr.unwrap(), &client_cfg(), T);
    assert_eq!(c.lost, 1);
    assert!(ok, "the client's handshake did not complete");
    assert_eq!(c.echo(b"after", T).as_deref(), Some(&b"after"[..]));
    server.stop();
}

six_ways!(
    answers_a_retransmitted_final_flight,
    malformed_hellos_spare_sessions,
    normal_session,
    close_from_server,
    refused_peer,
    never_finishes,
    idle_timeout,
    stop_from_thread,
    handle_send_close,
    two_records_one_datagram,
    retransmit_limit,
    plain_udp_session,
    user_timers,
);

/// Router with in-memory hand-over: the link's descriptor never becomes
/// readable, so the reactor must serve its memory queue after each routing.
fn router_in_memory(v6: bool) {
    let v = Variant::new(v6, dtls_demux::DemuxKind::Router);
    let demux = dtls_demux::Router::bind_with(
        v.any_port(),
        dtls_demux::RouterOptions::default().in_memory(true),
    )
    .unwrap();
    let demux: std::sync::Arc<dyn dtls_demux::Demux> = demux;
    let addr = demux.local_addr().unwrap();
    let slog = log();
    let mut sh = Rec::new(slog.clone());
    sh.echo = true;
    let cfg = server_cfg();
    let server = spawn(Some(addr), move || {
        let mut r = dtls_reactor::Reactor::new(sh).unwrap();
        r.listen(demux, &cfg).unwrap();
        r
    });
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = (0..20u8).map(|i| vec![i; 10]).collect();
    ch.close_after = Some(20);
    ch.stop_on_close = true;
    let client = clients(addr, &client_cfg(), 1, Limits::default(), ch);
    client.join_within(T);
    let cev = events(&clog);
    assert_eq!(cev.len(), 22, "{cev:?}");
    assert_eq!(cev[21], Ev::Close(CloseCause::Local));
    assert!(wait_for(T, || events(&slog)
        .contains(&Ev::Close(CloseCause::PeerClosed))));
    server.stop();
}

#[test]
fn router_in_memory_v4() {
    router_in_memory(false)
}

#[test]
fn router_in_memory_v6() {
    router_in_memory(true)
}
