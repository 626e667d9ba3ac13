//! Handshakes in memory, client and server in one thread, datagrams passed by
//! hand: bare OpenSSL (two `SslStream`s over queues of datagrams) and our engine
//! (`FrontDoor` + `Connection`). Only the server's calls are timed, with the
//! thread's CPU clock, so the figure is the server's CPU per handshake with no
//! system call but the clock's own.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dtls_reactor::{
    Admission, Admitted, ClientConfig, Connection, CookieKeys, Datagram, FrontDoor, Refusal,
    ServerConfig,
};
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextRef, SslMethod, SslOptions, SslSessionCacheMode,
    SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::X509;

use crate::{thread_cpu, CIPHER, MTU};

/// The server's CPU time, summed over its timed calls.
#[derive(Default, Clone, Copy, Debug)]
pub struct Meter {
    /// CPU time inside the timed calls.
    pub cpu: Duration,
    /// How many calls were timed (two clock readings each).
    pub calls: u64,
}

/// Runs `f` as server work: its thread CPU time is added to `meter`. Never
/// inlined, so `valgrind --tool=callgrind --toggle-collect='*server_call*'`
/// counts the instructions of exactly the timed work.
#[inline(never)]
pub fn server_call<R>(meter: &mut Meter, f: impl FnOnce() -> R) -> R {
    let t0 = thread_cpu();
    let r = f();
    meter.cpu += thread_cpu() - t0;
    meter.calls += 1;
    r
}

/// What one run of in-memory handshakes measured.
#[derive(Default, Clone, Copy, Debug)]
pub struct Run {
    /// Handshakes established on both sides.
    pub completed: u64,
    /// Handshakes that failed or stalled.
    pub failed: u64,
    /// Server CPU over the completed handshakes.
    pub server: Meter,
    /// The thread's CPU over the whole run: client, server and the passing
    /// of datagrams.
    pub pair: Duration,
}

/// Rounds (one client turn, one server turn) after which a handshake that is
/// still not established counts as failed: a full handshake with a cookie
/// needs 4.
const MAX_ROUNDS: usize = 16;

// ---------------------------------------------------------------------------
// Bare OpenSSL.

/// One side's end of the in-memory link: the datagrams it will read and the
/// ones it wrote, one `Vec` per `BIO_write` (OpenSSL writes one record per
/// call).
#[derive(Default)]
pub struct Datagrams {
    /// What the SSL reads next, one datagram per `BIO_read`.
    pub inbound: VecDeque<Vec<u8>>,
    /// What it wrote.
    pub outbound: VecDeque<Vec<u8>>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbound.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.push_back(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A bare OpenSSL server and client: what a user of rust-openssl writes for
/// the anchor's settings and nothing more (but for the cookie callbacks,
/// which compute our engine's cookie: see [`Bare::new`]).
pub struct Bare {
    server: SslContext,
    client: SslContext,
}

/// The peer the bare server's cookies are bound to: its BIO has no address
/// (in memory or over UDP), so one fixed address for all.
const BARE_COOKIE_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

impl Bare {
    /// Contexts for DTLS 1.2 with `cert_pem` / `key_pem` on the server, the
    /// benchmark's cipher and group, no verification, no session cache, no
    /// tickets. With `cookie`, `SSL_OP_COOKIE_EXCHANGE` (OpenSSL's stateful
    /// cookie exchange inside `SSL_do_handshake`) and cookie callbacks that
    /// compute the same cookie as our engine's ([`CookieKeys`]: timestamp and
    /// HMAC-SHA256 with the pads precomputed), so both pay the same for the
    /// MAC and the rows differ only by how the exchange is run. (An HMAC made
    /// per call with rust-openssl's `Signer` costs about 90,000 more
    /// instructions per handshake, for the two MACs: OpenSSL 3's `EVP_MAC`
    /// fetch and context per call.)
    pub fn new(cert_pem: &[u8], key_pem: &[u8], group: &str, cookie: bool) -> Bare {
        let ctx = |server: bool| {
            let mut b = SslContext::builder(SslMethod::dtls()).expect("context");
            b.set_min_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
            b.set_max_proto_version(Some(SslVersion::DTLS1_2)).unwrap();
            b.set_cipher_list(CIPHER).unwrap();
            b.set_groups_list(group).unwrap();
            b.set_verify(SslVerifyMode::NONE);
            b.set_session_cache_mode(SslSessionCacheMode::OFF);
            // A queue of datagrams cannot answer OpenSSL's MTU query: the MTU is
            // set on each SSL instead (without this, 256-byte fragments).
            b.set_options(SslOptions::NO_TICKET | SslOptions::NO_QUERY_MTU);
            if server {
                b.set_certificate(&X509::from_pem(cert_pem).expect("certificate"))
                    .unwrap();
                b.set_private_key(&PKey::private_key_from_pem(key_pem).expect("key"))
                    .unwrap();
                b.check_private_key().expect("key matches certificate");
                if cookie {
                    b.set_options(SslOptions::COOKIE_EXCHANGE);
                    let keys = CookieKeys::random().expect("cookie keys");
                    let gen_keys = keys.clone();
                    b.set_cookie_generate_cb(move |_ssl, out| {
                        gen_keys.generate(BARE_COOKIE_PEER, out)
                    });
                    b.set_cookie_verify_cb(move |_ssl, got| keys.verify(BARE_COOKIE_PEER, got));
                }
            }
            b.build()
        };
        Bare {
            server: ctx(true),
            client: ctx(false),
        }
    }

    /// The server's context (for the UDP loop).
    pub fn server_context(&self) -> SslContext {
        self.server.clone()
    }

    /// `count` handshakes one after another; the server's CPU is that of its
    /// `Ssl::new`, every `SSL_do_handshake` and the drop (`SSL_free`).
    pub fn run(&self, count: usize) -> Run {
        let mut run = Run::default();
        let t0 = thread_cpu();
        for _ in 0..count {
            let mut m = Meter::default();
            if bare_handshake(&self.server, &self.client, &mut m) {
                run.completed += 1;
                run.server.cpu += m.cpu;
                run.server.calls += m.calls;
            } else {
                run.failed += 1;
            }
        }
        run.pair = thread_cpu() - t0;
        run
    }
}

/// A new bare SSL on `ctx` over an empty link, MTU set, server or client.
pub fn bare_stream(ctx: &SslContextRef, server: bool) -> SslStream<Datagrams> {
    let mut ssl = Ssl::new(ctx).expect("SSL");
    ssl.set_mtu(MTU).expect("MTU");
    if server {
        ssl.set_accept_state();
    } else {
        ssl.set_connect_state();
    }
    SslStream::new(ssl, Datagrams::default()).expect("stream")
}

/// True when `r` is a finished handshake; false while it wants more; `None`
/// when it failed.
pub fn progress(r: Result<(), openssl::ssl::Error>) -> Option<bool> {
    match r {
        Ok(()) => Some(true),
        Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
            Some(false)
        }
        Err(e) => {
            eprintln!("bare OpenSSL handshake failed: {e}");
            None
        }
    }
}

fn bare_handshake(sctx: &SslContext, cctx: &SslContext, m: &mut Meter) -> bool {
    let mut client = bare_stream(cctx, false);
    let mut server = server_call(m, || bare_stream(sctx, true));
    let (mut client_done, mut server_done) = (false, false);
    for _ in 0..MAX_ROUNDS {
        if !client_done {
            match progress(client.do_handshake()) {
                Some(done) => client_done = done,
                None => return false,
            }
        }
        let to_server: Vec<_> = client.get_mut().outbound.drain(..).collect();
        server.get_mut().inbound.extend(to_server);
        if !server_done {
            match progress(server_call(m, || server.do_handshake())) {
                Some(done) => server_done = done,
                None => return false,
            }
        }
        let to_client: Vec<_> = server.get_mut().outbound.drain(..).collect();
        client.get_mut().inbound.extend(to_client);
        if client_done && server_done {
            server_call(m, || drop(server));
            return true;
        }
    }
    eprintln!("bare OpenSSL handshake stalled after {MAX_ROUNDS} rounds");
    false
}

// ---------------------------------------------------------------------------
// Our engine.

/// Our engine's server (a `FrontDoor` with the default caps) and client, in memory.
pub struct Engine {
    door: FrontDoor,
    client: ClientConfig,
    /// Handshakes started: each comes from a new peer address.
    peers: u64,
}

impl Engine {
    /// A front door for `server` and clients of `client`.
    pub fn new(server: &ServerConfig, client: ClientConfig) -> Engine {
        Engine {
            door: FrontDoor::new(server, &Admission::default()).expect("front door"),
            client,
            peers: 0,
        }
    }

    /// `count` handshakes one after another; the server's CPU is that of the
    /// front door's admission (cookie stage, `SSL_accept`), every
    /// `Connection::feed`, taking its datagrams (copied out, as a socket
    /// would), and dropping the connection.
    pub fn run(&mut self, count: usize) -> Run {
        let mut run = Run::default();
        let t0 = thread_cpu();
        for _ in 0..count {
            self.peers += 1;
            // 127.0.0.0/8 addresses and ports, a new pair for every handshake.
            let n = self.peers;
            let ip = Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8 | 1);
            let peer = SocketAddr::new(IpAddr::V4(ip), 1024 + (n % 60000) as u16);
            let mut m = Meter::default();
            if engine_handshake(&mut self.door, &self.client, peer, &mut m) {
                run.completed += 1;
                run.server.cpu += m.cpu;
                run.server.calls += m.calls;
            } else {
                run.failed += 1;
            }
        }
        run.pair = thread_cpu() - t0;
        run
    }
}

/// The server's datagrams, copied out and popped (the pool gets its buffers back).
fn take_transmits(conn: &mut Connection, out: &mut Vec<Vec<u8>>) {
    while let Some(d) = conn.peek_transmit() {
        out.push(d.to_vec());
        conn.pop_transmit();
    }
}

fn engine_handshake(
    door: &mut FrontDoor,
    config: &ClientConfig,
    peer: SocketAddr,
    m: &mut Meter,
) -> bool {
    let mut client = Connection::client(config, None).expect("client");
    let mut server: Option<Connection> = None;
    let mut to_client = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let mut to_server = Vec::new();
        while let Some(d) = client.poll_transmit() {
            to_server.push(d);
        }
        for d in &to_server {
            let ok = server_call(m, || match server.as_mut() {
                Some(s) => {
                    let _ = s.feed(d);
                    take_transmits(s, &mut to_client);
                    !s.is_closed()
                }
                None => match door.admit(peer, &Datagram::parse(d)) {
                    Admitted::Reply(hvr) => {
                        to_client.push(hvr);
                        true
                    }
                    Admitted::Accepted(c) => {
                        let mut c = *c;
                        take_transmits(&mut c, &mut to_client);
                        server = Some(c);
                        true
                    }
                    Admitted::Refused(Refusal { error, .. }) => {
                        eprintln!("engine refused the handshake: {error}");
                        false
                    }
                    other => {
                        eprintln!("engine dropped the hello: {other:?}");
                        false
                    }
                },
            });
            if !ok {
                return false;
            }
        }
        for d in to_client.drain(..) {
            let _ = client.feed(&d);
        }
        if client.is_closed() {
            eprintln!("engine client failed: {:?}", client.error());
            return false;
        }
        if client.is_established() && server.as_ref().is_some_and(|s| s.is_established()) {
            server_call(m, || drop(server));
            return true;
        }
    }
    eprintln!("engine handshake stalled after {MAX_ROUNDS} rounds");
    false
}
