//! Flushing: what a connection queued leaves in batches, what belongs to no
//! connection leaves at once, and blocked connections are retried.

use std::io;

use dtls_demux::batch;

use super::entry::Io;
use super::{CloseCause, ConnId, Handler, Inner, Reactor, SharedStats};
use crate::error::{Error, Result};

impl Inner {
    pub(super) fn send(&mut self, id: ConnId, data: &[u8]) -> Result<()> {
        let e = self.entry_mut(id).ok_or(Error::NotConnected)?;
        if e.closed {
            return Err(Error::Closed);
        }
        if e.blocked {
            return Err(Error::WouldBlock);
        }
        let r = e.conn.send(data);
        if r.is_err() {
            self.flush(id.key);
            self.dirty.push_back(id.key);
        } else if e.conn.transmit_len() >= batch::MAX_SEND {
            self.flush(id.key);
        } else if !e.unflushed {
            e.unflushed = true;
            self.unflushed.push(id.key);
        }
        r.map(|_| ())
    }

    pub(super) fn close(&mut self, id: ConnId) {
        if let Some(e) = self.entry_mut(id) {
            e.conn.close();
            self.flush(id.key);
            self.dirty.push_back(id.key);
        }
    }

    /// Sends what the connection has queued, a batch per system call, until the
    /// socket would block.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(e) = self.conns.get_mut(key) else {
            return;
        };
        e.unflushed = false;
        loop {
            // Mostly one or two datagrams wait: a small array, else a full one.
            let mut small: [&[u8]; 4] = [&[]; 4];
            let mut full: [&[u8]; batch::MAX_SEND];
            let out: &mut [&[u8]] = if e.conn.transmit_len() <= small.len() {
                &mut small
            } else {
                full = [&[]; batch::MAX_SEND];
                &mut full
            };
            let n = e.conn.transmits(out);
            if n == 0 {
                break;
            }
            match e.io.send_batch(&out[..n]) {
                Ok(sent) => {
                    e.conn.pop_transmits(sent);
                    SharedStats::add(&self.stats.datagrams_out, sent as u64);
                    SharedStats::inc(&self.stats.send_batches);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    if !e.blocked {
                        e.blocked = true;
                        self.blocked.push(key);
                        SharedStats::inc(&self.stats.blocked);
                    }
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    e.conn.pop_transmits(1);
                    SharedStats::inc(&self.stats.send_errors);
                    log::trace!("reactor: send to {} failed: {err}", e.peer);
                    if matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected
                    ) && e.forced.is_none()
                        && !e.closed
                    {
                        e.forced =
                            Some(CloseCause::Failed(Error::PeerUnreachable(err).to_string()));
                        self.dirty.push_back(key);
                        break;
                    }
                }
            }
        }
    }

    /// Flushes every connection a handler sent on (or a shared socket's read
    /// fed) since the last call; the flows of shared sockets together, in
    /// `sendmmsg` calls addressed to many peers.
    pub(super) fn flush_unflushed(&mut self) {
        let mut shared = std::mem::take(&mut self.gather);
        while let Some(key) = self.unflushed.pop() {
            match self.conns.get(key) {
                Some(e) if e.unflushed && e.io.shared_listener().is_some() => shared.push(key),
                Some(e) if e.unflushed => self.flush(key),
                _ => {}
            }
        }
        if !shared.is_empty() {
            self.flush_gathered(&shared);
            shared.clear();
        }
        self.gather = shared;
    }

    /// Queues connection `key` for the next [`Inner::flush_unflushed`].
    pub(super) fn mark_unflushed(&mut self, key: usize) {
        if let Some(e) = self.conns.get_mut(key) {
            if !e.unflushed {
                e.unflushed = true;
                self.unflushed.push(key);
            }
        }
    }

    /// Sends one datagram that belongs to no connection's DTLS state (a
    /// HelloVerifyRequest, an alert) on `key`'s socket; a failure is counted.
    pub(super) fn send_raw(&mut self, key: usize, d: &[u8]) {
        let Some(e) = self.conns.get(key) else {
            return;
        };
        match e.io.send(d) {
            Ok(_) => SharedStats::inc(&self.stats.datagrams_out),
            Err(err) => {
                SharedStats::inc(&self.stats.send_errors);
                log::trace!("reactor: send to {} failed: {err}", e.peer);
            }
        }
    }
}

impl<H: Handler> Reactor<H> {
    pub(super) fn retry_blocked(&mut self, listener: Option<usize>, key: Option<usize>) {
        let blocked = std::mem::take(&mut self.inner.blocked);
        let mut keep = Vec::new();
        for k in blocked {
            let matches = match (listener, key) {
                (_, Some(x)) => x == k,
                // The listener's socket sends for Router links and shared flows.
                (Some(li), None) => self.inner.conns.get(k).is_some_and(|e| {
                    e.io.shared_listener() == Some(li)
                        || (e.listener == Some(li)
                            && matches!(e.io, Io::Link(ref l) if l.kind() == dtls_demux::DemuxKind::Router))
                }),
                (None, None) => false,
            };
            let Some(e) = self.inner.conns.get_mut(k) else {
                continue;
            };
            if !e.blocked {
                continue;
            }
            if !matches {
                keep.push(k);
                continue;
            }
            e.blocked = false;
            self.inner.flush(k);
            let still = self.inner.conns.get(k).is_some_and(|e| e.blocked);
            if !still {
                if let Some(id) = self.inner.id(k) {
                    let (h, mut ctx) = self.ctx_handler();
                    h.on_writable(&mut ctx, id);
                }
            }
        }
        // flush() may have pushed keys that blocked again.
        keep.append(&mut self.inner.blocked);
        self.inner.blocked = keep;
    }
}
