//! The perf tool's tokio suites (feature `tokio`): `tokio-udp`, tokio's own
//! `UdpSocket` (the baseline), and `tokio`, this crate's `tokio::DtlsStream` /
//! `DtlsListener`, with the same shape: a server runtime on one pinned
//! thread, a client runtime with every session on another, each a
//! current-thread runtime. One-way: the client sends round-robin over the
//! sessions as fast as the sockets take it and the server counts what it got
//! (decrypted for DTLS) between its first and last record; echo: a task per
//! session with one record in flight, round trips counted by the client.
//! Included by `main.rs`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use dtls_reactor::tokio::{DtlsListener, DtlsStream};
use dtls_reactor::{ClientConfig, ServerConfig};
use tokio::net::UdpSocket;

/// What a run measured: records sent, received, and the seconds between.
pub(crate) struct Measured {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) elapsed: f64,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The server side's count of one-way records and the first and last.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
    window: Mutex<(Option<Instant>, Option<Instant>)>,
}

impl Sink {
    fn got(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        let now = Instant::now();
        let mut w = self.window.lock().unwrap();
        w.0.get_or_insert(now);
        w.1 = Some(now);
    }
}

/// Runs one tokio suite: DTLS when `dtls`, echo or one-way, `sessions`
/// sessions of `size`-byte records for `dur`; the server thread on `cpus.1`,
/// the client on `cpus.0` (when `pin`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    dtls: Option<(ServerConfig, ClientConfig)>,
    echo: bool,
    size: usize,
    sessions: usize,
    dur: Duration,
    pin: bool,
    cpus: (usize, usize),
) -> (Measured, String) {
    let sink = Arc::new(Sink::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_cfg = dtls.as_ref().map(|d| d.0.clone());
    let s2 = sink.clone();
    let server = thread::spawn(move || {
        let placed = crate::common::placement(cpus.1, pin);
        runtime().block_on(async move {
            let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
            match server_cfg {
                Some(cfg) => {
                    let l = DtlsListener::bind(addr, &cfg).await.expect("listener");
                    tx.send(l.local_addr()).unwrap();
                    let accept = async {
                        while let Ok((s, _)) = l.accept().await {
                            let sink = s2.clone();
                            tokio::spawn(async move {
                                let mut buf = vec![0u8; 2048];
                                while let Ok(n) = s.recv(&mut buf).await {
                                    if echo {
                                        if s.send(&buf[..n]).await.is_err() {
                                            return;
                                        }
                                    } else {
                                        sink.got(1);
                                    }
                                }
                            });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stop_rx => {}
                    }
                }
                None => {
                    let sock = UdpSocket::bind(addr).await.expect("bind");
                    tx.send(sock.local_addr().unwrap()).unwrap();
                    let serve = async {
                        let mut buf = vec![0u8; 65536];
                        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                            if echo {
                                let _ = sock.send_to(&buf[..n], from).await;
                            } else {
                                s2.got(1);
                            }
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = stop_rx => {}
                    }
                }
            }
        });
        placed
    });
    let addr = rx.recv().expect("server started");
    let client_cfg = dtls.map(|d| d.1);
    let client = thread::spawn(move || {
        let placed = crate::common::placement(cpus.0, pin);
        let m = runtime().block_on(client_side(addr, client_cfg, echo, size, sessions, dur));
        (m, placed)
    });
    let (mut m, placed_c) = client.join().expect("client thread");
    if !echo {
        // Let the server drain what is queued.
        thread::sleep(Duration::from_millis(200));
        m.received = sink.received.load(Ordering::Relaxed);
        let w = *sink.window.lock().unwrap();
        m.elapsed = match w {
            (Some(a), Some(b)) => (b - a).as_secs_f64().max(dur.as_secs_f64() * 0.5),
            _ => dur.as_secs_f64(),
        };
    }
    let _ = stop_tx.send(());
    let placed_s = server.join().expect("server thread");
    (
        m,
        format!("client runtime {placed_c}, server runtime {placed_s}"),
    )
}

/// One session of the client: a DTLS stream or a connected UDP socket.
enum Session {
    Dtls(DtlsStream),
    Udp(UdpSocket),
}

impl Session {
    async fn send(&self, d: &[u8]) -> bool {
        match self {
            Session::Dtls(s) => s.send(d).await.is_ok(),
            Session::Udp(s) => s.send(d).await.is_ok(),
        }
    }
    async fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        match self {
            Session::Dtls(s) => s.recv(buf).await.ok(),
            Session::Udp(s) => s.recv(buf).await.ok(),
        }
    }
}

async fn client_side(
    addr: SocketAddr,
    cfg: Option<ClientConfig>,
    echo: bool,
    size: usize,
    sessions: usize,
    dur: Duration,
) -> Measured {
    let mut all = Vec::with_capacity(sessions);
    for chunk in 0..sessions.div_ceil(64) {
        let n = 64.min(sessions - chunk * 64);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let cfg = cfg.clone();
            set.spawn(async move {
                match cfg {
                    Some(c) => Session::Dtls(DtlsStream::connect(addr, &c).await.expect("connect")),
                    None => {
                        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
                        s.connect(addr).await.expect("connect");
                        Session::Udp(s)
                    }
                }
            });
        }
        while let Some(s) = set.join_next().await {
            all.push(Arc::new(s.expect("session")));
        }
    }
    let payload = vec![0x42u8; size];
    let start = Instant::now();
    let end = start + dur;
    if !echo {
        let mut sent = 0u64;
        'send: while Instant::now() < end {
            for s in &all {
                if s.send(&payload).await {
                    sent += 1;
                }
                if sent % 4096 == 0 {
                    tokio::task::yield_now().await;
                    if Instant::now() >= end {
                        break 'send;
                    }
                }
            }
        }
        return Measured {
            sent,
            received: 0,
            elapsed: start.elapsed().as_secs_f64(),
        };
    }
    let mut set = tokio::task::JoinSet::new();
    for s in all {
        let payload = payload.clone();
        set.spawn(async move {
            let mut buf = vec![0u8; 2048];
            let (mut sent, mut got) = (0u64, 0u64);
            while Instant::now() < end {
                if !s.send(&payload).await {
                    break;
                }
                sent += 1;
                // An echo lost on the way is not retransmitted: the next
                // record goes after a short wait.
                match tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf)).await {
                    Ok(Some(_)) => got += 1,
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            (sent, got)
        });
    }
    let (mut sent, mut received) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (s, g) = r.expect("echo task");
        sent += s;
        received += g;
    }
    Measured {
        sent,
        received,
        elapsed: start.elapsed().as_secs_f64(),
    }
}
