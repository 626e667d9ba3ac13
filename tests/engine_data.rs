//! The sans-IO engine once established, in memory: the peer's records that
//! are not data (its final flight again, close_notify) acted on as they are
//! fed, whether or not the owner reads.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dtls_reactor::{Connection, Error};

/// A server whose application never reads (it only sends): when its last
/// handshake flight is lost, the client's retransmitted final flight is
/// answered as it is fed, and the client's handshake completes. On both
/// record layers.
#[test]
fn a_server_that_never_reads_answers_a_retransmitted_final_flight() {
    for openssl_layer in [false, true] {
        let scfg = server()
            .require_cookie(false)
            .openssl_record_layer(openssl_layer)
            .build()
            .unwrap();
        let ccfg = client()
            .openssl_record_layer(openssl_layer)
            // OpenSSL's timer runs on the clock: a short one to wait for.
            .initial_timeout(Duration::from_millis(20))
            .build()
            .unwrap();
        let mut c = Connection::client(&ccfg, None).unwrap();
        let hello = c.poll_transmit().unwrap();
        let mut s = Connection::server(&scfg, peer(), &hello).unwrap();
        let mut lost = 0;
        for _ in 0..10 {
            let was_handshaking = s.is_handshaking();
            for d in transmits(&mut c) {
                s.feed(&d).unwrap();
            }
            let flight = transmits(&mut s);
            if was_handshaking && s.is_established() {
                // The flight that completed the server's handshake: lost.
                lost = flight.len();
                break;
            }
            for d in flight {
                c.feed(&d).unwrap();
            }
        }
        assert!(lost > 0, "the server never completed ({openssl_layer})");
        assert!(c.is_handshaking());
        // The client's timer: its final flight again.
        std::thread::sleep(c.timeout().unwrap());
        c.handle_timeout(Instant::now()).unwrap();
        let again = transmits(&mut c);
        assert!(!again.is_empty());
        for d in &again {
            s.feed(d).unwrap();
        }
        // Answered without a read on the server.
        let answer = transmits(&mut s);
        assert!(!answer.is_empty(), "no answer ({openssl_layer})");
        for d in &answer {
            c.feed(d).unwrap();
        }
        let mut buf = [0u8; 1500];
        assert_eq!(c.recv(&mut buf).unwrap(), None);
        assert!(
            c.is_established(),
            "client not established ({openssl_layer})"
        );
        // The server's reading is unchanged: the client's data comes next.
        c.send(b"after").unwrap();
        for d in transmits(&mut c) {
            s.feed(&d).unwrap();
        }
        let n = s.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"after");
    }
}

/// A close_notify alone is acted on as it is fed: answered, and the session
/// closed, whether or not the application reads; behind unread data it
/// waits its turn, so the data is read first.
#[test]
fn close_notify_is_answered_as_fed_and_keeps_its_place_behind_data() {
    for openssl_layer in [false, true] {
        let s = server()
            .openssl_record_layer(openssl_layer)
            .build()
            .unwrap();
        let c = client()
            .openssl_record_layer(openssl_layer)
            .build()
            .unwrap();
        // Alone: answered at once.
        let mut p = handshake(&s, &c);
        established(&p);
        p.client.close();
        for d in transmits(&mut p.client) {
            p.server().feed(&d).unwrap();
        }
        assert!(p.server().is_closed(), "not closed ({openssl_layer})");
        assert!(p.server().is_close_received());
        let answer = transmits(p.server());
        assert_eq!(answer.len(), 1, "no close_notify back ({openssl_layer})");
        let mut buf = [0u8; 1500];
        assert!(matches!(
            p.server().recv(&mut buf),
            Err(Error::ClosedByPeer)
        ));
        for d in &answer {
            p.client.feed(d).unwrap();
        }
        assert!(matches!(p.client.recv(&mut buf), Err(Error::ClosedByPeer)));
        // Behind data: the data first, then the close.
        let mut p = handshake(&s, &c);
        established(&p);
        p.client.send(b"last words").unwrap();
        p.client.close();
        for d in transmits(&mut p.client) {
            p.server().feed(&d).unwrap();
        }
        assert!(p.server().is_established());
        let n = p.server().recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"last words");
        assert!(matches!(
            p.server().recv(&mut buf),
            Err(Error::ClosedByPeer)
        ));
    }
}
