//! Shared helpers for the integration tests: the test PKI and an in-memory
//! pair of connections passing datagrams.
#![allow(dead_code)]

pub mod relay;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dtls_reactor::{
    Client, ClientConfig, ConfigBuilder, Connection, CookieStage, Error, Server, ServerConfig,
    Verdict,
};

pub const CA: &[u8] = include_bytes!("../certs/ca.pem");
pub const OTHER_CA: &[u8] = include_bytes!("../certs/other-ca.pem");
pub const INTER: &[u8] = include_bytes!("../certs/inter.pem");
pub const SERVER: &[u8] = include_bytes!("../certs/server.pem");
pub const SERVER_KEY: &[u8] = include_bytes!("../certs/server.key");
pub const CHAIN_SERVER: &[u8] = include_bytes!("../certs/chain-server.pem");
pub const CHAIN_SERVER_KEY: &[u8] = include_bytes!("../certs/chain-server.key");
pub const SERVER_RSA: &[u8] = include_bytes!("../certs/server-rsa.pem");
pub const SERVER_RSA_KEY: &[u8] = include_bytes!("../certs/server-rsa.key");
pub const CLIENT: &[u8] = include_bytes!("../certs/client.pem");
pub const CLIENT_KEY: &[u8] = include_bytes!("../certs/client.key");
pub const SELFSIGNED: &[u8] = include_bytes!("../certs/selfsigned.pem");
pub const SELFSIGNED_KEY: &[u8] = include_bytes!("../certs/selfsigned.key");

pub fn server() -> ConfigBuilder<Server> {
    ServerConfig::builder()
        .certificate_chain_pem(SERVER)
        .private_key_pem(SERVER_KEY)
}

pub fn client() -> ConfigBuilder<Client> {
    ClientConfig::builder().ca_pem(CA).server_name("localhost")
}

pub fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// Which way a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    ToServer,
    ToClient,
}

/// The outcome of an in-memory handshake.
pub struct Pair {
    pub client: Connection,
    pub server: Option<Connection>,
    pub client_err: Option<Error>,
    pub server_err: Option<Error>,
    /// Sizes of every datagram that crossed, in order.
    pub sizes: Vec<usize>,
    /// Flights (turns with at least one datagram) seen.
    pub flights: usize,
}

impl Pair {
    pub fn ok(&self) -> bool {
        self.client.is_established() && self.server.as_ref().is_some_and(|s| s.is_established())
    }
    pub fn server(&mut self) -> &mut Connection {
        self.server.as_mut().expect("server connection")
    }
}

/// Runs a handshake through the cookie stage in memory. `drop_datagram`
/// sees (flight number from 1, direction, datagram) and returns true to lose it.
pub fn handshake_with(
    server: &ServerConfig,
    client: &ClientConfig,
    mut drop_datagram: impl FnMut(usize, Dir, &[u8]) -> bool,
) -> Pair {
    let mut stage = CookieStage::new(server).expect("cookie stage");
    let mut c = Connection::client(client, None).expect("client");
    let mut s: Option<Connection> = None;
    let (mut cerr, mut serr) = (None, None);
    let mut sizes = Vec::new();
    let mut flights = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        // Client to server.
        let mut out = Vec::new();
        while let Some(d) = c.poll_transmit() {
            out.push(d);
        }
        if !out.is_empty() {
            flights += 1;
        }
        for d in out {
            sizes.push(d.len());
            if drop_datagram(flights, Dir::ToServer, &d) {
                continue;
            }
            match s.as_mut() {
                Some(conn) => {
                    if let Err(e) = conn.feed(&d) {
                        serr = Some(e);
                    }
                }
                None => match stage.handle(peer(), &d) {
                    Verdict::HelloVerify(hvr) => {
                        // The stateless reply counts as the server's flight.
                        flights += 1;
                        sizes.push(hvr.len());
                        if !drop_datagram(flights, Dir::ToClient, &hvr) {
                            if let Err(e) = c.feed(&hvr) {
                                cerr = Some(e);
                            }
                        }
                    }
                    Verdict::Accept(conn) => s = Some(*conn),
                    Verdict::Refused { alert, error } => {
                        serr = Some(error);
                        if let Some(a) = alert {
                            let _ = c.feed(&a);
                        }
                        break;
                    }
                    Verdict::Drop(_) => {}
                    other => panic!("unexpected verdict {other:?}"),
                },
            }
        }
        // Server to client.
        if let Some(conn) = s.as_mut() {
            let mut out = Vec::new();
            while let Some(d) = conn.poll_transmit() {
                out.push(d);
            }
            if !out.is_empty() {
                flights += 1;
            }
            for d in out {
                sizes.push(d.len());
                if drop_datagram(flights, Dir::ToClient, &d) {
                    continue;
                }
                if let Err(e) = c.feed(&d) {
                    cerr = Some(e);
                }
            }
        }
        // The server sees the client's last flight through reads once established.
        let mut buf = [0u8; 2048];
        if let Some(conn) = s.as_mut() {
            if conn.is_established() {
                while let Ok(Some(_)) = conn.recv(&mut buf) {}
            }
        }
        if c.is_established() {
            while let Ok(Some(_)) = c.recv(&mut buf) {}
        }
        if serr.is_some() && s.is_none() {
            break;
        }
        let s_done = s.as_ref().is_none_or(|x| !x.is_handshaking());
        if (c.is_closed() || s.as_ref().is_some_and(|x| x.is_closed()))
            || (!c.is_handshaking()
                && s_done
                && s.is_some()
                && !c.has_transmit()
                && !s.as_ref().unwrap().has_transmit())
        {
            break;
        }
        if c.has_transmit() || s.as_ref().is_some_and(|x| x.has_transmit()) {
            continue;
        }
        // Nothing in flight: wait for the earliest deadline and act on it.
        let deadline = [c.timeout(), s.as_ref().and_then(|x| x.timeout())]
            .into_iter()
            .flatten()
            .min();
        match deadline {
            Some(t) => std::thread::sleep(t),
            None => break,
        }
        let now = Instant::now();
        if let Err(e) = c.handle_timeout(now) {
            cerr = Some(e);
        }
        if let Some(conn) = s.as_mut() {
            if let Err(e) = conn.handle_timeout(now) {
                serr = Some(e);
            }
        }
    }
    if start.elapsed() > Duration::from_secs(1) {
        eprintln!(
            "slow handshake: {:?} client {:?} server {:?}",
            start.elapsed(),
            c.error(),
            s.as_ref().and_then(|x| x.error())
        );
    }
    if cerr.is_none() {
        cerr = c.error().map(clone);
    }
    if serr.is_none() {
        serr = s.as_ref().and_then(|x| x.error()).map(clone);
    }
    Pair {
        client: c,
        server: s,
        client_err: cerr,
        server_err: serr,
        sizes,
        flights,
    }
}

fn clone(e: &Error) -> Error {
    // Tests only need the variant and text.
    match e {
        Error::VersionMismatch(s) => Error::VersionMismatch(s.clone()),
        Error::Verification { reason, stack } => Error::Verification {
            reason: reason.clone(),
            stack: stack.clone(),
        },
        Error::RetransmitLimit => Error::RetransmitLimit,
        Error::HandshakeTimeout => Error::HandshakeTimeout,
        other => Error::Io(std::io::Error::new(other.kind(), other.to_string())),
    }
}

pub fn handshake(server: &ServerConfig, client: &ClientConfig) -> Pair {
    handshake_with(server, client, |_, _, _| false)
}

/// Sends `msg` from `a` to `b` and returns what `b` reads.
pub fn transfer(a: &mut Connection, b: &mut Connection, msg: &[u8]) -> Vec<u8> {
    a.send(msg).expect("send");
    while let Some(d) = a.poll_transmit() {
        b.feed(&d).expect("feed");
    }
    let mut buf = vec![0u8; 65536];
    let n = b.recv(&mut buf).expect("recv").expect("a datagram");
    buf.truncate(n);
    buf
}

/// Echo one message each way and check it.
pub fn echo(p: &mut Pair) {
    let server = p.server.as_mut().expect("server");
    assert_eq!(transfer(&mut p.client, server, b"ping"), b"ping");
    assert_eq!(transfer(server, &mut p.client, b"pong"), b"pong");
}

/// One of the four ways every socket test runs: IPv4 or IPv6 loopback, OsNet or Router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The loopback address of the family.
    pub ip: std::net::IpAddr,
    /// The demux the server listens with.
    pub demux: dtls_demux::DemuxKind,
}

impl Variant {
    pub fn new(v6: bool, demux: dtls_demux::DemuxKind) -> Self {
        let ip = if v6 {
            std::net::Ipv6Addr::LOCALHOST.into()
        } else {
            std::net::Ipv4Addr::LOCALHOST.into()
        };
        Variant { ip, demux }
    }
    /// Loopback address of the family with port 0 (the kernel picks a free port).
    pub fn any_port(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 0)
    }
}

/// Generates, for each listed function `fn name(v: Variant)`, a module `name`
/// with four tests: `v4_osnet`, `v6_osnet`, `v4_router`, `v6_router`.
#[macro_export]
macro_rules! four_ways {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use dtls_demux::DemuxKind;
                #[test]
                fn v4_osnet() { super::$name($crate::common::Variant::new(false, DemuxKind::OsNet)) }
                #[test]
                fn v6_osnet() { super::$name($crate::common::Variant::new(true, DemuxKind::OsNet)) }
                #[test]
                fn v4_router() { super::$name($crate::common::Variant::new(false, DemuxKind::Router)) }
                #[test]
                fn v6_router() { super::$name($crate::common::Variant::new(true, DemuxKind::Router)) }
            }
        )*
    };
}
