//! What only the shared socket (`dtls_demux::SharedSocket`) does: many peers and
//! many client sessions without a descriptor each, and a server bound to a
//! wildcard address that answers each peer from the address it wrote to. (The
//! reactor's behaviour on shared sockets in general runs in the six-way tests of
//! `reactor_*.rs` and `front_door.rs`.)

mod common;
mod reactor_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dtls_demux::SharedSocket;
use dtls_reactor::{CloseCause, Limits, Reactor};
use reactor_support::*;

const T: Duration = Duration::from_secs(30);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn echo_server(bind: SocketAddr) -> (Running<Rec>, SocketAddr) {
    let socket = SharedSocket::bind(bind).unwrap();
    let port = socket.local_addr().port();
    let mut h = Rec::new(log());
    h.echo = true;
    let cfg = server_cfg();
    let server = spawn(None, move || {
        let mut r = Reactor::new(h).unwrap();
        r.listen_shared(socket, &cfg).unwrap();
        r
    });
    (server, SocketAddr::new(bind.ip(), port))
}

/// Client sessions of one reactor on one wildcard socket, each from its own
/// 127.0.x.y address, to a server on one shared socket: every session echoes,
/// and neither side spends a descriptor per session.
#[test]
fn many_sessions_one_socket_each_side() {
    const SESSIONS: usize = 200;
    let before = open_fds();
    let (server, addr) = echo_server("127.0.0.1:0".parse().unwrap());
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"shared".to_vec()];
    ch.close_after = Some(1);
    let cfg = client_cfg();
    let client = spawn(None, move || {
        let mut r = Reactor::with_limits(ch, Limits::default()).unwrap();
        let via = r
            .add_client_socket(SharedSocket::bind("0.0.0.0:0".parse().unwrap()).unwrap())
            .unwrap();
        for i in 0..SESSIONS {
            let local = IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                1 + (i / 250) as u8,
                1 + (i % 250) as u8,
            ));
            r.connect_via(via, Some(local), addr, &cfg).unwrap();
        }
        r
    });
    let done = || {
        events(&clog)
            .iter()
            .filter(|e| **e == Ev::Close(CloseCause::Local))
            .count()
    };
    let mut most = 0;
    assert!(
        wait_for(T, || {
            most = most.max(server.handle.stats().connections);
            done() == SESSIONS
        }),
        "{} of {SESSIONS} sessions echoed",
        done()
    );
    let during = open_fds();
    let sst = server.handle.stats();
    client.stop();
    server.stop();
    assert!(most > 0, "the server held the sessions");
    assert_eq!(sst.accepted, SESSIONS as u64, "{sst:?}");
    // Two reactors (poll, waker), two sockets, test harness noise: not one per session.
    assert!(
        during < before + 16,
        "{before} descriptors before, {during} with {SESSIONS} sessions"
    );
}

/// IPv6 has one loopback address: one client socket carries sessions to three
/// servers, told apart by the server's address.
#[test]
fn one_client_socket_three_servers_v6() {
    let servers: Vec<_> = (0..3)
        .map(|_| echo_server("[::1]:0".parse().unwrap()))
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.1).collect();
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"v6".to_vec()];
    ch.close_after = Some(1);
    let cfg = client_cfg();
    let client = spawn(None, move || {
        let mut r = Reactor::new(ch).unwrap();
        let via = r
            .add_client_socket(SharedSocket::bind("[::1]:0".parse().unwrap()).unwrap())
            .unwrap();
        for a in &addrs {
            r.connect_via(via, None, *a, &cfg).unwrap();
        }
        // One flow per server: a second session to the same one is refused.
        assert!(r.connect_via(via, None, addrs[0], &cfg).is_err());
        r
    });
    assert!(wait_for(T, || events(&clog)
        .iter()
        .filter(|e| **e == Ev::Close(CloseCause::Local))
        .count()
        == 3));
    assert_eq!(
        events(&clog)
            .iter()
            .filter(|e| **e == Ev::Data(b"v6".to_vec()))
            .count(),
        3
    );
    client.stop();
    for (s, _) in servers {
        assert_eq!(s.handle.stats().accepted, 1);
        s.stop();
    }
}

/// A server bound to the wildcard address answers each peer from the address
/// the peer wrote to: the reactor's clients use connected sockets, which take
/// datagrams only from the address they connected to, so their handshakes
/// complete only if it does.
fn wildcard_server(wild: &str, targets: &[&str]) {
    let (server, any) = echo_server(wild.parse().unwrap());
    let n = targets.len();
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"where".to_vec()];
    ch.close_after = Some(1);
    let cfg = client_cfg();
    let to: Vec<SocketAddr> = targets
        .iter()
        .map(|t| SocketAddr::new(t.parse().unwrap(), any.port()))
        .collect();
    let client = spawn(None, move || {
        let mut r = Reactor::new(ch).unwrap();
        for a in &to {
            r.connect(*a, &cfg).unwrap();
        }
        r
    });
    assert!(
        wait_for(T, || events(&clog)
            .iter()
            .filter(|e| **e == Ev::Close(CloseCause::Local))
            .count()
            == n),
        "{:?}",
        events(&clog)
    );
    client.stop();
    assert_eq!(server.handle.stats().accepted, n as u64);
    server.stop();
}

#[test]
fn wildcard_server_v4() {
    wildcard_server("0.0.0.0:0", &["127.0.0.2", "127.0.0.3", "127.0.0.1"]);
}

#[test]
fn wildcard_server_v6() {
    wildcard_server("[::]:0", &["::1"]);
}

/// Datagrams to a client-only shared socket from a peer it has no session with
/// are dropped and counted; the session on it goes on.
#[test]
fn strays_on_a_client_socket() {
    let (server, addr) = echo_server("127.0.0.1:0".parse().unwrap());
    let socket = SharedSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let target = socket.local_addr();
    let counters = socket.clone();
    let clog = log();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"before".to_vec()];
    let cfg = client_cfg();
    let client = spawn(None, move || {
        let mut r = Reactor::new(ch).unwrap();
        let via = r.add_client_socket(socket).unwrap();
        r.connect_via(via, None, addr, &cfg).unwrap();
        r
    });
    assert!(wait_for(T, || events(&clog).contains(&Ev::Data(b"before".to_vec()))));
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        stray.send_to(&[i; 40], target).unwrap();
    }
    assert!(wait_for(T, || counters.counters().unknown >= 50));
    let c = client.handle.stats();
    assert_eq!(c.connections, 1, "{c:?}");
    client.stop();
    server.stop();
}
