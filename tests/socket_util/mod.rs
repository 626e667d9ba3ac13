//! Helpers shared by the socket tests (`tests/socket_*.rs`): fast configs, a
//! background accept loop and an echo server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use dtls_reactor::{
    Client, ClientConfig, ConfigBuilder, DtlsListener, DtlsSocket, Error, Server, ServerConfig,
};

use crate::common::{self, Variant};

/// Upper bound for any single blocking call in the tests.
pub const T: Duration = Duration::from_secs(5);

/// Short DTLS timers so loss and timeouts are quick.
pub fn fast_server() -> ConfigBuilder<Server> {
    common::server()
        .initial_timeout(Duration::from_millis(50))
        .max_timeout(Duration::from_millis(400))
        .handshake_timeout(Some(Duration::from_secs(10)))
}

pub fn fast_client() -> ConfigBuilder<Client> {
    common::client()
        .initial_timeout(Duration::from_millis(50))
        .max_timeout(Duration::from_millis(400))
        .handshake_timeout(Some(Duration::from_secs(10)))
}

pub fn server_cfg() -> ServerConfig {
    fast_server().build().expect("server config")
}

pub fn client_cfg() -> ClientConfig {
    fast_client().build().expect("client config")
}

/// A listener on the variant's loopback, with a read timeout.
pub fn listen(v: Variant, cfg: &ServerConfig) -> Arc<DtlsListener> {
    let l = DtlsListener::bind(v.any_port(), cfg, v.demux).expect("bind");
    l.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    Arc::new(l)
}

/// A client connected to `addr` with timeouts on every call.
pub fn connect(addr: SocketAddr, cfg: &ClientConfig) -> dtls_reactor::Result<DtlsSocket> {
    let mut s = DtlsSocket::connect_timeout(addr, cfg, T)?;
    s.set_read_timeout(Some(T))?;
    s.set_write_timeout(Some(T))?;
    Ok(s)
}

/// A thread calling `accept()` until stopped (with Router it also forwards
/// datagrams to connections). New connections go to the channel.
pub struct AcceptLoop {
    pub stop: Arc<AtomicBool>,
    pub conns: mpsc::Receiver<(DtlsSocket, SocketAddr)>,
    pub handle: Option<JoinHandle<()>>,
    pub listener: Arc<DtlsListener>,
}

impl AcceptLoop {
    pub fn start(listener: Arc<DtlsListener>) -> AcceptLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (l, st) = (listener.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(Some(c)) => {
                        if tx.send(c).is_err() {
                            // Nobody takes connections any more; keep routing.
                        }
                    }
                    Ok(None) | Err(Error::ReadTimeout) => {}
                    Err(e) => panic!("accept failed: {e}"),
                }
            }
        });
        AcceptLoop {
            stop,
            conns: rx,
            handle: Some(handle),
            listener,
        }
    }

    /// The next accepted connection, within `T`.
    pub fn next(&self) -> (DtlsSocket, SocketAddr) {
        self.conns.recv_timeout(T).expect("a connection in time")
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Echoes every datagram until the peer closes; returns how many it echoed.
pub fn echo_until_closed(mut s: DtlsSocket) -> dtls_reactor::Result<usize> {
    s.set_read_timeout(Some(T))?;
    s.set_write_timeout(Some(T))?;
    let mut buf = vec![0u8; 65536];
    let mut n = 0;
    loop {
        match s.recv(&mut buf) {
            Ok(len) => {
                s.send(&buf[..len])?;
                n += 1;
            }
            Err(Error::ClosedByPeer) => return Ok(n),
            Err(e) => return Err(e),
        }
    }
}

/// A threaded echo server: an accept loop thread that starts one echo
/// thread per connection. Stops (and joins everything) on drop.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub listener: Arc<DtlsListener>,
    pub stop: Arc<AtomicBool>,
    pub echoed: Arc<AtomicUsize>,
    pub failures: Arc<AtomicUsize>,
    pub closed: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(v: Variant, cfg: &ServerConfig) -> EchoServer {
        let listener = listen(v, cfg);
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (l, st, e, f, c) = (
            listener.clone(),
            stop.clone(),
            echoed.clone(),
            failures.clone(),
            closed.clone(),
        );
        let handle = std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(Some((s, _peer))) => {
                        let (e, f, c) = (e.clone(), f.clone(), c.clone());
                        workers.push(std::thread::spawn(move || match echo_until_closed(s) {
                            Ok(n) => {
                                e.fetch_add(n, Ordering::Relaxed);
                                c.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) => {
                                eprintln!("echo connection failed: {err}");
                                f.fetch_add(1, Ordering::Relaxed);
                            }
                        }));
                    }
                    Ok(None) | Err(Error::ReadTimeout) => {}
                    Err(err) => panic!("accept failed: {err}"),
                }
            }
            // Workers end by themselves (close_notify or their timeouts);
            // a late duplicate ClientHello can leave one waiting for a
            // handshake that never comes, so they are not joined.
            drop(workers);
        });
        EchoServer {
            addr,
            listener,
            stop,
            echoed,
            failures,
            closed,
            handle: Some(handle),
        }
    }

    /// Waits (bounded) until `n` connections closed cleanly or failed.
    pub fn wait_done(&self, n: usize) {
        let start = std::time::Instant::now();
        while self.closed.load(Ordering::Relaxed) + self.failures.load(Ordering::Relaxed) < n {
            assert!(start.elapsed() < T * 4, "server connections did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sends `count` datagrams of `size` bytes and checks each echo.
pub fn echo_rounds(s: &mut DtlsSocket, count: usize, size: usize) {
    let mut buf = vec![0u8; 65536];
    for i in 0..count {
        let msg: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
        assert_eq!(s.send(&msg).expect("send"), size);
        let n = s.recv(&mut buf).expect("recv echo");
        assert_eq!(&buf[..n], &msg[..], "echo {i} differs");
    }
}

/// The two ends of one handshake over real sockets.
pub struct Outcome {
    /// The client's result (`None` once taken).
    pub client: Option<dtls_reactor::Result<DtlsSocket>>,
    /// The server's: `None` when the listener never accepted a connection
    /// (the cookie stage refused or the client gave up first).
    pub server: Option<dtls_reactor::Result<DtlsSocket>>,
    /// Keeps accepting (and, with Router, forwarding) while the pair is used.
    pub accept: Option<AcceptLoop>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self.client, Some(Ok(_))) && matches!(self.server, Some(Ok(_)))
    }
    pub fn client(&mut self) -> &mut DtlsSocket {
        match self.client.as_mut() {
            Some(Ok(c)) => c,
            _ => panic!("client not established"),
        }
    }
    pub fn client_result(&self) -> &dtls_reactor::Result<DtlsSocket> {
        self.client.as_ref().expect("client result")
    }
    pub fn server(&mut self) -> &mut DtlsSocket {
        match self.server.as_mut() {
            Some(Ok(s)) => s,
            _ => panic!("server not established"),
        }
    }
    pub fn client_err(&self) -> &Error {
        self.client_result().as_ref().expect_err("client failed")
    }
}

/// Runs a handshake: a listener of `scfg` in a server thread that accepts
/// and handshakes one connection, and `connect_fn` in this thread.
pub fn pair_with(
    v: Variant,
    scfg: &ServerConfig,
    connect_fn: impl FnOnce(SocketAddr) -> dtls_reactor::Result<DtlsSocket>,
) -> Outcome {
    let l = listen(v, scfg);
    let addr = l.local_addr().expect("addr");
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let srv = std::thread::spawn(move || {
        let acc = AcceptLoop::start(l);
        let start = std::time::Instant::now();
        let mut idle_since: Option<std::time::Instant> = None;
        loop {
            match acc.conns.recv_timeout(Duration::from_millis(20)) {
                Ok((mut s, _)) => {
                    s.set_read_timeout(Some(T)).expect("timeout");
                    s.set_write_timeout(Some(T)).expect("timeout");
                    let r = s.handshake().map(|_| s);
                    return (Some(r), acc);
                }
                Err(_) => {
                    assert!(start.elapsed() < T * 3, "pair_with: no end in sight");
                    if d2.load(Ordering::Relaxed) {
                        let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() > Duration::from_millis(200) {
                            return (None, acc);
                        }
                    }
                }
            }
        }
    });
    let client = connect_fn(addr);
    done.store(true, Ordering::Relaxed);
    let (server, acc) = srv.join().expect("server thread");
    Outcome {
        client: Some(client),
        server,
        accept: Some(acc),
    }
}

/// [`pair_with`] with a blocking client connect.
pub fn pair(v: Variant, scfg: &ServerConfig, ccfg: &ClientConfig) -> Outcome {
    let ccfg = ccfg.clone();
    pair_with(v, scfg, move |addr| connect(addr, &ccfg))
}
