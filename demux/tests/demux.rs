//! Behaviour of both demuxes over real loopback sockets; every test runs four times:
//! IPv4 / IPv6 x OsNet / Router.

mod common;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn expected_route(kind: DemuxKind) -> Route {
    match kind {
        DemuxKind::OsNet => Route::Delivered,
        DemuxKind::Router => Route::Forwarded,
    }
}

/// `n` peers say hello, get a link each and a "ready" through it, then all of them send
/// `rounds` numbered datagrams interleaved; every link must see exactly its own peer's
/// datagrams, in order, none lost; finally each link says goodbye from the server's port.
fn peers_talk(kind: DemuxKind, fam: Fam, n: usize, rounds: usize) {
    let d = server(kind, fam);
    let _ = socket2::SockRef::from(d.listener()).set_recv_buffer_size(4 << 20);
    let srv = d.local_addr().unwrap();
    let clients: Vec<UdpSocket> = (0..n).map(|_| client(fam)).collect();
    for c in &clients {
        c.send_to(b"hello", srv).unwrap();
    }
    let hellos = accept_unknown(&*d, n);
    let mut links: HashMap<SocketAddr, Link> = HashMap::new();
    for (peer, data) in hellos {
        assert_eq!(data, b"hello");
        let l = attach(&*d, peer);
        assert_eq!(l.peer_addr(), peer);
        l.send(b"ready").unwrap();
        assert!(links.insert(peer, l).is_none());
    }
    let mut buf = [0u8; 256];
    for c in &clients {
        let (len, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"ready");
        assert_eq!(
            from, srv,
            "the peer must hear the server's address and port"
        );
    }
    let pump = Pump::start(d.clone());
    // Bursts small enough for the receive buffers; all peers interleaved in each burst.
    let burst = (400 / n).clamp(1, 20);
    let mut seq = 0;
    while seq < rounds {
        let end = (seq + burst).min(rounds);
        for j in seq..end {
            for (i, c) in clients.iter().enumerate() {
                c.send_to(format!("{i}:{j}").as_bytes(), srv).unwrap();
            }
        }
        for (i, c) in clients.iter().enumerate() {
            let l = &links[&c.local_addr().unwrap()];
            for j in seq..end {
                let len = l
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("peer {i} datagram {j}: {e}"));
                assert_eq!(
                    std::str::from_utf8(&buf[..len]).unwrap(),
                    format!("{i}:{j}")
                );
            }
        }
        seq = end;
    }
    let r = pump.finish();
    assert!(
        r.unknown.is_empty(),
        "unknown datagrams while all peers were attached: {:?}",
        r.unknown.len()
    );
    assert_eq!(r.errors, 0);
    for l in links.values() {
        assert!(!l.has_queued());
        l.send(b"bye").unwrap();
    }
    for c in &clients {
        let (len, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"bye"[..], srv));
    }
    let ctr = d.counters();
    assert_eq!(ctr.links_open, n as u64);
    assert_eq!(ctr.attach_total, n as u64);
    assert_eq!(ctr.dropped, 0);
    match kind {
        DemuxKind::Router => {
            assert_eq!(ctr.forwarded, (n * rounds) as u64);
            assert_eq!(r.routed.len(), n * rounds);
        }
        // The kernel delivered everything to the connected sockets: nothing went
        // through the listener.
        DemuxKind::OsNet => assert_eq!((r.routed.len(), ctr.routed), (0, 0)),
    }
    drop(links);
    assert_eq!(d.counters().links_open, 0);
}

fn two_peers(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    peers_talk(kind, fam, 2, 200);
}

fn two_hundred_peers(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    peers_talk(kind, fam, 200, 20);
}

/// Datagrams queued on the listener before attach reach the link, in order.
fn queued_before_attach(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    let d = server(kind, fam);
    let srv = d.local_addr().unwrap();
    let c = client(fam);
    for m in [&b"a"[..], b"b", b"c"] {
        c.send_to(m, srv).unwrap();
    }
    let (peer, first) = accept_unknown(&*d, 1).remove(0);
    assert_eq!(first, b"a");
    let l = attach(&*d, peer);
    let mut buf = [0u8; 64];
    for _ in 0..2 {
        match d.recv_from(&mut buf).unwrap() {
            Incoming::Routed { peer: p, route } => {
                assert_eq!(p, peer);
                assert_eq!(route, expected_route(kind));
            }
            other => panic!("{other:?}"),
        }
    }
    if kind == DemuxKind::OsNet {
        assert!(l.has_queued());
    }
    for want in [&b"b"[..], b"c"] {
        let n = l.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
    assert!(!l.has_queued());
    // And what comes after goes the normal way.
    c.send_to(b"d", srv).unwrap();
    if kind == DemuxKind::Router {
        assert!(matches!(
            d.recv_from(&mut buf).unwrap(),
            Incoming::Routed {
                route: Route::Forwarded,
                ..
            }
        ));
    }
    let n = l.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"d");
    assert_eq!(
        d.counters().routed,
        if kind == DemuxKind::Router { 3 } else { 2 }
    );
}

/// One peer keeps sending while other peers are attached and detached: none of its
/// datagrams reaches another peer's link, and all of them reach the listener.
fn send_during_attach(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    let d = server(kind, fam);
    let _ = socket2::SockRef::from(d.listener()).set_recv_buffer_size(4 << 20);
    let srv = d.local_addr().unwrap();
    let noisy = client(fam);
    let noisy_addr = noisy.local_addr().unwrap();
    let others: Vec<UdpSocket> = (0..20).map(|_| client(fam)).collect();
    let pump = Pump::start(d.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let sender = std::thread::spawn(move || {
        let mut sent = 0u32;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.load(Ordering::Acquire) && Instant::now() < deadline && sent < 200_000 {
            noisy.send_to(&sent.to_be_bytes(), srv).unwrap();
            sent += 1;
            if sent & 15 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        sent
    });
    let mut buf = [0u8; 64];
    for round in 0..10 {
        let links: Vec<Link> = others
            .iter()
            .map(|c| attach(&*d, c.local_addr().unwrap()))
            .collect();
        for (i, (c, l)) in others.iter().zip(&links).enumerate() {
            let m = format!("{round}:{i}");
            c.send_to(m.as_bytes(), srv).unwrap();
            let n = l.recv(&mut buf).unwrap();
            assert_eq!(
                &buf[..n],
                m.as_bytes(),
                "link {i} got a datagram that is not its peer's"
            );
        }
        for l in &links {
            assert!(!l.has_queued());
        }
        if round % 2 == 0 {
            drop(links);
        } else {
            for c in &others {
                d.detach(c.local_addr().unwrap());
            }
        }
    }
    stop.store(true, Ordering::Release);
    let sent = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let r = pump.finish();
    let mut seen = vec![false; sent as usize];
    for (peer, data) in &r.unknown {
        assert_eq!(*peer, noisy_addr, "unknown datagram from an attached peer");
        let k = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        assert!(!seen[k], "datagram {k} delivered twice");
        seen[k] = true;
    }
    let lost = seen.iter().filter(|s| !**s).count();
    assert_eq!(
        lost, 0,
        "{lost} of {sent} datagrams of the unattached peer never reached the listener"
    );
    assert_eq!(d.counters().dropped, 0);
    assert_eq!(d.counters().links_open, 0);
}

/// A datagram from a host that has no link, sent to the address of another peer's link
/// socket, is not delivered to that link (Router: the kernel drops it; OsNet: the link
/// socket shares the listener's address, so it arrives on the listener as unknown).
fn unknown_host_to_link_socket(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    let d = server(kind, fam);
    let srv = d.local_addr().unwrap();
    let c = client(fam);
    let l = attach(&*d, c.local_addr().unwrap());
    let target = l.socket().local_addr().unwrap();
    let intruder = client(fam);
    intruder.send_to(b"intruder", target).unwrap();
    c.send_to(b"mine", srv).unwrap();
    let mut buf = [0u8; 64];
    match kind {
        DemuxKind::Router => {
            assert_ne!(target.port(), srv.port());
            assert!(matches!(
                d.recv_from(&mut buf).unwrap(),
                Incoming::Routed {
                    route: Route::Forwarded,
                    ..
                }
            ));
        }
        DemuxKind::OsNet => {
            assert_eq!(target.port(), srv.port());
            match d.recv_from(&mut buf).unwrap() {
                Incoming::Unknown { len, peer } => {
                    assert_eq!(&buf[..len], b"intruder");
                    assert_eq!(peer, intruder.local_addr().unwrap());
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let n = l.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"mine");
    l.socket()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let e = l.recv(&mut buf).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
}

/// Attach twice fails, detach is idempotent, a detached link is dead and its socket
/// closed at once, and the peer can be attached again and gets its datagrams there.
fn attach_detach_semantics(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    let d = server(kind, fam);
    let srv = d.local_addr().unwrap();
    let c = client(fam);
    let peer = c.local_addr().unwrap();
    let l = attach(&*d, peer);
    assert_eq!(l.kind(), kind);
    assert!(d.is_attached(peer));
    assert_eq!(d.attach(peer).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert_eq!(l.local_addr().unwrap().port(), srv.port());
    let before = fd_target(std::os::fd::AsRawFd::as_raw_fd(&l)).unwrap();
    d.detach(peer);
    d.detach(peer);
    assert!(!d.is_attached(peer));
    assert!(l.is_detached());
    let after = fd_target(std::os::fd::AsRawFd::as_raw_fd(&l)).unwrap();
    assert_ne!(before, after, "detach must close the per-peer socket");
    let mut buf = [0u8; 64];
    assert_eq!(
        l.recv(&mut buf).unwrap_err().kind(),
        ErrorKind::NotConnected
    );
    assert_eq!(l.send(b"x").unwrap_err().kind(), ErrorKind::NotConnected);
    let l2 = attach(&*d, peer);
    c.send_to(b"again", srv).unwrap();
    if kind == DemuxKind::Router {
        d.recv_from(&mut buf).unwrap();
    }
    let n = l2.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"again");
    drop(l); // the old, dead link must not detach the new one
    assert!(d.is_attached(peer));
    let ctr = d.counters();
    assert_eq!(
        (ctr.attach_total, ctr.detach_total, ctr.links_open),
        (2, 1, 1)
    );
    drop(l2);
    assert!(!d.is_attached(peer));
    assert_eq!(d.counters().links_open, 0);
}

/// A link is a mio source: it polls readable when its peer's datagram arrives.
fn mio_readiness(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    use mio::{Events, Interest, Poll, Token};
    let d = server(kind, fam);
    let srv = d.local_addr().unwrap();
    let c = client(fam);
    let mut l = attach(&*d, c.local_addr().unwrap());
    l.socket().set_nonblocking(true).unwrap();
    let mut poll = Poll::new().unwrap();
    poll.registry()
        .register(&mut l, Token(7), Interest::READABLE)
        .unwrap();
    c.send_to(b"ping", srv).unwrap();
    let mut buf = [0u8; 64];
    if kind == DemuxKind::Router {
        d.recv_from(&mut buf).unwrap();
    }
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + T;
    let mut readable = false;
    while !readable && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        readable = events
            .iter()
            .any(|e| e.token() == Token(7) && e.is_readable());
    }
    assert!(readable);
    let n = l.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(l.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
    poll.registry().deregister(&mut l).unwrap();
    // After detach the registered socket is gone; deregistering still succeeds.
    poll.registry()
        .register(&mut l, Token(8), Interest::READABLE)
        .unwrap();
    d.detach(c.local_addr().unwrap());
    poll.registry().deregister(&mut l).unwrap();
}

/// Wildcard listener: `0.0.0.0` with IPv4 peers, `[::]` dual-stack with IPv6 and IPv4
/// peers (the latter seen as `::ffff:a.b.c.d`); replies come from the address the peer
/// wrote to and the listener's port.
fn wildcard_listener(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    raise_nofile();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(fam.any_port()),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    if fam == Fam::V6 {
        s.set_only_v6(false).unwrap();
    }
    s.bind(&SocketAddr::new(fam.wildcard(), 0).into()).unwrap();
    if kind == DemuxKind::OsNet {
        s.set_reuse_port(true).unwrap();
    }
    let d = dtls_demux::from_socket(kind, s.into()).unwrap();
    d.listener().set_read_timeout(Some(T)).unwrap();
    let port = d.local_addr().unwrap().port();
    let peer_fams: &[Fam] = match fam {
        Fam::V4 => &[Fam::V4],
        Fam::V6 => &[Fam::V6, Fam::V4],
    };
    for &pf in peer_fams {
        let c = client(pf);
        let dst = SocketAddr::new(pf.loopback(), port);
        c.send_to(b"hi", dst).unwrap();
        let (peer, data) = accept_unknown(&*d, 1).remove(0);
        assert_eq!(data, b"hi");
        let ca = c.local_addr().unwrap();
        let want_peer = match (fam, ca) {
            (Fam::V6, SocketAddr::V4(v4)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => ca,
        };
        assert_eq!(peer, want_peer);
        // Attaching by the plain IPv4 form finds the same peer.
        let l = attach(&*d, ca);
        assert_eq!(l.peer_addr(), want_peer);
        assert!(d.is_attached(ca) && d.is_attached(want_peer));
        l.send(b"hello back").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello back"[..], dst));
        for i in 0..5u8 {
            c.send_to(&[i], dst).unwrap();
            if kind == DemuxKind::Router {
                assert!(matches!(
                    d.recv_from(&mut buf).unwrap(),
                    Incoming::Routed {
                        route: Route::Forwarded,
                        ..
                    }
                ));
            }
            let n = l.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i]);
        }
    }
}

/// Demux::send_to reaches an unknown peer from the listener's address.
fn send_to_unknown(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    let d = server(kind, fam);
    let srv = d.local_addr().unwrap();
    let c = client(fam);
    d.send_to(b"verify", c.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = c.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"verify"[..], srv));
    assert!(!d.has_buffered());
    assert_eq!(d.route(c.local_addr().unwrap(), b"x"), Route::Unknown);
    assert_eq!(d.counters().unknown, 1);
}

/// Sends all of `slices` through a batched send (which may take only some, or
/// refuse with WouldBlock while the buffer is full), giving up at `end`.
fn send_all(
    mut send: impl FnMut(&[&[u8]]) -> std::io::Result<usize>,
    slices: &[&[u8]],
    end: Instant,
) {
    let mut off = 0;
    while off < slices.len() && Instant::now() < end {
        match send(&slices[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("batched send: {e}"),
        }
    }
    assert_eq!(off, slices.len(), "not everything was sent in time");
}

/// Runs of datagrams a peer sends with `batch::send_batch` (UDP GSO where the kernel
/// has it) reach its link whole and in order through `Link::recv_batch` with GRO on; the
/// link's `send_batch` reaches the peer from the server's address and port.
fn batches(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    use dtls_demux::batch::{send_batch, RecvBatch};
    let d = server(kind, fam);
    let srv = d.local_addr().unwrap();
    let c = client(fam);
    c.send_to(b"hello", srv).unwrap();
    let (peer, _) = accept_unknown(&*d, 1).remove(0);
    let l = attach(&*d, peer);
    l.enable_gro().unwrap();
    let pump = Pump::start(d.clone());
    let mut msgs: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000]).collect();
    msgs.push(vec![99; 300]);
    msgs.push(Vec::new());
    msgs.extend((0..20u8).map(|i| vec![i; 200]));
    let slices: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let end = Instant::now() + T;
    send_all(|d| send_batch(&c, Some(srv), d), &slices, end);
    let mut batch = RecvBatch::new(4);
    let mut got: Vec<Vec<u8>> = Vec::new();
    while got.len() < msgs.len() && Instant::now() < end {
        match l.recv_batch(&mut batch) {
            Ok(_) => got.extend(batch.iter().map(|d| d.to_vec())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("link recv_batch: {e}"),
        }
    }
    assert_eq!(got, msgs, "the link must see the peer's datagrams as sent");
    let replies: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 500]).collect();
    let slices: Vec<&[u8]> = replies.iter().map(|m| &m[..]).collect();
    send_all(|d| l.send_batch(d), &slices, end);
    c.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 2048];
    for r in &replies {
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &r[..]);
        assert_eq!(from, srv, "replies come from the server's address and port");
    }
    let r = pump.finish();
    assert!(
        r.unknown.is_empty(),
        "{} datagrams went astray",
        r.unknown.len()
    );
    d.detach(peer);
    assert_eq!(
        l.recv_batch(&mut batch).unwrap_err().kind(),
        ErrorKind::NotConnected
    );
    assert_eq!(
        l.send_batch(&slices).unwrap_err().kind(),
        ErrorKind::NotConnected
    );
}

/// `Demux::recv_batch` on the listener: an unknown peer's datagrams come back as
/// `Unknown` with their bytes in the batch, in order; an attached peer's reach its link
/// (Router: forwarded in batches) whole and in order.
fn listener_batches(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    use dtls_demux::batch::{send_batch, RecvBatch};
    let d = server(kind, fam);
    let srv = d.local_addr().unwrap();
    let known = client(fam);
    let stranger = client(fam);
    known.send_to(b"hello", srv).unwrap();
    let (peer, _) = accept_unknown(&*d, 1).remove(0);
    let l = attach(&*d, peer);
    l.enable_gro().unwrap();
    d.listener().set_nonblocking(true).unwrap();
    let mine: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; 700]).collect();
    let theirs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![100 + i; 90]).collect();
    let slices: Vec<&[u8]> = mine.iter().map(|m| &m[..]).collect();
    let end = Instant::now() + T;
    send_all(|d| send_batch(&known, Some(srv), d), &slices, end);
    for t in &theirs {
        stranger.send_to(t, srv).unwrap();
    }
    let me = stranger.local_addr().unwrap();
    let mut lb = RecvBatch::new(8);
    let mut out = Vec::new();
    let mut unknown: Vec<Vec<u8>> = Vec::new();
    let mut routed = 0;
    let mut link_batch = RecvBatch::new(8);
    let mut got: Vec<Vec<u8>> = Vec::new();
    while (unknown.len() < theirs.len() || got.len() < mine.len()) && Instant::now() < end {
        match d.recv_batch(&mut lb, &mut out) {
            Ok(n) => {
                assert_eq!(n, out.len());
                for r in &out {
                    match r.incoming {
                        Incoming::Unknown { len, peer } => {
                            assert_eq!(peer, me);
                            assert_eq!(len, lb.get(r.index).len());
                            unknown.push(lb.get(r.index).to_vec());
                        }
                        Incoming::Routed { peer: p, route } => {
                            assert_eq!(p, peer);
                            assert_eq!(route, Route::Forwarded);
                            routed += 1;
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("demux recv_batch: {e}"),
        }
        match l.recv_batch(&mut link_batch) {
            Ok(_) => got.extend(link_batch.iter().map(|x| x.to_vec())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("link recv_batch: {e}"),
        }
    }
    assert_eq!(unknown, theirs, "the unknown peer's datagrams, in order");
    assert_eq!(
        got, mine,
        "the attached peer's datagrams reach its link, in order"
    );
    let c = d.counters();
    assert_eq!(c.unknown, 1 + theirs.len() as u64);
    assert_eq!(c.dropped, 0);
    match kind {
        // The kernel delivers straight to the link socket.
        DemuxKind::OsNet => assert_eq!(routed, 0),
        DemuxKind::Router => {
            assert_eq!(routed, mine.len());
            assert_eq!(c.forwarded, mine.len() as u64);
        }
    }
}

four_ways!(
    listener_batches,
    batches,
    two_peers,
    two_hundred_peers,
    queued_before_attach,
    send_during_attach,
    unknown_host_to_link_socket,
    attach_detach_semantics,
    mio_readiness,
    wildcard_listener,
    send_to_unknown,
);

/// OsNet refuses a listener without SO_REUSEPORT; Router takes it.
#[test]
fn from_socket_requires_reuseport_for_osnet() {
    for fam in [Fam::V4, Fam::V6] {
        let s = UdpSocket::bind(fam.any_port()).unwrap();
        let e = dtls_demux::from_socket(DemuxKind::OsNet, s.try_clone().unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("SO_REUSEPORT"), "{e}");
        assert_eq!(
            dtls_demux::from_socket(DemuxKind::Router, s)
                .unwrap()
                .kind(),
            DemuxKind::Router
        );
    }
}

/// OsNet::bind on a port that is already taken fails instead of joining someone else's
/// reuseport group.
#[test]
fn osnet_bind_refuses_taken_port() {
    for fam in [Fam::V4, Fam::V6] {
        let taken = UdpSocket::bind(fam.any_port()).unwrap();
        let e = dtls_demux::bind(DemuxKind::OsNet, taken.local_addr().unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse);
        let d = dtls_demux::bind(DemuxKind::OsNet, fam.any_port()).unwrap();
        let e = dtls_demux::bind(DemuxKind::OsNet, d.local_addr().unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse);
    }
}

/// OsNet: an ICMP port unreachable from a vanished peer surfaces as ConnectionRefused on
/// the link, as on any connected UDP socket.
#[test]
fn osnet_connection_refused() {
    for fam in [Fam::V4, Fam::V6] {
        let d = server(DemuxKind::OsNet, fam);
        let gone = UdpSocket::bind(fam.any_port())
            .unwrap()
            .local_addr()
            .unwrap();
        let l = attach(&*d, gone);
        l.send(b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        let e = l.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    }
}

/// A datagram too long for the caller's buffer is truncated, never a panic.
#[test]
fn truncation_is_safe() {
    for kind in [DemuxKind::OsNet, DemuxKind::Router] {
        let d = server(kind, Fam::V4);
        let srv = d.local_addr().unwrap();
        let c = client(Fam::V4);
        c.send_to(&[7u8; 1000], srv).unwrap();
        let mut small = [0u8; 10];
        match d.recv_from(&mut small).unwrap() {
            Incoming::Unknown { len, .. } => assert_eq!(len, 10),
            other => panic!("{other:?}"),
        }
        let l = attach(&*d, c.local_addr().unwrap());
        c.send_to(&[8u8; 1000], srv).unwrap();
        if kind == DemuxKind::Router {
            let mut big = [0u8; 2000];
            d.recv_from(&mut big).unwrap();
        }
        assert_eq!(l.recv(&mut small).unwrap(), 10);
        assert_eq!(small, [8u8; 10]);
    }
}

/// Router in memory: datagrams of known peers are queued in the link's memory, never
/// forwarded through the kernel; the link's descriptor stays quiet.
#[test]
fn router_in_memory() {
    use dtls_demux::{Router, RouterOptions};
    for fam in [Fam::V4, Fam::V6] {
        let d =
            Router::bind_with(fam.any_port(), RouterOptions::default().in_memory(true)).unwrap();
        d.listener().set_read_timeout(Some(T)).unwrap();
        let srv = d.local_addr().unwrap();
        let c = client(fam);
        let l = attach(&*d, c.local_addr().unwrap());
        l.socket().set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..3u8 {
            c.send_to(&[i], srv).unwrap();
            match d.recv_from(&mut buf).unwrap() {
                Incoming::Routed { route, .. } => assert_eq!(route, Route::Delivered),
                other => panic!("{other:?}"),
            }
        }
        assert!(l.has_queued());
        for i in 0..3u8 {
            let n = l.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i]);
        }
        assert!(!l.has_queued());
        assert_eq!(l.recv(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        let ctr = d.counters();
        assert_eq!((ctr.delivered, ctr.forwarded), (3, 0));
        l.send(b"out").unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"out"[..], srv));
    }
}

fn readable(fd: std::os::fd::BorrowedFd<'_>, ms: i32) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack; the descriptor is borrowed.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// A thread blocked on a link is woken by a datagram put in its memory queue:
/// the link's wake descriptor becomes readable (the socket's stays quiet), and
/// clearing it makes it quiet again. Likewise the listener's wake descriptor
/// for `wake_listener`.
#[test]
fn memory_queue_wakes_a_waiting_reader() {
    use dtls_demux::{Router, RouterOptions};
    for fam in [Fam::V4, Fam::V6] {
        let d =
            Router::bind_with(fam.any_port(), RouterOptions::default().in_memory(true)).unwrap();
        d.listener().set_read_timeout(Some(T)).unwrap();
        let srv = d.local_addr().unwrap();
        let c = client(fam);
        let l = attach(&*d, c.local_addr().unwrap());
        let waiter = {
            let fd = l.wake_fd().unwrap().try_clone_to_owned().unwrap();
            std::thread::spawn(move || {
                use std::os::fd::AsFd;
                readable(fd.as_fd(), 10_000)
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        c.send_to(b"in memory", srv).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(
            d.recv_from(&mut buf).unwrap(),
            Incoming::Routed {
                route: Route::Delivered,
                ..
            }
        ));
        assert!(waiter.join().unwrap(), "the waiting thread was woken");
        assert!(
            !readable(std::os::fd::AsFd::as_fd(l.socket()), 0),
            "the socket saw nothing"
        );
        l.clear_wake();
        assert!(!readable(l.wake_fd().unwrap(), 0));
        assert!(l.has_queued());
        assert_eq!(l.recv(&mut buf).unwrap(), 9);

        let lw = d.listener_wake_fd().unwrap();
        assert!(!readable(lw, 0));
        d.wake_listener();
        assert!(readable(d.listener_wake_fd().unwrap(), 0));
        d.clear_listener_wake();
        assert!(!readable(d.listener_wake_fd().unwrap(), 0));
    }
}

/// OsNet::from_socket on a listener that had SO_REUSEPORT before bind (its reuseport
/// group exists already, the BPF program attaches directly) serves peers as usual.
#[test]
fn osnet_from_socket_reuseport_before_bind() {
    for fam in [Fam::V4, Fam::V6] {
        raise_nofile();
        let s = socket2::Socket::new(
            socket2::Domain::for_address(fam.any_port()),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&fam.any_port().into()).unwrap();
        let d = dtls_demux::from_socket(DemuxKind::OsNet, s.into()).unwrap();
        d.listener().set_read_timeout(Some(T)).unwrap();
        let srv = d.local_addr().unwrap();
        let c = client(fam);
        c.send_to(b"hi", srv).unwrap();
        let (peer, _) = accept_unknown(&*d, 1).remove(0);
        let l = attach(&*d, peer);
        c.send_to(b"direct", srv).unwrap();
        let mut buf = [0u8; 16];
        let n = l.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"direct");
        l.send(b"back").unwrap();
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], srv));
        assert_eq!(d.counters().routed, 0);
    }
}
