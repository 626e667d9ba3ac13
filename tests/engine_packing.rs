//! Flights in datagrams, in memory: a retransmission that falls due as the
//! peer's next flight arrives goes out in a datagram of its own, and a
//! datagram that carries a stale handshake message in front of a new flight
//! (as a peer packing its records might send) loses nothing of the flight.

mod common;

use std::time::Duration;

use common::*;
use dtls_reactor::Connection;

const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;

/// The client's timer has expired when the server's flight arrives: its
/// ClientHello goes again, alone, and its next flight after it; the server,
/// fed both in order, completes.
#[test]
fn a_retransmission_due_on_arrival_goes_alone() {
    let scfg = server().require_cookie(false).build().unwrap();
    let ccfg = client()
        .initial_timeout(Duration::from_millis(30))
        .build()
        .unwrap();
    let mut c = Connection::client(&ccfg, None).unwrap();
    let hello = c.poll_transmit().unwrap();
    let mut s = Connection::server(&scfg, peer(), &hello).unwrap();
    let flight = transmits(&mut s);
    std::thread::sleep(c.timeout().unwrap() + Duration::from_millis(20));
    for d in &flight {
        c.feed(d).unwrap();
    }
    let sent = transmits(&mut c);
    assert!(
        sent.len() >= 2,
        "{:?}",
        sent.iter().map(|d| records(d)).collect::<Vec<_>>()
    );
    assert_eq!(records(&sent[0]), [(HANDSHAKE, Some(CLIENT_HELLO))]);
    assert!(sent[1..]
        .iter()
        .all(|d| records(d).iter().all(|r| r.1 != Some(CLIENT_HELLO))));
    for d in &sent {
        s.feed(d).unwrap();
    }
    assert!(s.is_established());
    for d in transmits(&mut s) {
        c.feed(&d).unwrap();
    }
    assert!(c.is_established());
}

/// A datagram that packs a stale copy of the ClientHello with the client's
/// next flight: the server reads past the stale message and completes.
#[test]
fn a_stale_message_packed_with_a_flight_costs_nothing() {
    let scfg = server().require_cookie(false).build().unwrap();
    let ccfg = client().build().unwrap();
    let mut c = Connection::client(&ccfg, None).unwrap();
    let hello = c.poll_transmit().unwrap();
    let mut s = Connection::server(&scfg, peer(), &hello).unwrap();
    for d in transmits(&mut s) {
        c.feed(&d).unwrap();
    }
    let flight = transmits(&mut c);
    assert_eq!(flight.len(), 1, "one datagram for the client's flight");
    let mut packed = hello.clone();
    packed.extend_from_slice(&flight[0]);
    s.feed(&packed).unwrap();
    assert!(s.is_established(), "{:?}", s.stats());
    for d in transmits(&mut s) {
        c.feed(&d).unwrap();
    }
    assert!(c.is_established());
}
