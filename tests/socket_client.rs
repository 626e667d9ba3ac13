//! Socket API, client side: lazy, explicit and non-blocking handshakes,
//! failure modes with the errors a caller acts on, the DTLS timer, peek,
//! Read/Write, unwrap and re-wrap. Four variants each.

mod common;
mod socket_util;

use std::io::{ErrorKind, Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{four_ways, Variant};
use dtls_reactor::{ClientConfig, DtlsSocket, Error, Transport};
use socket_util::*;

fn io_kind(r: &dtls_reactor::Result<impl Sized>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

/// send on an unconnected wrapped socket fails with NotConnected; once
/// connected (Python's `connect` on the wrapped socket) it works.
fn unconnected_send_fails(v: Variant) {
    let server = EchoServer::start(v, &server_cfg());
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    let mut s = DtlsSocket::wrap_client(sock, &client_cfg(), None).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let r = s.send(b"x");
    assert!(matches!(r, Err(Error::NotConnected)), "{r:?}");
    assert_eq!(io_kind(&r), ErrorKind::NotConnected);
    assert!(matches!(s.recv(&mut [0u8; 16]), Err(Error::NotConnected)));
    assert!(matches!(s.peer_addr(), Err(Error::NotConnected)));
    s.connect_peer(server.addr).expect("connect and handshake");
    assert!(s.is_established());
    echo_rounds(&mut s, 2, 10);
    s.shutdown().unwrap();
}

/// A 0.2 s timeout against a bound port that never answers: a handshake
/// timeout error, in about that time, not a hang.
fn silent_port_times_out(v: Variant) {
    let silent = UdpSocket::bind(v.any_port()).unwrap();
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    sock.connect(silent.local_addr().unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut s = DtlsSocket::wrap_client(sock, &client_cfg(), None).unwrap();
    assert_eq!(s.read_timeout(), Some(Duration::from_millis(200)));
    let start = Instant::now();
    let r = s.handshake();
    let took = start.elapsed();
    assert!(matches!(r, Err(Error::HandshakeTimeout)), "{r:?}");
    assert_eq!(io_kind(&r), ErrorKind::TimedOut);
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The silent port saw the ClientHello (and, usually, a retransmission:
    // retransmits_with_backoff checks those).
    silent.set_nonblocking(true).unwrap();
    let mut n = 0;
    while silent.recv(&mut [0u8; 2048]).is_ok() {
        n += 1;
    }
    assert!(n >= 1, "ClientHellos seen: {n}");
    // connect_timeout says the same.
    let r = DtlsSocket::connect_timeout(
        silent.local_addr().unwrap(),
        &client_cfg(),
        Duration::from_millis(200),
    );
    assert!(matches!(r, Err(Error::HandshakeTimeout)), "{:?}", r.err());
}

/// Connecting to a closed port: PeerUnreachable (ICMP port unreachable seen
/// as ECONNREFUSED), promptly. The first write of a lazily connecting
/// socket fails the same way.
fn closed_port_unreachable(v: Variant) {
    let addr = {
        let s = UdpSocket::bind(v.any_port()).unwrap();
        s.local_addr().unwrap()
    };
    // Without the ICMP error this would end in HandshakeTimeout instead.
    let r = DtlsSocket::connect(addr, &client_cfg());
    assert!(matches!(r, Err(Error::PeerUnreachable(_))), "{:?}", r.err());
    assert_eq!(io_kind(&r), ErrorKind::ConnectionRefused);

    let sock = UdpSocket::bind(v.any_port()).unwrap();
    sock.connect(addr).unwrap();
    let mut s = DtlsSocket::wrap_client(sock, &client_cfg(), None).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let r = s.write(b"first write");
    let e = r.expect_err("no server");
    assert!(
        matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::TimedOut),
        "{e}"
    );
}

/// Non-blocking connect: the handshake is driven by readiness plus
/// next_timeout/handle_timeout; then non-blocking echo.
fn nonblocking_handshake(v: Variant) {
    let server = EchoServer::start(v, &server_cfg());
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    sock.connect(server.addr).unwrap();
    let mut s = DtlsSocket::wrap_client(sock, &client_cfg(), None).unwrap();
    s.set_nonblocking(true).unwrap();
    let poller = polling::Poller::new().unwrap();
    // SAFETY: the socket outlives its registration (deleted below).
    unsafe { poller.add(&s, polling::Event::readable(1)).unwrap() };
    let mut events = polling::Events::new();
    let mut would_block = 0;
    // Each round waits for readiness or a timer (at most 1 s): a bounded
    // number of rounds, not a wall-clock limit, guards against a hang.
    let drive = |s: &mut DtlsSocket,
                 would_block: &mut i32,
                 events: &mut polling::Events,
                 op: &mut dyn FnMut(&mut DtlsSocket) -> dtls_reactor::Result<usize>|
     -> usize {
        for _ in 0..1000 {
            match op(s) {
                Ok(n) => return n,
                Err(Error::WouldBlock) => *would_block += 1,
                Err(e) => panic!("{e}"),
            }
            if s.has_pending() {
                continue;
            }
            let wait = s.next_timeout().unwrap_or(Duration::from_secs(1));
            events.clear();
            poller.modify(&*s, polling::Event::readable(1)).unwrap();
            if poller.wait(events, Some(wait)).unwrap() == 0 {
                s.handle_timeout().unwrap();
            }
        }
        panic!("the non-blocking exchange did not finish in 1,000 rounds");
    };
    drive(&mut s, &mut would_block, &mut events, &mut |s| {
        s.handshake().map(|_| 0)
    });
    assert!(s.is_established());
    for i in 0..5u8 {
        let msg = vec![i; 100 + i as usize];
        assert_eq!(s.send(&msg).unwrap(), msg.len());
        let mut buf = [0u8; 1500];
        let n = drive(&mut s, &mut would_block, &mut events, &mut |s| {
            s.recv(&mut buf)
        });
        assert_eq!(&buf[..n], &msg[..]);
    }
    assert!(matches!(s.recv(&mut [0u8; 10]), Err(Error::WouldBlock)));
    poller.delete(&s).unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.shutdown().unwrap();
}

/// handle_timeout fails after the last retransmission (PyDTLS 1.3.0
/// returned a value instead), and the error sticks.
fn retransmit_limit(v: Variant) {
    let silent = UdpSocket::bind(v.any_port()).unwrap();
    let cfg = common::client()
        .initial_timeout(Duration::from_millis(10))
        .max_timeout(Duration::from_millis(40))
        .handshake_timeout(None)
        .build()
        .unwrap();
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    sock.connect(silent.local_addr().unwrap()).unwrap();
    let mut s = DtlsSocket::wrap_client(sock, &cfg, None).unwrap();
    s.set_nonblocking(true).unwrap();
    assert!(matches!(s.handshake(), Err(Error::WouldBlock)));
    let mut resent = 0;
    // OpenSSL gives up at its twelfth timeout; each round sleeps until the timer.
    let mut rounds = 0;
    let err = loop {
        rounds += 1;
        assert!(rounds < 1000, "no retransmission limit");
        let wait = s.next_timeout().expect("a timer runs during the handshake");
        std::thread::sleep(wait);
        match s.handle_timeout() {
            Ok(true) => resent += 1,
            Ok(false) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::RetransmitLimit), "{err}");
    assert!(
        (5..=12).contains(&resent),
        "retransmissions before the limit: {resent}"
    );
    assert!(matches!(s.handshake(), Err(Error::RetransmitLimit)));
    assert_eq!(s.next_timeout(), None);
    // The peer saw the original and every retransmission.
    silent.set_nonblocking(true).unwrap();
    let mut n = 0;
    while silent.recv(&mut [0u8; 2048]).is_ok() {
        n += 1;
    }
    // The original and every retransmission reached the peer, and no more
    // than OpenSSL's limit of 12 retransmissions.
    assert!(
        n > resent && n <= 13,
        "{n} datagrams, {resent} retransmissions"
    );
}

/// Read and write timeouts on an established connection are read/write
/// timeouts, not handshake ones; zero timeouts are rejected.
fn established_timeouts(v: Variant) {
    let mut o = pair(v, &server_cfg(), &client_cfg());
    let c = o.client();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let r = c.recv(&mut [0u8; 100]);
    assert!(matches!(r, Err(Error::ReadTimeout)), "{r:?}");
    assert_eq!(io_kind(&r), ErrorKind::TimedOut);
    assert!(start.elapsed() >= Duration::from_millis(100));
    let e = c.set_read_timeout(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(c.set_write_timeout(Some(Duration::ZERO)).is_err());
    // Still usable after a timeout.
    c.send(b"after timeout").unwrap();
    let mut buf = [0u8; 64];
    let n = o.server().recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"after timeout");
    // Too large for one record.
    let big = vec![0u8; o.client().data_mtu() + 1];
    assert!(matches!(o.client().send(&big), Err(Error::TooLarge { .. })));
}

/// peek, pending, short reads, recv_into and the Read/Write traits with
/// str-like, byte-array and slice payloads; Read gives 0 at close_notify.
fn peek_pending_read_write(v: Variant) {
    let mut o = pair(v, &server_cfg(), &client_cfg());
    o.server().send(b"abcdef").unwrap();
    let c = o.client();
    let mut buf = [0u8; 16];
    assert_eq!(c.peek(&mut buf).unwrap(), 6);
    assert_eq!(&buf[..6], b"abcdef");
    assert_eq!(c.pending(), 6);
    assert!(c.has_pending());
    assert_eq!(c.peek(&mut buf[..2]).unwrap(), 2);
    let mut small = [0u8; 3];
    assert_eq!(c.recv(&mut small).unwrap(), 3);
    assert_eq!(&small, b"abc");
    assert_eq!(c.recv_into(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"def");
    assert_eq!(c.pending(), 0);

    // Short read without peek: the rest of the record comes next.
    o.server().send(b"0123456789").unwrap();
    let c = o.client();
    assert_eq!(c.recv(&mut small).unwrap(), 3);
    assert_eq!(c.pending(), 7);
    assert_eq!(c.recv(&mut buf).unwrap(), 7);
    assert_eq!(&buf[..7], b"3456789");

    // Payload kinds through Write, echoed back through Read.
    let text = "str payload";
    let array: [u8; 4] = [1, 2, 3, 4];
    let big = vec![7u8; 1000];
    let payloads: [&[u8]; 3] = [text.as_bytes(), &array, &big[100..300]];
    let mut sbuf = vec![0u8; 2000];
    for p in payloads {
        o.client().write_all(p).unwrap();
        let n = o.server().read(&mut sbuf).unwrap();
        assert_eq!(&sbuf[..n], p);
        o.server().send(&sbuf[..n]).unwrap();
        let mut cbuf = vec![0u8; 2000];
        let n = o.client().recv_into(&mut cbuf).unwrap();
        assert_eq!(&cbuf[..n], p);
    }
    // Read reports the peer's close_notify as end of stream.
    // (The server does not answer while we wait: a short wait.)
    o.client()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(matches!(o.client().shutdown(), Err(Error::ReadTimeout)));
    assert_eq!(o.server().read(&mut sbuf).unwrap(), 0);
}

/// unwrap on both sides, a plaintext exchange over the returned transports
/// (they are open: PyDTLS 1.3.0 returned a closed socket), then a new DTLS
/// session over them.
fn unwrap_plaintext_rewrap(v: Variant) {
    let scfg = server_cfg();
    let l = listen(v, &scfg);
    let addr = l.local_addr().unwrap();
    let acc = AcceptLoop::start(l);
    let scfg2 = scfg.clone();
    let server = std::thread::spawn(move || -> dtls_reactor::Result<()> {
        let (mut s, _) = acc.next();
        s.set_read_timeout(Some(T))?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf)?;
        s.send(&buf[..n])?;
        let r = s.recv(&mut buf);
        assert!(matches!(r, Err(Error::ClosedByPeer)), "{r:?}");
        let t = s.unwrap().expect("unwrap");
        let Transport::Link(link) = t else {
            panic!("server side gives a link")
        };
        // Plaintext, through the demux.
        let n = link.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"plain");
        link.send(b"plain back")?;
        // A new session over the same link.
        let s = DtlsSocket::wrap_server(link, &scfg2)?;
        assert_eq!(echo_until_closed(s)?, 3);
        drop(acc);
        Ok(())
    });
    let ccfg = client_cfg();
    let mut c = connect(addr, &ccfg).unwrap();
    echo_rounds(&mut c, 1, 20);
    let t = c.unwrap().expect("unwrap");
    let sock = t.into_socket().expect("client side gives the UDP socket");
    assert_eq!(sock.peer_addr().unwrap(), addr);
    assert_eq!(sock.read_timeout().unwrap(), Some(T));
    sock.send(b"plain").unwrap();
    let mut buf = [0u8; 100];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"plain back");
    let mut c = DtlsSocket::wrap_client(sock, &ccfg, None).unwrap();
    echo_rounds(&mut c, 3, 50);
    c.shutdown().unwrap();
    server.join().unwrap().unwrap();
}

/// Python's `wrap_socket(sock, server_side=True)` on a plain UDP socket
/// connected to one peer, against a client whose handshake runs lazily on
/// its first send (both non-blocking-free, in two threads).
fn wrap_plain_sockets_lazy_handshake(v: Variant) {
    let ssock = UdpSocket::bind(v.any_port()).unwrap();
    let csock = UdpSocket::bind(v.any_port()).unwrap();
    ssock.connect(csock.local_addr().unwrap()).unwrap();
    csock.connect(ssock.local_addr().unwrap()).unwrap();
    ssock.set_read_timeout(Some(T)).unwrap();
    let srv = DtlsSocket::wrap_server(ssock, &server_cfg()).unwrap();
    assert!(srv.is_handshaking());
    assert_eq!(srv.read_timeout(), Some(T));
    let server = std::thread::spawn(move || echo_until_closed(srv));
    let mut c = DtlsSocket::wrap_client(csock, &client_cfg(), Some("localhost")).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    assert!(
        c.connection().is_none(),
        "nothing sent before the first call"
    );
    // The first send runs the handshake (cookie exchange included).
    assert_eq!(c.send(b"lazy").unwrap(), 4);
    assert!(c.is_established());
    let mut buf = [0u8; 16];
    let n = c.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"lazy");
    c.shutdown().unwrap();
    assert_eq!(server.join().unwrap().unwrap(), 1);
    // A server wrap needs a peer.
    let lone = UdpSocket::bind(v.any_port()).unwrap();
    assert!(matches!(
        DtlsSocket::wrap_server(lone, &server_cfg()),
        Err(Error::NotConnected)
    ));
}

/// The blocking `incoming()` iterator skips the Nones (cookie exchange),
/// reports the read timeout, and WouldBlock when non-blocking.
fn incoming_iterator(v: Variant) {
    let l = listen(v, &server_cfg());
    l.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let r = l.incoming().next().unwrap();
    assert!(matches!(r, Err(Error::ReadTimeout)), "{:?}", r.err());
    assert!(start.elapsed() >= Duration::from_millis(100));
    l.set_nonblocking(true).unwrap();
    assert!(matches!(l.incoming().next(), Some(Err(Error::WouldBlock))));
    assert!(
        matches!(l.accept(), Err(Error::WouldBlock)),
        "non-blocking accept with nothing to read: WouldBlock, not None"
    );
    l.set_nonblocking(false).unwrap();
    l.set_read_timeout(Some(T)).unwrap();
    let addr = l.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = connect(addr, &client_cfg()).unwrap();
        echo_rounds(&mut c, 3, 30);
        c.shutdown().unwrap();
    });
    let (s, peer) = l.incoming().next().unwrap().expect("a connection");
    assert!(
        l.stats().admission.hello_verify >= 1,
        "the None was skipped"
    );
    assert!(peer.ip().is_loopback() || peer.ip().to_string().contains("127.0.0.1"));
    // Keep the listener reading (Router forwards through it).
    l.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let acc = AcceptLoop::start(l);
    assert_eq!(echo_until_closed(s).unwrap(), 3);
    client.join().unwrap();
    drop(acc);
}

/// A blocking socket retransmits by itself, with backoff (PyDTLS's wrapper
/// never called handle_timeout and resent on a fixed 1 s timer): with a
/// 50 ms first timeout doubling to 400 ms, 800 ms of waiting sends the
/// ClientHello at about 0, 50, 150, 350 and 750 ms, where a fixed 50 ms
/// timer would send 16.
fn retransmits_with_backoff(v: Variant) {
    let silent = UdpSocket::bind(v.any_port()).unwrap();
    let sock = UdpSocket::bind(v.any_port()).unwrap();
    sock.connect(silent.local_addr().unwrap()).unwrap();
    let mut s = DtlsSocket::wrap_client(sock, &client_cfg(), None).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    assert!(matches!(s.handshake(), Err(Error::HandshakeTimeout)));
    silent.set_nonblocking(true).unwrap();
    let mut n = 0;
    while silent.recv(&mut [0u8; 2048]).is_ok() {
        n += 1;
    }
    assert!((2..=8).contains(&n), "ClientHellos in 800 ms: {n}");
    assert_eq!(s.stats().retransmissions as usize, n - 1);
}

four_ways!(
    retransmits_with_backoff,
    wrap_plain_sockets_lazy_handshake,
    incoming_iterator,
    unconnected_send_fails,
    silent_port_times_out,
    closed_port_unreachable,
    nonblocking_handshake,
    retransmit_limit,
    established_timeouts,
    peek_pending_read_write,
    unwrap_plaintext_rewrap,
);

#[test]
fn config_is_cheap_to_clone() {
    let c: ClientConfig = client_cfg();
    let _ = c.clone();
}
