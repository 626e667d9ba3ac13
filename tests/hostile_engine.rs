//! Hostile datagrams against the sans-IO engine, and how they are counted:
//!
//! - Over real loopback UDP (the echo server and client driver of
//!   `tests/common/engine_udp.rs`: no socket API, no reactor): 200,000
//!   random, truncated and malformed datagrams, half from unknown peers, half
//!   from an established peer's own socket mixed with real traffic: no panic,
//!   the session survives, every drop is counted. In IPv4 and IPv6 (the
//!   engine, not a demux: the OsNet/Router variants do not apply).
//! - In memory: the drop and discard counters, and forged protected records
//!   shorter than their cipher's overhead, which must not end the session.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::engine_udp::{
    client_config, client_socket, echo_all, handshake, server_config, Server, V4, V6,
};
use common::relay::Rng;
use dtls_reactor::{Admission, Admitted, Connection, Datagram, FrontDoor};

// ---------------------------------------------------------------------------
// Garbage.

/// The smallest protected record body under AES-GCM (8-byte explicit nonce,
/// 16-byte tag): the suite the default configurations negotiate here.
const GCM_MIN_BODY: usize = 24;

/// The oracle of the engine's framing check: `None` when `d` is not a
/// sequence of whole DTLS records (or has a protected record shorter than
/// an AES-GCM record can be), else (records, application records).
fn frames(d: &[u8]) -> Option<(u64, u64)> {
    let (mut rest, mut all, mut app) = (d, 0, 0);
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        if rest.len() < 13 || !(20..=23).contains(&rest[0]) || rest[1] != 0xfe {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
        let end = 13 + len;
        if end > rest.len() {
            return None;
        }
        if u16::from_be_bytes([rest[3], rest[4]]) > 0 && len < GCM_MIN_BODY {
            return None;
        }
        all += 1;
        if rest[0] == 23 {
            app += 1;
        }
        rest = &rest[end..];
    }
    Some((all, app))
}

/// One hostile datagram, made from `real` (genuine datagrams of the
/// session or a handshake) and the PRNG.
fn garbage(rng: &mut Rng, real: &[Vec<u8>]) -> Vec<u8> {
    let pick = &real[rng.below(real.len() as u64) as usize];
    match rng.below(8) {
        // Random bytes, now and then a large datagram.
        0 | 1 => {
            let len = if rng.below(500) == 0 {
                20_000 + rng.below(40_000)
            } else {
                rng.below(1500)
            };
            (0..len).map(|_| rng.next_u64() as u8).collect()
        }
        // A genuine datagram cut short (possibly to nothing).
        2 => pick[..rng.below(pick.len() as u64) as usize].to_vec(),
        // A genuine datagram with 1 to 4 bytes flipped.
        3 | 4 => {
            let mut d = pick.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(d.len() as u64) as usize;
                d[i] ^= 1 + (rng.below(255) as u8);
            }
            d
        }
        // A well-formed header with a forged body: passes the framing
        // check (unless shorter than any authentic record), fails
        // authentication in OpenSSL. Some short, some very long.
        5 => {
            let len = match rng.below(8) {
                0 | 1 => rng.below(40) as usize,
                2 => 16_000 + rng.below(40_000) as usize,
                _ => 1 + rng.below(300) as usize,
            };
            let ty = [23, 23, 21, 22, 20][rng.below(5) as usize];
            let mut d = vec![ty, 0xfe, 0xfd, 0, 1];
            d.extend_from_slice(&rng.next_u64().to_be_bytes()[2..]);
            d.extend_from_slice(&(len as u16).to_be_bytes());
            d.extend((0..len).map(|_| rng.next_u64() as u8));
            d
        }
        // A genuine datagram again (a replay).
        6 => pick.clone(),
        // A genuine datagram with random bytes appended.
        _ => {
            let mut d = pick.clone();
            d.extend((0..1 + rng.below(40)).map(|_| rng.next_u64() as u8));
            d
        }
    }
}

fn garbage_storm(bind: &str, seed: u64) {
    const PER_TARGET: u64 = 100_000;
    let start = Instant::now();
    let rto = Duration::from_millis(100);
    let server = Server::start(bind, server_config(rto));
    let ccfg = client_config(rto);
    let sock = client_socket(bind, server.addr);
    let mut conn = handshake(&sock, &ccfg).expect("handshake");
    assert!(
        conn.cipher().unwrap().contains("-GCM-"),
        "the oracle knows AES-GCM"
    );
    let peer = sock.local_addr().unwrap();
    let mut rng = Rng::new(seed);

    // Genuine material: handshake datagrams of another client (for the
    // unknown-peer side), application records of this session.
    let mut hello_client = Connection::client(&ccfg, None).unwrap();
    let mut stage_real = vec![hello_client.poll_transmit().unwrap()];
    let mut records = Vec::new();
    for i in 0..8 {
        conn.send(format!("genuine {i}").as_bytes()).unwrap();
        records.push(conn.poll_transmit().unwrap());
    }
    // Deliver them once (and read their echoes), so they are replays from
    // now on.
    for r in &records {
        sock.send(r).unwrap();
    }
    server.wait_for("the genuine records", |s| s.echoes.get(&peer) == Some(&8));
    let mut plain = [0u8; 2048];
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0;
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while echoed < 8 {
        let n = sock.recv(&mut buf).expect("echo of a genuine record");
        conn.feed(&buf[..n]).unwrap();
        while conn.recv(&mut plain).unwrap().is_some() {
            echoed += 1;
        }
    }
    stage_real.push({
        // A ClientHello with a cookie for another address.
        let mut st = FrontDoor::new(&server_config(rto), &Admission::default()).unwrap();
        let other: SocketAddr = if bind == V4 {
            "127.0.0.9:999"
        } else {
            "[::1]:999"
        }
        .parse()
        .unwrap();
        let Admitted::Reply(hvr) = st.admit(other, &Datagram::parse(&stage_real[0])) else {
            panic!("no HVR")
        };
        hello_client.feed(&hvr).unwrap();
        hello_client.poll_transmit().unwrap()
    });

    let before = server.with(|s| (s.unknown_in, s.stage, s.known_in[&peer], s.conns[&peer].1));

    // 1. Unknown peers: eight unconnected sockets.
    let strangers: Vec<UdpSocket> = (0..8).map(|_| UdpSocket::bind(bind).unwrap()).collect();
    let mut honest_done = false;
    for i in 0..PER_TARGET {
        let d = garbage(&mut rng, &stage_real);
        let s = &strangers[(i % 8) as usize];
        let _ = s.send_to(&d, server.addr);
        if i % 256 == 255 {
            // Let the server keep up (its socket buffer is finite): wait
            // until it has read what we sent, give or take kernel losses.
            let target = before.0 + i + 1;
            let end = Instant::now() + Duration::from_millis(200);
            while server.with(|s| s.unknown_in) + 64 < target && Instant::now() < end {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if i == PER_TARGET / 2 && !honest_done {
            // An honest client during the flood.
            let hs = client_socket(bind, server.addr);
            let mut c = handshake(&hs, &ccfg).expect("honest handshake during the flood");
            echo_all(&hs, &mut c, "honest", 2, Duration::from_millis(200));
            honest_done = true;
        }
    }

    // 2. The established peer's own socket: garbage mixed with real echoes.
    let mut real_echoes = 0u64;
    let mut sent_garbage = Vec::new();
    for i in 0..PER_TARGET {
        let d = garbage(&mut rng, &records);
        let _ = sock.send(&d);
        sent_garbage.push(d);
        if i % 1000 == 999 {
            let r = echo_all(
                &sock,
                &mut conn,
                &format!("g{i}"),
                1,
                Duration::from_millis(200),
            );
            real_echoes += 1 + r.retries;
        }
        if i % 256 == 255 {
            let end = Instant::now() + Duration::from_millis(200);
            while server.with(|s| s.known_in[&peer]) < before.2 + i + 1 - 64 && Instant::now() < end
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    // Let the server read the rest.
    std::thread::sleep(Duration::from_millis(300));
    let r = echo_all(&sock, &mut conn, "final", 3, Duration::from_millis(200));
    real_echoes += 3 + r.retries;

    let (unknown_in, stage, known_in, stats, closed, dups) = server.with(|s| {
        (
            s.unknown_in,
            s.stage,
            s.known_in[&peer],
            s.conns.get(&peer).map(|c| c.1),
            s.closed.clone(),
            s.duplicates,
        )
    });
    let stats = stats.expect("the session was lost");
    assert!(conn.is_established(), "client session lost");
    assert_eq!(dups, 0, "a plaintext was delivered twice");
    assert!(
        closed.is_empty() || closed.iter().all(|(p, _)| *p != peer),
        "{closed:?}"
    );

    // Unknown peers: every datagram the server read got exactly one verdict,
    // and none created a connection (the honest client's excepted).
    let got = unknown_in - before.0;
    let verdicts = (stage.hello_verify + stage.accepted + stage.refused + stage.dropped)
        - (before.1.hello_verify + before.1.accepted + before.1.refused + before.1.dropped);
    assert_eq!(verdicts, got, "one verdict per datagram");
    assert_eq!(
        stage.accepted - before.1.accepted,
        1,
        "only the honest client got in"
    );
    assert!(
        got > PER_TARGET / 2,
        "the server read {got} of {PER_TARGET}"
    );

    // The established peer: datagrams in = read by the server; of those not
    // genuine, every one is either dropped before OpenSSL (framing) or
    // counted as a discarded application record, except forged
    // non-application records that pass the framing check (OpenSSL drops
    // those silently; the oracle counts them).
    let fed = known_in - before.2;
    assert_eq!(stats.datagrams_in - before.3.datagrams_in, fed);
    let (mut exp_dropped, mut exp_discarded, mut silent, mut most) = (0u64, 0u64, 0u64, 1u64);
    for d in &sent_garbage {
        match frames(d) {
            None => exp_dropped += 1,
            Some((all, app)) => {
                exp_discarded += app;
                silent += all - app;
                most = most.max(app);
            }
        }
    }
    let dropped = stats.dropped - before.3.dropped;
    let discarded = stats.discarded - before.3.discarded;
    eprintln!(
        "{bind}: {} datagrams in {:?}; unknown peers: read {got}, verdicts {verdicts} \
         ({:?}); established peer: read {fed}, dropped {dropped}, discarded {discarded}, \
         real echoes {real_echoes}, forged non-application records {silent}",
        2 * PER_TARGET,
        start.elapsed(),
        stage,
    );
    // The kernel may lose datagrams on the way (socket buffers), never add
    // any: with no loss the counts are exact; with some, each lost datagram
    // explains at most its own records.
    let lost = (PER_TARGET + real_echoes).saturating_sub(fed);
    assert!(dropped <= exp_dropped && discarded <= exp_discarded);
    assert!(
        (exp_dropped - dropped) + (exp_discarded - discarded) <= lost * most,
        "uncounted drops: expected dropped {exp_dropped} discarded {exp_discarded}, \
         counted {dropped} {discarded}, {lost} lost in the kernel"
    );
    if lost == 0 {
        assert_eq!((dropped, discarded), (exp_dropped, exp_discarded));
    }
}

#[test]
fn garbage_storm_v4() {
    garbage_storm(V4, 0xbad_0004);
}

#[test]
fn garbage_storm_v6() {
    garbage_storm(V6, 0xbad_0006);
}

/// The counters themselves, in memory: a forged application record and a
/// replay are counted as discarded, a broken datagram as dropped.
#[test]
fn drop_and_discard_counters() {
    let mut p = common::handshake(
        &common::server().build().unwrap(),
        &common::client().build().unwrap(),
    );
    assert!(p.ok());
    let server = p.server.as_mut().unwrap();
    p.client.send(b"real").unwrap();
    let rec = p.client.poll_transmit().unwrap();
    let mut buf = [0u8; 2048];
    let s0 = server.stats();
    server.feed(&rec).unwrap();
    assert_eq!(server.recv(&mut buf).unwrap(), Some(4));
    assert_eq!(server.recv(&mut buf).unwrap(), None);
    assert_eq!(server.stats().discarded, s0.discarded);
    // Replay, forgery (one flipped byte in the body), broken framing.
    server.feed(&rec).unwrap();
    let mut forged = rec.clone();
    *forged.last_mut().unwrap() ^= 1;
    server.feed(&forged).unwrap();
    server.feed(&rec[..rec.len() - 1]).unwrap();
    server.feed(&[0x17, 0x03, 0x03, 0, 0]).unwrap();
    assert_eq!(server.recv(&mut buf).unwrap(), None);
    let s1 = server.stats();
    assert_eq!(s1.discarded - s0.discarded, 2, "replay and forgery");
    assert_eq!(s1.dropped - s0.dropped, 2, "truncated and not DTLS");
    assert_eq!(s1.datagrams_in - s0.datagrams_in, 5);
    assert!(server.is_established());
    common::echo(&mut p);
}

/// OpenSSL 3.0 ends a DTLS session with a fatal alert when a protected
/// record is shorter than its cipher's overhead (GCM: under 24 bytes), so a
/// single forged datagram could end any session. The engine drops such
/// records first. Every body length from 0 to 120 bytes, forged, in the
/// current epoch with a fresh sequence number, for AEAD and CBC suites:
/// the session survives, and each datagram is counted once (dropped below
/// the cipher's minimum, discarded by OpenSSL at or above it).
#[test]
fn short_protected_records_do_not_end_the_session() {
    use dtls_reactor::Protocol;
    let suites = [
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-GCM-SHA256", 24),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES256-GCM-SHA384", 24),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-CHACHA20-POLY1305", 16),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-CCM", 24),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-CCM8", 16),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES128-SHA", 48),
        (Protocol::Dtls1_2, "ECDHE-ECDSA-AES256-SHA384", 80),
        (Protocol::Dtls1_0, "ECDHE-ECDSA-AES128-SHA", 48),
    ];
    for (proto, suite, min) in suites {
        let s = common::server()
            .protocol(proto)
            .ciphers(suite)
            .build()
            .unwrap();
        let c = common::client()
            .protocol(proto)
            .ciphers(suite)
            .build()
            .unwrap();
        let mut p = common::handshake(&s, &c);
        assert!(p.ok(), "{suite}: {:?} {:?}", p.client_err, p.server_err);
        assert_eq!(p.client.cipher().as_deref(), Some(suite));
        let minor = if proto == Protocol::Dtls1_0 {
            0xff
        } else {
            0xfd
        };
        let mut buf = [0u8; 2048];
        for (side, conn) in [
            ("server", p.server.as_mut().unwrap()),
            ("client", &mut p.client),
        ] {
            let before = conn.stats();
            for (i, len) in (0..=120usize).enumerate() {
                for ty in [23u8, 21, 22] {
                    let mut d = vec![ty, 0xfe, minor, 0, 1, 0, 0, 0x10, 0, i as u8, ty];
                    d.extend_from_slice(&(len as u16).to_be_bytes());
                    d.extend((0..len).map(|j| (j * 31 + i) as u8));
                    conn.feed(&d)
                        .unwrap_or_else(|e| panic!("{suite} {side} len {len}: {e}"));
                    let got = conn
                        .recv(&mut buf)
                        .unwrap_or_else(|e| panic!("{suite} {side} type {ty} len {len}: {e}"));
                    assert_eq!(got, None, "{suite} {side}: a forged record was delivered");
                    assert!(conn.is_established(), "{suite} {side}: type {ty} len {len}");
                }
            }
            let st = conn.stats();
            assert_eq!(
                st.dropped - before.dropped,
                3 * min as u64,
                "{suite} {side}"
            );
            assert_eq!(
                st.discarded - before.discarded,
                (121 - min) as u64,
                "{suite} {side}: application records"
            );
        }
        common::echo(&mut p);
    }
}
