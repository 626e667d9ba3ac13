//! The front door in memory: the cookie stage's answers to ClientHellos
//! (no state kept, cookies bound to the address, key rotation), what it
//! drops, truncated and mutated hellos (no panic, no OpenSSL error left
//! behind for the sessions on the same thread), and the facts `Datagram`
//! reads off real handshake datagrams.

mod common;

use common::*;
use dtls_reactor::{
    Admission, Admitted, ClientConfig, Connection, CookieKeys, Datagram, DropReason, FrontDoor,
};

fn first_hello(c: &ClientConfig) -> (Connection, Vec<u8>) {
    let mut conn = Connection::client(c, None).unwrap();
    let hello = conn.poll_transmit().unwrap();
    (conn, hello)
}

/// Runs the cookie exchange with `stage` as `peer` and returns the client
/// and its second (cookie-carrying) ClientHello.
fn cookie_hello(
    stage: &mut FrontDoor,
    c: &ClientConfig,
    peer: std::net::SocketAddr,
) -> (Connection, Vec<u8>) {
    let (mut conn, hello) = first_hello(c);
    let Admitted::Reply(hvr) = stage.admit(peer, &Datagram::parse(&hello)) else {
        panic!("expected HVR")
    };
    conn.feed(&hvr).unwrap();
    let hello2 = conn.poll_transmit().unwrap();
    (conn, hello2)
}

#[test]
fn cookie_stage_keeps_no_state_and_binds_the_address() {
    let s = server().build().unwrap();
    let c = client().build().unwrap();
    let mut stage = FrontDoor::new(&s, &Admission::default()).unwrap();
    let a: std::net::SocketAddr = "127.0.0.1:1000".parse().unwrap();
    let b: std::net::SocketAddr = "127.0.0.1:1001".parse().unwrap();
    // Many cookie-less hellos: only HVRs, no connections.
    for _ in 0..50 {
        let (_, hello) = first_hello(&c);
        assert!(matches!(
            stage.admit(a, &Datagram::parse(&hello)),
            Admitted::Reply(_)
        ));
    }
    assert_eq!(stage.admission().stats().accepted, 0);
    assert_eq!(stage.admission().stats().hello_verify, 50);
    // A cookie issued to `a` presented from `b`: another HVR, no connection.
    let (_, hello2) = cookie_hello(&mut stage, &c, a);
    assert!(matches!(
        stage.admit(b, &Datagram::parse(&hello2)),
        Admitted::Reply(_)
    ));
    // From `a` it is accepted.
    assert!(matches!(
        stage.admit(a, &Datagram::parse(&hello2)),
        Admitted::Accepted(_)
    ));
    let v6: std::net::SocketAddr = "[::1]:1000".parse().unwrap();
    let (_, hello2) = cookie_hello(&mut stage, &c, v6);
    assert!(matches!(
        stage.admit(v6, &Datagram::parse(&hello2)),
        Admitted::Accepted(_)
    ));
}

#[test]
fn cookie_rotation() {
    let keys = CookieKeys::random().unwrap();
    let s = server().cookie_keys(keys.clone()).build().unwrap();
    let c = client().build().unwrap();
    let mut stage = FrontDoor::new(&s, &Admission::default()).unwrap();
    let a = peer();
    // One rotation: the previous secret still verifies.
    let (_, hello2) = cookie_hello(&mut stage, &c, a);
    keys.rotate().unwrap();
    assert!(matches!(
        stage.admit(a, &Datagram::parse(&hello2)),
        Admitted::Accepted(_)
    ));
    // Two rotations: rejected (a fresh HVR instead).
    let (_, hello2) = cookie_hello(&mut stage, &c, a);
    keys.rotate().unwrap();
    keys.rotate().unwrap();
    assert!(matches!(
        stage.admit(a, &Datagram::parse(&hello2)),
        Admitted::Reply(_)
    ));
}

#[test]
fn cookie_stage_drops_non_hellos() {
    let s = server().build().unwrap();
    let mut stage = FrontDoor::new(&s, &Admission::default()).unwrap();
    assert!(matches!(
        stage.admit(peer(), &Datagram::parse(b"")),
        Admitted::Drop(DropReason::Empty)
    ));
    assert!(matches!(
        stage.admit(peer(), &Datagram::parse(b"hello world")),
        Admitted::Drop(DropReason::NotHandshake)
    ));
    // An application-data record.
    let mut rec = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 16];
    rec.extend_from_slice(&[0u8; 16]);
    assert!(matches!(
        stage.admit(peer(), &Datagram::parse(&rec)),
        Admitted::Drop(DropReason::NotHandshake)
    ));
    // A ServerHello-typed handshake record.
    let mut sh = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12];
    sh.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        stage.admit(peer(), &Datagram::parse(&sh)),
        Admitted::Drop(DropReason::NotClientHello)
    ));
    // A ClientHello header with a garbage body.
    let mut ch = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20];
    ch.extend_from_slice(&[1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(matches!(
        stage.admit(peer(), &Datagram::parse(&ch)),
        Admitted::Drop(_)
    ));
    assert_eq!(stage.admission().stats().accepted, 0);
    // The stage still works afterwards.
    let c = client().build().unwrap();
    let (_, hello2) = cookie_hello(&mut stage, &c, peer());
    assert!(matches!(
        stage.admit(peer(), &Datagram::parse(&hello2)),
        Admitted::Accepted(_)
    ));
}

#[test]
fn truncated_and_mutated_hellos_never_panic() {
    let s = server().build().unwrap();
    let c = client().build().unwrap();
    let mut stage = FrontDoor::new(&s, &Admission::default()).unwrap();
    let (_, hello2) = cookie_hello(&mut stage, &c, peer());
    for n in 0..hello2.len() {
        let v = stage.admit(peer(), &Datagram::parse(&hello2[..n]));
        assert!(
            !matches!(v, Admitted::Accepted(_)),
            "truncated to {n} accepted"
        );
    }
    let mut seed = 0x1234_5678u32;
    for i in 0..2000 {
        let mut m = hello2.clone();
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let pos = (seed as usize >> 8) % m.len();
        m[pos] ^= (seed as u8) | 1;
        let _ = stage.admit(peer(), &Datagram::parse(&m));
        if i % 500 == 0 {
            // Still healthy.
            let (_, h) = cookie_hello(&mut stage, &c, peer());
            assert!(matches!(
                stage.admit(peer(), &Datagram::parse(&h)),
                Admitted::Accepted(_)
            ));
        }
    }
}

/// The cookie stage and the connections share a thread in a reactor (and in a
/// socket whose peer restarts). Malformed ClientHellos make OpenSSL reject them
/// with an error on the thread's queue; the stage must drain it, or the next
/// connection on the thread that merely has no data yet reports a fatal error
/// (`SSL_get_error` looks at the queue first) and dies.
#[test]
fn rejected_hellos_leave_no_openssl_errors_behind() {
    let scfg = server().build().unwrap();
    let ccfg = client().build().unwrap();
    let mut p = handshake(&scfg, &ccfg);
    established(&p);
    let mut stage = FrontDoor::new(&scfg, &Admission::default()).unwrap();
    let hello = Connection::client(&ccfg, None)
        .unwrap()
        .poll_transmit()
        .unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut buf = [0u8; 64];
    for i in 0..2000 {
        let mut h = hello.clone();
        if i % 2 == 0 {
            h.truncate(next() as usize % h.len());
        } else {
            for _ in 0..3 {
                let at = next() as usize % h.len();
                h[at] ^= (next() as u8) | 1;
            }
        }
        let _ = stage.admit(peer(), &Datagram::parse(&h));
        let r = p.server().recv(&mut buf);
        assert!(
            matches!(r, Ok(None)),
            "hello {i}: the established session must see no data, not {r:?}"
        );
        let left = openssl::error::ErrorStack::get();
        assert!(left.errors().is_empty(), "hello {i} left {left}");
    }
    echo(&mut p);
    assert!(stage.admission().stats().dropped > 0);
}

/// The facts the front door reads off a datagram, on real handshake
/// datagrams: the cookie retry carries a cookie and the same client random,
/// another client has its own, a HelloVerifyRequest is no ClientHello, and no
/// truncation is taken for a hello with a cookie.
#[test]
fn datagram_facts_of_real_hellos() {
    let client = client().build().unwrap();
    let mut stage = dtls_test_support::stage(&server().build().unwrap());
    let x = dtls_test_support::cookie_exchange(&mut stage, &client, peer());
    let (hello, hvr, hello2) = (
        Datagram::parse(&x.hello),
        Datagram::parse(&x.hello_verify),
        Datagram::parse(&x.hello2),
    );
    assert!(hello.is_client_hello() && !hello.carries_cookie());
    assert!(!hvr.is_client_hello() && !hvr.carries_cookie());
    assert!(hello2.is_client_hello() && hello2.carries_cookie());
    assert!(hello.is_whole() && hvr.is_whole() && hello2.is_whole());
    assert!(hello.client_random().is_some());
    assert_eq!(hello.client_random(), hello2.client_random());
    let other = dtls_test_support::cookie_exchange(&mut stage, &client, peer());
    assert_ne!(
        Datagram::parse(&other.hello).client_random(),
        hello.client_random()
    );
    assert_eq!(hvr.client_random(), None);
    for cut in 0..x.hello2.len() {
        let d = Datagram::parse(&x.hello2[..cut]);
        assert!(!d.carries_cookie() && !d.is_whole(), "cut at {cut}");
    }
}
