//! Helpers of the reactor tests: their configs, a recording handler, a reactor on its
//! own thread, a hand-driven client, the file-descriptor limit.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dtls_reactor::{
    ClientConfig, CloseCause, ConnId, Connection, Ctx, DtlsTimeout, Handler, Limits, ListenerId,
    Reactor, ReactorHandle, ReactorStats, ServerConfig,
};

use crate::common::{self, Variant};

/// The reactor tests' server config: the standard one.
pub fn server_cfg() -> ServerConfig {
    common::server().build().unwrap()
}

/// The reactor tests' client config: the standard one, first retransmission after 100 ms.
pub fn client_cfg() -> ClientConfig {
    common::client()
        .initial_timeout(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// What a handler saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Accept(SocketAddr),
    Connected,
    Data(Vec<u8>),
    Writable,
    Timeout(DtlsTimeout),
    Close(CloseCause),
    Error(String),
    Timer(u64),
}

pub type Log = Arc<Mutex<Vec<(Option<ConnId>, Ev)>>>;

/// A handler that records everything and reacts as configured.
pub struct Rec {
    pub log: Log,
    /// Answer on_accept with this.
    pub accept: bool,
    /// Echo every datagram back.
    pub echo: bool,
    /// Close a connection after this many datagrams arrived on it.
    pub close_after: Option<usize>,
    /// Stop the reactor when a connection closes.
    pub stop_on_close: bool,
    /// Send these on connect (clients only).
    pub greet: Vec<Vec<u8>>,
    counts: std::collections::HashMap<ConnId, usize>,
}

impl Rec {
    pub fn new(log: Log) -> Self {
        Rec {
            log,
            accept: true,
            echo: false,
            close_after: None,
            stop_on_close: false,
            greet: Vec::new(),
            counts: Default::default(),
        }
    }
    fn push(&self, id: Option<ConnId>, ev: Ev) {
        self.log.lock().unwrap().push((id, ev));
    }
}

impl Handler for Rec {
    fn on_accept(&mut self, _ctx: &mut Ctx<'_>, peer: SocketAddr, _l: ListenerId) -> bool {
        self.push(None, Ev::Accept(peer));
        self.accept
    }
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.push(Some(id), Ev::Connected);
        if ctx.is_client(id) {
            for g in &self.greet {
                ctx.send(id, g).expect("greeting");
            }
        }
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        self.push(Some(id), Ev::Data(data.to_vec()));
        if self.echo {
            ctx.send(id, data).expect("echo");
        }
        let n = self.counts.entry(id).or_default();
        *n += 1;
        if Some(*n) == self.close_after {
            ctx.close(id);
        }
    }
    fn on_writable(&mut self, _ctx: &mut Ctx<'_>, id: ConnId) {
        self.push(Some(id), Ev::Writable);
    }
    fn on_timeout(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, what: DtlsTimeout) {
        self.push(Some(id), Ev::Timeout(what));
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cause: &CloseCause) {
        self.push(Some(id), Ev::Close(cause.clone()));
        if self.stop_on_close {
            ctx.stop();
        }
    }
    fn on_error(&mut self, _ctx: &mut Ctx<'_>, id: Option<ConnId>, error: &dtls_reactor::Error) {
        self.push(id, Ev::Error(error.to_string()));
    }
    fn on_timer(&mut self, _ctx: &mut Ctx<'_>, _t: dtls_reactor::TimerId, token: u64) {
        self.push(None, Ev::Timer(token));
    }
}

/// A reactor running on its own thread.
pub struct Running<H: Handler + Send + 'static> {
    pub handle: ReactorHandle,
    pub addr: Option<SocketAddr>,
    thread: Option<JoinHandle<H>>,
}

impl<H: Handler + Send + 'static> Running<H> {
    /// Stops the reactor and returns its handler.
    pub fn stop(mut self) -> H {
        self.handle.stop().expect("stop");
        self.join()
    }
    /// True once the reactor thread ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
    /// Waits for the reactor to stop by itself (bounded by `limit`).
    pub fn join_within(mut self, limit: Duration) -> H {
        let t = self.thread.take().unwrap();
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < limit,
                "reactor did not stop within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().expect("reactor thread")
    }
    fn join(&mut self) -> H {
        let t = self.thread.take().unwrap();
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "reactor did not stop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().expect("reactor thread")
    }
}

impl<H: Handler + Send + 'static> Drop for Running<H> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.handle.stop();
        }
    }
}

/// A fresh server socket of the variant on a free port: a demux, or a shared socket.
pub enum ServerPort {
    Demux(Arc<dyn dtls_demux::Demux>),
    Shared(Arc<dtls_demux::SharedSocket>),
}

impl ServerPort {
    /// Binds the variant's server socket on `addr`.
    pub fn bind_at(v: Variant, addr: SocketAddr) -> Self {
        if v.shared {
            ServerPort::Shared(dtls_demux::SharedSocket::bind(addr).expect("bind"))
        } else {
            ServerPort::Demux(dtls_demux::bind(v.demux, addr).expect("bind"))
        }
    }

    /// Binds the variant's server socket on a free loopback port.
    pub fn bind(v: Variant) -> Self {
        Self::bind_at(v, v.any_port())
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            ServerPort::Demux(d) => d.local_addr().unwrap(),
            ServerPort::Shared(s) => s.local_addr(),
        }
    }

    /// Serves DTLS with `cfg` on it in `r`.
    pub fn listen<H: Handler>(self, r: &mut Reactor<H>, cfg: &ServerConfig) -> ListenerId {
        match self {
            ServerPort::Demux(d) => r.listen(d, cfg).expect("listen"),
            ServerPort::Shared(s) => r.listen_shared(s, cfg).expect("listen"),
        }
    }

    /// Serves plain UDP on it in `r`.
    pub fn listen_plain<H: Handler>(self, r: &mut Reactor<H>) -> ListenerId {
        match self {
            ServerPort::Demux(d) => r.listen_plain(d).expect("listen"),
            ServerPort::Shared(s) => r.listen_plain_shared(s).expect("listen"),
        }
    }
}

/// Serves DTLS on a fresh listener of the variant, on its own thread.
pub fn serve<H: Handler + Send + 'static>(
    v: Variant,
    cfg: &ServerConfig,
    limits: Limits,
    handler: H,
) -> Running<H> {
    let port = ServerPort::bind(v);
    let addr = port.local_addr();
    let cfg = cfg.clone();
    spawn(Some(addr), move || {
        let mut r = Reactor::with_limits(handler, limits).expect("reactor");
        port.listen(&mut r, &cfg);
        r
    })
}

/// Runs `n` client connections to `addr` on a reactor of their own thread.
pub fn clients<H: Handler + Send + 'static>(
    addr: SocketAddr,
    cfg: &ClientConfig,
    n: usize,
    limits: Limits,
    handler: H,
) -> Running<H> {
    let cfg = cfg.clone();
    spawn(None, move || {
        let mut r = Reactor::with_limits(handler, limits).expect("reactor");
        for _ in 0..n {
            r.connect(addr, &cfg).expect("connect");
        }
        r
    })
}

/// Builds a reactor on a new thread and runs it there.
pub fn spawn<H: Handler + Send + 'static>(
    addr: Option<SocketAddr>,
    make: impl FnOnce() -> Reactor<H> + Send + 'static,
) -> Running<H> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut r = make();
        tx.send(r.handle()).unwrap();
        r.run().expect("reactor run");
        r.into_handler()
    });
    let handle = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("reactor started");
    Running {
        handle,
        addr,
        thread: Some(thread),
    }
}

/// A fresh event log.
pub fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

/// Waits until `f` holds, for at most `limit`.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

/// The events recorded, without connection ids.
pub fn events(log: &Log) -> Vec<Ev> {
    log.lock().unwrap().iter().map(|x| x.1.clone()).collect()
}

/// Raises the soft open-file limit to the hard limit (at most `want`).
pub fn raise_nofile(want: u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return;
    }
    let target = (want as libc::rlim_t).min(rl.rlim_max);
    if rl.rlim_cur < target {
        rl.rlim_cur = target;
        // SAFETY: setrlimit reads the struct we own.
        unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// A client connection driven by hand over a connected UDP socket.
pub struct HandClient {
    pub sock: UdpSocket,
    pub conn: Connection,
}

impl HandClient {
    pub fn new(server: SocketAddr, cfg: &ClientConfig) -> Self {
        let sock = common::socket_to(server, Duration::from_millis(20));
        let conn = Connection::client(cfg, None).unwrap();
        HandClient { sock, conn }
    }
    pub fn flush(&mut self) {
        self.flush_with(|_| ());
    }
    /// Sends what the connection queued, showing each datagram to `see`.
    pub fn flush_with(&mut self, mut see: impl FnMut(&[u8])) {
        while let Some(d) = self.conn.poll_transmit() {
            see(&d);
            let _ = self.sock.send(&d);
        }
    }
    /// Runs the handshake to completion (bounded).
    pub fn handshake(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        while start.elapsed() < limit && self.conn.is_handshaking() {
            self.flush();
            if let Ok(n) = self.sock.recv(&mut buf) {
                let _ = self.conn.feed(&buf[..n]);
            }
            let _ = self.conn.handle_timeout(Instant::now());
        }
        self.flush();
        self.conn.is_established()
    }
    /// Receives one plaintext datagram (bounded), answering the protocol.
    pub fn recv(&mut self, limit: Duration) -> dtls_reactor::Result<Option<Vec<u8>>> {
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        let mut out = [0u8; 2048];
        while start.elapsed() < limit {
            if let Some(n) = self.conn.recv(&mut out)? {
                return Ok(Some(out[..n].to_vec()));
            }
            self.flush();
            if let Ok(n) = self.sock.recv(&mut buf) {
                let _ = self.conn.feed(&buf[..n]);
            }
        }
        Ok(None)
    }
    pub fn send(&mut self, data: &[u8]) {
        self.conn.send(data).unwrap();
        self.flush();
    }
}

pub fn stats_of(h: &ReactorHandle) -> ReactorStats {
    h.stats()
}
