//! An endpoint: one shared socket, its connections, and the task that drives
//! them (reads the socket, fires the DTLS timers, admits new peers through the
//! front door).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use ::tokio::io::unix::AsyncFd;
use ::tokio::sync::Notify;
use dtls_demux::batch::{RecvBatch, MAX_SEND};
use dtls_demux::{Flow, SharedSocket};

use crate::conn::{Connection, Event, Role};
use crate::error::{Error, Result};
use crate::record::Datagram;
use crate::{Admit, FrontDoor};

/// Messages per `recvmmsg` of the driver.
const RECV_SLOTS: usize = 32;
/// Batches the driver reads per wake-up before it lets other tasks run: the
/// readers, whose connections queue at most 64 datagrams each.
const BATCHES_PER_WAKE: usize = 1;
/// Connections waiting for the socket the driver flushes per writable wake-up
/// before it lets other tasks run (each queues at most 64 datagrams).
const FLUSHES_PER_WAKE: usize = 64;

/// Locks a mutex, ignoring poisoning (every critical section leaves the data
/// consistent: a panic in a user's task cannot corrupt a connection's queue).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `AsyncFd` registers: the shared socket's descriptor.
pub(super) struct Fd(Arc<SharedSocket>);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.socket().as_raw_fd()
    }
}

/// One connection of an endpoint, shared by the driver and the user's
/// handles.
pub(super) struct Cell {
    pub(super) id: u64,
    pub(super) flow: Flow,
    pub(super) inner: Mutex<CellInner>,
}

pub(super) struct CellInner {
    pub(super) conn: Connection,
    /// A task waiting in `recv`.
    pub(super) read_waker: Option<Waker>,
    /// A task waiting for the handshake (`connect`, `handshake`).
    pub(super) ready_waker: Option<Waker>,
    /// Tasks waiting until the datagrams they queued left (`send`,
    /// `shutdown`; several tasks may send on one stream).
    send_wakers: Vec<Waker>,
    /// Its queued datagrams wait for room in the socket: its id is in
    /// `Endpoint::waiting`, and the driver sends them when the socket is
    /// writable.
    waiting: bool,
    /// The DTLS timer this connection armed last.
    armed: Option<(Instant, u64)>,
    /// The peer restarted and a new connection took over.
    pub(super) restarted: bool,
    /// Left the endpoint's table (closed and settled, or dropped).
    pub(super) gone: bool,
}

impl CellInner {
    fn wake_all(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.ready_waker.take() {
            w.wake();
        }
        self.wake_senders();
    }

    fn wake_senders(&mut self) {
        for w in self.send_wakers.drain(..) {
            w.wake();
        }
    }

    /// Parks a task until the driver sent what waits (see
    /// [`Endpoint::flush_or_wait`]).
    pub(super) fn park_sender(&mut self, waker: &Waker) {
        if !self.send_wakers.iter().any(|w| w.will_wake(waker)) {
            self.send_wakers.push(waker.clone());
        }
    }
}

/// How [`Endpoint::flush_or_wait`] left a connection.
pub(super) enum Flushed {
    /// Nothing is queued.
    Done,
    /// The rest waits for the socket; the driver sends it when it is writable
    /// and wakes the connection's parked senders then.
    Waiting,
}

/// Lock order: `State`, then a `Cell`; `timers`, `accept_waker`, `removals`,
/// `waiting` are leaves (nothing is locked while one is held).
struct State {
    cells: HashMap<u64, Arc<Cell>>,
    door: Option<FrontDoor>,
    /// Server: admitted connections not handed out yet, oldest first.
    pending: VecDeque<Arc<Cell>>,
    /// The owner (listener, or a client's stream) is gone: the driver ends
    /// when the last connection has left.
    closing: bool,
}

/// An endpoint: what a listener or a client stream shares with its driver.
pub(super) struct Endpoint {
    pub(super) socket: Arc<SharedSocket>,
    pub(super) fd: AsyncFd<Fd>,
    state: Mutex<State>,
    timers: Mutex<BTreeMap<(Instant, u64), u64>>,
    seq: AtomicU64,
    next_id: AtomicU64,
    accept_waker: Mutex<Option<Waker>>,
    /// Cells to take out of the table (closed), settled by the driver.
    removals: Mutex<Vec<u64>>,
    /// Cells whose queued datagrams found the socket full, in that order: the
    /// driver sends them when the socket is writable again.
    waiting: Mutex<VecDeque<u64>>,
    /// Wakes the driver: a deadline moved, a connection closed, the owner left.
    notify: Notify,
}

impl Endpoint {
    /// An endpoint on `socket` (a server's with its front door); must be
    /// called inside a tokio runtime. Its driver is not running yet.
    pub(super) fn new(socket: Arc<SharedSocket>, door: Option<FrontDoor>) -> io::Result<Arc<Self>> {
        let fd = AsyncFd::new(Fd(socket.clone()))?;
        Ok(Arc::new(Endpoint {
            socket,
            fd,
            state: Mutex::new(State {
                cells: HashMap::new(),
                door,
                pending: VecDeque::new(),
                closing: false,
            }),
            timers: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            accept_waker: Mutex::new(None),
            removals: Mutex::new(Vec::new()),
            waiting: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        }))
    }

    /// Starts the driver task.
    pub(super) fn spawn_driver(self: &Arc<Self>) {
        let ep = self.clone();
        ::tokio::spawn(async move { ep.drive().await });
    }

    /// Puts a new connection for `flow` in the table; server connections wait
    /// for `accept`.
    fn insert(&self, st: &mut State, flow: Flow, conn: Connection) -> io::Result<Arc<Cell>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.socket.attach(flow, id)?;
        let server = conn.role() == Role::Server;
        let cell = Arc::new(Cell {
            id,
            flow,
            inner: Mutex::new(CellInner {
                conn,
                read_waker: None,
                ready_waker: None,
                send_wakers: Vec::new(),
                waiting: false,
                armed: None,
                restarted: false,
                gone: false,
            }),
        });
        st.cells.insert(id, cell.clone());
        if server {
            st.pending.push_back(cell.clone());
        }
        Ok(cell)
    }

    /// A client's connection on this endpoint (which has no door).
    pub(super) fn add_client(&self, flow: Flow, conn: Connection) -> io::Result<Arc<Cell>> {
        let cell = self.insert(&mut lock(&self.state), flow, conn)?;
        let mut ci = lock(&cell.inner);
        self.settle(&cell, &mut ci);
        drop(ci);
        Ok(cell)
    }

    /// The driver: reads the socket, fires timers, removes closed
    /// connections; ends when the owner is gone and no connection is left.
    async fn drive(self: Arc<Self>) {
        let mut batch = RecvBatch::new(RECV_SLOTS);
        let mut out = Vec::with_capacity(RECV_SLOTS);
        loop {
            self.settle_removals();
            {
                let st = lock(&self.state);
                if st.closing && st.cells.is_empty() {
                    break;
                }
            }
            let next = lock(&self.timers).keys().next().map(|k| k.0);
            // Writability matters only while datagrams wait for it: an idle
            // driver does not wake on a socket that is always writable.
            let waiting = !lock(&self.waiting).is_empty();
            let sleep = async {
                match next {
                    Some(t) => ::tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            ::tokio::select! {
                r = self.fd.readable() => match r {
                    Ok(mut guard) => {
                        let mut drained = false;
                        for _ in 0..BATCHES_PER_WAKE {
                            match self.socket.recv_batch(&mut batch, &mut out) {
                                Ok(_) => self.dispatch(&batch, &out),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    drained = true;
                                    break;
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(e) => {
                                    self.receive_error(e);
                                    drained = true;
                                    break;
                                }
                            }
                        }
                        if drained {
                            guard.clear_ready();
                        } else {
                            // More waits: let other tasks run first.
                            ::tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => {
                        log::warn!("dtls tokio: {}: polling failed: {e}", self.socket.local_addr());
                        break;
                    }
                },
                r = self.fd.writable(), if waiting => match r {
                    Ok(mut guard) => {
                        // Readiness is cleared only when a send returned
                        // WouldBlock.
                        if let Ok(Ok(more)) = guard.try_io(|_| self.flush_waiting()) {
                            if more {
                                ::tokio::task::yield_now().await;
                            }
                        }
                    }
                    Err(e) => {
                        log::warn!("dtls tokio: {}: polling failed: {e}", self.socket.local_addr());
                        break;
                    }
                },
                _ = sleep => self.fire_timers(Instant::now()),
                _ = self.notify.notified() => {}
            }
        }
        log::debug!("dtls tokio: {}: driver ended", self.socket.local_addr());
    }

    /// A receive error of the socket: on a client's connected socket an ICMP
    /// port unreachable ends its connection; anything else is logged.
    fn receive_error(&self, e: io::Error) {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            let cells: Vec<Arc<Cell>> = lock(&self.state).cells.values().cloned().collect();
            for cell in cells {
                let mut ci = lock(&cell.inner);
                if ci.conn.role() == Role::Client && ci.conn.is_handshaking() {
                    ci.conn.abort(Error::PeerUnreachable(io::Error::from(
                        io::ErrorKind::ConnectionRefused,
                    )));
                    self.settle(&cell, &mut ci);
                }
            }
            return;
        }
        log::debug!(
            "dtls tokio: {}: receive failed: {e}",
            self.socket.local_addr()
        );
    }

    /// Hands each datagram of a batch to its connection, or to the front door.
    fn dispatch(&self, batch: &RecvBatch, out: &[dtls_demux::FlowDatagram]) {
        for fd in out {
            let d = batch.get(fd.index);
            // A flow attached by an earlier datagram of this batch was unknown
            // when the batch was read.
            let token = fd.token.or_else(|| self.socket.token(fd.flow));
            let cell = token.and_then(|t| lock(&self.state).cells.get(&t).cloned());
            match cell {
                Some(cell) => self.ingest(&cell, d),
                None => self.unknown(fd.flow, d),
            }
        }
    }

    /// One datagram of a connection's peer.
    fn ingest(&self, cell: &Arc<Cell>, d: &[u8]) {
        let view = Datagram::parse(d);
        let mut ci = lock(&cell.inner);
        if ci.restarted || ci.gone {
            return;
        }
        if FrontDoor::wants(&ci.conn, &view) {
            drop(ci);
            self.restart(cell, &view);
            return;
        }
        let _ = ci.conn.feed_datagram(&view);
        self.settle(cell, &mut ci);
    }

    /// A datagram from a flow without a connection: the front door decides.
    fn unknown(&self, flow: Flow, d: &[u8]) {
        let mut st = lock(&self.state);
        let Some(door) = st.door.as_mut() else {
            log::trace!("dtls tokio: datagram of {flow}, which has no connection here, dropped");
            return;
        };
        let incoming = match door.handle(flow.remote, &Datagram::parse(d)) {
            Admit::Reply(r) => {
                self.send_raw(&r, flow);
                return;
            }
            Admit::Drop(_) => return,
            Admit::Incoming(i) => i,
        };
        match door.accept(incoming) {
            Ok(conn) => match self.insert(&mut st, flow, conn) {
                Ok(cell) => {
                    let mut ci = lock(&cell.inner);
                    self.settle(&cell, &mut ci);
                }
                Err(e) => log::warn!("dtls tokio: {flow}: not attached: {e}"),
            },
            Err(refusal) => {
                if let Some(a) = &refusal.alert {
                    self.send_raw(a, flow);
                }
                log::debug!("dtls tokio: {flow} refused: {}", refusal.error);
            }
        }
    }

    /// An epoch-0 ClientHello on an established server connection (RFC 6347
    /// section 4.2.8): the front door decides; a restart accepted ends the
    /// old connection (`PeerRestarted`) and queues the new one for `accept`.
    fn restart(&self, old: &Arc<Cell>, view: &Datagram<'_>) {
        let mut st = lock(&self.state);
        let mut ci = lock(&old.inner);
        let Some(door) = st.door.as_mut() else {
            return;
        };
        let incoming = match door.handle_established(&ci.conn, view) {
            Admit::Reply(r) => {
                self.send_raw(&r, old.flow);
                return;
            }
            Admit::Drop(_) => return,
            Admit::Incoming(i) => i,
        };
        match door.accept_restart(incoming, &mut ci.conn) {
            Ok(conn) => {
                ci.restarted = true;
                ci.gone = true;
                ci.wake_all();
                self.disarm(&mut ci);
                self.unwait(old, &mut ci);
                drop(ci);
                st.cells.remove(&old.id);
                st.pending.retain(|c| c.id != old.id);
                self.socket.detach(old.flow);
                log::debug!("dtls tokio: {} restarted", old.flow);
                match self.insert(&mut st, old.flow, conn) {
                    Ok(cell) => {
                        let mut ci = lock(&cell.inner);
                        self.settle(&cell, &mut ci);
                    }
                    Err(e) => log::warn!("dtls tokio: {}: not attached: {e}", old.flow),
                }
            }
            Err(refusal) => {
                if let Some(a) = &refusal.alert {
                    self.send_raw(a, old.flow);
                }
            }
        }
    }

    /// Fires every DTLS timer due at `now`.
    fn fire_timers(&self, now: Instant) {
        loop {
            let due = {
                let mut t = lock(&self.timers);
                match t.keys().next().copied() {
                    Some(k) if k.0 <= now => t.remove(&k).map(|id| (k, id)),
                    _ => None,
                }
            };
            let Some(((at, seq), id)) = due else {
                return;
            };
            let Some(cell) = lock(&self.state).cells.get(&id).cloned() else {
                continue;
            };
            let mut ci = lock(&cell.inner);
            if ci.armed != Some((at, seq)) {
                continue;
            }
            ci.armed = None;
            let _ = ci.conn.handle_timeout(now);
            self.settle(&cell, &mut ci);
        }
    }

    /// After anything happened to a connection: its datagrams out, waiters
    /// woken, the timer re-armed, a closed one marked for removal.
    pub(super) fn settle(&self, cell: &Cell, ci: &mut CellInner) {
        self.flush_or_wait(cell, ci);
        let mut accept = false;
        while let Some(ev) = ci.conn.poll_event() {
            match ev {
                Event::Connected => {
                    if let Some(w) = ci.ready_waker.take() {
                        w.wake();
                    }
                    accept = ci.conn.role() == Role::Server;
                }
                Event::Closed(_) => {
                    ci.wake_all();
                    accept = ci.conn.role() == Role::Server;
                }
            }
        }
        if ci.conn.has_pending() {
            if let Some(w) = ci.read_waker.take() {
                w.wake();
            }
        }
        if accept {
            if let Some(w) = lock(&self.accept_waker).take() {
                w.wake();
            }
        }
        self.rearm(cell, ci);
    }

    /// Re-arms the connection's DTLS timer from its deadline.
    fn rearm(&self, cell: &Cell, ci: &mut CellInner) {
        let want = if ci.gone { None } else { ci.conn.deadline() };
        if ci.armed.map(|a| a.0) == want {
            return;
        }
        let mut t = lock(&self.timers);
        if let Some(old) = ci.armed.take() {
            t.remove(&old);
        }
        if let Some(at) = want {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            t.insert((at, seq), cell.id);
            ci.armed = Some((at, seq));
        }
        drop(t);
        // The driver may be sleeping until a later deadline.
        self.notify.notify_one();
    }

    fn disarm(&self, ci: &mut CellInner) {
        if let Some(old) = ci.armed.take() {
            lock(&self.timers).remove(&old);
        }
    }

    /// Sends what the connection queued; what the socket does not take now
    /// waits in the connection, which joins the driver's waiting list (the
    /// driver sends it as soon as the socket is writable). Whoever holds the
    /// connection (a task, the driver) flushes it this way: one rule, a
    /// queued datagram leaves as soon as the socket takes it.
    pub(super) fn flush_or_wait(&self, cell: &Cell, ci: &mut CellInner) -> Flushed {
        match self.try_flush(cell, ci) {
            Ok(()) => Flushed::Done,
            Err(_would_block) => {
                if !ci.waiting && !ci.gone {
                    ci.waiting = true;
                    lock(&self.waiting).push_back(cell.id);
                    // The driver may be asleep without watching writability.
                    self.notify.notify_one();
                }
                Flushed::Waiting
            }
        }
    }

    /// The socket is writable: sends what the waiting connections queued,
    /// oldest first. `Err(WouldBlock)` when the socket is full again (the
    /// rest keep their place); `Ok(true)` when more wait beyond this turn's
    /// share.
    fn flush_waiting(&self) -> io::Result<bool> {
        let mut ids: VecDeque<u64> = {
            let mut w = lock(&self.waiting);
            let n = w.len().min(FLUSHES_PER_WAKE);
            w.drain(..n).collect()
        };
        while let Some(id) = ids.pop_front() {
            // Removed meanwhile: its entry left with it.
            let Some(cell) = lock(&self.state).cells.get(&id).cloned() else {
                continue;
            };
            let mut ci = lock(&cell.inner);
            if !ci.waiting {
                continue;
            }
            if let Err(e) = self.try_flush(&cell, &mut ci) {
                drop(ci);
                // Back in front, in their order, before any that joined since.
                ids.push_front(id);
                let mut w = lock(&self.waiting);
                for id in ids.into_iter().rev() {
                    w.push_front(id);
                }
                return Err(e);
            }
            ci.waiting = false;
            ci.wake_senders();
            // Sending may have ended it (an unreachable peer).
            self.settle(&cell, &mut ci);
        }
        Ok(!lock(&self.waiting).is_empty())
    }

    /// Takes a connection that leaves the table off the waiting list.
    fn unwait(&self, cell: &Cell, ci: &mut CellInner) {
        if ci.waiting {
            ci.waiting = false;
            lock(&self.waiting).retain(|&id| id != cell.id);
        }
    }

    /// Sends what the connection has queued without waiting; `WouldBlock`
    /// when the socket is full (the rest stays queued). Callers go through
    /// [`flush_or_wait`](Endpoint::flush_or_wait), which keeps the rest
    /// moving.
    fn try_flush(&self, cell: &Cell, ci: &mut CellInner) -> io::Result<()> {
        loop {
            let mut out: [&[u8]; MAX_SEND] = [&[]; MAX_SEND];
            let mut n = 0;
            for (slot, d) in out.iter_mut().zip(ci.conn.transmits()) {
                *slot = d;
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            match self.socket.send_on(cell.flow, &out[..n]) {
                Ok(sent) => ci.conn.pop_transmits(sent),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    // Not sendable (too large for the path, an unreachable
                    // destination): dropped so the queue cannot jam.
                    log::debug!("dtls tokio: send to {} failed: {e}", cell.flow);
                    ci.conn.pop_transmits(1);
                    if ci.conn.role() == Role::Client
                        && e.kind() == io::ErrorKind::ConnectionRefused
                        && !ci.conn.is_closed()
                    {
                        ci.conn.abort(Error::PeerUnreachable(e));
                    }
                }
            }
        }
    }

    /// A datagram that belongs to no connection (HelloVerifyRequest, alert).
    fn send_raw(&self, d: &[u8], flow: Flow) {
        if let Err(e) = self.socket.send_to(d, flow) {
            log::trace!("dtls tokio: reply to {flow} failed: {e}");
        }
    }

    /// The user is done with connection `cell` (its handle dropped, or shut
    /// down): out of the table; the driver settles it.
    pub(super) fn release(&self, cell: &Cell) {
        lock(&self.removals).push(cell.id);
        self.notify.notify_one();
    }

    fn settle_removals(&self) {
        let ids = std::mem::take(&mut *lock(&self.removals));
        if ids.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        for id in ids {
            if let Some(cell) = st.cells.remove(&id) {
                let mut ci = lock(&cell.inner);
                ci.gone = true;
                self.disarm(&mut ci);
                self.unwait(&cell, &mut ci);
                ci.wake_all();
                if !ci.restarted {
                    self.socket.detach(cell.flow);
                }
            }
            st.pending.retain(|c| c.id != id);
        }
    }

    /// The owner is gone: connections nobody took are closed; the driver
    /// ends once the last connection left.
    pub(super) fn close_owner(&self) {
        let pending: Vec<Arc<Cell>> = {
            let mut st = lock(&self.state);
            st.closing = true;
            st.pending.drain(..).collect()
        };
        for cell in pending {
            let mut ci = lock(&cell.inner);
            ci.conn.close();
            self.flush_or_wait(&cell, &mut ci);
            drop(ci);
            self.release(&cell);
        }
        self.notify.notify_one();
    }

    /// The first pending connection that `ready` accepts (established ones
    /// for `accept`, any for `accept_handshaking`), taken out of the queue;
    /// closed ones are dropped on the way. `None`: the waker is kept.
    pub(super) fn take_pending(&self, established_only: bool, waker: &Waker) -> Option<Arc<Cell>> {
        let mut st = lock(&self.state);
        let mut i = 0;
        let mut dead = Vec::new();
        while i < st.pending.len() {
            let (ok, closed) = {
                let ci = lock(&st.pending[i].inner);
                (
                    !established_only || ci.conn.is_established(),
                    ci.conn.is_closed() && !ci.conn.is_established(),
                )
            };
            if closed {
                if let Some(c) = st.pending.remove(i) {
                    dead.push(c);
                }
                continue;
            }
            if ok {
                return st.pending.remove(i);
            }
            i += 1;
        }
        drop(st);
        for c in dead {
            self.release(&c);
        }
        *lock(&self.accept_waker) = Some(waker.clone());
        None
    }

    /// The local address.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// The front door's admission counters, for a server endpoint.
    pub(super) fn admission_stats(&self) -> Option<crate::AdmissionStats> {
        lock(&self.state)
            .door
            .as_ref()
            .map(|d| d.admission().stats())
    }

    /// Replaces the front door's configuration (see [`FrontDoor::set_config`]).
    pub(super) fn set_config(&self, config: &crate::ServerConfig) -> Result<()> {
        match lock(&self.state).door.as_mut() {
            Some(d) => d.set_config(config),
            None => Err(Error::NotConnected),
        }
    }
}
