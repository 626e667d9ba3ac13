//! In-memory engine costs: full handshakes per second (client and server in
//! one thread, no sockets) and the cost of sealing and opening one record
//! (AES-128-GCM), on the engine's record layer and on OpenSSL's, beside the
//! AEAD alone (EVP over the same sizes, the floor either can reach).
//!
//! `cargo bench --bench engine`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dtls_reactor::{
    Admission, AdmissionLimits, Admitted, ClientConfig, Connection, Datagram, DropReason,
    FrontDoor, ServerConfig,
};
use dtls_test_support::{cookie_exchange, established_pair, peer};
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;

fn configs(cookie: bool, groups: &str) -> (ServerConfig, ClientConfig) {
    configs_with(cookie, groups, false)
}

fn configs_with(cookie: bool, groups: &str, openssl_layer: bool) -> (ServerConfig, ClientConfig) {
    let s = dtls_test_support::server()
        .require_cookie(cookie)
        .ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        .groups(groups)
        .openssl_record_layer(openssl_layer)
        .build()
        .unwrap();
    let c = dtls_test_support::client()
        .ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        .groups(groups)
        .openssl_record_layer(openssl_layer)
        .build()
        .unwrap();
    (s, c)
}

fn bench_handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.sample_size(30);
    for (name, cookie, groups) in [
        ("full_cookie_p256", true, "P-256"),
        ("full_nocookie_p256", false, "P-256"),
        ("full_cookie_x25519", true, "X25519:P-256"),
    ] {
        let (s, cc) = configs(cookie, groups);
        let mut stage = dtls_test_support::stage(&s);
        g.bench_function(name, |b| b.iter(|| established_pair(&mut stage, &cc)));
    }
    g.finish();
}

fn bench_records(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    for size in [64usize, 1200] {
        g.throughput(Throughput::Bytes(size as u64));
        for (layer, openssl_layer) in [("engine", false), ("openssl", true)] {
            let (s, cc) = configs_with(true, "P-256", openssl_layer);
            let mut stage = dtls_test_support::stage(&s);
            let (mut client, mut server) = established_pair(&mut stage, &cc);
            assert_eq!(client.engine_record_layer(), !openssl_layer);
            let msg = vec![0x5a; size];
            g.bench_function(format!("{layer}_seal_{size}"), |b| {
                b.iter(|| {
                    client.send(&msg).unwrap();
                    client.pop_transmit();
                })
            });
            let mut buf = vec![0u8; 2048];
            // The datagram is the caller's (its receive buffer): made and
            // freed outside the measurement.
            g.bench_function(format!("{layer}_open_{size}"), |b| {
                b.iter_batched_ref(
                    || {
                        client.send(&msg).unwrap();
                        client.poll_transmit().unwrap()
                    },
                    |rec| {
                        server.feed(rec).unwrap();
                        server.recv(&mut buf).unwrap().unwrap()
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        // The AEAD alone: AES-128-GCM through EVP, one context kept, a
        // nonce, 13 bytes of additional data and the tag per record.
        let key = [7u8; 16];
        let aad = [1u8; 13];
        let mut seal = CipherCtx::new().unwrap();
        seal.encrypt_init(Some(Cipher::aes_128_gcm()), Some(&key), None)
            .unwrap();
        let mut data = vec![0x5a; size];
        let mut tag = [0u8; 16];
        let mut n = 0u64;
        g.bench_function(format!("evp_seal_{size}"), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                seal.encrypt_init(None, None, Some(&nonce)).unwrap();
                seal.cipher_update(&aad, None).unwrap();
                seal.cipher_update_inplace(&mut data, size).unwrap();
                seal.cipher_final(&mut []).unwrap();
                seal.tag(&mut tag).unwrap();
            })
        });
        let nonce = [3u8; 12];
        seal.encrypt_init(None, None, Some(&nonce)).unwrap();
        seal.cipher_update(&aad, None).unwrap();
        let mut sealed = vec![0x5a; size];
        seal.cipher_update_inplace(&mut sealed, size).unwrap();
        seal.cipher_final(&mut []).unwrap();
        seal.tag(&mut tag).unwrap();
        let mut open = CipherCtx::new().unwrap();
        open.decrypt_init(Some(Cipher::aes_128_gcm()), Some(&key), None)
            .unwrap();
        let mut work = vec![0u8; size];
        g.bench_function(format!("evp_open_{size}"), |b| {
            b.iter(|| {
                // The copy stands for the datagram landing in a buffer.
                work.copy_from_slice(&sealed);
                open.decrypt_init(None, None, Some(&nonce)).unwrap();
                open.set_tag(&tag).unwrap();
                open.cipher_update(&aad, None).unwrap();
                open.cipher_update_inplace(&mut work, size).unwrap();
                open.cipher_final(&mut []).unwrap();
            })
        });
    }
    g.finish();
}

fn bench_cookie(c: &mut Criterion) {
    let (s, cc) = configs(true, "P-256");
    let mut stage = dtls_test_support::stage(&s);
    let mut client = Connection::client(&cc, None).unwrap();
    let hello = client.poll_transmit().unwrap();
    let peer = peer();
    let mut g = c.benchmark_group("cookie");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hello_verify_request", |b| {
        b.iter(|| match stage.admit(peer, &Datagram::parse(&hello)) {
            Admitted::Reply(h) => h,
            other => panic!("{other:?}"),
        })
    });
    // A ClientHello with a valid cookie at the half-open cap: dropped before
    // the cookie is checked (the front door's cap rule). Compare with the
    // HelloVerifyRequest above (goal: at most 2x) and with what admitting it
    // costs (the key exchange and signature of `SSL_accept`).
    let full = Admission::new(AdmissionLimits::default().max_handshakes(0));
    let mut capped = FrontDoor::new(&s, &full).unwrap();
    let hello2 = cookie_exchange(&mut stage, &cc, peer).hello2;
    g.bench_function("cookie_hello_at_cap", |b| {
        b.iter(|| match capped.admit(peer, &Datagram::parse(&hello2)) {
            Admitted::Drop(DropReason::HandshakeLimit) => {}
            other => panic!("{other:?}"),
        })
    });
    // The hellos are made with a door of their own (same configuration, so
    // the same cookie keys): setup and measured routine each need one.
    let mut maker = dtls_test_support::stage(&s);
    g.bench_function("cookie_hello_admitted", |b| {
        b.iter_batched(
            || cookie_exchange(&mut maker, &cc, peer).hello2,
            |h| match stage.admit(peer, &Datagram::parse(&h)) {
                Admitted::Accepted(c) => c,
                other => panic!("{other:?}"),
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("drop_garbage", |b| {
        b.iter(|| {
            stage.admit(
                peer,
                &Datagram::parse(b"not a dtls record at all, just bytes"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench_handshake, bench_records, bench_cookie);
criterion_main!(benches);
