//! What the fuzz targets share (beside `dtls-test-support`'s PKI and pair
//! driver): the configs, an established in-memory pair, an oracle for the
//! framing check, and the input format of the `conn_feed_*` targets.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use dtls_reactor::{ClientConfig, Connection, CookieKeys, ServerConfig};

/// A fixed cookie secret and no practical age limit, so a cookie-carrying
/// ClientHello built at start-up stays valid for every input of a long run
/// (cookies carry their timestamp; the default limit is 60 s).
pub const SECRET: [u8; 32] = [0x5a; 32];

/// The standard server config with the fixed cookie secret.
pub fn server_config() -> ServerConfig {
    let keys = CookieKeys::from_secret(SECRET);
    keys.set_max_age(Duration::from_secs(365 * 24 * 3600));
    dtls_test_support::server()
        .cookie_keys(keys)
        .build()
        .expect("server config")
}

pub fn client_config() -> ClientConfig {
    dtls_test_support::client().build().expect("client config")
}

/// An established client/server pair, handshaken in memory.
pub struct Pair {
    pub client: Connection,
    pub server: Connection,
}

impl Pair {
    pub fn new() -> Pair {
        let mut stage = dtls_test_support::stage(&server_config());
        let (client, server) = dtls_test_support::established_pair(&mut stage, &client_config());
        assert!(client.cipher().unwrap().contains("-GCM-"), "the oracle knows AES-GCM");
        Pair { client, server }
    }
}

/// The oracle of the framing check in `Connection::feed`: `None` when `d` is
/// not a sequence of whole DTLS records (or has a protected record shorter
/// than an AES-GCM record can be: 8-byte nonce, 16-byte tag), else its
/// application records.
pub fn frames(d: &[u8]) -> Option<u64> {
    let mut rest = d;
    let mut app = 0;
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
        if u16::from_be_bytes([rest[3], rest[4]]) > 0 && len < 24 {
            return None;
        }
        if rest[0] == 23 {
            app += 1;
        }
        rest = &rest[end..];
    }
    Some(app)
}

/// The 48-bit sequence number of a DTLS record.
fn seq(rec: &[u8]) -> u64 {
    rec[5..11].iter().fold(0, |acc, b| acc << 8 | u64::from(*b))
}

/// Sends `msg` from `a` to `b` and checks that `b` reads exactly it.
fn one_way(a: &mut Connection, b: &mut Connection, msg: &[u8]) {
    a.send(msg).expect("send");
    while let Some(d) = a.poll_transmit() {
        b.feed(&d).expect("feed");
    }
    let mut buf = [0u8; 2048];
    let n = b.recv(&mut buf).expect("recv").expect("the echo arrived");
    assert_eq!(&buf[..n], msg);
    assert_eq!(b.recv(&mut buf).expect("recv"), None);
}

/// Feeds the datagrams described by `data` into `target`, sealed where asked
/// by `peer`, and checks what `target` does with each of them:
///
/// Input: a sequence of `[op, len, bytes...]` chunks (a short last chunk is
/// cut to what remains).
/// - op % 4 == 0: `bytes` raw, as a datagram.
/// - op % 4 == 1: a real record sealed by `peer` with `bytes` as plaintext,
///   delivered intact: it must be read exactly once, in order.
/// - op % 4 == 2: a real record, then `bytes[1..]` XORed into it from offset
///   `bytes[0]`: delivered only when the XOR changed nothing.
/// - op % 4 == 3: the last real record again, cut to `len` bytes when `len`
///   is shorter: delivered only when whole and no intact copy arrived before
///   (otherwise it is a replay).
///
/// After each datagram `target` is read dry and its timer handled. Then the
/// real records not yet delivered arrive intact and must be read. At the
/// end: the session is still established, every dropped datagram was counted
/// in `dropped` and every rejected application record in `discarded`, and a
/// real echo works both ways.
pub fn run(pair: &mut Pair, target_is_server: bool, data: &[u8]) {
    let Pair { client, server } = pair;
    let (target, peer) = if target_is_server {
        (server, client)
    } else {
        (client, server)
    };
    let before = target.stats();
    let mut expect_dropped = 0u64;
    let mut expect_discarded = 0u64;
    // Every real record of this input, its plaintext, and whether it was
    // delivered.
    let mut sealed: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut rest = data;
    while rest.len() >= 2 {
        let op = rest[0] % 4;
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let (datagram, deliver): (Vec<u8>, Option<Vec<u8>>) = match op {
            0 => (bytes.to_vec(), None),
            1 | 2 => {
                let plain: &[u8] = if op == 1 { bytes } else { b"x" };
                if plain.is_empty() {
                    continue;
                }
                peer.send(plain).expect("peer send");
                let rec = peer.poll_transmit().expect("a record");
                assert!(peer.poll_transmit().is_none(), "one record per send");
                let mut d = rec.clone();
                if op == 2 && !bytes.is_empty() {
                    let at = usize::from(bytes[0]);
                    for (i, x) in bytes[1..].iter().enumerate() {
                        if let Some(b) = d.get_mut(at + i) {
                            *b ^= x;
                        }
                    }
                }
                let intact = d == rec;
                sealed.push((rec, plain.to_vec(), intact));
                (d, if intact { Some(plain.to_vec()) } else { None })
            }
            _ => match sealed.last_mut() {
                Some((r, plain, delivered)) => {
                    let d = r[..len.min(r.len())].to_vec();
                    // The first intact copy to arrive is delivered; any
                    // later one is a replay.
                    if d == *r && !*delivered {
                        *delivered = true;
                        (d, Some(plain.clone()))
                    } else {
                        (d, None)
                    }
                }
                None => continue,
            },
        };
        match frames(&datagram) {
            None => expect_dropped += 1,
            Some(app) if deliver.is_none() => expect_discarded += app,
            Some(_) => {}
        }
        target.feed(&datagram).expect("feed must not fail on an established session");
        let mut got = None;
        while let Some(n) = target.recv(&mut buf).expect("recv") {
            assert!(got.is_none(), "one datagram gave two records");
            got = Some(buf[..n].to_vec());
        }
        assert_eq!(got, deliver, "delivery of op {op}");
        let _ = target.handle_timeout(Instant::now()).expect("timeout");
        assert!(target.is_established(), "an unauthenticated datagram ended the session");
        while target.poll_transmit().is_some() {}
    }
    // Records never delivered intact arrive now, late and out of order: each
    // is delivered once if it is still inside the 64-record replay window
    // (behind the highest sequence number delivered), else discarded as too
    // old. Every earlier input ended the same way, so only this input's
    // records matter. (Without this, the fuzzer could learn a record's bytes
    // and send it raw in a later input, where it would be genuine.)
    let mut max_seq = sealed
        .iter()
        .filter(|r| r.2)
        .map(|r| seq(&r.0))
        .max();
    for (rec, plain, delivered) in sealed {
        if delivered {
            continue;
        }
        let s = seq(&rec);
        let fresh = max_seq.is_none_or(|m| s > m || m - s < 64);
        target.feed(&rec).expect("feed");
        let got = target.recv(&mut buf).expect("recv").map(|n| buf[..n].to_vec());
        if fresh {
            assert_eq!(got.as_deref(), Some(&plain[..]), "late record {s} (max {max_seq:?})");
            max_seq = Some(max_seq.map_or(s, |m| m.max(s)));
        } else {
            assert_eq!(got, None, "record {s} older than the window (max {max_seq:?})");
            expect_discarded += 1;
        }
        assert_eq!(target.recv(&mut buf).expect("recv"), None);
    }
    let after = target.stats();
    assert_eq!(after.dropped - before.dropped, expect_dropped, "dropped count");
    assert_eq!(after.discarded - before.discarded, expect_discarded, "discarded count");
    one_way(peer, target, b"ping");
    one_way(target, peer, b"pong");
}
