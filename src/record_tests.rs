//! The engine's record layer against OpenSSL's, in memory: keys (a record
//! sealed by one opens in the other, byte for byte the same record), and a
//! property-based differential test (the same datagrams fed to a session on
//! OpenSSL's record layer and to its twin on the engine's give the same
//! deliveries, drops, closes, errors and replies), per AEAD suite, both
//! roles.

use proptest::prelude::*;

use crate::config::{ClientConfig, ServerConfig};
use crate::conn::Connection;
use crate::error::Error;
use crate::established::Established;
use crate::role::Role;

/// A throwaway self-signed ECDSA certificate for `localhost` and its key,
/// made once (`doc_pki.rs`: the package does not ship the test PKI).
fn pki() -> &'static (Vec<u8>, Vec<u8>) {
    static PKI: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    PKI.get_or_init(|| include!("doc_pki.rs"))
}

/// The AEAD suites of DTLS 1.2 the installed OpenSSL offers with an ECDSA
/// certificate: AES-128/256-GCM, ChaCha20-Poly1305, AES-CCM, AES-CCM-8.
const SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-CCM",
    "ECDHE-ECDSA-AES256-CCM8",
];

fn configs(suite: &str, openssl_layer: bool) -> (ServerConfig, ClientConfig) {
    // OpenSSL 3.2 and later allow CCM-8 (64-bit tags) at security level 0 only.
    let list = if suite.contains("CCM8") {
        format!("{suite}:@SECLEVEL=0")
    } else {
        suite.to_string()
    };
    let suite = list.as_str();
    let (cert, key) = pki();
    let s = ServerConfig::builder()
        .certificate_chain_pem(cert)
        .private_key_pem(key)
        .require_cookie(false)
        .ciphers(suite)
        .openssl_record_layer(openssl_layer)
        .build()
        .unwrap();
    let c = ClientConfig::builder()
        .ca_pem(cert)
        .server_name("localhost")
        .ciphers(suite)
        .openssl_record_layer(openssl_layer)
        .build()
        .unwrap();
    (s, c)
}

/// A handshake in memory; both ends established, nothing in flight.
fn pair(suite: &str, openssl_layer: bool) -> (Connection, Connection) {
    let (c, s, _) = pair_flight(suite, openssl_layer);
    (c, s)
}

/// [`pair`], with the server's last flight (in a full handshake the
/// server's flight ends it: the datagrams it sent last).
fn pair_flight(suite: &str, openssl_layer: bool) -> (Connection, Connection, Vec<Vec<u8>>) {
    let (s, c) = configs(suite, openssl_layer);
    let mut client = Connection::client(&c, None).unwrap_or_else(|e| panic!("{suite}: {e}"));
    // Seen by the twins: the protected records OpenSSL reads.
    client.pipe_mut().stash = Some(Vec::new());
    let hello = client.poll_transmit().unwrap();
    let mut server = Connection::server(&s, "127.0.0.1:9".parse().unwrap(), &hello).unwrap();
    server.pipe_mut().stash = Some(Vec::new());
    let mut last = Vec::new();
    for _ in 0..20 {
        let flight = transmits(&mut server);
        for d in &flight {
            client.feed(d).unwrap();
        }
        if !flight.is_empty() {
            last = flight;
        }
        while let Some(d) = client.poll_transmit() {
            server.feed(&d).unwrap();
        }
        if client.is_established() && server.is_established() && !server.has_transmit() {
            return (client, server, last);
        }
    }
    panic!("no handshake with {suite}");
}

fn twin(c: &Connection) -> Box<Established> {
    twin_with(c, Vec::new())
}

fn twin_with(c: &Connection, last_flight: Vec<Vec<u8>>) -> Box<Established> {
    Established::twin(c.ssl().unwrap(), c.pipe(), c.role(), last_flight)
}

/// Every plaintext `recv` gives now, then how it stopped (`None`: nothing
/// more; `Some`: the error).
fn drain(c: &mut Connection) -> (Vec<Vec<u8>>, Option<String>) {
    drain_with(c, 2048)
}

/// [`drain`] with a buffer of `size` bytes (records longer than it are read
/// in parts).
fn drain_with(c: &mut Connection, size: usize) -> (Vec<Vec<u8>>, Option<String>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; size];
    for _ in 0..2000 {
        match c.recv(&mut buf) {
            Ok(Some(n)) => got.push(buf[..n].to_vec()),
            Ok(None) => return (got, None),
            Err(e) => return (got, Some(describe(&e))),
        }
    }
    panic!("recv never ran dry");
}

/// An error as a user tells errors apart: its kind and variant, and for
/// OpenSSL's errors the reason codes (not the text, which names OpenSSL's
/// source files).
fn describe(e: &Error) -> String {
    let codes = |s: &Option<openssl::error::ErrorStack>| {
        s.as_ref()
            .map(|s| {
                s.errors()
                    .iter()
                    .map(|e| e.reason_code())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    match e {
        Error::Ssl { code, stack } => format!("Ssl({code}, {:?})", codes(stack)),
        Error::Verification { reason, stack } => {
            format!("Verification({reason}, {:?})", codes(stack))
        }
        Error::VersionMismatch(s) => format!("VersionMismatch({:?})", codes(&Some(s.clone()))),
        other => format!("{:?} {other}", other.kind()),
    }
}

/// Datagrams as (type, version, epoch, length): GCM's and CCM's explicit
/// nonces differ between OpenSSL and the engine, so the bytes do, and a
/// flight OpenSSL sends again takes new sequence numbers where the engine
/// sends the kept one as it was.
fn headers(ds: Vec<Vec<u8>>) -> Vec<(Vec<u8>, usize)> {
    ds.into_iter()
        .map(|d| (d[..5.min(d.len())].to_vec(), d.len()))
        .collect()
}

fn transmits(c: &mut Connection) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

/// `a`'s records, sealed by OpenSSL and by the engine from `a`'s keys, are
/// the same bytes; `b` (OpenSSL) opens the engine's, the engine opens
/// OpenSSL's.
fn check_keys(suite: &str, a: &mut Connection, b: &mut Connection) {
    let mut ours = twin(a);
    ours.send(b"the same plaintext").unwrap();
    let sealed = ours.pipe.pop_outbound().unwrap();
    a.send(b"the same plaintext").unwrap();
    let theirs = a.poll_transmit().unwrap();
    // OpenSSL picks GCM's and CCM's explicit nonce itself (a counter from
    // a random start); ours is epoch‖sequence (RFC 5288 section 3 allows
    // either). ChaCha20-Poly1305 has none: the records are the same bytes.
    if suite.contains("CHACHA") {
        assert_eq!(sealed, theirs, "{suite}: {:?} seals differently", a.role());
    } else {
        assert_eq!(sealed[..13], theirs[..13], "{suite}: header");
        assert_eq!(sealed.len(), theirs.len(), "{suite}: length");
    }
    b.feed(&sealed).unwrap();
    assert_eq!(
        drain(b),
        (vec![b"the same plaintext".to_vec()], None),
        "{suite}"
    );
    let mut r = Connection::established_twin(twin(b), b.role());
    a.send(b"from OpenSSL").unwrap();
    let d = a.poll_transmit().unwrap();
    r.feed(&d).unwrap();
    assert_eq!(
        drain(&mut r),
        (vec![b"from OpenSSL".to_vec()], None),
        "{suite}"
    );
}

#[test]
fn keys_match_openssl() {
    for suite in SUITES {
        let (mut client, mut server) = pair(suite, true);
        check_keys(suite, &mut client, &mut server);
        check_keys(suite, &mut server, &mut client);
        // The exporter: RFC 5705 from our secrets equals OpenSSL's.
        let mut theirs = [0u8; 40];
        client
            .export_keying_material(&mut theirs, "EXTRACTOR-test", Some(b"ctx"))
            .unwrap();
        let ours = Connection::established_twin(twin(&client), Role::Client);
        let mut mine = [0u8; 40];
        ours.export_keying_material(&mut mine, "EXTRACTOR-test", Some(b"ctx"))
            .unwrap();
        assert_eq!(mine, theirs, "{suite}: exporter");
    }
}

#[test]
fn default_sessions_move_to_the_engine() {
    for suite in SUITES {
        let (mut client, mut server) = pair(suite, false);
        assert!(
            client.engine_record_layer() && server.engine_record_layer(),
            "{suite}"
        );
        assert!(client.ssl().is_none());
        assert_eq!(client.cipher().as_deref(), Some(*suite));
        assert_eq!(server.version(), "DTLSv1.2");
        assert_eq!(
            client.peer_certificate().map(|c| c.to_der()),
            Some(
                openssl::x509::X509::from_pem(&pki().0)
                    .unwrap()
                    .to_der()
                    .unwrap()
            )
        );
        for i in 0..100u32 {
            client.send(&i.to_be_bytes()).unwrap();
            server.feed(&client.poll_transmit().unwrap()).unwrap();
            assert_eq!(drain(&mut server).0, vec![i.to_be_bytes().to_vec()]);
            server.send(&[7; 1000]).unwrap();
            client.feed(&server.poll_transmit().unwrap()).unwrap();
            assert_eq!(drain(&mut client).0, vec![vec![7; 1000]]);
        }
        client.close();
        server.feed(&client.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            drain(&mut server).1.as_deref(),
            Some("ConnectionAborted connection closed by peer (close_notify)")
        );
        client.feed(&server.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            drain(&mut client).1.as_deref(),
            Some("ConnectionAborted connection closed by peer (close_notify)")
        );
        assert!(client.is_close_received() && server.is_close_sent());
    }
}

/// One datagram of a differential run, made from the sender's records.
#[derive(Clone, Debug)]
enum Op {
    /// Record `i` as sent (again, late or early: order is the test's).
    Genuine(usize),
    /// Record `i` with one byte changed.
    Corrupt(usize, usize, u8),
    /// Record `i` cut short, its length field fixed up to match.
    Shorten(usize, usize),
    /// Record `i` under another epoch.
    Epoch(usize, u16),
    /// Two records in one datagram.
    Both(usize, usize),
    /// An alert from the sender: close_notify, a warning, a fatal one.
    Alert(u8, u8),
    /// That many warning alerts (user_canceled), one datagram each, fed
    /// one after another.
    Warnings(usize),
    /// A protected handshake message from the sender, empty body: a
    /// HelloRequest or ClientHello (renegotiation, refused), another type,
    /// a Finished (the peer lacks our last flight).
    Handshake(u8),
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..n).prop_map(Op::Genuine),
        1 => (0..n, 0usize..1200, 1u8..=255).prop_map(|(i, p, x)| Op::Corrupt(i, p, x)),
        1 => (0..n, 1usize..40).prop_map(|(i, c)| Op::Shorten(i, c)),
        1 => (0..n, prop_oneof![Just(0u16), Just(2), Just(0xffff)]).prop_map(|(i, e)| Op::Epoch(i, e)),
        1 => (0..n, 0..n).prop_map(|(i, j)| Op::Both(i, j)),
        1 => prop_oneof![Just((1u8, 0u8)), Just((1, 90)), Just((1, 100)), Just((2, 40)), Just((2, 20)), Just((2, 0)), Just((3, 10))]
            .prop_map(|(l, d)| Op::Alert(l, d)),
        // Runs of warnings (OpenSSL's limit is counted in a row).
        1 => (1usize..7).prop_map(Op::Warnings),
        1 => prop_oneof![Just(0u8), Just(1), Just(2), Just(11), Just(20)].prop_map(Op::Handshake),
    ]
}

/// Records the sender makes: `n` of application data of assorted sizes.
const RECORDS: usize = 100;

fn datagram(records: &[Vec<u8>], alerts: &mut Established, o: &Op) -> Vec<u8> {
    match *o {
        Op::Genuine(i) => records[i].clone(),
        Op::Corrupt(i, p, x) => {
            let mut d = records[i].clone();
            let at = p % d.len();
            d[at] ^= x;
            d
        }
        Op::Shorten(i, cut) => {
            let mut d = records[i].clone();
            let body = d.len() - 13;
            let keep = body.saturating_sub(cut);
            d.truncate(13 + keep);
            d[11..13].copy_from_slice(&(keep as u16).to_be_bytes());
            d
        }
        Op::Epoch(i, e) => {
            let mut d = records[i].clone();
            d[3..5].copy_from_slice(&e.to_be_bytes());
            d
        }
        Op::Both(i, j) => [records[i].clone(), records[j].clone()].concat(),
        Op::Alert(level, desc) => {
            alerts.seal_datagram(21, &[level, desc]).unwrap();
            alerts.pipe.pop_outbound().unwrap()
        }
        Op::Warnings(_) => unreachable!("fed one by one"),
        Op::Handshake(ty) => {
            // type, length 0, message_seq 5, fragment offset 0, length 0.
            let msg = [ty, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0];
            alerts.seal_datagram(22, &msg).unwrap();
            alerts.pipe.pop_outbound().unwrap()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn same_as_openssl(
        suite in 0..SUITES.len(),
        receiver_is_client in any::<bool>(),
        ops in proptest::collection::vec(op(RECORDS), 1..120),
        buf_size in prop_oneof![Just(2048usize), Just(100), Just(7)],
    ) {
        let (client, server, server_flight) = pair_flight(SUITES[suite], true);
        // The receiver's last flight: a server's (full handshake); a client
        // completes on the server's flight and has none to send again.
        let (mut sender, mut theirs, flight) = if receiver_is_client {
            (server, client, Vec::new())
        } else {
            (client, server, server_flight)
        };
        let mut ours = Connection::established_twin(twin_with(&theirs, flight), theirs.role());
        let records: Vec<Vec<u8>> = (0..RECORDS)
            .map(|i| {
                sender.send(&vec![i as u8; 1 + (i * 37) % 1100]).unwrap();
                sender.poll_transmit().unwrap()
            })
            .collect();
        let mut alerts = twin(&sender);
        let ops: Vec<Op> = ops
            .into_iter()
            .flat_map(|o| match o {
                Op::Warnings(n) => vec![Op::Alert(1, 90); n],
                o => vec![o],
            })
            .collect();
        let mut delivered = false;
        for (k, o) in ops.iter().enumerate() {
            if delivered && matches!(o, Op::Handshake(20)) {
                // The one difference on purpose: OpenSSL keeps its last
                // flight for the session's life and sends it again for any
                // Finished; the engine drops it at the peer's first
                // application record, which shows the peer has it (RFC 6347
                // section 4.2.4). A genuine peer sends no Finished then.
                continue;
            }
            let d = datagram(&records, &mut alerts, o);
            let a = theirs.feed(&d).map_err(|e| describe(&e));
            let b = ours.feed(&d).map_err(|e| describe(&e));
            prop_assert_eq!(&a, &b, "feed, op {} {:?}", k, o);
            let (ga, ea) = drain_with(&mut theirs, buf_size);
            let (gb, eb) = drain_with(&mut ours, buf_size);
            prop_assert_eq!(&ga, &gb, "deliveries, op {} {:?}", k, o);
            delivered |= !ga.is_empty();
            prop_assert_eq!(&ea, &eb, "errors, op {} {:?}", k, o);
            prop_assert_eq!(theirs.stats().dropped, ours.stats().dropped, "dropped, op {}", k);
            prop_assert_eq!(theirs.stats().discarded, ours.stats().discarded, "discarded, op {} {:?}", k, o);
            prop_assert_eq!(theirs.is_closed(), ours.is_closed(), "closed, op {}", k);
            prop_assert_eq!(
                theirs.error().map(describe),
                ours.error().map(describe),
                "error, op {}", k
            );
            prop_assert_eq!(
                headers(transmits(&mut theirs)),
                headers(transmits(&mut ours)),
                "replies, op {} {:?}", k, o
            );
        }
    }
}
