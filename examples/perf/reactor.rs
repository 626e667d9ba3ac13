//! The reactor suites (`reactor-udp`, `reactor-osnet`, `reactor-router`,
//! `reactor-shared-udp`, `reactor-shared`): a server [`Reactor`] thread
//! ([`Sink`]: counts or echoes records) and a client reactor thread ([`Load`]:
//! every session, started 64 at a time, then one-way bursts or one echo in
//! flight per session).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use dtls_demux::DemuxKind;
use dtls_reactor::{ClientConfig, CloseCause, ConnId, Ctx, Handler, Limits, Reactor, TimerId};

use crate::loss::{via, LossPath};
use crate::{client_config, common, cpus, server_config, Mode, Run};

/// The reactor server of the reactor suites: counts records of the expected
/// size (one-way) or echoes every record (echo).
struct Sink {
    echo: bool,
    size: usize,
    received: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Echoes waiting for their connection to be writable.
    blocked: HashMap<ConnId, Vec<u8>>,
    blocked_count: u64,
}

impl Handler for Sink {
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if let Some(d) = self.blocked.remove(&id) {
            if let Err(dtls_reactor::Error::WouldBlock) = ctx.send(id, &d) {
                self.blocked.insert(id, d);
            }
        }
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if self.echo {
            if let Err(dtls_reactor::Error::WouldBlock) = ctx.send(id, data) {
                // Sent from on_writable; one record in flight per session.
                self.blocked_count += 1;
                self.blocked.insert(id, data.to_vec());
            }
        } else if data.len() == self.size {
            let now = Instant::now();
            self.received += 1;
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
    }
}

const BURST: u64 = 0;
const CHECK: u64 = 1;
const END: u64 = 2;
const GIVE_UP: u64 = 3;
const START: u64 = 4;
/// Handshakes (or plain session starts) in flight at once.
const PARALLEL: usize = 64;
/// An echo not back after this is sent again (and shows as lost): 50 ms,
/// plus 100 us per session, as with many sessions each one's turn comes
/// less often.
fn resend_after(sessions: usize) -> Duration {
    Duration::from_millis(50) + Duration::from_micros(100) * sessions as u32
}

/// One session of the load reactor.
struct LoadSession {
    last_sent: Instant,
    echoed: bool,
    /// A record is in flight (its echo has not come back).
    awaiting: bool,
}

/// The client reactor of the reactor suites: `total` sessions to `addr`.
struct Load {
    addr: SocketAddr,
    /// `None`: plain UDP sessions.
    cfg: Option<ClientConfig>,
    /// Every session on this shared socket, session i from 127.1.0.1 + i.
    via: Option<dtls_reactor::ListenerId>,
    next_local: usize,
    oneway: bool,
    payload: Vec<u8>,
    dur: Duration,
    /// An echo not back after this is sent again.
    resend: Duration,
    total: usize,
    to_start: usize,
    starting: usize,
    ids: Vec<ConnId>,
    sessions: HashMap<ConnId, LoadSession>,
    warm: usize,
    next: usize,
    /// Echo sessions whose record waits for writability.
    blocked: std::collections::HashSet<ConnId>,
    start: Option<Instant>,
    end: Option<Instant>,
    sent: u64,
    received: u64,
    failed: usize,
}

impl Load {
    fn start_more(&mut self, ctx: &mut Ctx<'_>) {
        while self.to_start > 0 && self.starting < PARALLEL {
            self.to_start -= 1;
            let r = common::connect_session(
                ctx,
                self.via,
                &mut self.next_local,
                self.addr,
                self.cfg.as_ref(),
            );
            match r {
                Ok(_) => self.starting += 1,
                Err(e) => {
                    eprintln!("connect: {e}");
                    self.failed += 1;
                }
            }
        }
    }
    fn begin(&mut self, ctx: &mut Ctx<'_>) {
        self.start = Some(Instant::now());
        self.sent = 0;
        self.received = 0;
        ctx.set_timer(self.dur, END);
        if self.oneway {
            ctx.set_timer(Duration::ZERO, BURST);
        } else {
            // Every session had its first echo; now all send at once.
            for id in self.ids.clone() {
                self.send(ctx, id);
            }
        }
    }
    fn send(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if self.end.is_some() {
            return;
        }
        match ctx.send(id, &self.payload) {
            Ok(()) => self.sent += 1,
            // An earlier datagram waits for the socket: send from on_writable.
            Err(dtls_reactor::Error::WouldBlock) => {
                self.blocked.insert(id);
            }
            Err(_) => {}
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.last_sent = Instant::now();
            s.awaiting = true;
        }
    }
}

impl Handler for Load {
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.starting = self.starting.saturating_sub(1);
        self.ids.push(id);
        self.sessions.insert(
            id,
            LoadSession {
                last_sent: Instant::now(),
                echoed: false,
                awaiting: false,
            },
        );
        self.start_more(ctx);
        if self.oneway {
            if self.ids.len() + self.failed == self.total {
                self.begin(ctx);
            }
        } else {
            self.send(ctx, id);
        }
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if data.len() != self.payload.len() {
            return;
        }
        let first = match self.sessions.get_mut(&id) {
            Some(s) => {
                s.awaiting = false;
                !std::mem::replace(&mut s.echoed, true)
            }
            None => return,
        };
        if self.start.is_none() {
            // Warm-up: one round trip per session, then wait for the others
            // (no echo traffic while handshakes still run).
            if first {
                self.warm += 1;
                if self.warm + self.failed == self.total {
                    self.begin(ctx);
                }
            }
            return;
        }
        if self.end.is_none() {
            self.received += 1;
        }
        self.send(ctx, id);
    }
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if !self.oneway && self.blocked.remove(&id) {
            self.send(ctx, id);
        }
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _t: TimerId, token: u64) {
        match token {
            BURST if self.end.is_none() && !self.ids.is_empty() => {
                for _ in 0..64 {
                    let id = self.ids[self.next % self.ids.len()];
                    self.next = self.next.wrapping_add(1);
                    if ctx.send(id, &self.payload).is_ok() {
                        self.sent += 1;
                    }
                }
                ctx.set_timer(Duration::ZERO, BURST);
            }
            CHECK => {
                let now = Instant::now();
                let stale: Vec<ConnId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.awaiting && now - s.last_sent >= self.resend)
                    .map(|(id, _)| *id)
                    .collect();
                for id in stale {
                    self.send(ctx, id);
                }
                ctx.set_timer(self.resend, CHECK);
            }
            START => self.start_more(ctx),
            END => {
                self.end = Some(Instant::now());
                ctx.stop();
            }
            GIVE_UP if self.start.is_none() => {
                eprintln!(
                    "reactor load: {} of {} sessions set up in time",
                    self.ids.len(),
                    self.total
                );
                ctx.stop();
            }
            _ => {}
        }
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, cause: &CloseCause) {
        if matches!(cause, CloseCause::Stopped | CloseCause::Local) {
            return;
        }
        eprintln!("reactor load: session closed: {cause:?}");
        if self.sessions.remove(&id).is_none() {
            self.starting = self.starting.saturating_sub(1);
        }
        self.ids.retain(|x| *x != id);
        self.failed += 1;
        self.start_more(ctx);
    }
}

/// A reactor suite: a server reactor thread (DTLS over `kind`, plain UDP when
/// `None`; on a shared socket when `shared`, the client's sessions then on one
/// too) and a client reactor thread with `sessions` sessions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reactor_run(
    kind: Option<DemuxKind>,
    shared: bool,
    mode: Mode,
    size: usize,
    sessions: usize,
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
) -> (Run, String) {
    let (c0, c1) = cpus();
    let echo = mode == Mode::Echo;
    let sessions = sessions.max(1);
    let limits = Limits::default()
        .max_connections(sessions + 16)
        .max_handshakes(sessions.max(PARALLEL) + 16)
        .idle_timeout(None);
    let (tx, rx) = std::sync::mpsc::channel();
    let slimits = limits;
    let loss = path.loss;
    let server = thread::spawn(move || {
        let where_ = common::placement(c1, pinning);
        let mut r = Reactor::with_limits(
            Sink {
                echo,
                size,
                received: 0,
                first: None,
                last: None,
                blocked: HashMap::new(),
                blocked_count: 0,
            },
            slimits,
        )
        .expect("reactor");
        let l = if shared {
            let s = dtls_demux::SharedSocket::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            match kind {
                Some(_) => r.listen_shared(s, &server_config(loss)),
                None => r.listen_plain_shared(s),
            }
        } else {
            let demux = dtls_demux::bind(
                kind.unwrap_or(DemuxKind::OsNet),
                "127.0.0.1:0".parse().unwrap(),
            )
            .expect("bind");
            match kind {
                Some(_) => r.listen(demux, &server_config(loss)),
                None => r.listen_plain(demux),
            }
        }
        .expect("listen");
        tx.send((r.handle(), r.local_addr(l).expect("address")))
            .unwrap();
        if let Err(e) = r.run() {
            eprintln!("server reactor: {e}");
        }
        (r.into_handler(), where_)
    });
    let (handle, addr) = rx.recv().expect("server reactor started");
    // One relay client per client session (each has its own socket).
    let relay = path.relay(addr, sessions, dur);
    let addr = via(&relay, addr);
    let dtls = kind.is_some();
    let client = thread::spawn(move || {
        let where_ = common::placement(c0, pinning);
        let load = Load {
            addr,
            cfg: dtls.then(|| client_config(loss)),
            via: None,
            next_local: 0,
            oneway: !echo,
            payload: vec![0x42u8; size],
            dur,
            resend: resend_after(sessions),
            total: sessions,
            to_start: sessions,
            starting: 0,
            ids: Vec::new(),
            sessions: HashMap::new(),
            warm: 0,
            next: 0,
            blocked: Default::default(),
            start: None,
            end: None,
            sent: 0,
            received: 0,
            failed: 0,
        };
        let mut r = Reactor::with_limits(load, limits).expect("reactor");
        if shared {
            let s = dtls_demux::SharedSocket::bind("0.0.0.0:0".parse().unwrap()).expect("bind");
            let via = r.add_client_socket(s).expect("client socket");
            r.handler_mut().via = Some(via);
        }
        r.set_timer(Duration::ZERO, START);
        if echo {
            r.set_timer(resend_after(sessions), CHECK);
        }
        r.set_timer(Duration::from_secs(120), GIVE_UP);
        if let Err(e) = r.run() {
            eprintln!("client reactor: {e}");
        }
        (r.into_handler(), where_)
    });
    let (load, where_c) = client.join().expect("client thread");
    if !echo {
        // Let the server drain what is queued.
        thread::sleep(Duration::from_millis(200));
    }
    let _ = handle.stop();
    let (sink, where_s) = server.join().expect("server thread");
    let via_relay = path.finish(relay);
    if load.failed > 0 {
        eprintln!("reactor run: {} session(s) failed", load.failed);
    }
    log::debug!(
        "reactor run: server echoes deferred to on_writable: {}",
        sink.blocked_count
    );
    let run = if echo {
        let elapsed = match (load.start, load.end) {
            (Some(s), Some(e)) => (e - s).as_secs_f64(),
            _ => 0.0,
        };
        Run {
            sent: load.sent,
            received: load.received,
            elapsed: elapsed.max(1e-9),
        }
    } else {
        let elapsed = match (sink.first, sink.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => 0.0,
        };
        Run {
            sent: load.sent,
            received: sink.received,
            elapsed: elapsed.max(dur.as_secs_f64() * 0.5),
        }
    };
    (
        run,
        format!(
            "client reactor {where_c}, server reactor {where_s}{via_relay}{}",
            if load.start.is_none() {
                " (setup incomplete)"
            } else {
                ""
            }
        ),
    )
}
