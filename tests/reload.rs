//! A server takes a new `ServerConfig` (here: another certificate) without a
//! restart, while clients connect: sessions established before keep theirs,
//! every handshake after the reload gets the new one, none fails. The socket
//! API (`DtlsListener::set_config`) and the reactor
//! (`ReactorHandle::set_listener_config`), four ways each.

mod common;
mod reactor_support;
mod socket_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{four_ways, Variant};
use dtls_reactor::{CookieKeys, DtlsSocket, Limits, ListenerId, ServerConfig};
use reactor_support::{serve, Rec};
use socket_util::{client_cfg, connect, EchoServer};

/// Two configurations with different certificates and the same cookie
/// secrets (a cookie issued before the reload still verifies after it).
fn configs() -> (ServerConfig, ServerConfig) {
    let keys = CookieKeys::random().unwrap();
    let a = socket_util::fast_server()
        .cookie_keys(keys.clone())
        .build()
        .unwrap();
    let b = ServerConfig::builder()
        .certificate_chain_pem(common::SERVER_RSA)
        .private_key_pem(common::SERVER_RSA_KEY)
        .cookie_keys(keys)
        .build()
        .unwrap();
    (a, b)
}

/// The server's leaf certificate as the client saw it, after an echo.
fn leaf_after_echo(s: &mut DtlsSocket, msg: &[u8]) -> Vec<u8> {
    s.send(msg).unwrap();
    let mut buf = [0u8; 256];
    let n = s.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], msg);
    s.peer_certificate().expect("server certificate").to_der()
}

fn reload(v: Variant, reactor: bool) {
    let (a, b) = configs();
    let der = |pem: &[u8]| {
        openssl::x509::X509::from_pem(pem)
            .unwrap()
            .to_der()
            .unwrap()
    };
    let (cert_a, cert_b) = (der(common::SERVER), der(common::SERVER_RSA));
    let mut echo = None;
    let mut running = None;
    let addr = if reactor {
        let mut rec = Rec::new(reactor_support::log());
        rec.echo = true;
        let r = serve(v, &a, Limits::default(), rec);
        let addr = r.addr.unwrap();
        running = Some(r);
        addr
    } else {
        let s = EchoServer::start(v, &a);
        let addr = s.addr;
        echo = Some(s);
        addr
    };
    let ccfg = client_cfg();
    let mut before = connect(addr, &ccfg).unwrap();
    assert_eq!(leaf_after_echo(&mut before, b"before"), cert_a);

    // Clients connect one after another while the configuration changes.
    const CLIENTS: usize = 20;
    let done = Arc::new(AtomicUsize::new(0));
    let (d, c) = (done.clone(), ccfg.clone());
    let clients = std::thread::spawn(move || {
        (0..CLIENTS)
            .map(|i| {
                let mut s = connect(addr, &c).unwrap_or_else(|e| panic!("client {i}: {e}"));
                let leaf = leaf_after_echo(&mut s, b"during");
                s.shutdown().unwrap();
                d.fetch_add(1, Ordering::Relaxed);
                leaf
            })
            .collect::<Vec<_>>()
    });
    assert!(reactor_support::wait_for(socket_util::T, || {
        done.load(Ordering::Relaxed) >= CLIENTS / 4
    }));
    match (&echo, &running) {
        (Some(s), _) => s.listener.set_config(&b).unwrap(),
        (_, Some(r)) => r.handle.set_listener_config(ListenerId(0), &b).unwrap(),
        _ => unreachable!(),
    }
    let leaves = clients.join().unwrap();
    // Once the new certificate was served, the old one never again.
    let first_b = leaves
        .iter()
        .position(|l| *l == cert_b)
        .unwrap_or(leaves.len());
    assert!(
        first_b >= CLIENTS / 4,
        "the reload came after {} clients",
        CLIENTS / 4
    );
    assert!(
        leaves[first_b..].iter().all(|l| *l == cert_b),
        "a handshake after the reload got the old certificate"
    );
    assert!(leaves[..first_b].iter().all(|l| *l == cert_a));
    let mut after = connect(addr, &ccfg).unwrap();
    assert_eq!(leaf_after_echo(&mut after, b"after"), cert_b);
    // The session made before the reload goes on with its own configuration.
    assert_eq!(leaf_after_echo(&mut before, b"still"), cert_a);
    if let Some(r) = running {
        r.stop();
    }
}

fn reload_socket(v: Variant) {
    reload(v, false)
}

fn reload_reactor(v: Variant) {
    reload(v, true)
}

four_ways!(reload_socket, reload_reactor);
