//! Several reactors on one port (one per thread): OsNet listeners from
//! `OsNet::bind_group`, Router listeners as `SO_REUSEPORT` sockets, shared
//! sockets from `SharedSocket::bind_group`. Every
//! session is served, by exactly one reactor, and the load is spread.

mod common;
mod reactor_support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::{six_ways, Variant};
use dtls_demux::{Demux, DemuxKind, OsNet, Router};
use dtls_reactor::{Limits, Reactor};
use reactor_support::*;

fn group(v: Variant, n: usize) -> Vec<ServerPort> {
    if v.shared {
        return dtls_demux::SharedSocket::bind_group(v.any_port(), n)
            .unwrap()
            .into_iter()
            .map(ServerPort::Shared)
            .collect();
    }
    let demuxes: Vec<Arc<dyn Demux>> = match v.demux {
        DemuxKind::OsNet => OsNet::bind_group(v.any_port(), n)
            .unwrap()
            .into_iter()
            .map(|d| d as Arc<dyn Demux>)
            .collect(),
        DemuxKind::Router => {
            let mut port = 0;
            (0..n)
                .map(|_| {
                    use socket2::{Domain, Protocol, Socket, Type};
                    let addr = SocketAddr::new(v.ip(), port);
                    let s =
                        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
                            .unwrap();
                    s.set_reuse_port(true).unwrap();
                    s.bind(&addr.into()).unwrap();
                    let s: UdpSocket = s.into();
                    port = s.local_addr().unwrap().port();
                    Router::from_socket(s).unwrap() as Arc<dyn Demux>
                })
                .collect()
        }
    };
    demuxes.into_iter().map(ServerPort::Demux).collect()
}

fn two_reactors_one_port(v: Variant) {
    const SESSIONS: usize = 60;
    let cfg = common::server().build().unwrap();
    let demuxes = group(v, 2);
    let addr = demuxes[0].local_addr();
    assert_eq!(demuxes[1].local_addr(), addr);
    let mut servers = Vec::new();
    let mut logs = Vec::new();
    for d in demuxes {
        let log: Log = Default::default();
        let mut h = Rec::new(log.clone());
        h.echo = true;
        logs.push(log);
        let cfg = cfg.clone();
        servers.push(spawn(Some(addr), move || {
            let mut r = Reactor::new(h).unwrap();
            d.listen(&mut r, &cfg);
            r
        }));
    }
    let clog: Log = Default::default();
    let mut ch = Rec::new(clog.clone());
    ch.greet = vec![b"spread".to_vec()];
    ch.close_after = Some(1);
    let ccfg = common::client().build().unwrap();
    let client = clients(addr, &ccfg, SESSIONS, Limits::default(), ch);
    let closed_ok = || {
        events(&clog)
            .iter()
            .filter(|e| **e == Ev::Close(dtls_reactor::CloseCause::Local))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(20), || closed_ok() == SESSIONS),
        "{} of {SESSIONS} sessions done",
        closed_ok()
    );
    client.stop();
    let mut accepted = Vec::new();
    for s in &servers {
        assert!(wait_for(Duration::from_secs(10), || s
            .handle
            .stats()
            .connections
            == 0));
        accepted.push(s.handle.stats().accepted);
    }
    for s in servers {
        s.stop();
    }
    assert_eq!(
        accepted.iter().sum::<u64>(),
        SESSIONS as u64,
        "{accepted:?}"
    );
    assert!(accepted.iter().all(|&a| a > 0), "load spread: {accepted:?}");
}

six_ways!(two_reactors_one_port);
