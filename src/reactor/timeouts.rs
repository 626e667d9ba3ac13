//! Arming and firing the reactor's timers (the structure is [`Timers`](super::timer::Timers)):
//! per connection the DTLS deadline (the engine's: retransmission, and the
//! handshake's silence and overall limits), the idle and quiet checks; the
//! user's timers.

use std::time::{Duration, Instant};

use super::entry::Entry;
use super::timer::Timer;
use super::{CloseCause, ConnId, DtlsTimeout, Handler, Inner, Reactor, SharedStats, TimerId};
use crate::error::Error;

/// Where an entry records the timer of one kind it armed last.
type Slot = fn(&mut Entry) -> &mut Option<(Instant, u64)>;
const DTLS: Slot = |e| &mut e.dtls_armed;
const IDLE: Slot = |e| &mut e.idle_armed;
const SHRINK: Slot = |e| &mut e.shrink_armed;

impl Inner {
    pub(super) fn set_timer(&mut self, after: Duration, token: u64) -> TimerId {
        self.next_timer += 1;
        let id = self.next_timer;
        let at = Instant::now() + after;
        let seq = self.timers.insert(at, Timer::User { id });
        self.user_timers.insert(id, (at, seq, token));
        TimerId(id)
    }

    pub(super) fn cancel_timer(&mut self, t: TimerId) -> bool {
        match self.user_timers.remove(&t.0) {
            Some((at, seq, _)) => {
                self.timers.remove(at, seq);
                true
            }
            None => false,
        }
    }

    /// Re-arms the connection's DTLS timer from its deadline.
    pub(super) fn rearm(&mut self, key: usize) {
        let Some(e) = self.conns.get_mut(key) else {
            return;
        };
        let want = e.conn.deadline();
        match (want, e.dtls_armed) {
            (None, Some((at, seq))) => {
                self.timers.remove(at, seq);
                e.dtls_armed = None;
            }
            (Some(w), Some((at, _))) if at <= w => {}
            (Some(w), old) => {
                if let Some((at, seq)) = old {
                    self.timers.remove(at, seq);
                }
                let seq = self.timers.insert(w, Timer::Dtls { key, gen: e.gen });
                e.dtls_armed = Some((w, seq));
            }
            (None, None) => {}
        }
    }

    /// Arms the quiet check of an established connection at `from` +
    /// `shrink_after` (replacing an armed one).
    pub(super) fn arm_shrink(&mut self, key: usize, from: Instant) {
        if let Some(after) = self.limits.shrink_after {
            self.arm(key, from + after, SHRINK, |key, gen| Timer::Shrink {
                key,
                gen,
            });
        }
    }

    /// Arms the idle check of an established connection at `from` +
    /// `idle_timeout` (replacing an armed one).
    pub(super) fn arm_idle(&mut self, key: usize, from: Instant) {
        if let Some(idle) = self.limits.idle_timeout {
            self.arm(key, from + idle, IDLE, |key, gen| Timer::Idle { key, gen });
        }
    }

    /// Arms the timer `make(key, gen)` of connection `key` at `at`, replacing the
    /// one recorded in the entry's `slot`.
    pub(super) fn arm(
        &mut self,
        key: usize,
        at: Instant,
        slot: Slot,
        make: fn(usize, u64) -> Timer,
    ) {
        let Some(e) = self.conns.get_mut(key) else {
            return;
        };
        if let Some((old, seq)) = slot(e).take() {
            self.timers.remove(old, seq);
        }
        let seq = self.timers.insert(at, make(key, e.gen));
        *slot(e) = Some((at, seq));
    }

    /// Removes every timer connection `key` armed (its life on the entry ends).
    pub(super) fn disarm_all(&mut self, key: usize) {
        for slot in [DTLS, IDLE, SHRINK] {
            self.disarm(key, slot);
        }
    }

    /// Removes the timer recorded in the entry's `slot`, if one is armed.
    fn disarm(&mut self, key: usize, slot: Slot) {
        if let Some((at, seq)) = self.conns.get_mut(key).and_then(|e| slot(e).take()) {
            self.timers.remove(at, seq);
        }
    }
}

impl<H: Handler> Reactor<H> {
    pub(super) fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((seq, t)) = self.inner.timers.pop_due(now) {
            match t {
                Timer::User { id } => {
                    if let Some((_, _, token)) = self.inner.user_timers.remove(&id) {
                        let (h, mut ctx) = self.ctx_handler();
                        h.on_timer(&mut ctx, TimerId(id), token);
                    }
                }
                Timer::Dtls { key, gen } => {
                    let Some(e) = self.inner.entry_mut(ConnId { key, gen }) else {
                        continue;
                    };
                    if e.dtls_armed.map(|a| a.1) != Some(seq) || e.closed {
                        continue;
                    }
                    e.dtls_armed = None;
                    let what = match e.conn.handle_timeout(now) {
                        Ok(true) => Some(DtlsTimeout::Retransmitted),
                        Ok(false) => None,
                        Err(Error::RetransmitLimit) => Some(DtlsTimeout::LimitReached),
                        Err(_) => None,
                    };
                    if what == Some(DtlsTimeout::Retransmitted) {
                        SharedStats::inc(&self.inner.stats.retransmissions);
                        self.inner.flush(key);
                    }
                    if let Some(w) = what {
                        let (h, mut ctx) = self.ctx_handler();
                        h.on_timeout(&mut ctx, ConnId { key, gen }, w);
                    }
                    self.pump(key);
                }
                Timer::Shrink { key, gen } => {
                    let Some(after) = self.inner.limits.shrink_after else {
                        continue;
                    };
                    let Some(e) = self.inner.entry_mut(ConnId { key, gen }) else {
                        continue;
                    };
                    if e.shrink_armed.map(|a| a.1) != Some(seq) || e.closed {
                        continue;
                    }
                    e.shrink_armed = None;
                    let last = e.last_rx;
                    if now.saturating_duration_since(last) >= after {
                        e.conn.shrink();
                        SharedStats::inc(&self.inner.stats.shrunk);
                    } else {
                        self.inner.arm_shrink(key, last);
                    }
                }
                Timer::Idle { key, gen } => {
                    let Some(idle) = self.inner.limits.idle_timeout else {
                        continue;
                    };
                    let Some(e) = self.inner.entry_mut(ConnId { key, gen }) else {
                        continue;
                    };
                    if e.idle_armed.map(|a| a.1) != Some(seq) {
                        continue;
                    }
                    e.idle_armed = None;
                    let last = e.last_rx;
                    if now.saturating_duration_since(last) >= idle {
                        if !e.closed && e.forced.is_none() {
                            log::debug!("reactor: {}: idle for {idle:?}, closing", e.peer);
                            e.forced = Some(CloseCause::IdleTimeout);
                            SharedStats::inc(&self.inner.stats.idle_timeouts);
                        }
                        self.pump(key);
                    } else {
                        self.inner.arm_idle(key, last);
                    }
                }
            }
            self.run_dirty();
        }
    }
}
