//! Socket API: echo through a threaded server, in the four variants.

mod common;
mod socket_util;

use common::{four_ways, Variant};
use socket_util::*;

/// One client, ten echoes of several sizes, clean shutdown on both sides.
fn threaded_echo(v: Variant) {
    let server = EchoServer::start(v, &server_cfg());
    let mut c = connect(server.addr, &client_cfg()).expect("connect");
    assert!(c.is_established());
    assert_eq!(c.version(), Some("DTLSv1.2"));
    assert_eq!(c.peer_addr().unwrap(), server.addr);
    echo_rounds(&mut c, 10, 100);
    echo_rounds(&mut c, 3, 1);
    let mtu = c.data_mtu();
    echo_rounds(&mut c, 3, mtu);
    c.shutdown().expect("close_notify exchange");
    server.wait_done(1);
    assert_eq!(server.echoed.load(std::sync::atomic::Ordering::Relaxed), 16);
    assert_eq!(
        server.failures.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

four_ways!(threaded_echo);
