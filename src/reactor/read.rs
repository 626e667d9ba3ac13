//! Reading: listeners (through the demux and the front door) and connection
//! sockets, in batches up to the budget; the listener's admission of new and
//! restarted peers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dtls_demux::batch::RecvBatch;
use dtls_demux::{Demux, Flow, Incoming, Route, SharedSocket};

use super::entry::Io;
use super::listener::Port;
use super::session::{Plain, Session};
use super::{CloseCause, Handler, Inner, ListenerId, Reactor, SharedStats, RECV_SLOTS};
use crate::admission::Count;
use crate::conn::Role;
use crate::error::Error;
use crate::record::Datagram;
use crate::{Admit, FrontDoor, Refusal};

impl<H: Handler> Reactor<H> {
    /// Reads the listener in batches up to the budget: unknown peers go to the
    /// front door, datagrams of known peers were handed to their link by the
    /// demux (a link's memory queue makes its connection ready).
    pub(super) fn drain_listener(&mut self, li: usize) {
        let demux = match &self.inner.listeners[li].port {
            Port::Demux(d) => d.clone(),
            Port::Shared(_) => return self.drain_shared(li),
        };
        let mut batch = self
            .inner
            .lbatch
            .take()
            .unwrap_or_else(|| RecvBatch::new(RECV_SLOTS));
        let mut got = std::mem::take(&mut self.received);
        let budget = self.inner.limits.datagrams_per_turn;
        let mut done = 0;
        let mut exhausted = true;
        while done < budget {
            match demux.recv_batch(&mut batch, &mut got) {
                Ok(n) => {
                    SharedStats::add(&self.inner.stats.datagrams_in, n as u64);
                    done += n.max(1);
                    for r in &got {
                        match r.incoming {
                            Incoming::Unknown { peer, .. } => {
                                let d = batch.get(r.index);
                                match self.inner.listeners[li].peers.get(&peer) {
                                    // Attached by an earlier datagram of this batch.
                                    Some(&k) => {
                                        if demux.route(peer, d) == Route::Delivered {
                                            self.inner.mark_ready(k);
                                        }
                                    }
                                    None => self.unknown(li, Via::Demux(&demux), peer, d),
                                }
                            }
                            Incoming::Routed {
                                peer,
                                route: Route::Delivered,
                            } => {
                                if let Some(&k) = self.inner.listeners[li].peers.get(&peer) {
                                    self.inner.mark_ready(k);
                                }
                            }
                            // Forwarded (its link socket becomes readable), or a
                            // later demux's own handling: nothing to do.
                            _ => {}
                        }
                        self.run_dirty();
                    }
                    if batch.socket_drained() && !demux.has_buffered() {
                        exhausted = false;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    exhausted = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    SharedStats::inc(&self.inner.stats.io_errors);
                    log::warn!("reactor: listener {li}: receive failed: {e}");
                    break;
                }
            }
        }
        batch.clear();
        got.clear();
        self.inner.lbatch = Some(batch);
        self.received = got;
        let l = &mut self.inner.listeners[li];
        l.pending = exhausted || l.port.has_buffered();
    }

    /// A datagram from a peer without a connection on listener `li`: the
    /// front door decides; an incoming peer is put to the handler
    /// ([`Handler::on_accept`]) before its handshake starts.
    pub(super) fn unknown(&mut self, li: usize, via: Via<'_>, peer: SocketAddr, data: &[u8]) {
        if !self.inner.listeners[li].accepts {
            log::trace!("reactor: datagram of {peer}, which has no session here, dropped");
            return;
        }
        let Some(door) = self.inner.listeners[li].door.as_mut() else {
            self.unknown_plain(li, via, peer, data);
            return;
        };
        let incoming = match door.handle(peer, &Datagram::parse(data)) {
            Admit::Reply(r) => {
                via.reply(&mut self.inner, &r, peer);
                return;
            }
            Admit::Drop(_) => return,
            Admit::Incoming(i) => i,
        };
        let Some(incoming) = self.consent(li, incoming) else {
            return;
        };
        let Some(door) = self.inner.listeners[li].door.as_mut() else {
            return;
        };
        match door.accept(incoming) {
            Ok(conn) => {
                self.open(li, via, peer, Session::Dtls(Box::new(conn)));
            }
            Err(refusal) => self.refused(refusal, |inner, a| via.reply(inner, a, peer)),
        }
    }

    /// Plain UDP: the first datagram opens the session (within the caps, if
    /// the handler accepts) and is its first data.
    pub(super) fn unknown_plain(&mut self, li: usize, via: Via<'_>, peer: SocketAddr, data: &[u8]) {
        let admission = self.inner.stats.admission.clone();
        let slot = match admission.take(false) {
            Ok(s) => s,
            Err(cap) => {
                admission.dropped(cap);
                log::trace!("reactor: {peer} dropped: {cap}");
                return;
            }
        };
        if !self.ask_accept(peer, li) {
            admission.count(Count::PolicyRefused);
            return;
        }
        let conn = Session::Plain(Box::new(Plain::new(Role::Server, slot)));
        if let Some(key) = self.open(li, via, peer, conn) {
            if let Some(e) = self.inner.conns.get_mut(key) {
                let _ = e.conn.feed(data);
            }
            self.pump(key);
        }
    }

    /// Puts a peer the front door let in to the handler: the peer back when
    /// it accepts, else `None` (refused through the door).
    fn consent(&mut self, li: usize, incoming: crate::Incoming) -> Option<crate::Incoming> {
        if self.ask_accept(incoming.peer(), li) {
            return Some(incoming);
        }
        if let Some(door) = self.inner.listeners[li].door.as_mut() {
            door.refuse(incoming);
        }
        None
    }

    /// Asks the handler whether to take `peer` on listener `li`.
    pub(super) fn ask_accept(&mut self, peer: SocketAddr, li: usize) -> bool {
        let (h, mut ctx) = self.ctx_handler();
        let yes = h.on_accept(&mut ctx, peer, ListenerId(li));
        if !yes {
            log::debug!("reactor: {peer} refused by the handler");
        }
        yes
    }

    /// The front door could not start a handshake: the alert goes out through
    /// `send`, the handler hears why (unless a cap filled, which is counted).
    pub(super) fn refused(&mut self, r: Refusal, send: impl FnOnce(&mut Inner, &[u8])) {
        if let Some(a) = &r.alert {
            send(&mut self.inner, a);
        }
        if !matches!(r.error, Error::Limit(_)) {
            let (h, mut ctx) = self.ctx_handler();
            h.on_error(&mut ctx, None, &r.error);
        }
    }

    /// A new server session of listener `li` for `peer`: attaches its link
    /// (or enters its flow in the shared socket's table), registers it and
    /// sends what it has queued (the first flight).
    pub(super) fn open(
        &mut self,
        li: usize,
        via: Via<'_>,
        peer: SocketAddr,
        conn: Session,
    ) -> Option<usize> {
        let stats = self.inner.stats.clone();
        let io = match via.io(peer) {
            Ok(io) => io,
            Err(e) => {
                SharedStats::inc(&stats.io_errors);
                log::warn!("reactor: no link could be attached for {peer}: {e}");
                return None;
            }
        };
        let (key_peer, queued) = match &io {
            Io::Link(link) => (Some(link.peer_addr()), link.has_queued()),
            _ => (None, false),
        };
        let id = match self.inner.insert(conn, io, peer, Some(li)) {
            Ok(id) => id,
            Err(e) => {
                SharedStats::inc(&stats.io_errors);
                log::warn!("reactor: register of {peer} failed: {e}");
                return None;
            }
        };
        SharedStats::inc(&stats.accepted);
        if let Some(p) = key_peer {
            self.inner.listeners[li].peers.insert(p, id.key);
        }
        if queued {
            self.inner.mark_ready(id.key);
        }
        self.pump(id.key);
        Some(id.key)
    }

    /// An epoch-0 ClientHello arrived on the link of the established server
    /// connection `key` of listener `li`: the front door decides (RFC 6347
    /// section 4.2.8). Unless it lets a restarted peer in and the handler
    /// accepts it, the session stays as it is.
    pub(super) fn restart(&mut self, key: usize, li: usize, d: &Datagram<'_>) {
        let inner = &mut self.inner;
        let (Some(door), Some(e)) = (inner.listeners[li].door.as_mut(), inner.conns.get_mut(key))
        else {
            return;
        };
        let Some(old) = e.conn.as_dtls() else {
            return;
        };
        let incoming = match door.handle_established(old, d) {
            Admit::Reply(r) => {
                inner.send_raw(key, &r);
                return;
            }
            Admit::Drop(_) => return,
            Admit::Incoming(i) => i,
        };
        let Some(incoming) = self.consent(li, incoming) else {
            return;
        };
        let inner = &mut self.inner;
        let (Some(door), Some(e)) = (inner.listeners[li].door.as_mut(), inner.conns.get_mut(key))
        else {
            return;
        };
        let Some(old) = e.conn.as_dtls_mut() else {
            return;
        };
        match door.accept_restart(incoming, old) {
            Ok(conn) => self.replace(key, conn),
            Err(refusal) => self.refused(refusal, |inner, a| inner.send_raw(key, a)),
        }
    }

    /// One datagram from connection `key`'s peer: to the front door when it
    /// may be the peer restarting, else into the connection, its plaintext
    /// delivered. False when the connection takes no more (gone, closed,
    /// closing).
    pub(super) fn ingest(&mut self, key: usize, d: &[u8]) -> bool {
        let Some(e) = self.inner.conns.get_mut(key) else {
            return false;
        };
        if e.closed || e.forced.is_some() {
            return false;
        }
        let view = e.conn.as_dtls().map(|c| {
            let v = Datagram::parse(d);
            (FrontDoor::wants(c, &v), v)
        });
        if let (Some((true, v)), Some(li)) = (&view, e.listener) {
            // The front door's (the peer may have restarted): not fed
            // to the established session and not counted as life of it.
            self.restart(key, li, v);
            return true;
        }
        e.last_rx = Instant::now();
        if e.shrink_armed.is_none() && !e.conn.is_handshaking() {
            // Shrunk while quiet: watch for the next quiet spell.
            let at = e.last_rx;
            self.inner.arm_shrink(key, at);
        }
        let Some(e) = self.inner.conns.get_mut(key) else {
            return false;
        };
        let _ = match (&mut e.conn, &view) {
            (Session::Dtls(c), Some((_, v))) => c.feed_datagram(v),
            (other, _) => other.feed(d),
        };
        self.deliver(key);
        true
    }

    /// Reads a connection's socket (and memory queue) up to the budget, a batch
    /// of datagrams per system call; what the handler sends in reply goes out
    /// batched after each batch.
    pub(super) fn read_conn(&mut self, key: usize) {
        let mut batch = self
            .inner
            .batch
            .take()
            .unwrap_or_else(|| RecvBatch::new(RECV_SLOTS));
        let budget = self.inner.limits.datagrams_per_turn;
        let mut done = 0;
        let mut exhausted = true;
        let truncated = batch.truncated();
        'read: while done < budget {
            let Some(e) = self.inner.conns.get_mut(key) else {
                exhausted = false;
                break;
            };
            if e.closed || e.forced.is_some() {
                exhausted = false;
                break;
            }
            let from_memory = e.io.has_queued();
            match e.io.recv_batch(&mut batch) {
                Ok(n) => {
                    SharedStats::add(&self.inner.stats.datagrams_in, n as u64);
                    if !from_memory {
                        SharedStats::inc(&self.inner.stats.recv_batches);
                    }
                    done += n.max(1);
                    for i in 0..n {
                        if !self.ingest(key, batch.get(i)) {
                            exhausted = false;
                            break 'read;
                        }
                    }
                    self.inner.flush(key);
                    self.inner.flush_unflushed();
                    if !from_memory && batch.socket_drained() {
                        // The socket's queue was empty when the batch ended: with
                        // edge-triggered polling the next datagram raises a new event.
                        exhausted = false;
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    exhausted = false;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    SharedStats::inc(&self.inner.stats.io_errors);
                    log::debug!("reactor: receive from {} failed: {err}", e.peer);
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected
                    ) {
                        e.forced =
                            Some(CloseCause::Failed(Error::PeerUnreachable(err).to_string()));
                    }
                    exhausted = false;
                    break;
                }
            }
        }
        let cut = batch.truncated() - truncated;
        if cut > 0 {
            SharedStats::add(&self.inner.stats.datagrams_in, cut);
            SharedStats::add(&self.inner.stats.oversized, cut);
        }
        batch.clear();
        self.inner.batch = Some(batch);
        let more = self
            .inner
            .conns
            .get(key)
            .is_some_and(|e| !e.closed && e.io.has_queued());
        if exhausted || more {
            self.inner.mark_ready(key);
        }
        self.pump(key);
    }
}

/// Where a listener's new peer is reached: through its demux (a link to
/// attach) or on a flow of its shared socket.
#[derive(Clone, Copy)]
pub(super) enum Via<'a> {
    Demux(&'a Arc<dyn Demux>),
    Shared(&'a Arc<SharedSocket>, Flow, usize),
}

impl Via<'_> {
    /// Sends a front door's reply (a HelloVerifyRequest, an alert) to `peer`,
    /// which has no connection.
    fn reply(self, inner: &mut Inner, d: &[u8], peer: SocketAddr) {
        let r = match self {
            Via::Demux(demux) => demux.send_to(d, peer),
            Via::Shared(socket, flow, _) => socket.send_to(d, flow),
        };
        match r {
            Ok(_) => SharedStats::inc(&inner.stats.datagrams_out),
            Err(e) => {
                SharedStats::inc(&inner.stats.send_errors);
                log::trace!("reactor: reply to {peer} failed: {e}");
            }
        }
    }

    /// The I/O of a new connection with `peer`.
    fn io(self, peer: SocketAddr) -> io::Result<Io> {
        match self {
            Via::Demux(demux) => {
                let link = demux.attach(peer)?;
                link.socket().set_nonblocking(true)?;
                Ok(Io::Link(link))
            }
            Via::Shared(socket, flow, li) => Ok(Io::Shared {
                li,
                socket: socket.clone(),
                flow,
            }),
        }
    }
}
