//! Shared helpers of the integration tests: the test scaffolding of `dtls-test-support`
//! (`test-support/`: the variants and `four_ways!`, the test PKI and standard configs, the
//! in-memory pair driver) under its old names here, `established` (a pair's handshake
//! completed), the fault-injecting relay (`relay`), the engine's echo server and client
//! over loopback UDP (`engine_udp`) and the client that loses the server's last flight
//! (`final_flight`).
#![allow(dead_code, unused_imports)]

pub mod engine_udp;
pub mod final_flight;
pub mod relay;

pub use dtls_test_support::pair::{echo, handshake, handshake_with, peer, transfer, Dir, Pair};
pub use dtls_test_support::pki::*;
pub use dtls_test_support::{four_ways, six_ways, Variant};

/// Asserts that the in-memory pair `p` completed its handshake, naming both
/// sides' errors if not.
pub fn established(p: &Pair) {
    assert!(
        p.ok(),
        "handshake failed: client {:?}, server {:?}",
        p.client_err,
        p.server_err
    );
}

/// A UDP socket on the loopback address of `server`'s family, connected to
/// it, whose reads wait at most `read_timeout`.
pub fn socket_to(
    server: std::net::SocketAddr,
    read_timeout: std::time::Duration,
) -> std::net::UdpSocket {
    let local: std::net::SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let sock = std::net::UdpSocket::bind(local).unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(read_timeout)).unwrap();
    sock
}

/// Everything `c` has to send now, in order.
pub fn transmits(c: &mut dtls_reactor::Connection) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

/// The content type and, for handshake records in the clear, the message
/// type of each record of the datagram `d`.
pub fn records(mut d: &[u8]) -> Vec<(u8, Option<u8>)> {
    let mut v = Vec::new();
    while d.len() >= 13 {
        let epoch = u16::from_be_bytes([d[3], d[4]]);
        let len = usize::from(u16::from_be_bytes([d[11], d[12]]));
        let msg = (d[0] == 22 && epoch == 0)
            .then(|| d.get(13).copied())
            .flatten();
        v.push((d[0], msg));
        d = &d[(13 + len).min(d.len())..];
    }
    v
}
