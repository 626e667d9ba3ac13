//! Peer restart (RFC 6347 section 4.2.8) in the socket API: a client that
//! comes back from the same address and port with a new handshake replaces its
//! old server connection (the old one fails with `PeerRestarted`, the
//! listener's `accept()` returns the new one); a ClientHello without a valid
//! cookie on an established link only earns a HelloVerifyRequest. Four
//! variants each.

mod common;
mod socket_util;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::thread;

use common::{four_ways, Variant};
use dtls_reactor::{Connection, DtlsSocket, Error};
use socket_util::*;

/// A client on `sock` (bound, not connected): connects to `server`, sends
/// `msg`, returns the echo.
fn client_echo(sock: UdpSocket, server: SocketAddr, msg: &'static [u8]) -> Vec<u8> {
    sock.connect(server).unwrap();
    let mut c = DtlsSocket::wrap_client(sock, &client_cfg(), None).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.set_write_timeout(Some(T)).unwrap();
    c.send(msg).unwrap();
    let mut buf = [0u8; 256];
    let n = c.recv(&mut buf).unwrap();
    // Dropped without close_notify: the "process" dies.
    buf[..n].to_vec()
}

/// Echoes one datagram on a server connection.
fn serve_one(s: &mut DtlsSocket) -> Vec<u8> {
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 256];
    let n = s.recv(&mut buf).unwrap();
    s.send(&buf[..n]).unwrap();
    buf[..n].to_vec()
}

fn restart_replaces_session(v: Variant) {
    let listener = listen(v, &server_cfg());
    let server = listener.local_addr().unwrap();
    let acc = AcceptLoop::start(listener.clone());

    // First life, from a fixed address and port.
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    let local = sock.local_addr().unwrap();
    let first = thread::spawn(move || client_echo(sock, server, b"first life"));
    let (mut old, peer) = acc.next();
    assert_eq!(peer, local);
    assert_eq!(serve_one(&mut old), b"first life");
    assert_eq!(first.join().unwrap(), b"first life");

    // The old connection's owner waits for data; the client comes back from the
    // same address and port with a new handshake.
    let waiting = thread::spawn(move || {
        let mut buf = [0u8; 256];
        let r = old.recv(&mut buf).map(|n| buf[..n].to_vec());
        (r, old)
    });
    let sock = UdpSocket::bind(local).unwrap();
    let second = thread::spawn(move || client_echo(sock, server, b"second life"));
    let (mut new, peer2) = acc.next();
    assert_eq!(peer2, local);
    assert_eq!(serve_one(&mut new), b"second life");
    assert_eq!(second.join().unwrap(), b"second life");

    let (r, mut old) = waiting.join().unwrap();
    let e = r.expect_err("the old connection ends");
    assert!(matches!(e, Error::PeerRestarted), "{e:?}");
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::ConnectionReset);
    assert!(matches!(old.send(b"late"), Err(Error::PeerRestarted)));
    let st = listener.stats();
    assert_eq!(st.admission.peer_restarts, 1);
    assert_eq!(st.accepted, 2);
}

/// Someone who can send from the client's address but does not answer the
/// cookie (or a stale hello) must not end the session: a HelloVerifyRequest
/// goes out and the session carries on.
fn cookieless_hello_keeps_session(v: Variant) {
    let listener = listen(v, &server_cfg());
    let server = listener.local_addr().unwrap();
    let acc = AcceptLoop::start(listener.clone());
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    sock.connect(server).unwrap();
    let raw = sock.try_clone().unwrap();
    let client = thread::spawn(move || {
        let mut c = DtlsSocket::wrap_client(sock, &client_cfg(), None).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        c.set_write_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 256];
        let mut echoes = Vec::new();
        for msg in [&b"before"[..], &b"after"[..]] {
            c.send(msg).unwrap();
            let n = c.recv(&mut buf).unwrap();
            echoes.push(buf[..n].to_vec());
            if msg == b"before" {
                // A fresh ClientHello (no cookie) from this very address.
                let mut forger = Connection::client(&client_cfg(), None).unwrap();
                raw.send(&forger.poll_transmit().unwrap()).unwrap();
            }
        }
        echoes
    });
    let (mut s, _) = acc.next();
    assert_eq!(serve_one(&mut s), b"before");
    assert_eq!(serve_one(&mut s), b"after");
    assert_eq!(
        client.join().unwrap(),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
    let st = listener.stats();
    assert_eq!(st.admission.peer_restarts, 0);
    assert!(st.admission.hello_verify >= 2, "{st:?}");
    assert_eq!(st.accepted, 1);
}

four_ways!(restart_replaces_session, cookieless_hello_keeps_session);
