//! The sans-IO engine, in memory: pairs of sessions passing datagrams.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dtls_reactor::{
    Admission, Admitted, ClientConfig, CloseReason, Connection, CookieKeys, Datagram, DropReason,
    Error, Event, FrontDoor, Protocol, ServerConfig, State, Verify,
};

fn established(p: &Pair) {
    assert!(
        p.ok(),
        "handshake failed: client {:?}, server {:?}",
        p.client_err,
        p.server_err
    );
}

#[test]
fn dtls12_handshake_and_echo() {
    let mut p = handshake(&server().build().unwrap(), &client().build().unwrap());
    established(&p);
    assert_eq!(p.client.version(), "DTLSv1.2");
    assert_eq!(p.server().version(), "DTLSv1.2");
    assert!(p.client.cipher().unwrap().contains("ECDSA"));
    assert_eq!(p.client.poll_event(), Some(Event::Connected));
    echo(&mut p);
}

#[test]
fn dtls10_opt_in_handshake_and_echo() {
    let s = server().protocol(Protocol::Dtls1_0).build().unwrap();
    let c = client().protocol(Protocol::Dtls1_0).build().unwrap();
    let mut p = handshake(&s, &c);
    established(&p);
    assert_eq!(p.client.version(), "DTLSv1");
    echo(&mut p);
}

#[test]
fn version_negotiation_matrix() {
    use Protocol::*;
    // (server, client, expected version or None for failure)
    let cases = [
        (Any, Any, Some("DTLSv1.2")),
        (Any, Dtls1_2, Some("DTLSv1.2")),
        (Any, Dtls1_0, Some("DTLSv1")),
        (Dtls1_2, Any, Some("DTLSv1.2")),
        (Dtls1_0, Any, Some("DTLSv1")),
        (Dtls1_2, Dtls1_2, Some("DTLSv1.2")),
        (Dtls1_0, Dtls1_0, Some("DTLSv1")),
        (Dtls1_0, Dtls1_2, None),
    ];
    for (sv, cv, want) in cases {
        let s = server().protocol(sv).build().unwrap();
        let c = client().protocol(cv).build().unwrap();
        let mut p = handshake(&s, &c);
        match want {
            Some(v) => {
                established(&p);
                assert_eq!(p.client.version(), v, "server {sv:?} client {cv:?}");
                echo(&mut p);
            }
            None => {
                assert!(!p.ok(), "server {sv:?} client {cv:?} should fail");
                let errs = [p.client_err.as_ref(), p.server_err.as_ref()];
                assert!(
                    errs.iter()
                        .flatten()
                        .any(|e| matches!(e, Error::VersionMismatch(_))),
                    "expected a version error, got {errs:?}"
                );
            }
        }
    }
}

fn verify_err(p: &Pair) -> bool {
    [p.client_err.as_ref(), p.server_err.as_ref()]
        .iter()
        .flatten()
        .any(|e| matches!(e, Error::Verification { .. }))
}

#[test]
fn client_verification_modes() {
    let s = server().build().unwrap();
    // None: no CA needed.
    let c = ClientConfig::builder()
        .verify(Verify::None)
        .build()
        .unwrap();
    established(&handshake(&s, &c));
    // Required without a CA fails.
    let c = ClientConfig::builder()
        .server_name("localhost")
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    assert!(!p.ok() && verify_err(&p), "{:?}", p.client_err);
    // Right CA succeeds, optional behaves like required on a client.
    established(&handshake(&s, &client().build().unwrap()));
    established(&handshake(
        &s,
        &client().verify(Verify::Optional).build().unwrap(),
    ));
    // Wrong CA fails.
    let c = ClientConfig::builder()
        .ca_pem(OTHER_CA)
        .server_name("localhost")
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    assert!(!p.ok() && verify_err(&p));
    let reason = p.client_err.unwrap().to_string();
    assert!(reason.contains("certificate"), "{reason}");
}

#[test]
fn hostname_verification() {
    let s = server().build().unwrap();
    for good in ["localhost", "127.0.0.1", "::1"] {
        let c = ClientConfig::builder()
            .ca_pem(CA)
            .server_name(good)
            .build()
            .unwrap();
        established(&handshake(&s, &c));
    }
    let c = ClientConfig::builder()
        .ca_pem(CA)
        .server_name("example.com")
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    assert!(!p.ok() && verify_err(&p), "hostname mismatch must fail");
    let c = ClientConfig::builder()
        .ca_pem(CA)
        .server_name("example.com")
        .danger_disable_hostname_verification()
        .build()
        .unwrap();
    established(&handshake(&s, &c));
}

#[test]
fn client_certificates() {
    let required = server()
        .ca_pem(CA)
        .verify(Verify::Required)
        .build()
        .unwrap();
    let optional = server()
        .ca_pem(CA)
        .verify(Verify::Optional)
        .build()
        .unwrap();
    let with_cert = client()
        .certificate_chain_pem(CLIENT)
        .private_key_pem(CLIENT_KEY)
        .build()
        .unwrap();
    let without = client().build().unwrap();

    let mut p = handshake(&required, &with_cert);
    established(&p);
    let cert = p.server().peer_certificate().expect("client certificate");
    assert_eq!(cert.common_name().as_deref(), Some("test client"));

    let p = handshake(&required, &without);
    assert!(
        !p.ok() && verify_err(&p),
        "missing client cert: {:?} {:?}",
        p.client_err,
        p.server_err
    );

    let mut p = handshake(&optional, &without);
    established(&p);
    assert!(p.server().peer_certificate().is_none());

    // An untrusted (self-signed) client certificate is refused.
    let selfsigned = client()
        .certificate_chain_pem(SELFSIGNED)
        .private_key_pem(SELFSIGNED_KEY)
        .build()
        .unwrap();
    let p = handshake(&required, &selfsigned);
    assert!(!p.ok() && verify_err(&p));
}

#[test]
fn bad_certificates_and_keys_are_configuration_errors() {
    let setting = |e: Error| match e {
        Error::Config { setting, .. } => setting,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    let e = ServerConfig::builder()
        .certificate_chain_pem(b"")
        .private_key_pem(SERVER_KEY)
        .build()
        .unwrap_err();
    assert_eq!(setting(e), "certificate_chain");
    let e = ServerConfig::builder()
        .certificate_chain_pem(
            b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .private_key_pem(SERVER_KEY)
        .build()
        .unwrap_err();
    assert_eq!(setting(e), "certificate_chain");
    let e = ServerConfig::builder()
        .certificate_chain_pem(SERVER)
        .private_key_pem(b"garbage")
        .build()
        .unwrap_err();
    assert_eq!(setting(e), "private_key");
    let e = ServerConfig::builder()
        .certificate_chain_pem(SERVER)
        .private_key_pem(CLIENT_KEY)
        .build()
        .unwrap_err();
    assert_eq!(setting(e), "private_key", "a key that does not match");
    let e = ServerConfig::builder().build().unwrap_err();
    assert_eq!(setting(e), "certificate_chain");
    let e = ClientConfig::builder()
        .ca_file("/nonexistent/ca.pem")
        .build()
        .unwrap_err();
    assert_eq!(setting(e), "ca");
    let e = client()
        .ciphers("NOTHING-MATCHES-THIS")
        .build()
        .unwrap_err();
    assert_eq!(setting(e), "ciphers");
    let e = client().groups("nosuchcurve").build().unwrap_err();
    assert_eq!(setting(e), "groups");
    let e = client().mtu(100).build().unwrap_err();
    assert_eq!(setting(e), "mtu");
    let e = client()
        .initial_timeout(Duration::from_millis(5))
        .build()
        .unwrap_err();
    assert_eq!(setting(e), "initial_timeout");
    let e: std::io::Error = client().mtu(100).build().unwrap_err().into();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn peer_certificate_with_subject_alt_names() {
    let mut p = handshake(&server().build().unwrap(), &client().build().unwrap());
    established(&p);
    let cert = p.client.peer_certificate().unwrap();
    assert_eq!(cert.common_name().as_deref(), Some("localhost"));
    assert!(cert
        .subject()
        .contains(&("O".into(), "dtls-reactor tests".into())));
    assert!(cert
        .issuer()
        .iter()
        .any(|(k, v)| k == "CN" && v.contains("test root CA")));
    let san = cert.subject_alt_names();
    assert_eq!(san, vec!["DNS:localhost", "IP:127.0.0.1", "IP:::1"]);
    assert!(cert.not_after().contains("GMT"));
    assert!(cert.to_der().len() > 100);
    assert!(p.server().peer_certificate().is_none());
}

#[test]
fn certificate_chain_from_intermediate() {
    let mut chain = CHAIN_SERVER.to_vec();
    chain.extend_from_slice(INTER);
    let s = ServerConfig::builder()
        .certificate_chain_pem(&chain)
        .private_key_pem(CHAIN_SERVER_KEY)
        .build()
        .unwrap();
    let p = handshake(&s, &client().build().unwrap());
    established(&p);
    assert_eq!(
        p.client.peer_certificate_chain().len(),
        2,
        "leaf and intermediate"
    );
    // Without the intermediate the chain does not verify.
    let s = ServerConfig::builder()
        .certificate_chain_pem(CHAIN_SERVER)
        .private_key_pem(CHAIN_SERVER_KEY)
        .build()
        .unwrap();
    assert!(!handshake(&s, &client().build().unwrap()).ok());
}

#[test]
fn ciphers_match_and_mismatch() {
    for list in [
        "ALL",
        "DEFAULT",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ] {
        let p = handshake(
            &server().build().unwrap(),
            &client().ciphers(list).build().unwrap(),
        );
        established(&p);
    }
    let p = handshake(
        &server().build().unwrap(),
        &client().ciphers("ECDHE-ECDSA-AES256-SHA").build().unwrap(),
    );
    assert_eq!(p.client.cipher().as_deref(), Some("ECDHE-ECDSA-AES256-SHA"));
    // RSA-only suite against an ECDSA certificate.
    let p = handshake(
        &server().build().unwrap(),
        &client()
            .ciphers("ECDHE-RSA-AES128-GCM-SHA256")
            .build()
            .unwrap(),
    );
    assert!(!p.ok());
    // ...works against the RSA certificate.
    let s = ServerConfig::builder()
        .certificate_chain_pem(SERVER_RSA)
        .private_key_pem(SERVER_RSA_KEY)
        .build()
        .unwrap();
    established(&handshake(
        &s,
        &client()
            .ciphers("ECDHE-RSA-AES128-GCM-SHA256")
            .build()
            .unwrap(),
    ));
}

#[test]
fn groups_match_and_mismatch() {
    let s = server().build().unwrap();
    established(&handshake(
        &s,
        &client().groups("prime256v1").build().unwrap(),
    ));
    established(&handshake(
        &s,
        &client().groups("X25519:P-256").build().unwrap(),
    ));
    // A P-256 certificate cannot be used when the client offers only P-384.
    assert!(!handshake(&s, &client().groups("secp384r1").build().unwrap()).ok());
    // Server forcing P-384 key exchange against clients with various lists.
    let s384 = server().groups("P-384:P-256").build().unwrap();
    established(&handshake(&s384, &client().build().unwrap()));
    established(&handshake(
        &s384,
        &client().groups("P-256:P-384").build().unwrap(),
    ));
}

#[test]
fn signature_algorithms_match_and_mismatch() {
    let s = server().build().unwrap();
    established(&handshake(
        &s,
        &client().sigalgs("ECDSA+SHA256").build().unwrap(),
    ));
    assert!(!handshake(&s, &client().sigalgs("RSA+SHA256").build().unwrap()).ok());
}

#[test]
fn psk_handshake() {
    let s = ServerConfig::builder()
        .psk_identity_hint("hint")
        .psk_lookup(|id| (id == b"device-1").then(|| b"0123456789abcdef".to_vec()))
        .ciphers("PSK-AES128-GCM-SHA256")
        .build()
        .unwrap();
    let c = ClientConfig::builder()
        .verify(Verify::None)
        .psk(b"device-1", b"0123456789abcdef")
        .ciphers("PSK-AES128-GCM-SHA256")
        .build()
        .unwrap();
    let mut p = handshake(&s, &c);
    established(&p);
    assert_eq!(p.client.cipher().as_deref(), Some("PSK-AES128-GCM-SHA256"));
    echo(&mut p);
    // Wrong key: the server cannot decrypt the client's Finished; DTLS
    // discards such records silently, so the client's handshake times out.
    let bad = ClientConfig::builder()
        .initial_timeout(Duration::from_millis(20))
        .handshake_timeout(Some(Duration::from_millis(300)))
        .verify(Verify::None)
        .psk(b"device-1", b"fedcba9876543210")
        .ciphers("PSK-AES128-GCM-SHA256")
        .build()
        .unwrap();
    let p = handshake(&s, &bad);
    assert!(!p.ok());
    assert!(
        matches!(p.client_err, Some(Error::HandshakeTimeout)),
        "{:?}",
        p.client_err
    );
    // Unknown identity: fails.
    let unknown = ClientConfig::builder()
        .initial_timeout(Duration::from_millis(20))
        .handshake_timeout(Some(Duration::from_millis(300)))
        .verify(Verify::None)
        .psk(b"device-2", b"0123456789abcdef")
        .ciphers("PSK-AES128-GCM-SHA256")
        .build()
        .unwrap();
    assert!(!handshake(&s, &unknown).ok());
}

#[test]
fn exported_keying_material_and_srtp() {
    let s = server()
        .srtp_profiles("SRTP_AES128_CM_SHA1_80")
        .build()
        .unwrap();
    let c = client()
        .srtp_profiles("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM")
        .build()
        .unwrap();
    let mut p = handshake(&s, &c);
    established(&p);
    let (mut a, mut b) = ([0u8; 60], [0u8; 60]);
    p.client
        .export_keying_material(&mut a, "EXTRACTOR-dtls_srtp", None)
        .unwrap();
    p.server()
        .export_keying_material(&mut b, "EXTRACTOR-dtls_srtp", None)
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, [0u8; 60]);
    assert_eq!(
        p.client.srtp_profile().as_deref(),
        Some("SRTP_AES128_CM_SHA1_80")
    );
}

#[test]
fn session_resumption() {
    let s = server().build().unwrap();
    let c = client().resume_sessions(true).build().unwrap();
    let first = handshake(&s, &c);
    established(&first);
    assert!(!first.client.session_reused());
    let second = handshake(&s, &c);
    established(&second);
    assert!(
        second.client.session_reused(),
        "the second handshake resumes"
    );
}

#[test]
fn handshake_datagrams_respect_the_mtu() {
    let mut chain = CHAIN_SERVER.to_vec();
    chain.extend_from_slice(INTER);
    for mtu in [576u32, 1400] {
        let s = ServerConfig::builder()
            .certificate_chain_pem(&chain)
            .private_key_pem(CHAIN_SERVER_KEY)
            .mtu(mtu)
            .build()
            .unwrap();
        let c = client()
            .mtu(mtu)
            .certificate_chain_pem(CLIENT)
            .private_key_pem(CLIENT_KEY)
            .build()
            .unwrap();
        let mut p = handshake(&s, &c);
        established(&p);
        let max = *p.sizes.iter().max().unwrap();
        assert!(max <= mtu as usize, "mtu {mtu}: a datagram of {max} bytes");
        let dmtu = p.client.data_mtu();
        assert!(dmtu > 0 && dmtu < mtu as usize);
        // The largest plaintext fits one datagram; one more byte is an error.
        let big = vec![7u8; dmtu];
        let got = transfer(&mut p.client, p.server.as_mut().unwrap(), &big);
        assert_eq!(got, big);
        match p.client.send(&vec![7u8; dmtu + 1]) {
            Err(Error::TooLarge { len, mtu }) => assert_eq!((len, mtu), (dmtu + 1, dmtu)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}

fn fast() -> (ServerConfig, ClientConfig) {
    let t = Duration::from_millis(50);
    (
        server().initial_timeout(t).build().unwrap(),
        client().initial_timeout(t).build().unwrap(),
    )
}

#[test]
fn each_lost_flight_is_retransmitted() {
    let (s, c) = fast();
    // Flights: 1 ClientHello, 2 HelloVerifyRequest, 3 ClientHello+cookie,
    // 4 ServerHello..Done, 5 client Finished flight, 6 server Finished flight.
    for lost in 1..=6 {
        let mut dropped = false;
        let mut p = handshake_with(&s, &c, |flight, _, _| {
            if flight == lost && !dropped {
                dropped = true;
            }
            flight == lost
        });
        assert!(dropped, "flight {lost} never happened");
        established(&p);
        let rt = p.client.stats().retransmissions + p.server().stats().retransmissions;
        assert!(rt >= 1, "flight {lost}: no retransmission");
        echo(&mut p);
    }
}

#[test]
fn first_deadline_and_one_retransmission() {
    let (s, c) = fast();
    let conn = Connection::client(&c, None).unwrap();
    let t = conn.timeout().expect("a timer runs after the ClientHello");
    assert!(
        t <= Duration::from_millis(50) && t >= Duration::from_millis(35),
        "{t:?}"
    );
    // Lose only the very first ClientHello.
    let mut first = true;
    let p = handshake_with(&s, &c, |_, dir, _| {
        let lose = first && dir == Dir::ToServer;
        first = false;
        lose
    });
    established(&p);
    // OpenSSL 3.2 and later (3.6.3 in the vendored build) send the server's first
    // flight after a retransmitted ClientHello with the HelloVerifyRequest's record
    // sequence number, so the client drops that ServerHello as a replay and resends
    // its ClientHello once more (openssl/openssl#32063; 3.0 and 3.1 are not affected).
    let affected = openssl::version::number() >= 0x3020_0000;
    let resent = p.client.stats().retransmissions;
    assert!(
        resent == 1 || (affected && resent == 2),
        "{resent} retransmissions on {}",
        openssl::version::version()
    );
}

#[test]
fn silent_peer_hits_the_retransmission_limit() {
    let c = client()
        .initial_timeout(Duration::from_millis(10))
        .max_timeout(Duration::from_millis(20))
        .handshake_timeout(None)
        .build()
        .unwrap();
    let mut conn = Connection::client(&c, None).unwrap();
    let start = Instant::now();
    let mut timeouts = 0;
    let err = loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no limit reached"
        );
        while conn.poll_transmit().is_some() {}
        let t = conn.timeout().expect("timer");
        std::thread::sleep(t);
        match conn.handle_timeout(Instant::now()) {
            Ok(true) => timeouts += 1,
            Ok(false) => {}
            Err(e) => break e,
        }
    };
    timeouts += 1; // the one that failed
    assert!(matches!(err, Error::RetransmitLimit), "{err:?}");
    assert_eq!(timeouts, 12, "the twelfth timeout ends the session");
    assert_eq!(conn.state(), &State::Closed(CloseReason::RetransmitLimit));
    let e: std::io::Error = err.into();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn handshake_deadline() {
    let c = client()
        .handshake_timeout(Some(Duration::from_millis(30)))
        .build()
        .unwrap();
    let mut conn = Connection::client(&c, None).unwrap();
    assert!(conn.timeout().unwrap() <= Duration::from_millis(30));
    std::thread::sleep(Duration::from_millis(35));
    assert!(matches!(
        conn.handle_timeout(Instant::now()),
        Err(Error::HandshakeTimeout)
    ));
    assert!(conn.is_closed());
}

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

#[test]
fn duplicated_reordered_replayed_and_garbage_datagrams() {
    let mut p = handshake(&server().build().unwrap(), &client().build().unwrap());
    established(&p);
    let server = p.server.as_mut().unwrap();
    // Seal three records, deliver them reordered and duplicated.
    let mut recs = Vec::new();
    for m in [b"one".as_slice(), b"two", b"three"] {
        p.client.send(m).unwrap();
        recs.push(p.client.poll_transmit().unwrap());
    }
    for i in [2usize, 0, 0, 1, 2, 1] {
        server.feed(&recs[i]).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(n) = server.recv(&mut buf).unwrap() {
        got.push(buf[..n].to_vec());
    }
    got.sort();
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"three".to_vec(), b"two".to_vec()],
        "each record exactly once"
    );
    // Replays later: nothing delivered.
    for r in &recs {
        server.feed(r).unwrap();
    }
    assert_eq!(server.recv(&mut buf).unwrap(), None);
    // Truncated records, random bytes, empty datagrams.
    for n in 0..recs[0].len() {
        server.feed(&recs[0][..n]).unwrap();
    }
    let mut seed = 99u64;
    for _ in 0..500 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (seed >> 33) as usize % 200;
        let d: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        server.feed(&d).unwrap();
        while let Ok(Some(_)) = server.recv(&mut buf) {}
    }
    assert!(server.is_established(), "garbage must not end the session");
    echo(&mut p);
}

#[test]
fn close_notify_both_ways() {
    let mut p = handshake(&server().build().unwrap(), &client().build().unwrap());
    established(&p);
    p.client.close();
    assert!(matches!(p.client.send(b"x"), Err(Error::Closed)));
    let server = p.server.as_mut().unwrap();
    while let Some(d) = p.client.poll_transmit() {
        server.feed(&d).unwrap();
    }
    let mut buf = [0u8; 64];
    assert!(matches!(server.recv(&mut buf), Err(Error::ClosedByPeer)));
    assert_eq!(server.state(), &State::Closed(CloseReason::PeerClosed));
    // The server answered with its own close_notify.
    while let Some(d) = server.poll_transmit() {
        p.client.feed(&d).unwrap();
    }
    assert!(matches!(p.client.recv(&mut buf), Err(Error::ClosedByPeer)));
    assert!(p.client.is_close_received() && p.client.is_close_sent());
}

#[test]
fn empty_datagrams_are_dropped_before_openssl() {
    let mut p = handshake(&server().build().unwrap(), &client().build().unwrap());
    established(&p);
    let before = p.server().stats().dropped;
    p.server().feed(b"").unwrap();
    assert_eq!(p.server().stats().dropped, before + 1);
    assert!(p.server().is_established());
    echo(&mut p);
}

#[test]
fn receive_queue_is_bounded() {
    let s = server().receive_queue(4).build().unwrap();
    let mut p = handshake(&s, &client().build().unwrap());
    established(&p);
    for i in 0..10u8 {
        p.client.send(&[i]).unwrap();
        let d = p.client.poll_transmit().unwrap();
        p.server().feed(&d).unwrap();
    }
    assert_eq!(p.server().stats().dropped, 6);
    let mut buf = [0u8; 64];
    let mut n = 0;
    while p.server().recv(&mut buf).unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn trust_from_a_hashed_ca_directory() {
    let dir = std::env::temp_dir().join(format!("dtls-reactor-cadir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = openssl::x509::X509::from_pem(CA).unwrap();
    std::fs::write(dir.join(format!("{:08x}.0", ca.subject_name_hash())), CA).unwrap();
    let c = ClientConfig::builder()
        .ca_dir(&dir)
        .server_name("localhost")
        .build()
        .unwrap();
    let ok = handshake(&server().build().unwrap(), &c).ok();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let c2 = ClientConfig::builder()
        .ca_dir(&empty)
        .server_name("localhost")
        .build()
        .unwrap();
    let refused = !handshake(&server().build().unwrap(), &c2).ok();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "the hashed directory's CA is trusted");
    assert!(refused, "an empty directory trusts nothing");
}

#[test]
fn shrink_on_the_engine_record_layer() {
    let mut p = handshake(&server().build().unwrap(), &client().build().unwrap());
    established(&p);
    assert!(p.server().engine_record_layer() && p.client.engine_record_layer());
    p.server().shrink();
    p.client.shrink();
    assert!(
        !p.server().buffers_released(),
        "no OpenSSL buffers to release"
    );
    echo(&mut p);
    p.server().shrink();
    assert_eq!(
        transfer(p.server.as_mut().unwrap(), &mut p.client, b"after"),
        b"after"
    );
}

/// The buffer release dance of sessions on OpenSSL's record layer.
#[test]
fn shrink_keeps_the_session_working() {
    let mut p = handshake(
        &server().openssl_record_layer(true).build().unwrap(),
        &client().openssl_record_layer(true).build().unwrap(),
    );
    established(&p);
    echo(&mut p);
    p.server().shrink();
    p.client.shrink();
    assert!(p.server().buffers_released() && p.client.buffers_released());
    echo(&mut p);
    assert!(
        !p.server().buffers_released(),
        "a read or write takes them back"
    );
    // Writing right after a shrink (OpenSSL 3.0 would write through a freed
    // buffer if the connection did not allocate it again).
    p.server().shrink();
    assert!(p.server().buffers_released());
    assert_eq!(
        transfer(p.server.as_mut().unwrap(), &mut p.client, b"after"),
        b"after"
    );
    // Reading right after a shrink.
    p.server().shrink();
    assert_eq!(
        transfer(&mut p.client, p.server.as_mut().unwrap(), b"read"),
        b"read"
    );
    // With a datagram waiting, nothing the session needs is thrown away.
    p.client.send(b"queued").unwrap();
    let d = p.client.poll_transmit().unwrap();
    p.server().feed(&d).unwrap();
    p.server().shrink();
    assert!(!p.server().buffers_released(), "not with a record pending");
    let mut buf = [0u8; 64];
    assert_eq!(p.server().recv(&mut buf).unwrap(), Some(6));
    assert_eq!(&buf[..6], b"queued");
    // A timer check and a close after a shrink: close_notify still goes out
    // and the peer sees it.
    p.server().shrink();
    assert!(!p
        .server()
        .handle_timeout(std::time::Instant::now())
        .unwrap());
    p.server().shrink();
    p.server().close();
    let notify = p.server().poll_transmit().expect("close_notify");
    p.client.feed(&notify).unwrap();
    assert!(matches!(
        p.client.recv(&mut buf),
        Err(dtls_reactor::Error::ClosedByPeer)
    ));
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

/// Issue 16's rule for the server's handshake silence: a peer quiet after the
/// hello that made the connection keeps the configured limit; each datagram
/// it sends afterwards (here its retransmitted hello) doubles the silence it
/// is allowed, within the overall deadline.
#[test]
fn handshake_silence_doubles_with_each_datagram_heard() {
    let silence = Duration::from_millis(400);
    let scfg = server()
        .handshake_silence(Some(silence))
        .handshake_timeout(Some(Duration::from_secs(2)))
        // Retransmissions later than every limit here: only the limits show.
        .initial_timeout(Duration::from_secs(30))
        .max_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut door = FrontDoor::new(&scfg, &Admission::default()).unwrap();
    let ccfg = client().build().unwrap();
    let mut c = Connection::client(&ccfg, None).unwrap();
    let hello = c.poll_transmit().unwrap();
    let Admitted::Reply(hvr) = door.admit(peer(), &Datagram::parse(&hello)) else {
        panic!("no HelloVerifyRequest");
    };
    c.feed(&hvr).unwrap();
    let hello2 = c.poll_transmit().unwrap();
    let Admitted::Accepted(mut s) = door.admit(peer(), &Datagram::parse(&hello2)) else {
        panic!("not admitted");
    };
    let t0 = Instant::now();
    let left = |s: &Connection| s.deadline().unwrap().saturating_duration_since(t0);
    // Only the hello that made it: the configured limit.
    assert!(left(&s) <= silence, "{:?}", left(&s));
    // The same hello again (the client retransmits it): heard, so doubled.
    s.feed(&hello2).unwrap();
    assert!(left(&s) > silence * 3 / 2, "{:?}", left(&s));
    s.feed(&hello2).unwrap();
    assert!(left(&s) > silence * 7 / 2, "{:?}", left(&s));
    // The overall deadline still bounds it.
    for _ in 0..10 {
        s.feed(&hello2).unwrap();
    }
    assert!(left(&s) <= Duration::from_secs(2), "{:?}", left(&s));
    // A peer that never speaks again is ended by the limit it reached.
    let end = s.deadline().unwrap();
    assert!(matches!(
        s.handle_timeout(end),
        Err(Error::HandshakeTimeout)
    ));
}
