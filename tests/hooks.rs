//! The OpenSSL hooks, in memory (and, for resumption by address, over the
//! socket API): verification callback, SNI certificates, ALPN, credential
//! forms, the context escape hatch, key logging, cookie secrets and age,
//! ticket keys and the session store. Each test checks what a user would
//! and fails without its hook. Against OpenSSL's and GnuTLS's command-line
//! peers: `tests/interop.rs` (`hooks_*`).

mod common;
mod reactor_support;
mod socket_util;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dtls_reactor::{
    Admitted, CertVerdict, ClientConfig, Connection, CookieKeys, Credentials, Datagram, Error,
    FrontDoor, ServerConfig, SessionKey, SessionStore, TicketKeys, Verify,
};
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use openssl::symm::Cipher;
use openssl::x509::X509;

const SERVER2: &[u8] = include_bytes!("certs/server2.pem");
const SERVER2_KEY: &[u8] = include_bytes!("certs/server2.key");

fn sha256_of_pem(pem: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(&X509::from_pem(pem).unwrap().to_der().unwrap())
}

fn pin(expected: [u8; 32]) -> impl Fn(&dtls_reactor::PeerChain) -> CertVerdict + Send + Sync {
    move |chain| {
        if chain.leaf_sha256() == expected {
            CertVerdict::Accept
        } else {
            CertVerdict::Reject("fingerprint does not match the pin".into())
        }
    }
}

fn rejected(e: Option<&Error>) -> String {
    match e {
        Some(Error::CertificateRejected { reason, .. }) => reason.clone(),
        other => panic!("expected CertificateRejected, got {other:?}"),
    }
}

fn established(p: &Pair) {
    assert!(
        p.ok(),
        "handshake failed: client {:?} server {:?}",
        p.client.error(),
        p.server.as_ref().and_then(|s| s.error())
    );
}

/// A client that trusts the test CA and knows the server as `name`.
fn client_named(name: &str) -> dtls_reactor::ConfigBuilder<dtls_reactor::Client> {
    ClientConfig::builder().ca_pem(CA).server_name(name)
}

fn peer_cn(c: &Connection) -> String {
    c.peer_certificate().unwrap().common_name().unwrap()
}

// --- 1. Verification callback ---------------------------------------------

#[test]
fn client_pins_the_server_fingerprint() {
    let s = server().build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let good = pin(sha256_of_pem(SERVER));
    let c = client()
        .verify_callback(move |chain| {
            seen2.lock().unwrap().push((
                chain.certificates_der().to_vec(),
                chain.openssl_result().is_ok(),
                chain.server_name().map(str::to_string),
            ));
            good(chain)
        })
        .build()
        .unwrap();
    let mut p = handshake(&s, &c);
    established(&p);
    echo(&mut p);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one call per handshake");
    let (der, openssl_ok, name) = &seen[0];
    assert_eq!(der[0], X509::from_pem(SERVER).unwrap().to_der().unwrap());
    assert!(*openssl_ok, "OpenSSL's own verdict on a valid chain");
    assert_eq!(name.as_deref(), Some("localhost"));

    // The same server with a pin for another certificate: refused.
    let c = client()
        .verify_callback(pin(sha256_of_pem(SERVER2)))
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    assert!(!p.client.is_established());
    let reason = rejected(p.client.error());
    assert_eq!(reason, "fingerprint does not match the pin");
    let io: io::Error = dtls_reactor::Error::CertificateRejected {
        reason,
        stack: None,
    }
    .into();
    assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(
        p.client.error().unwrap().kind(),
        io::ErrorKind::PermissionDenied
    );
    assert!(
        p.server.as_ref().is_none_or(|s| !s.is_established()),
        "the server sees the alert"
    );
}

#[test]
fn callback_accepts_a_self_signed_peer_that_openssl_refuses() {
    // WebRTC style: no CA, the client's self-signed certificate is known by
    // its fingerprint only.
    let openssl_said = Arc::new(Mutex::new(None));
    let said = openssl_said.clone();
    let want = sha256_of_pem(SELFSIGNED);
    let s = server()
        .verify(Verify::Required)
        .verify_callback(move |chain| {
            *said.lock().unwrap() = Some(chain.openssl_result().map_err(str::to_string));
            pin(want)(chain)
        })
        .build()
        .unwrap();
    let c = client()
        .certificate_chain_pem(SELFSIGNED)
        .private_key_pem(SELFSIGNED_KEY)
        .build()
        .unwrap();
    let mut p = handshake(&s, &c);
    established(&p);
    echo(&mut p);
    let said = openssl_said.lock().unwrap().clone().unwrap();
    assert!(
        said.as_ref().is_err_and(|e| e.contains("self-signed")
            || e.contains("self signed")
            || e.contains("issuer")),
        "OpenSSL alone refuses it: {said:?}"
    );
    // The client certificate issued by the CA does not match the pin.
    let c = client()
        .certificate_chain_pem(CLIENT)
        .private_key_pem(CLIENT_KEY)
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    assert!(!p.client.is_established());
    assert_eq!(
        rejected(
            p.server
                .as_ref()
                .and_then(|s| s.error())
                .or(p.server_err.as_ref())
        ),
        "fingerprint does not match the pin"
    );
}

#[test]
fn a_panicking_callback_fails_the_handshake_without_unwinding() {
    let s = server().build().unwrap();
    let c = client()
        .verify_callback(|_| panic!("callback bug"))
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    assert!(!p.client.is_established());
    assert!(rejected(p.client.error()).contains("panicked"));
}

#[test]
fn server_callback_needs_a_client_certificate_request() {
    let e = server()
        .verify_callback(|_| CertVerdict::Accept)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("verify_callback"), "{e}");
}

// --- 2. SNI ----------------------------------------------------------------

fn sni_server() -> ServerConfig {
    server()
        .certificate_for_name(
            "other.test",
            Credentials::from_pem(SERVER2, SERVER2_KEY).unwrap(),
        )
        .build()
        .unwrap()
}

#[test]
fn sni_chooses_the_certificate_per_handshake() {
    let s = sni_server();
    for (name, cn) in [
        ("other.test", "other.test"),
        ("OTHER.test", "other.test"),
        ("localhost", "localhost"),
    ] {
        let c = client_named(name).build().unwrap();
        let p = handshake(&s, &c);
        established(&p);
        assert_eq!(peer_cn(&p.client), cn, "SNI {name}");
        assert_eq!(
            p.server
                .as_ref()
                .unwrap()
                .server_name()
                .map(str::to_ascii_lowercase),
            Some(name.to_ascii_lowercase())
        );
    }
    // An unknown name gets the default certificate (which then fails the
    // client's hostname check unless it is disabled).
    let c = client_named("unknown.test")
        .danger_disable_hostname_verification()
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    established(&p);
    assert_eq!(peer_cn(&p.client), "localhost");
    // Without the SNI entry, other.test cannot be served.
    let plain = server().build().unwrap();
    let c = client_named("other.test").build().unwrap();
    let p = handshake(&plain, &c);
    assert!(matches!(p.client.error(), Some(Error::Verification { .. })));
}

#[test]
fn certificate_resolver_decides_and_a_panic_refuses() {
    let creds = Credentials::from_pem(SERVER2, SERVER2_KEY).unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let asked2 = asked.clone();
    let s = server()
        .certificate_resolver(move |name| {
            asked2.lock().unwrap().push(name.map(str::to_string));
            match name {
                Some(n) if n.ends_with(".other.test") => Some(creds.clone()),
                Some("boom.test") => panic!("resolver bug"),
                _ => None,
            }
        })
        .build()
        .unwrap();
    let c = client_named("a.other.test").build().unwrap();
    let p = handshake(&s, &c);
    established(&p);
    assert_eq!(peer_cn(&p.client), "other.test");
    let c = client_named("boom.test")
        .danger_disable_hostname_verification()
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    assert!(!p.client.is_established(), "a panicking resolver refuses");
    assert_eq!(
        *asked.lock().unwrap(),
        vec![
            Some("a.other.test".to_string()),
            Some("boom.test".to_string())
        ]
    );
}

// --- 3. ALPN ---------------------------------------------------------------

#[test]
fn alpn_server_preference_and_callback() {
    let s = server().alpn_protocols(&["h2", "coap"]).build().unwrap();
    let c = client().alpn_protocols(&["coap", "h2"]).build().unwrap();
    let p = handshake(&s, &c);
    established(&p);
    assert_eq!(
        p.client.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server's preference"
    );
    assert_eq!(p.server.as_ref().unwrap().alpn_protocol(), Some(&b"h2"[..]));

    // A client that offers nothing: served without ALPN.
    let p = handshake(&s, &client().build().unwrap());
    established(&p);
    assert_eq!(p.client.alpn_protocol(), None);

    // No overlap: refused with no_application_protocol.
    let c = client().alpn_protocols(&["mqtt"]).build().unwrap();
    let p = handshake(&s, &c);
    assert!(!p.client.is_established());
    let e = p.client.error().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("no application protocol"), "{e}");

    // The callback sees the client's offer in order and picks.
    let offers = Arc::new(Mutex::new(Vec::new()));
    let o2 = offers.clone();
    let s = server()
        .alpn_select(move |offered| {
            *o2.lock().unwrap() = offered.iter().map(|p| p.to_vec()).collect();
            offered.last().map(|p| p.to_vec())
        })
        .build()
        .unwrap();
    let c = client().alpn_protocols(&["coap", "h2"]).build().unwrap();
    let p = handshake(&s, &c);
    established(&p);
    assert_eq!(p.client.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        *offers.lock().unwrap(),
        vec![b"coap".to_vec(), b"h2".to_vec()]
    );
    // An answer the client did not offer refuses.
    let s = server()
        .alpn_select(|_| Some(b"other".to_vec()))
        .build()
        .unwrap();
    assert!(!handshake(&s, &c).client.is_established());
    // Bad lists are configuration errors.
    let e = client().alpn_protocols(&[""]).build().unwrap_err();
    assert!(e.to_string().contains("alpn_protocols"));
}

// --- 4. Credentials --------------------------------------------------------

fn serves_with(creds: Credentials) {
    let s = ServerConfig::builder().credentials(creds).build().unwrap();
    let mut p = handshake(&s, &client().build().unwrap());
    established(&p);
    echo(&mut p);
    assert_eq!(
        p.client.peer_certificate().unwrap().to_der(),
        X509::from_pem(SERVER).unwrap().to_der().unwrap()
    );
}

#[test]
fn credentials_in_every_form() {
    let cert = X509::from_pem(SERVER).unwrap();
    let key = PKey::private_key_from_pem(SERVER_KEY).unwrap();
    serves_with(Credentials::from_x509(vec![cert.clone()], key.clone()).unwrap());
    serves_with(
        Credentials::from_der(
            &[&cert.to_der().unwrap()],
            &key.private_key_to_der().unwrap(),
        )
        .unwrap(),
    );
    let enc = key
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"s3cret")
        .unwrap();
    assert!(String::from_utf8_lossy(&enc).contains("ENCRYPTED PRIVATE KEY"));
    serves_with(Credentials::from_pem_encrypted(SERVER, &enc, b"s3cret").unwrap());
    let e = Credentials::from_pem_encrypted(SERVER, &enc, b"wrong").unwrap_err();
    assert!(e.to_string().contains("private_key"), "{e}");
    let p12 = Pkcs12::builder()
        .name("server")
        .pkey(&key)
        .cert(&cert)
        .build2("p12-pass")
        .unwrap()
        .to_der()
        .unwrap();
    serves_with(Credentials::from_pkcs12(&p12, "p12-pass").unwrap());
    let e = Credentials::from_pkcs12(&p12, "nope").unwrap_err();
    assert!(e.to_string().contains("pkcs12"), "{e}");
    assert!(
        Credentials::from_pkcs12(&p12, "a\0b").is_err(),
        "no panic on NUL"
    );
    assert!(Credentials::from_pkcs12(b"garbage", "x").is_err());

    // A chain: leaf signed by the intermediate, intermediate sent along.
    let leaf = X509::from_pem(CHAIN_SERVER).unwrap();
    let inter = X509::from_pem(INTER).unwrap();
    let creds = Credentials::from_x509(
        vec![leaf, inter],
        PKey::private_key_from_pem(CHAIN_SERVER_KEY).unwrap(),
    )
    .unwrap();
    let s = ServerConfig::builder().credentials(creds).build().unwrap();
    let p = handshake(&s, &client().build().unwrap());
    established(&p);
    assert_eq!(p.client.peer_certificate_chain().len(), 2);

    // Mixed sources are refused.
    let e = server()
        .credentials(Credentials::from_pem(SERVER, SERVER_KEY).unwrap())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("credentials"), "{e}");
}

// --- 5. The escape hatch ---------------------------------------------------

#[test]
fn configure_context_reaches_the_ssl_context_builder() {
    let want = "ECDHE-ECDSA-CHACHA20-POLY1305";
    let s = server()
        .configure_context(move |ctx| ctx.set_cipher_list(want))
        .build()
        .unwrap();
    let p = handshake(&s, &client().build().unwrap());
    established(&p);
    assert_eq!(p.client.cipher().as_deref(), Some(want));
    // Without it the default list prefers AES-GCM.
    let p = handshake(&server().build().unwrap(), &client().build().unwrap());
    assert_ne!(p.client.cipher().as_deref(), Some(want));

    let e = server()
        .configure_context(|ctx| ctx.set_cipher_list("NO-SUCH-CIPHER"))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("configure_context"), "{e}");
    let e = client()
        .configure_context(|_| panic!("hook bug"))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("panicked"), "{e}");
}

// --- 6. Key log ------------------------------------------------------------

fn client_random_hex(c: &Connection) -> String {
    let mut r = [0u8; 32];
    let n = c.ssl().expect("OpenSSL's session").client_random(&mut r);
    r[..n].iter().map(|b| format!("{b:02x}")).collect()
}

/// One NSS key log line for a DTLS 1.2 handshake: CLIENT_RANDOM, 32 bytes,
/// 48 bytes, in hex.
fn check_line(line: &str, client_random: &str) {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 3, "{line}");
    assert_eq!(f[0], "CLIENT_RANDOM");
    assert_eq!(f[1].to_ascii_lowercase(), client_random);
    assert_eq!(f[2].len(), 96, "48-byte master secret: {line}");
    assert!(f[2].bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn key_log_lines_in_nss_format() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let dir = std::env::temp_dir().join(format!("dtls-keylog-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let s = server()
        .key_log(move |line| l2.lock().unwrap().push(line.to_string()))
        .build()
        .unwrap();
    // OpenSSL's record layer keeps the client's SSL, whose random the
    // lines are checked against after the handshake.
    let c = client()
        .key_log_file(&dir)
        .openssl_record_layer(true)
        .build()
        .unwrap();
    let p = handshake(&s, &c);
    established(&p);
    let cr = client_random_hex(&p.client);
    let server_lines = lines.lock().unwrap().clone();
    assert_eq!(server_lines.len(), 1, "{server_lines:?}");
    check_line(&server_lines[0], &cr);
    let file = std::fs::read_to_string(&dir).unwrap();
    let _ = std::fs::remove_file(&dir);
    let file_lines: Vec<&str> = file.lines().collect();
    assert_eq!(
        file_lines,
        vec![server_lines[0].as_str()],
        "both sides log the same secret"
    );
    // Nothing is logged without the hook.
    let p = handshake(&server().build().unwrap(), &client().build().unwrap());
    established(&p);
    assert_eq!(lines.lock().unwrap().len(), 1);
}

// --- 7. Cookie secrets and age ---------------------------------------------

/// The client's second ClientHello (with the cookie of `stage`).
fn cookie_hello(stage: &mut FrontDoor, c: &mut Connection) -> Vec<u8> {
    let hello = c.poll_transmit().unwrap();
    let Admitted::Reply(hvr) = stage.admit(peer(), &Datagram::parse(&hello)) else {
        panic!("expected a HelloVerifyRequest")
    };
    c.feed(&hvr).unwrap();
    c.poll_transmit().unwrap()
}

#[test]
fn cookies_shared_by_a_fleet_and_limited_in_age() {
    let keys_a = CookieKeys::from_secret([5; 32]);
    let keys_b = CookieKeys::random().unwrap();
    keys_b.set([5; 32], None);
    let a = server().cookie_keys(keys_a.clone()).build().unwrap();
    let b = server().cookie_keys(keys_b.clone()).build().unwrap();
    let other = server().build().unwrap();
    let cc = client().build().unwrap();

    // Issued by a, admitted by b (same secret), not by a server with its own.
    let mut c = Connection::client(&cc, None).unwrap();
    let hello2 = cookie_hello(&mut dtls_test_support::stage(&a), &mut c);
    assert!(matches!(
        dtls_test_support::stage(&other).admit(peer(), &Datagram::parse(&hello2)),
        Admitted::Reply(_)
    ));
    assert!(matches!(
        dtls_test_support::stage(&b).admit(peer(), &Datagram::parse(&hello2)),
        Admitted::Accepted(_)
    ));
    // Rotated together: still admitted (previous secret), twice: not.
    keys_a.rotate_to([6; 32]);
    keys_b.rotate_to([6; 32]);
    assert!(matches!(
        dtls_test_support::stage(&b).admit(peer(), &Datagram::parse(&hello2)),
        Admitted::Accepted(_)
    ));
    keys_b.rotate_to([7; 32]);
    assert!(matches!(
        dtls_test_support::stage(&b).admit(peer(), &Datagram::parse(&hello2)),
        Admitted::Reply(_)
    ));

    // The age limit, without any rotation.
    keys_a.set_max_age(Duration::from_millis(200));
    let mut stage = dtls_test_support::stage(&a);
    let mut c = Connection::client(&cc, None).unwrap();
    let hello2 = cookie_hello(&mut stage, &mut c);
    std::thread::sleep(Duration::from_millis(350));
    assert!(
        matches!(
            stage.admit(peer(), &Datagram::parse(&hello2)),
            Admitted::Reply(_)
        ),
        "an old cookie earns a new HelloVerifyRequest"
    );
    let mut c = Connection::client(&cc, None).unwrap();
    let hello2 = cookie_hello(&mut stage, &mut c);
    assert!(matches!(
        stage.admit(peer(), &Datagram::parse(&hello2)),
        Admitted::Accepted(_)
    ));
}

// --- 8. Ticket keys and the session store ----------------------------------

/// A store that counts and shows what it holds.
#[derive(Default)]
struct Recording {
    map: Mutex<HashMap<SessionKey, Vec<u8>>>,
    loads: AtomicUsize,
}

impl SessionStore for Recording {
    fn load(&self, key: &SessionKey) -> Option<Vec<u8>> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.map.lock().unwrap().get(key).cloned()
    }
    fn store(&self, key: &SessionKey, session: Vec<u8>) {
        self.map.lock().unwrap().insert(key.clone(), session);
    }
}

/// An in-memory handshake of a client for the server at `addr` (servers
/// without cookies: the exchange is not what is tested here).
fn handshake_to(s: &ServerConfig, c: &ClientConfig, addr: SocketAddr) -> (Connection, Connection) {
    let mut client = Connection::client_to(c, None, Some(addr)).unwrap();
    let hello = client.poll_transmit().unwrap();
    let mut server = Connection::server(s, peer(), &hello).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while !(client.is_established() && server.is_established()) {
        assert!(start.elapsed() < Duration::from_secs(5), "handshake stuck");
        assert!(
            !client.is_closed() && !server.is_closed(),
            "{:?}",
            client.error()
        );
        while let Some(d) = server.poll_transmit() {
            let _ = client.feed(&d);
        }
        while let Some(d) = client.poll_transmit() {
            let _ = server.feed(&d);
        }
        let _ = server.recv(&mut buf);
    }
    (client, server)
}

fn ticket_server(keys: Option<&TicketKeys>) -> ServerConfig {
    let b = server().require_cookie(false);
    match keys {
        Some(k) => b.ticket_keys(k.clone()),
        None => b,
    }
    .build()
    .unwrap()
}

#[test]
fn shared_ticket_keys_resume_across_servers() {
    let addr: SocketAddr = "192.0.2.10:5684".parse().unwrap();
    let keys = TicketKeys::from_secret([42; 32]);
    let a = ticket_server(Some(&keys));
    // "Another process": its own context, the same secret.
    let b = ticket_server(Some(&TicketKeys::from_secret([42; 32])));
    let c = client().resume_sessions(true).build().unwrap();
    let (first, _) = handshake_to(&a, &c, addr);
    assert!(!first.session_reused());
    let (second, _) = handshake_to(&b, &c, addr);
    assert!(second.session_reused(), "resumed on the second server");

    // Servers with OpenSSL's own random keys do not resume each other's.
    let c = client().resume_sessions(true).build().unwrap();
    let _ = handshake_to(&ticket_server(None), &c, addr);
    let (x, _) = handshake_to(&ticket_server(None), &c, addr);
    assert!(!x.session_reused(), "no shared keys, no resumption");

    // Rotation: a ticket sealed under the previous key still opens.
    let keys_b = TicketKeys::from_secret([42; 32]);
    let b = ticket_server(Some(&keys_b));
    let c = client().resume_sessions(true).build().unwrap();
    let _ = handshake_to(&a, &c, addr);
    keys_b.rotate_to([43; 32]);
    let (r, _) = handshake_to(&b, &c, addr);
    assert!(r.session_reused(), "the previous key opens the ticket");
    // That resumption renewed the ticket under the current key [43]: a
    // server that has [43] as current and [44] nowhere still opens it.
    keys_b.set([44; 32], Some([43; 32]));
    let (r, _) = handshake_to(&b, &c, addr);
    assert!(r.session_reused(), "the renewed ticket opens");
    keys_b.set([45; 32], Some([46; 32]));
    let (r, _) = handshake_to(&b, &c, addr);
    assert!(!r.session_reused(), "retired keys: a full handshake");
}

#[test]
fn sessions_are_keyed_by_name_and_address() {
    let keys = TicketKeys::from_secret([9; 32]);
    let s = ticket_server(Some(&keys));
    let store = Arc::new(Recording::default());
    let c = client().session_store(store.clone()).build().unwrap();
    let a: SocketAddr = "192.0.2.1:5684".parse().unwrap();
    let b: SocketAddr = "192.0.2.2:5684".parse().unwrap();
    let _ = handshake_to(&s, &c, a);
    let keys_held: Vec<SessionKey> = store.map.lock().unwrap().keys().cloned().collect();
    assert_eq!(
        keys_held,
        vec![SessionKey {
            server_name: Some("localhost".into()),
            server_addr: Some(a)
        }]
    );
    let (other, _) = handshake_to(&s, &c, b);
    assert!(
        !other.session_reused(),
        "same name, other address: not offered"
    );
    let (again, _) = handshake_to(&s, &c, a);
    assert!(again.session_reused());
    assert_eq!(store.loads.load(Ordering::Relaxed), 3);

    // Sessions survive in the store's bytes: a new client configuration
    // (a restarted process) with the same store resumes.
    let c2 = client().session_store(store.clone()).build().unwrap();
    let (restarted, _) = handshake_to(&s, &c2, a);
    assert!(restarted.session_reused());

    // Garbage in a store is ignored, a panicking store is a miss.
    struct Bad;
    impl SessionStore for Bad {
        fn load(&self, _: &SessionKey) -> Option<Vec<u8>> {
            Some(b"not a session".to_vec())
        }
        fn store(&self, _: &SessionKey, _: Vec<u8>) {
            panic!("store bug")
        }
    }
    let c3 = client().session_store(Arc::new(Bad)).build().unwrap();
    let (x, _) = handshake_to(&s, &c3, a);
    assert!(x.is_established() && !x.session_reused());
}

/// Over the socket API: the server is restarted (a new configuration on the
/// same port, the same ticket keys) and the client resumes.
fn resumes_after_a_server_restart(v: Variant) {
    use socket_util::*;
    let keys = TicketKeys::from_secret([77; 32]);
    let cfg = || fast_server().ticket_keys(keys.clone()).build().unwrap();
    let c = fast_client().resume_sessions(true).build().unwrap();
    let first = EchoServer::start(v, &cfg());
    let addr = first.addr;
    let mut s = connect(addr, &c).unwrap();
    echo_rounds(&mut s, 1, 10);
    assert!(!s.connection().unwrap().session_reused());
    let _ = s.shutdown();
    drop(first);
    // Bind the same port again (the old listener is gone).
    let l = {
        let start = Instant::now();
        loop {
            match dtls_reactor::DtlsListener::bind(addr, &cfg(), v.demux) {
                Ok(l) => break l,
                Err(e) if start.elapsed() < T => {
                    eprintln!("rebinding {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        }
    };
    l.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let accept = AcceptLoop::start(Arc::new(l));
    let mut s = connect(addr, &c).unwrap();
    s.send(b"again").unwrap();
    let (mut srv, _) = accept.next();
    let mut buf = [0u8; 64];
    let n = srv.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"again");
    assert!(
        s.connection().unwrap().session_reused(),
        "resumed on the restarted server"
    );
}

four_ways!(resumes_after_a_server_restart);

/// A reactor client that records, per connection, whether it resumed and
/// what ALPN it got, then stops its reactor.
struct Resumer {
    seen: Arc<Mutex<Vec<Outcome>>>,
}

/// Resumed or not, and the ALPN protocol agreed.
type Outcome = (bool, Option<Vec<u8>>);

impl dtls_reactor::Handler for Resumer {
    fn on_connected(&mut self, ctx: &mut dtls_reactor::Ctx<'_>, id: dtls_reactor::ConnId) {
        let c = ctx.connection(id).expect("a DTLS connection");
        let got = (c.session_reused(), c.alpn_protocol().map(<[u8]>::to_vec));
        self.seen.lock().unwrap().push(got);
        ctx.close(id);
        ctx.stop();
    }
}

/// Through the reactor on both ends: ALPN, and a session store keyed by
/// address: two server reactors on different ports share ticket keys, yet
/// the client resumes only on the address its session came from.
fn reactor_resumes_by_address(v: Variant) {
    use reactor_support::*;
    let keys = TicketKeys::from_secret([88; 32]);
    let cfg = || {
        socket_util::fast_server()
            .ticket_keys(keys.clone())
            .alpn_protocols(&["coap"])
            .build()
            .unwrap()
    };
    let a = serve(
        v,
        &cfg(),
        dtls_reactor::Limits::default(),
        Rec::new(Log::default()),
    );
    let b = serve(
        v,
        &cfg(),
        dtls_reactor::Limits::default(),
        Rec::new(Log::default()),
    );
    let store = Arc::new(Recording::default());
    let cc = socket_util::fast_client()
        .alpn_protocols(&["h2", "coap"])
        .session_store(store.clone())
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for server in [&a, &a, &b] {
        let h = Resumer { seen: seen.clone() };
        clients(
            server.addr.unwrap(),
            &cc,
            1,
            dtls_reactor::Limits::default(),
            h,
        )
        .join_within(Duration::from_secs(10));
    }
    let seen = seen.lock().unwrap().clone();
    let coap = Some(b"coap".to_vec());
    assert_eq!(
        seen,
        vec![(false, coap.clone()), (true, coap.clone()), (false, coap)],
        "full, resumed on the same address, full on another address (same name)"
    );
    let mut held: Vec<Option<SocketAddr>> = store
        .map
        .lock()
        .unwrap()
        .keys()
        .map(|k| k.server_addr)
        .collect();
    held.sort();
    let mut want = vec![a.addr, b.addr];
    want.sort();
    assert_eq!(held, want, "one session per server address");
}

four_ways!(reactor_resumes_by_address);
