//! Socket API: the handshake scenarios of PyDTLS's ssl-style and wrapper
//! suites over real loopback sockets, in the four variants.

mod common;
mod socket_util;

use std::io::Write as _;

use common::*;
use dtls_reactor::{ClientConfig, Error, Protocol, ServerConfig, Verify};
use socket_util::*;

fn expect_ok(what: &str, o: &mut Outcome) {
    if let Err(e) = o.client_result() {
        panic!("{what}: client failed: {e}");
    }
    match &o.server {
        Some(Ok(_)) => {}
        Some(Err(e)) => panic!("{what}: server failed: {e}"),
        None => panic!("{what}: server accepted nothing"),
    }
    // And data flows both ways.
    let mut buf = [0u8; 64];
    o.client().send(what.as_bytes()).expect("send");
    let n = o.server().recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], what.as_bytes());
    o.server().send(b"back").expect("send back");
    let n = o.client().recv(&mut buf).expect("recv back");
    assert_eq!(&buf[..n], b"back");
}

fn expect_fail(what: &str, o: &Outcome) {
    assert!(!o.ok(), "{what}: expected a failed handshake");
    assert!(
        o.client_result().is_err(),
        "{what}: the client must see the failure"
    );
}

fn fast_cfgs() -> (
    dtls_reactor::ConfigBuilder<dtls_reactor::Server>,
    dtls_reactor::ConfigBuilder<dtls_reactor::Client>,
) {
    (fast_server(), fast_client())
}

/// Client verification: none, required without CA, right CA, wrong CA.
fn client_verification(v: Variant) {
    let s = server_cfg();
    let c = ClientConfig::builder()
        .verify(Verify::None)
        .initial_timeout(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    let mut o = pair(v, &s, &c);
    expect_ok("verify none", &mut o);
    // The server asked for no client certificate.
    assert!(o.server().peer_certificate().is_none());

    let c = ClientConfig::builder()
        .server_name("localhost")
        .build()
        .unwrap();
    let o = pair(v, &s, &c);
    expect_fail("required without CA", &o);
    assert!(
        matches!(o.client_err(), Error::Verification { .. }),
        "{:?}",
        o.client_err()
    );

    let mut o = pair(v, &s, &client_cfg());
    expect_ok("right CA", &mut o);

    let c = ClientConfig::builder()
        .ca_pem(OTHER_CA)
        .server_name("localhost")
        .build()
        .unwrap();
    let o = pair(v, &s, &c);
    expect_fail("wrong CA", &o);
    assert!(matches!(o.client_err(), Error::Verification { .. }));
    assert_eq!(o.client_err().kind(), std::io::ErrorKind::InvalidData);
}

/// Cipher lists ALL and DEFAULT connect; a list that selects nothing is a
/// configuration error.
fn cipher_lists(v: Variant) {
    let s = server_cfg();
    for list in ["ALL", "DEFAULT", "ECDHE-ECDSA-AES256-SHA"] {
        let mut o = pair(v, &s, &fast_client().ciphers(list).build().unwrap());
        expect_ok(list, &mut o);
        if list == "ECDHE-ECDSA-AES256-SHA" {
            assert_eq!(o.client().cipher().as_deref(), Some(list));
            assert_eq!(o.server().cipher().as_deref(), Some(list));
        }
    }
    let e = fast_client().ciphers("NO-SUCH-CIPHER").build().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Config {
                setting: "ciphers",
                ..
            }
        ),
        "{e}"
    );
    // An RSA-only suite against an ECDSA certificate fails.
    let o = pair(
        v,
        &s,
        &fast_client()
            .ciphers("ECDHE-RSA-AES128-GCM-SHA256")
            .build()
            .unwrap(),
    );
    expect_fail("RSA suite vs ECDSA cert", &o);
}

/// A server requiring client certificates: the right one connects; none,
/// an untrusted (self-signed) one fail; empty or malformed files and keys
/// are configuration errors.
fn client_certificates(v: Variant) {
    let s = fast_server()
        .ca_pem(CA)
        .verify(Verify::Required)
        .build()
        .unwrap();
    let c = fast_client()
        .certificate_chain_pem(CLIENT)
        .private_key_pem(CLIENT_KEY)
        .build()
        .unwrap();
    let mut o = pair(v, &s, &c);
    expect_ok("client cert", &mut o);
    let cert = o.server().peer_certificate().expect("client certificate");
    assert_eq!(cert.common_name().as_deref(), Some("test client"));

    let o = pair(v, &s, &client_cfg());
    expect_fail("no client cert", &o);
    assert!(matches!(o.server, Some(Err(_))));

    let c = fast_client()
        .certificate_chain_pem(SELFSIGNED)
        .private_key_pem(SELFSIGNED_KEY)
        .build()
        .unwrap();
    let o = pair(v, &s, &c);
    expect_fail("self-signed client cert", &o);
    assert!(
        matches!(o.server, Some(Err(Error::Verification { .. }))),
        "{:?}",
        o.server.as_ref().map(|r| r.as_ref().err())
    );

    let dir = std::env::temp_dir().join(format!(
        "dtls-socket-certs-{}-{}",
        std::process::id(),
        v.demux
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::File::create(&empty).unwrap();
    let bad = dir.join("bad.pem");
    std::fs::File::create(&bad)
        .unwrap()
        .write_all(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        .unwrap();
    let key_file = dir.join("client.key");
    std::fs::write(&key_file, CLIENT_KEY).unwrap();
    for (what, cert) in [("empty cert file", &empty), ("malformed cert", &bad)] {
        let e = fast_client()
            .certificate_chain_file(cert)
            .private_key_file(&key_file)
            .build();
        assert!(
            matches!(e, Err(Error::Config { .. })),
            "{what}: {:?}",
            e.err()
        );
    }
    let cert_file = dir.join("client.pem");
    std::fs::write(&cert_file, CLIENT).unwrap();
    let e = fast_client()
        .certificate_chain_file(&cert_file)
        .private_key_file(&bad)
        .build();
    assert!(
        matches!(
            e,
            Err(Error::Config {
                setting: "private_key",
                ..
            })
        ),
        "{:?}",
        e.err()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Peer certificate details (with subjectAltName: PyDTLS 1.3.0 crashed) and
/// the negotiated cipher.
fn peer_certificate_details(v: Variant) {
    let mut o = pair(v, &server_cfg(), &client_cfg());
    expect_ok("details", &mut o);
    let c = o.client();
    let cert = c.peer_certificate().expect("server certificate");
    assert_eq!(cert.common_name().as_deref(), Some("localhost"));
    assert!(cert
        .subject()
        .contains(&("O".into(), "dtls-reactor tests".into())));
    assert_eq!(
        cert.subject_alt_names(),
        vec!["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    );
    let cipher = c.cipher().expect("cipher");
    assert!(cipher.starts_with("ECDHE-ECDSA-"), "{cipher}");
    assert_eq!(c.version(), Some("DTLSv1.2"));
    assert_eq!(o.server().cipher(), Some(cipher));
}

/// `ssl.get_server_certificate` for DTLS 1.0, 1.2 and any, with and without
/// the right CA.
fn fetch_server_certificate(v: Variant) {
    let leaf = openssl::x509::X509::from_pem(SERVER)
        .unwrap()
        .to_pem()
        .unwrap();
    for p in [Protocol::Dtls1_0, Protocol::Dtls1_2, Protocol::Any] {
        let s = fast_server().protocol(p).build().unwrap();
        for (what, c) in [
            ("right CA", fast_client().protocol(p).build().unwrap()),
            (
                "no verification",
                ClientConfig::builder()
                    .protocol(p)
                    .verify(Verify::None)
                    .build()
                    .unwrap(),
            ),
        ] {
            let mut o = pair(v, &s, &c);
            assert!(
                o.client_result().is_ok(),
                "{p:?} {what}: {:?}",
                o.client_result().as_ref().err()
            );
            let pem = o.client().peer_certificate().expect("certificate").to_pem();
            assert_eq!(pem, leaf, "{p:?} {what}");
        }
        let c = ClientConfig::builder()
            .protocol(p)
            .ca_pem(OTHER_CA)
            .server_name("localhost")
            .build()
            .unwrap();
        let o = pair(v, &s, &c);
        expect_fail("wrong CA", &o);
    }
}

/// The protocol matrix of the ssl-style suite.
fn protocol_matrix(v: Variant) {
    use Protocol::*;
    let ok = [
        (Dtls1_0, Dtls1_0),
        (Any, Dtls1_0),
        (Any, Dtls1_2),
        (Any, Any),
        (Dtls1_2, Dtls1_2),
        (Dtls1_2, Any),
    ];
    for (sp, cp) in ok {
        let mut o = pair(
            v,
            &fast_server().protocol(sp).build().unwrap(),
            &fast_client().protocol(cp).build().unwrap(),
        );
        expect_ok(&format!("{sp:?}/{cp:?}"), &mut o);
        let want = if sp == Dtls1_0 || cp == Dtls1_0 {
            "DTLSv1"
        } else {
            "DTLSv1.2"
        };
        assert_eq!(o.client().version(), Some(want));
    }
    // 1.0 <-> 1.0 with client verification none / optional / required.
    for verify in [Verify::None, Verify::Optional, Verify::Required] {
        let s = fast_server()
            .protocol(Dtls1_0)
            .ca_pem(CA)
            .verify(verify)
            .build()
            .unwrap();
        let c = fast_client()
            .protocol(Dtls1_0)
            .certificate_chain_pem(CLIENT)
            .private_key_pem(CLIENT_KEY)
            .build()
            .unwrap();
        let mut o = pair(v, &s, &c);
        expect_ok(&format!("1.0 verify {verify:?}"), &mut o);
    }
    // Server 1.0, client 1.2: a version error.
    let o = pair(
        v,
        &fast_server().protocol(Dtls1_0).build().unwrap(),
        &client_cfg(),
    );
    expect_fail("1.0 vs 1.2", &o);
    assert!(
        matches!(o.client_err(), Error::VersionMismatch(_)),
        "{}",
        o.client_err()
    );
    let o = pair(
        v,
        &server_cfg(),
        &fast_client().protocol(Dtls1_0).build().unwrap(),
    );
    expect_fail("1.2 vs 1.0", &o);
}

/// The wrapper suite: RSA certificate over DTLS 1.0 with a verifying
/// client, ECDSA P-256 over 1.2; curves; signature algorithms; chains.
fn wrapper_suite(v: Variant) {
    let rsa = fast_server()
        .certificate_chain_pem(SERVER_RSA)
        .private_key_pem(SERVER_RSA_KEY)
        .protocol(Protocol::Dtls1_0)
        .build()
        .unwrap();
    let mut o = pair(
        v,
        &rsa,
        &fast_client().protocol(Protocol::Dtls1_0).build().unwrap(),
    );
    expect_ok("RSA 1.0", &mut o);
    let s = server_cfg();
    // Curves.
    expect_ok(
        "prime256v1",
        &mut pair(v, &s, &fast_client().groups("prime256v1").build().unwrap()),
    );
    expect_fail(
        "secp384r1 only",
        &pair(v, &s, &fast_client().groups("secp384r1").build().unwrap()),
    );
    // Server ECDH curve selection against several client lists.
    let s384 = fast_server().groups("P-384:P-256").build().unwrap();
    for list in [None, Some("P-256:P-384"), Some("X25519:P-256")] {
        let c = match list {
            Some(l) => fast_client().groups(l).build().unwrap(),
            None => client_cfg(),
        };
        expect_ok(
            &format!("server P-384 first, client {list:?}"),
            &mut pair(v, &s384, &c),
        );
    }
    // Signature algorithms.
    expect_ok(
        "ECDSA+SHA256",
        &mut pair(
            v,
            &s,
            &fast_client().sigalgs("ECDSA+SHA256").build().unwrap(),
        ),
    );
    expect_fail(
        "RSA+SHA256",
        &pair(v, &s, &fast_client().sigalgs("RSA+SHA256").build().unwrap()),
    );
    // Chain: leaf + intermediate -> the client sees both; leaf alone fails.
    let mut chain = CHAIN_SERVER.to_vec();
    chain.extend_from_slice(INTER);
    let cs = fast_server()
        .certificate_chain_pem(&chain)
        .private_key_pem(CHAIN_SERVER_KEY)
        .build()
        .unwrap();
    let mut o = pair(v, &cs, &client_cfg());
    expect_ok("chain", &mut o);
    assert_eq!(o.client().peer_certificate_chain().len(), 2);
    // With the root appended too, the client sees three.
    let mut full = chain.clone();
    full.extend_from_slice(CA);
    let cs = fast_server()
        .certificate_chain_pem(&full)
        .private_key_pem(CHAIN_SERVER_KEY)
        .build()
        .unwrap();
    let mut o = pair(v, &cs, &client_cfg());
    expect_ok("chain with root", &mut o);
    assert_eq!(o.client().peer_certificate_chain().len(), 3);
    let leaf_only = fast_server()
        .certificate_chain_pem(CHAIN_SERVER)
        .private_key_pem(CHAIN_SERVER_KEY)
        .build()
        .unwrap();
    expect_fail("leaf only", &pair(v, &leaf_only, &client_cfg()));
}

four_ways!(
    client_verification,
    cipher_lists,
    client_certificates,
    peer_certificate_details,
    fetch_server_certificate,
    protocol_matrix,
    wrapper_suite,
);

#[test]
fn openssl_version_is_3() {
    let v = dtls_reactor::openssl_version();
    assert!(v.starts_with("OpenSSL 3."), "{v}");
    let _ = fast_cfgs;
    let _: Option<ServerConfig> = None;
}
