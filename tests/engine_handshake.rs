//! The sans-IO engine in memory, handshakes: protocol versions, certificate
//! verification (CAs, host names, client certificates, chains, a hashed CA
//! directory), configuration errors, ciphers, groups, signature algorithms,
//! PSK, exported keying material and SRTP, resumption, the MTU.

mod common;

use std::time::Duration;

use common::*;
use dtls_reactor::{ClientConfig, Error, Event, Protocol, ServerConfig, Verify};

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
