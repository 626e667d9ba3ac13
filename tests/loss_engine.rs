//! The sans-IO engine over real loopback UDP (the echo server and client
//! driver of `tests/common/engine_udp.rs`: no socket API, no reactor),
//! under loss and replays:
//!
//! - Under loss: 30 % loss each way plus duplication, reordering, delay
//!   (through the fault relay of tests/common/relay/), 50 sequential
//!   handshakes with 20 echoes each.
//! - Replayed application records are not delivered twice.
//!
//! Each runs in IPv4 and IPv6. These tests drive the engine, not a demux,
//! so the OsNet/Router variants do not apply.

mod common;

use std::time::{Duration, Instant};

use common::engine_udp::{
    client_config, client_socket, echo_all, flush, handshake, server_config, Server, V4, V6,
};
use common::relay::{Faults, Relay, RelayConfig};
use dtls_reactor::Error;

// ---------------------------------------------------------------------------
// Under loss.

fn loss(bind: &str, seed: u64) {
    let rto = Duration::from_millis(100);
    let server = Server::start(bind, server_config(rto));
    let faults: Faults = "drop=0.3,dup=0.1,reorder=0.1,delay=0.05".parse().unwrap();
    let mut cfg = RelayConfig::new(server.addr).faults(faults).seed(seed);
    cfg.max_delay = Duration::from_millis(20);
    cfg.reorder_hold = Duration::from_millis(20);
    cfg.max_duration = Duration::from_secs(240);
    let relay = Relay::start(cfg).unwrap();
    let ccfg = client_config(rto);
    let start = Instant::now();
    let (mut retries, mut late, mut restarts, mut rtx) = (0, 0, 0, 0);
    let mut hs_time = Duration::ZERO;
    for h in 0..50 {
        // OpenSSL gives up on a flight after 12 timeouts; at 30 % loss each
        // way a round trip fails about half the time, so now and then
        // (about 1 handshake in 1,000) a handshake meets its limit. An
        // application reconnects; so do we, and count it.
        let mut attempt = 0;
        let t0 = Instant::now();
        let (sock, mut conn) = loop {
            let sock = client_socket(bind, relay.local_addr());
            match handshake(&sock, &ccfg) {
                Ok(c) => break (sock, c),
                Err(Error::RetransmitLimit) if attempt < 2 => {
                    attempt += 1;
                    restarts += 1;
                    eprintln!("{bind}: handshake {h} hit the retransmission limit; reconnecting");
                }
                Err(e) => panic!("{bind}: handshake {h} failed: {e:?}"),
            }
        };
        rtx += conn.stats().retransmissions;
        hs_time += t0.elapsed();
        let r = echo_all(
            &sock,
            &mut conn,
            &format!("h{h}"),
            20,
            // A reply comes back within a millisecond on loopback unless the
            // relay lost or held it (up to 20 ms): retry after 25 ms.
            Duration::from_millis(25),
        );
        retries += r.retries;
        late += r.late;
        conn.close();
        flush(&sock, &mut conn);
    }
    let relay_stats = relay.stop();
    let elapsed = start.elapsed();
    eprintln!(
        "{bind}: 50 handshakes x 20 echoes in {elapsed:?} (handshakes {hs_time:?}): \
         client retransmissions {rtx}, \
         echo retries {retries}, late replies {late}, reconnects {restarts}"
    );
    eprintln!("{bind}: relay to server: {}", relay_stats.to_server);
    eprintln!("{bind}: relay to client: {}", relay_stats.to_client);
    server.with(|s| {
        eprintln!(
            "{bind}: server stage {:?}, echoes {}, connections closed {}",
            s.stage,
            s.echoes.values().sum::<u64>(),
            s.closed.len()
        );
        assert_eq!(
            s.duplicates, 0,
            "a plaintext was delivered twice to the server"
        );
        assert!(s.stage.accepted >= 50);
    });
    assert!(
        restarts <= 3,
        "{restarts} reconnects: far more than the odds allow"
    );
    // The faults really happened.
    for d in [&relay_stats.to_server, &relay_stats.to_client] {
        assert!(
            d.dropped > 0 && d.duplicated > 0 && d.reordered > 0 && d.delayed > 0,
            "{d}"
        );
    }
}

#[test]
fn loss_30_percent_each_way_v4() {
    loss(V4, 0x5eed_0004);
}

#[test]
fn loss_30_percent_each_way_v6() {
    loss(V6, 0x5eed_0006);
}

// ---------------------------------------------------------------------------
// Replays.

fn replay(bind: &str) {
    let rto = Duration::from_millis(100);
    let server = Server::start(bind, server_config(rto));
    let sock = client_socket(bind, server.addr);
    let mut conn = handshake(&sock, &client_config(rto)).expect("handshake");
    let peer = sock.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    let mut plain = [0u8; 2048];

    // One real exchange, capturing the request record and the reply record.
    conn.send(b"only once").unwrap();
    let record = conn.poll_transmit().expect("a record");
    assert!(conn.poll_transmit().is_none());
    sock.send(&record).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = sock.recv(&mut buf).expect("the echo");
    let reply = buf[..n].to_vec();
    conn.feed(&reply).unwrap();
    let m = conn.recv(&mut plain).unwrap().expect("plaintext");
    assert_eq!(&plain[..m], b"only once");
    server.wait_for("one echo", |s| s.echoes.get(&peer) == Some(&1));
    let (discarded_before, in_before) =
        server.with(|s| (s.conns[&peer].1.discarded, s.known_in[&peer]));

    // The captured request, resent raw five times: nothing new is delivered.
    for _ in 0..5 {
        sock.send(&record).unwrap();
    }
    server.wait_for("five more datagrams", |s| {
        s.known_in[&peer] >= in_before + 5
    });
    server.with(|s| {
        assert_eq!(s.echoes[&peer], 1, "a replayed record was delivered");
        assert_eq!(s.duplicates, 0);
        assert_eq!(
            s.conns[&peer].1.discarded,
            discarded_before + 5,
            "each replay counted"
        );
        assert!(s.conns[&peer].0, "still established");
    });
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(sock.recv(&mut buf).is_err(), "no echo for a replay");

    // The reply, replayed into the client: not delivered again either.
    let before = conn.stats().discarded;
    for _ in 0..3 {
        conn.feed(&reply).unwrap();
        assert_eq!(conn.recv(&mut plain).unwrap(), None);
    }
    assert_eq!(conn.stats().discarded, before + 3);

    // The session still works.
    let r = echo_all(&sock, &mut conn, "after", 3, Duration::from_millis(500));
    assert_eq!(r.late, 0);
    server.with(|s| assert_eq!(s.echoes[&peer], 1 + 3 + r.retries));
}

#[test]
fn replayed_records_are_not_delivered_twice_v4() {
    replay(V4);
}

#[test]
fn replayed_records_are_not_delivered_twice_v6() {
    replay(V6);
}
