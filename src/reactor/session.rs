//! What a reactor entry runs: a DTLS [`Connection`], or a plain UDP session
//! (no DTLS: the baseline of benchmarks, built on the same loop).

use std::collections::VecDeque;
use std::time::Instant;

use crate::admission::Slot;
use crate::conn::{CloseReason, Connection, Event, Role};
use crate::error::{Error, Result};

/// Most datagrams a plain session buffers before the handler reads them.
const PLAIN_QUEUE: usize = 64;

/// A plain UDP session: datagrams pass through unchanged.
#[derive(Debug)]
pub(crate) struct Plain {
    role: Role,
    inbound: VecDeque<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    closed: bool,
    /// Its place under the reactor's connection cap.
    _slot: Slot,
}

impl Plain {
    /// A session that is connected at once (no handshake).
    pub(crate) fn new(role: Role, slot: Slot) -> Self {
        Plain {
            role,
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
            events: VecDeque::from([Event::Connected]),
            closed: false,
            _slot: slot,
        }
    }
}

fn fill<'a>(out: &mut [&'a [u8]], it: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut n = 0;
    for (slot, d) in out.iter_mut().zip(it) {
        *slot = d;
        n += 1;
    }
    n
}

#[derive(Debug)]
pub(crate) enum Session {
    Dtls(Box<Connection>),
    Plain(Box<Plain>),
}

impl Session {
    pub(crate) fn as_dtls(&self) -> Option<&Connection> {
        match self {
            Session::Dtls(c) => Some(c),
            Session::Plain(_) => None,
        }
    }

    pub(crate) fn as_dtls_mut(&mut self) -> Option<&mut Connection> {
        match self {
            Session::Dtls(c) => Some(c),
            Session::Plain(_) => None,
        }
    }

    pub(crate) fn feed(&mut self, d: &[u8]) -> Result<()> {
        match self {
            Session::Dtls(c) => c.feed(d),
            Session::Plain(p) => {
                if !p.closed && p.inbound.len() < PLAIN_QUEUE {
                    p.inbound.push_back(d.to_vec());
                } else {
                    log::trace!("reactor: plain session queue full, datagram dropped");
                }
                Ok(())
            }
        }
    }

    pub(crate) fn transmits<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        match self {
            Session::Dtls(c) => fill(out, c.transmits()),
            Session::Plain(p) => fill(out, p.outbound.iter().map(Vec::as_slice)),
        }
    }

    pub(crate) fn transmit_len(&self) -> usize {
        match self {
            Session::Dtls(c) => c.transmits().len(),
            Session::Plain(p) => p.outbound.len(),
        }
    }

    pub(crate) fn pop_transmits(&mut self, n: usize) {
        for _ in 0..n {
            self.pop_transmit();
        }
    }

    pub(crate) fn pop_transmit(&mut self) {
        match self {
            Session::Dtls(c) => c.pop_transmit(),
            Session::Plain(p) => {
                p.outbound.pop_front();
            }
        }
    }

    pub(crate) fn send(&mut self, d: &[u8]) -> Result<usize> {
        match self {
            Session::Dtls(c) => c.send(d),
            Session::Plain(p) => {
                if p.closed {
                    return Err(Error::Closed);
                }
                p.outbound.push_back(d.to_vec());
                Ok(d.len())
            }
        }
    }

    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        match self {
            Session::Dtls(c) => c.recv(buf),
            Session::Plain(p) => Ok(p.inbound.pop_front().map(|d| {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                n
            })),
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        match self {
            Session::Dtls(c) => c.has_pending(),
            Session::Plain(p) => !p.inbound.is_empty(),
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        match self {
            Session::Dtls(c) => c.poll_event(),
            Session::Plain(p) => p.events.pop_front(),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Session::Dtls(c) => c.deadline(),
            Session::Plain(_) => None,
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Result<bool> {
        match self {
            Session::Dtls(c) => c.handle_timeout(now),
            Session::Plain(_) => Ok(false),
        }
    }

    pub(crate) fn close(&mut self) {
        match self {
            Session::Dtls(c) => c.close(),
            Session::Plain(p) => {
                if !p.closed {
                    p.closed = true;
                    p.events.push_back(Event::Closed(CloseReason::Local));
                }
            }
        }
    }

    /// Releases buffers of a quiet session (DTLS: [`Connection::shrink`]).
    pub(crate) fn shrink(&mut self) {
        match self {
            Session::Dtls(c) => c.shrink(),
            Session::Plain(p) => {
                if p.inbound.is_empty() {
                    p.inbound = VecDeque::new();
                }
                if p.outbound.is_empty() {
                    p.outbound = VecDeque::new();
                }
            }
        }
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Session::Dtls(c) => c.is_handshaking(),
            Session::Plain(_) => false,
        }
    }

    pub(crate) fn role(&self) -> Role {
        match self {
            Session::Dtls(c) => c.role(),
            Session::Plain(p) => p.role,
        }
    }
}
