//! Shared sockets ([`SharedSocket`]): one socket read for every peer, each
//! datagram handed to the entry its flow names, and what many entries owe
//! their peers sent together.

use std::io;
use std::sync::Arc;

use dtls_demux::batch::{self, RecvBatch, Transmit};
use dtls_demux::SharedSocket;

use super::listener::Port;
use super::read::Via;
use super::{Handler, Inner, Reactor, SharedStats, RECV_SLOTS};

impl<H: Handler> Reactor<H> {
    /// Reads listener `li`'s shared socket in batches up to the budget: a
    /// datagram of an attached flow goes into its entry, one of an unknown
    /// flow to the front door. After each batch the entries' replies leave
    /// together ([`Inner::flush_unflushed`]) and each entry it touched is
    /// settled.
    pub(super) fn drain_shared(&mut self, li: usize) {
        let Port::Shared(socket) = &self.inner.listeners[li].port else {
            return;
        };
        let socket = socket.clone();
        let mut batch = self
            .inner
            .lbatch
            .take()
            .unwrap_or_else(|| RecvBatch::new(RECV_SLOTS));
        let mut got = std::mem::take(&mut self.flows);
        let mut touched = std::mem::take(&mut self.touched);
        let budget = self.inner.limits.datagrams_per_turn;
        let mut done = 0;
        let mut exhausted = true;
        let truncated = batch.truncated();
        while done < budget {
            match socket.recv_batch(&mut batch, &mut got) {
                Ok(_) => {
                    SharedStats::add(&self.inner.stats.datagrams_in, batch.len() as u64);
                    SharedStats::inc(&self.inner.stats.recv_batches);
                    done += batch.len().max(1);
                    for fd in &got {
                        let d = batch.get(fd.index);
                        // A flow attached by an earlier datagram of this batch was
                        // unknown when the batch was read.
                        let token = fd.token.or_else(|| socket.token(fd.flow));
                        match token.map(|t| t as usize) {
                            Some(key) if self.inner.conns.contains(key) => {
                                if self.ingest(key, d) {
                                    self.inner.mark_unflushed(key);
                                }
                                touched.push(key);
                            }
                            _ => {
                                let via = Via::Shared(&socket, fd.flow, li);
                                self.unknown(li, via, fd.flow.remote, d);
                            }
                        }
                    }
                    self.inner.flush_unflushed();
                    for key in touched.drain(..) {
                        self.pump(key);
                    }
                    self.run_dirty();
                    if batch.socket_drained() {
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
                    log::warn!("reactor: shared socket {li}: receive failed: {e}");
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
        got.clear();
        self.inner.lbatch = Some(batch);
        self.flows = got;
        self.touched = touched;
        self.inner.listeners[li].pending = exhausted;
    }
}

impl Inner {
    /// Sends what the shared-flow entries `keys` have queued: for each shared
    /// socket among them, `sendmmsg` calls of up to [`batch::MAX_SEND`]
    /// datagrams addressed to many peers, until everything went or the socket
    /// would block (then the entries wait, blocked, for it to be writable).
    pub(super) fn flush_gathered(&mut self, keys: &[usize]) {
        let mut sockets: Vec<Arc<SharedSocket>> = Vec::new();
        for &k in keys {
            if let Some(super::entry::Io::Shared { socket, .. }) = self.conns.get(k).map(|e| &e.io)
            {
                if !sockets.iter().any(|s| Arc::ptr_eq(s, socket)) {
                    sockets.push(socket.clone());
                }
            }
        }
        for socket in &sockets {
            self.flush_socket(socket, keys);
        }
    }

    fn flush_socket(&mut self, socket: &Arc<SharedSocket>, keys: &[usize]) {
        let on_socket = |e: &super::entry::Entry| matches!(&e.io, super::entry::Io::Shared { socket: s, .. } if Arc::ptr_eq(s, socket));
        loop {
            // Up to MAX_SEND datagrams of these entries, in order, and how many
            // each contributed.
            let mut msgs = [Transmit {
                to: socket.local_addr(),
                from: None,
                data: &[],
            }; batch::MAX_SEND];
            let mut taken: Vec<(usize, usize)> = Vec::new();
            let mut m = 0;
            for &k in keys {
                if m == batch::MAX_SEND {
                    break;
                }
                let Some(e) = self.conns.get(k) else {
                    continue;
                };
                if e.blocked || e.conn.transmit_len() == 0 || !on_socket(e) {
                    continue;
                }
                if taken.iter().any(|t| t.0 == k) {
                    continue;
                }
                let mut out: [&[u8]; batch::MAX_SEND] = [&[]; batch::MAX_SEND];
                let n = e.conn.transmits(&mut out[..batch::MAX_SEND - m]);
                for d in &out[..n] {
                    if let Some(t) = e.io.transmit(d) {
                        msgs[m] = t;
                        m += 1;
                    }
                }
                taken.push((k, n));
            }
            if m == 0 {
                return;
            }
            match socket.send_batch(&msgs[..m]) {
                // sendmmsg sends at least one message or fails; never spin.
                Ok(0) => return,
                Ok(sent) => {
                    SharedStats::add(&self.stats.datagrams_out, sent as u64);
                    SharedStats::inc(&self.stats.send_batches);
                    let mut left = sent;
                    for (k, n) in taken {
                        let take = n.min(left);
                        left -= take;
                        if let Some(e) = self.conns.get_mut(k) {
                            e.conn.pop_transmits(take);
                        }
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    for (k, _) in taken {
                        if let Some(e) = self.conns.get_mut(k) {
                            if !e.blocked {
                                e.blocked = true;
                                self.blocked.push(k);
                                SharedStats::inc(&self.stats.blocked);
                            }
                        }
                    }
                    // Others of this socket wait too: the next writable event
                    // retries every blocked entry of the listener.
                    for &k in keys {
                        if let Some(e) = self.conns.get_mut(k) {
                            if on_socket(e) && e.conn.transmit_len() > 0 && !e.blocked {
                                e.blocked = true;
                                self.blocked.push(k);
                                SharedStats::inc(&self.stats.blocked);
                            }
                        }
                    }
                    return;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // The first datagram could not be sent (its destination, say):
                    // it is dropped and counted, the rest go on.
                    SharedStats::inc(&self.stats.send_errors);
                    if let Some(&(k, _)) = taken.first() {
                        if let Some(e) = self.conns.get_mut(k) {
                            log::trace!("reactor: send to {} failed: {err}", e.peer);
                            e.conn.pop_transmits(1);
                        }
                    }
                }
            }
        }
    }
}
