//! The tokio front end (`dtls_reactor::tokio`): connect / echo / shutdown,
//! 100 concurrent clients, a silent half-open peer while others connect,
//! read and handshake timeouts, close_notify both ways, `openssl s_client`
//! against the async listener, a full socket (what it refused leaves when it
//! is writable again). Each runs over IPv4 and IPv6; the async
//! front end has one kind of socket (`SharedSocket`), so these are its
//! variants.

mod common;
mod peer_util;
mod socket_util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::final_flight::LosesFinalFlight;
use common::Variant;
use dtls_demux::SharedSocket;
use dtls_reactor::tokio::{DtlsListener, DtlsStream};
use dtls_reactor::{Admission, Connection, Error};
use dtls_test_support::Fam;
use peer_util::*;
use socket_util::{client_cfg, fast_client, server_cfg};

const T: Duration = Duration::from_secs(30);

fn any_port(fam: Fam) -> SocketAddr {
    Variant::shared(fam).any_port()
}

/// An echo server: every accepted stream echoes until its peer closes.
async fn echo_server(fam: Fam) -> (Arc<DtlsListener>, SocketAddr) {
    let l = Arc::new(
        DtlsListener::bind(any_port(fam), &server_cfg())
            .await
            .unwrap(),
    );
    echo_on(l)
}

/// Echoes on every stream `l` accepts until its peer closes.
fn echo_on(l: Arc<DtlsListener>) -> (Arc<DtlsListener>, SocketAddr) {
    let addr = l.local_addr();
    let acc = l.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = acc.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                loop {
                    match s.recv(&mut buf).await {
                        Ok(n) => {
                            if s.send(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    (l, addr)
}

async fn echo_ok(s: &DtlsStream, msg: &[u8]) {
    s.send(msg).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(T, s.recv(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&buf[..n], msg);
}

macro_rules! both_families {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use dtls_test_support::Fam;
                #[tokio::test]
                async fn v4_shared() { super::$name(Fam::V4).await }
                #[tokio::test]
                async fn v6_shared() { super::$name(Fam::V6).await }
            }
        )*
    };
}

/// Connect, echo, shutdown: the server's stream sees the client's
/// close_notify; the session's facts are readable.
async fn connect_echo_shutdown(fam: Fam) {
    let l = DtlsListener::bind(any_port(fam), &server_cfg())
        .await
        .unwrap();
    let addr = l.local_addr();
    let server = tokio::spawn(async move {
        let (s, peer) = l.accept().await.unwrap();
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        let end = loop {
            match s.recv(&mut buf).await {
                Ok(n) => {
                    got.push(buf[..n].to_vec());
                    s.send(&buf[..n]).await.unwrap();
                }
                Err(e) => break e,
            }
        };
        (peer, got, end, l.admission_stats())
    });
    let c = DtlsStream::connect(addr, &client_cfg()).await.unwrap();
    assert_eq!(c.peer_addr(), addr);
    assert!(
        c.cipher().is_some_and(|x| x.contains("GCM")),
        "{:?}",
        c.cipher()
    );
    assert!(c.peer_certificate().is_some());
    for i in 0..10u8 {
        echo_ok(&c, &[i; 100]).await;
    }
    c.shutdown().await.unwrap();
    assert!(matches!(c.send(b"late").await, Err(Error::Closed)));
    let (peer, got, end, st) = tokio::time::timeout(T, server).await.unwrap().unwrap();
    assert_eq!(peer, c.local_addr());
    assert_eq!(got.len(), 10);
    assert!(matches!(end, Error::ClosedByPeer), "{end:?}");
    assert_eq!(st.accepted, 1);
}

/// 100 clients at once, each its own task: all echo.
async fn hundred_concurrent_clients(fam: Fam) {
    let (l, addr) = echo_server(fam).await;
    let cfg = client_cfg();
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let c = DtlsStream::connect(addr, &cfg).await.unwrap();
            echo_ok(&c, &i.to_be_bytes()).await;
            c.shutdown().await.unwrap();
        }));
    }
    for t in tasks {
        tokio::time::timeout(T, t).await.unwrap().unwrap();
    }
    assert_eq!(l.admission_stats().accepted, 100);
}

/// A peer that passes the cookie exchange and then goes silent holds a
/// handshake slot, and delays nobody: ten others connect and echo while it
/// waits, and the engine's silence limit ends it.
async fn silent_peer_delays_nobody(fam: Fam) {
    let l = Arc::new(
        DtlsListener::bind(any_port(fam), &server_cfg())
            .await
            .unwrap(),
    );
    let addr = l.local_addr();
    let acc = l.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = acc.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while let Ok(n) = s.recv(&mut buf).await {
                    let _ = s.send(&buf[..n]).await;
                }
            });
        }
    });
    // The silent peer: ClientHello, HelloVerifyRequest, ClientHello with the
    // cookie; the server's flight it never answers.
    // (Blocking socket calls: off the runtime's thread, which runs the driver.)
    let loopback = fam.loopback();
    let _raw = tokio::task::spawn_blocking(move || {
        let raw = UdpSocket::bind(SocketAddr::new(loopback, 0)).unwrap();
        raw.connect(addr).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut hs = Connection::client(&client_cfg(), None).unwrap();
        let mut buf = [0u8; 4096];
        for _ in 0..2 {
            while let Some(d) = hs.poll_transmit() {
                raw.send(&d).unwrap();
            }
            let n = raw.recv(&mut buf).unwrap();
            hs.feed(&buf[..n]).unwrap();
        }
        raw
    })
    .await
    .unwrap();
    let start = Instant::now();
    assert!(
        l.admission_stats().handshakes >= 1,
        "the silent peer was admitted"
    );
    for i in 0..10u8 {
        let c = tokio::time::timeout(
            Duration::from_secs(10),
            DtlsStream::connect(addr, &client_cfg()),
        )
        .await
        .expect("not delayed by the silent peer")
        .unwrap();
        echo_ok(&c, &[i; 10]).await;
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(
        l.admission_stats().handshakes >= 1,
        "still half-open: {:?}",
        l.admission_stats()
    );
}

/// A read with nothing to read times out (tokio's timeout) and leaves the
/// stream usable.
async fn read_timeout(fam: Fam) {
    let (_l, addr) = echo_server(fam).await;
    let c = DtlsStream::connect(addr, &client_cfg()).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_millis(200), c.recv(&mut buf)).await;
    assert!(r.is_err(), "nothing was sent: the read times out");
    echo_ok(&c, b"after the timeout").await;
}

/// A server that never answers: the handshake ends at the configuration's
/// deadline with `HandshakeTimeout`.
async fn handshake_timeout(fam: Fam) {
    let silent = UdpSocket::bind(any_port(fam)).unwrap();
    let cfg = fast_client()
        .handshake_timeout(Some(Duration::from_millis(600)))
        .build()
        .unwrap();
    let start = Instant::now();
    let r = tokio::time::timeout(T, DtlsStream::connect(silent.local_addr().unwrap(), &cfg))
        .await
        .expect("the engine's deadline ends it");
    assert!(matches!(r, Err(Error::HandshakeTimeout)), "{r:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

/// The server shuts down: the client's recv reports the peer's close_notify.
async fn close_from_server(fam: Fam) {
    let l = DtlsListener::bind(any_port(fam), &server_cfg())
        .await
        .unwrap();
    let addr = l.local_addr();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).await.unwrap();
        s.send(&buf[..n]).await.unwrap();
        s.shutdown().await.unwrap();
        // Kept until the client saw it.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let c = DtlsStream::connect(addr, &client_cfg()).await.unwrap();
    echo_ok(&c, b"bye").await;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(T, c.recv(&mut buf)).await.unwrap();
    assert!(matches!(r, Err(Error::ClosedByPeer)), "{r:?}");
    server.await.unwrap();
}

/// `openssl s_client -dtls1_2` against the async listener: it echoes.
async fn s_client_against_listener(fam: Fam) {
    if !have("openssl") {
        return;
    }
    let (_l, addr) = echo_server(fam).await;
    let a: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        host_port(addr),
        "-dtls1_2".into(),
        "-CAfile".into(),
        cert("ca.pem"),
        "-verify_return_error".into(),
        "-quiet".into(),
    ];
    let msg = format!("tokio-{}", addr.port());
    tokio::task::spawn_blocking(move || {
        let mut peer = Peer::spawn("openssl", &a);
        let start = Instant::now();
        while !peer.wait_for(&msg, Duration::from_millis(300)) {
            assert!(
                start.elapsed() < T,
                "no echo via `{}`:\n{}",
                peer.what,
                peer.output()
            );
            peer.send_line(&msg);
        }
    })
    .await
    .unwrap();
}

/// A server stream whose task does not read answers a client that lost the
/// server's last handshake flight and retransmits its own (the driver feeds
/// the engine, which answers as it is fed): the client's handshake completes,
/// and what it sends then is there when the task reads at last.
async fn unread_stream_answers_a_retransmitted_final_flight(fam: Fam) {
    let l = DtlsListener::bind(any_port(fam), &server_cfg())
        .await
        .unwrap();
    let addr = l.local_addr();
    let (go, read_now) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        // Holds the stream without reading until the client is through.
        read_now.await.unwrap();
        let mut buf = [0u8; 2048];
        let n = tokio::time::timeout(T, s.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf[..n].to_vec()
    });
    let mut c = tokio::task::spawn_blocking(move || {
        let (mut c, ok) = LosesFinalFlight::handshake(addr, &client_cfg(), T);
        assert_eq!(c.lost, 1);
        assert!(ok, "the client's handshake did not complete");
        c.conn.send(b"after").unwrap();
        c.flush();
        c
    })
    .await
    .unwrap();
    go.send(()).unwrap();
    assert_eq!(server.await.unwrap(), b"after");
    c.conn.close();
    c.flush();
}

/// A client session driven by hand over its own socket, with no timers: it
/// retransmits nothing, so only what the server sends moves it on.
struct ByHand {
    sock: tokio::net::UdpSocket,
    conn: Connection,
}

impl ByHand {
    async fn new(fam: Fam, server: SocketAddr) -> Self {
        let sock = tokio::net::UdpSocket::bind(SocketAddr::new(fam.loopback(), 0))
            .await
            .unwrap();
        sock.connect(server).await.unwrap();
        // Timers far beyond the tests' bounds: OpenSSL retransmits nothing
        // on its own either (it does when a read finds its timer expired).
        let cfg = dtls_test_support::pki::client()
            .initial_timeout(Duration::from_secs(20))
            .max_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let conn = Connection::client(&cfg, None).unwrap();
        ByHand { sock, conn }
    }

    async fn flush(&mut self) {
        while let Some(d) = self.conn.poll_transmit() {
            self.sock.send(&d).await.unwrap();
        }
    }

    /// Feeds the next datagram from the server; `false` when none came
    /// within `limit`.
    async fn feed_one(&mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(limit, self.sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let _ = self.conn.feed(&buf[..n]);
                true
            }
            _ => false,
        }
    }
}

/// Waits (at most 5 s) until `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Eight clients whose ClientHellos (with their cookies) arrive while the
/// server's socket refuses every send (a test hook of `dtls-demux`: loopback
/// never fills a UDP socket's send buffer): the driver answers each, the
/// socket takes none of the answers. The driver then waits for the socket to
/// be writable (without retrying in a loop meanwhile) and, once the socket
/// takes datagrams again and reports readiness (a ninth peer's ClientHello
/// stands in for the kernel's writable wake-up), sends every connection's
/// flight: all eight handshakes complete within 3 s, far below the server's
/// 20 s retransmission timer (and these clients retransmit nothing), so only
/// the driver's flush of the waiting connections can have delivered them.
/// Then the same on the task side: the echoes the server's tasks send while
/// the socket is full leave once it is writable.
async fn full_socket_sends_when_writable(fam: Fam) {
    const CLIENTS: usize = 8;
    let bound = Duration::from_secs(3);
    let sock = SharedSocket::bind(any_port(fam)).unwrap();
    let cfg = dtls_test_support::pki::server()
        .initial_timeout(Duration::from_secs(20))
        .max_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let l = Arc::new(DtlsListener::from_shared(sock.clone(), &cfg, &Admission::default()).unwrap());
    let (l, addr) = echo_on(l);
    // A peer's first datagram: a ClientHello the front door answers with a
    // HelloVerifyRequest.
    let poke = || async {
        let mut p = ByHand::new(fam, addr).await;
        p.flush().await;
        p
    };

    // The cookie exchange, then the ClientHellos with the cookie all at once
    // into a socket that refuses to send.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = ByHand::new(fam, addr).await;
        c.flush().await;
        assert!(c.feed_one(bound).await, "no HelloVerifyRequest");
        clients.push(c);
    }
    sock.block_sends(true);
    for c in &mut clients {
        c.flush().await;
    }
    until("every ClientHello admitted", || {
        l.admission_stats().handshakes as usize == CLIENTS
    })
    .await;
    until("every answer refused by the socket", || {
        sock.refused_sends() >= CLIENTS as u64
    })
    .await;
    // Nothing happens until the socket is writable again: the driver waits
    // for it rather than retrying.
    let refused = sock.refused_sends();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let retries = sock.refused_sends() - refused;
    assert!(retries <= 2, "{retries} sends retried on a full socket");

    sock.block_sends(false);
    let _ninth = poke().await;
    let start = Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        while c.conn.is_handshaking() {
            let left = bound.saturating_sub(start.elapsed());
            assert!(
                c.feed_one(left).await,
                "client {i}: the server's flight stayed queued after the socket was writable again"
            );
            c.flush().await;
        }
        assert!(c.conn.is_established(), "client {i}: {:?}", c.conn.error());
    }
    assert!(start.elapsed() < bound, "{:?}", start.elapsed());
    until("every handshake accepted", || {
        l.admission_stats().accepted as usize == CLIENTS
    })
    .await;

    // The task side: each server task's echo finds the socket full, waits,
    // and leaves when it is writable.
    let refused = sock.refused_sends();
    sock.block_sends(true);
    for (i, c) in clients.iter_mut().enumerate() {
        c.conn.send(&[i as u8; 100]).unwrap();
        c.flush().await;
    }
    until("every echo refused by the socket", || {
        sock.refused_sends() - refused >= CLIENTS as u64
    })
    .await;
    sock.block_sends(false);
    let _tenth = poke().await;
    let start = Instant::now();
    let mut out = [0u8; 2048];
    for (i, c) in clients.iter_mut().enumerate() {
        let n = loop {
            if let Some(n) = c.conn.recv(&mut out).unwrap() {
                break n;
            }
            let left = bound.saturating_sub(start.elapsed());
            assert!(c.feed_one(left).await, "client {i}: no echo");
        };
        assert_eq!(&out[..n], &[i as u8; 100]);
    }
}

both_families!(
    full_socket_sends_when_writable,
    unread_stream_answers_a_retransmitted_final_flight,
    connect_echo_shutdown,
    hundred_concurrent_clients,
    silent_peer_delays_nobody,
    read_timeout,
    handshake_timeout,
    close_from_server,
    s_client_against_listener,
);
