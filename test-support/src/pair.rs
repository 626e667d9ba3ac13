//! The in-memory pair driver: a client and a server [`Connection`] taken through the front
//! door to established in one thread, datagrams passed by hand (no sockets).
//!
//! The server side's admission of a peer without a connection is [`admit`], the only function
//! here that calls the front door.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dtls_reactor::{
    Admission, Admitted, ClientConfig, Connection, Datagram, Error, FrontDoor, Refusal,
    ServerConfig,
};

/// What admits new peers on the server side.
pub type Stage = FrontDoor;

/// A new [`Stage`] for `server`, with the default caps.
pub fn stage(server: &ServerConfig) -> Stage {
    FrontDoor::new(server, &Admission::default()).expect("front door")
}

/// The address the driver's client speaks from, as the server sees it.
pub fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// The admission step: `datagram` from `peer`, which has no connection, through
/// `stage` (every incoming peer accepted at once).
pub fn admit(stage: &mut Stage, peer: SocketAddr, datagram: &[u8]) -> Admitted {
    stage.admit(peer, &Datagram::parse(datagram))
}

/// The first round of a handshake with a cookie: the client's first ClientHello, the
/// server's HelloVerifyRequest and the client's second, cookie-carrying ClientHello.
pub struct CookieExchange {
    /// The client, waiting for the server's answer to `hello2`.
    pub client: Connection,
    /// The first ClientHello (no cookie).
    pub hello: Vec<u8>,
    /// The server's HelloVerifyRequest.
    pub hello_verify: Vec<u8>,
    /// The second ClientHello, carrying the cookie issued to `peer`.
    pub hello2: Vec<u8>,
}

/// Runs the cookie exchange of a new client of `client` with `stage` for `peer`.
///
/// Panics unless `stage` answers the first ClientHello with a HelloVerifyRequest.
pub fn cookie_exchange(
    stage: &mut Stage,
    client: &ClientConfig,
    peer: SocketAddr,
) -> CookieExchange {
    let mut c = Connection::client(client, None).expect("client");
    let hello = c.poll_transmit().expect("a ClientHello");
    let Admitted::Reply(hello_verify) = admit(stage, peer, &hello) else {
        panic!("no HelloVerifyRequest for a fresh ClientHello")
    };
    c.feed(&hello_verify).expect("feed the HelloVerifyRequest");
    let hello2 = c.poll_transmit().expect("a ClientHello with the cookie");
    CookieExchange {
        client: c,
        hello,
        hello_verify,
        hello2,
    }
}

/// Which way a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the client to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

/// The outcome of an in-memory handshake.
pub struct Pair {
    /// The client.
    pub client: Connection,
    /// The server, once the stage admitted the client.
    pub server: Option<Connection>,
    /// The client's error, if it failed.
    pub client_err: Option<Error>,
    /// The server's error (or the stage's refusal), if it failed.
    pub server_err: Option<Error>,
    /// Sizes of every datagram that crossed, in order.
    pub sizes: Vec<usize>,
    /// Flights (turns with at least one datagram) seen.
    pub flights: usize,
}

impl Pair {
    /// Both ends are established.
    pub fn ok(&self) -> bool {
        self.client.is_established() && self.server.as_ref().is_some_and(|s| s.is_established())
    }

    /// The server connection; panics when there is none.
    pub fn server(&mut self) -> &mut Connection {
        self.server.as_mut().expect("server connection")
    }

    /// The established (client, server); panics, with both errors, unless [`Pair::ok`].
    pub fn into_established(self) -> (Connection, Connection) {
        assert!(
            self.ok(),
            "handshake failed: client {:?}, server {:?}",
            self.client_err,
            self.server_err
        );
        (self.client, self.server.expect("server connection"))
    }
}

/// Runs a handshake with a new stage for `server` (see [`handshake_in`]).
pub fn handshake_with(
    server: &ServerConfig,
    client: &ClientConfig,
    drop_datagram: impl FnMut(usize, Dir, &[u8]) -> bool,
) -> Pair {
    handshake_in(&mut stage(server), client, drop_datagram)
}

/// Runs a handshake with a new stage for `server`, losing nothing.
pub fn handshake(server: &ServerConfig, client: &ClientConfig) -> Pair {
    handshake_with(server, client, |_, _, _| false)
}

/// An established (client, server) through `stage`, losing nothing; panics otherwise.
pub fn established_pair(stage: &mut Stage, client: &ClientConfig) -> (Connection, Connection) {
    handshake_in(stage, client, |_, _, _| false).into_established()
}

/// Runs a handshake of a new client of `client` from [`peer`] through `stage`, in memory,
/// until both ends are established, one fails or closes, or 20 s passed. When nothing is in
/// flight it sleeps to the earliest timer and handles it (so losses are retransmitted).
///
/// `drop_datagram` sees (flight number from 1, direction, datagram) of every datagram and
/// returns true to lose it. The stage's HelloVerifyRequest counts as a server flight.
pub fn handshake_in(
    stage: &mut Stage,
    client: &ClientConfig,
    mut drop_datagram: impl FnMut(usize, Dir, &[u8]) -> bool,
) -> Pair {
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
                None => match admit(stage, peer(), &d) {
                    Admitted::Reply(hvr) => {
                        // The stateless reply counts as the server's flight.
                        flights += 1;
                        sizes.push(hvr.len());
                        if !drop_datagram(flights, Dir::ToClient, &hvr) {
                            if let Err(e) = c.feed(&hvr) {
                                cerr = Some(e);
                            }
                        }
                    }
                    Admitted::Accepted(conn) => s = Some(*conn),
                    Admitted::Refused(Refusal { alert, error }) => {
                        serr = Some(error);
                        if let Some(a) = alert {
                            let _ = c.feed(&a);
                        }
                        break;
                    }
                    Admitted::Drop(_) => {}
                    other => panic!("unexpected admission {other:?}"),
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

/// Echoes one message each way and checks it.
pub fn echo(p: &mut Pair) {
    let server = p.server.as_mut().expect("server");
    assert_eq!(transfer(&mut p.client, server, b"ping"), b"ping");
    assert_eq!(transfer(server, &mut p.client, b"pong"), b"pong");
}
