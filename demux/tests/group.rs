//! `OsNet::bind_group`: several listeners on one port, peers spread by a hash of
//! their address and port, each peer always on the same listener.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dtls_demux::{Demux, Incoming, OsNet};

fn spread(bind: &str) {
    let group = OsNet::bind_group(bind.parse().unwrap(), 3).unwrap();
    assert_eq!(group.len(), 3);
    let addr = group[0].local_addr().unwrap();
    for g in &group {
        assert_eq!(g.local_addr().unwrap(), addr);
        g.listener().set_nonblocking(true).unwrap();
    }
    let ip = addr.ip();
    let clients: Vec<UdpSocket> = (0..60)
        .map(|_| UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap())
        .collect();
    for round in 0..2u8 {
        for c in &clients {
            c.send_to(&[round], addr).unwrap();
        }
    }
    // Which listener saw each peer, and how often.
    let mut seen: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    let mut buf = [0u8; 64];
    let start = Instant::now();
    let mut total = 0;
    while total < 120 && start.elapsed() < Duration::from_secs(5) {
        for (i, g) in group.iter().enumerate() {
            while let Ok(Incoming::Unknown { peer, .. }) = g.recv_from(&mut buf) {
                seen.entry(peer).or_default().push(i);
                total += 1;
            }
        }
    }
    assert_eq!(total, 120, "every datagram reached a listener");
    for (peer, at) in &seen {
        assert_eq!(at.len(), 2);
        assert_eq!(at[0], at[1], "{peer} moved between listeners");
    }
    let used: std::collections::HashSet<usize> = seen.values().map(|v| v[0]).collect();
    assert!(used.len() >= 2, "peers spread over the listeners: {used:?}");

    // A peer attached on its listener gets its own socket there.
    let (peer, at) = seen.iter().next().map(|(p, a)| (*p, a[0])).unwrap();
    let link = group[at].attach(peer).unwrap();
    link.socket()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let c = clients
        .iter()
        .find(|c| c.local_addr().unwrap() == peer)
        .unwrap();
    c.send_to(b"mine", addr).unwrap();
    let n = link.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"mine");
}

#[test]
fn spread_v4() {
    spread("127.0.0.1:0");
}

#[test]
fn spread_v6() {
    spread("[::1]:0");
}

#[test]
fn sizes() {
    assert!(OsNet::bind_group("127.0.0.1:0".parse().unwrap(), 0).is_err());
    assert!(OsNet::bind_group("127.0.0.1:0".parse().unwrap(), 257).is_err());
    assert_eq!(
        OsNet::bind_group("127.0.0.1:0".parse().unwrap(), 1)
            .unwrap()
            .len(),
        1
    );
}
