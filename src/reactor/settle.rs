//! Settling a connection: its events and plaintext to the handler, its
//! datagrams out, a forced close, then removal or re-arming ([`Reactor::pump`]).

use std::time::Instant;

use super::{CloseCause, ConnId, Ctx, Handler, Reactor, SharedStats};
use crate::conn::Event;

impl<H: Handler> Reactor<H> {
    /// Reports the connection's events and delivers all plaintext it holds.
    pub(super) fn deliver(&mut self, key: usize) {
        loop {
            self.events_of(key);
            let Some(e) = self.inner.conns.get_mut(key) else {
                return;
            };
            if e.closed || !e.conn.has_pending() {
                return;
            }
            let gen = e.gen;
            match e.conn.recv(&mut self.plain) {
                Ok(Some(n)) => {
                    let id = ConnId { key, gen };
                    let Reactor {
                        inner,
                        handler,
                        plain,
                        ..
                    } = self;
                    handler.on_data(&mut Ctx { inner }, id, &plain[..n]);
                }
                Ok(None) => {
                    self.events_of(key);
                    return;
                }
                Err(_) => {
                    self.events_of(key);
                    return;
                }
            }
        }
    }

    /// Hands the connection's queued events to the handler.
    pub(super) fn events_of(&mut self, key: usize) {
        loop {
            let Some(e) = self.inner.conns.get_mut(key) else {
                return;
            };
            if e.closed {
                return;
            }
            let Some(ev) = e.conn.poll_event() else {
                return;
            };
            let id = ConnId { key, gen: e.gen };
            match ev {
                Event::Connected => {
                    self.inner.gauge();
                    SharedStats::inc(&self.inner.stats.connected);
                    self.inner.arm_idle(key, Instant::now());
                    self.inner.arm_shrink(key, Instant::now());
                    let (h, mut ctx) = self.ctx_handler();
                    h.on_connected(&mut ctx, id);
                }
                Event::Closed(reason) => {
                    let cause = CloseCause::from(&reason);
                    match cause {
                        CloseCause::HandshakeTimeout => {
                            SharedStats::inc(&self.inner.stats.handshake_timeouts)
                        }
                        CloseCause::PeerSilent => SharedStats::inc(&self.inner.stats.silent_peers),
                        _ => {}
                    }
                    self.report_close(key, cause);
                }
            }
        }
    }

    /// The connection ended: the handler hears why ([`Handler::on_close`])
    /// and the entry is settled (removed) when the dirty queue runs.
    pub(super) fn report_close(&mut self, key: usize, cause: CloseCause) {
        if self.tell_closed(key, &cause) {
            self.inner.dirty.push_back(key);
        }
    }

    /// The handler hears that `key`'s connection ended, once (the entry is
    /// marked closed; removing or reusing it is the caller's). False if it
    /// was gone or already closed.
    pub(super) fn tell_closed(&mut self, key: usize, cause: &CloseCause) -> bool {
        let Some(e) = self.inner.conns.get_mut(key) else {
            return false;
        };
        if e.closed {
            return false;
        }
        e.closed = true;
        let id = ConnId { key, gen: e.gen };
        log::debug!("reactor: {} {id} closed: {cause:?}", e.peer);
        let (h, mut ctx) = self.ctx_handler();
        h.on_close(&mut ctx, id, cause);
        true
    }

    /// After anything happened to a connection: deliver, send, close or re-arm.
    pub(super) fn pump(&mut self, key: usize) {
        if !self.inner.conns.contains(key) {
            return;
        }
        self.deliver(key);
        self.inner.flush(key);
        let forced =
            self.inner.conns.get_mut(key).and_then(
                |e| {
                    if e.closed {
                        None
                    } else {
                        e.forced.take()
                    }
                },
            );
        if let Some(cause) = forced {
            if let Some(e) = self.inner.conns.get_mut(key) {
                if !matches!(cause, CloseCause::Failed(_)) {
                    e.conn.close();
                }
                while e.conn.poll_event().is_some() {}
            }
            self.inner.flush(key);
            self.report_close(key, cause);
        }
        match self.inner.conns.get(key) {
            Some(e) if e.closed => {
                self.inner.flush(key);
                self.inner.remove(key);
            }
            Some(_) => self.inner.rearm(key),
            None => {}
        }
    }
}
