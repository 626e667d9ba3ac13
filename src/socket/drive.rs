//! The loop behind every `DtlsSocket` call: flush what the session queued,
//! try the call, read a datagram (to the session, or a ClientHello to the
//! front door), wait for the descriptor or the DTLS deadline.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Weak;
use std::time::{Duration, Instant};

use dtls_demux::DemuxKind;

use super::stream::DtlsSocket;
use super::stream::{transport_error, Op, Session, MAX_DATAGRAM, NONBLOCKING_READ_BUDGET, SCRATCH};
use super::transport::Transport;
use super::wait::{min_wait, wait_fd, Readiness, MEMORY_QUEUE_CHECK};
use crate::{Admitted, Connection, Datagram, Error, FrontDoor, Refusal, Result};

/// How often `send` reads at most for a peer that may lack this side's last
/// handshake flight.
const READ_FOR_PEER_EVERY: Duration = Duration::from_millis(10);
/// Datagrams `send` reads at most each time it reads for the peer.
const READ_FOR_PEER_BUDGET: usize = 8;

impl DtlsSocket {
    pub(super) fn deadline(&self, op: Op) -> Option<Instant> {
        if self.nonblocking {
            return None;
        }
        let t = match op {
            Op::Read => self.read_timeout,
            Op::Write => self.write_timeout,
        };
        t.map(|t| Instant::now() + t)
    }

    pub(super) fn timeout_error(&self, op: Op) -> Error {
        if self.is_handshaking() {
            return Error::HandshakeTimeout;
        }
        match op {
            Op::Read => Error::ReadTimeout,
            Op::Write => Error::WriteTimeout,
        }
    }

    /// Creates the client session on first use.
    pub(super) fn start(&mut self) -> Result<()> {
        if let Session::Client { config, name } = &self.session {
            let Ok(server) = self.transport.peer_addr() else {
                return Err(Error::NotConnected);
            };
            let conn = Connection::client_to(config, name.as_deref(), Some(server))?;
            self.session = Session::Active(Box::new(conn));
        }
        Ok(())
    }

    /// The descriptor a blocked send waits on: the listening socket for a
    /// Router link, else the transport's own socket.
    pub(super) fn write_fd(&self) -> BorrowedFd<'_> {
        match (&self.transport, &self.demux) {
            (Transport::Link(l), Some(d)) if l.kind() == DemuxKind::Router => d.listener().as_fd(),
            _ => self.transport.as_fd(),
        }
    }

    /// Sends every datagram the session has queued. `Err(WouldBlock)` when
    /// non-blocking (or `never_wait`) and the socket is full: the rest stays
    /// queued for the next call.
    pub(super) fn flush(
        &mut self,
        deadline: Option<Instant>,
        op: Op,
        never_wait: bool,
    ) -> Result<()> {
        loop {
            let Session::Active(c) = &mut self.session else {
                return Ok(());
            };
            let Some(d) = c.peek_transmit() else {
                return Ok(());
            };
            match self.transport.send(d) {
                Ok(_) => c.pop_transmit(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.nonblocking || never_wait {
                        return Err(Error::WouldBlock);
                    }
                    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    if left == Some(Duration::ZERO) {
                        return Err(self.timeout_error(op));
                    }
                    // A Router link without its demux (re-wrapped by hand)
                    // has no descriptor to wait on: retry every millisecond.
                    let rest = match (&self.transport, &self.demux) {
                        (Transport::Link(l), None) if l.kind() == DemuxKind::Router => {
                            Some(Duration::from_millis(1))
                        }
                        _ => None,
                    };
                    match rest {
                        Some(r) => std::thread::sleep(min_wait(left, Some(r)).unwrap_or(r)),
                        None => {
                            wait_fd(self.write_fd(), true, left)?;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // An earlier datagram drew ICMP port unreachable; this one
                    // was not sent. A client reports it (and retries the
                    // datagram with the next call); a server-side link
                    // ignores it (see `read_one`) and sends again.
                    if matches!(self.transport, Transport::Socket(_)) {
                        return Err(Error::PeerUnreachable(e));
                    }
                    log::trace!("link: ICMP error ignored: {e}");
                }
                Err(e) => {
                    // Not sendable (too large for the path...): drop it so
                    // the queue cannot jam, and report.
                    c.pop_transmit();
                    log::debug!("send failed, datagram dropped: {e}");
                    return Err(Error::Io(e));
                }
            }
        }
    }

    /// Acts on an expired DTLS timer.
    pub(super) fn fire_timer(&mut self) -> Result<()> {
        if let Session::Active(c) = &mut self.session {
            if c.timeout() == Some(Duration::ZERO) {
                c.handle_timeout(Instant::now())?;
            }
        }
        Ok(())
    }

    /// For `send`: while the peer may lack this side's last handshake flight
    /// ([`Connection::peer_may_lack_last_flight`]), reads what has arrived
    /// without waiting, at most every [`READ_FOR_PEER_EVERY`] and
    /// [`READ_FOR_PEER_BUDGET`] datagrams at a time: a retransmitted final
    /// flight is answered as it is fed (the answer leaves with the send),
    /// anything else stays queued for `recv`.
    pub(super) fn read_for_peer(&mut self) -> Result<()> {
        let Session::Active(c) = &self.session else {
            return Ok(());
        };
        if !c.peer_may_lack_last_flight() {
            return Ok(());
        }
        let now = Instant::now();
        if self.read_for_peer_at.is_some_and(|t| now < t) {
            return Ok(());
        }
        self.read_for_peer_at = Some(now + READ_FOR_PEER_EVERY);
        for _ in 0..READ_FOR_PEER_BUDGET {
            if !self.read_one()? {
                break;
            }
        }
        Ok(())
    }

    /// Reads one datagram from the transport without waiting and feeds it to
    /// the session (or a front door). False when none was ready.
    pub(super) fn read_one(&mut self) -> Result<bool> {
        SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            if buf.len() < MAX_DATAGRAM {
                buf.resize(MAX_DATAGRAM, 0);
            }
            let n = loop {
                match self.transport.recv(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e)
                        if e.kind() == io::ErrorKind::ConnectionRefused
                            && matches!(self.transport, Transport::Link(_)) =>
                    {
                        // Server side: the per-peer socket shares its address
                        // with the listener's group, so an ICMP error may
                        // belong to another peer; DTLS has its own timers.
                        log::trace!("link: ICMP error ignored: {e}");
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(transport_error(e)),
                }
            };
            self.ingest(&buf[..n])?;
            Ok(true)
        })
    }

    /// Hands one received datagram to the session, or to a front door: the
    /// socket's own (a server waiting for its peer's ClientHello) or the
    /// listener's (a ClientHello on an established link: the peer may have
    /// restarted).
    pub(super) fn ingest(&mut self, bytes: &[u8]) -> Result<()> {
        let d = Datagram::parse(bytes);
        match &mut self.session {
            Session::Active(c) if FrontDoor::wants(c, &d) => self.restart(&d),
            Session::Active(c) => c.feed_datagram(&d),
            Session::ServerWait { door } => {
                let peer = self.transport.peer_addr()?;
                match door.admit(peer, &d) {
                    Admitted::Reply(r) => {
                        if let Err(e) = self.transport.send(&r) {
                            log::trace!("HelloVerifyRequest to {peer} not sent: {e}");
                        }
                        Ok(())
                    }
                    Admitted::Drop(_) => Ok(()),
                    Admitted::Accepted(c) => {
                        self.session = Session::Active(c);
                        Ok(())
                    }
                    Admitted::Refused(Refusal { alert, error }) => {
                        if let Some(a) = alert {
                            let _ = self.transport.send(&a);
                        }
                        Err(error)
                    }
                }
            }
            Session::Client { .. } => {
                log::trace!("datagram before the ClientHello dropped");
                Ok(())
            }
        }
    }

    /// An epoch-0 ClientHello on the link of an established server
    /// connection goes to the listener's front door. When the door accepts a
    /// restart, the new connection (on a new link) waits for the listener's
    /// `accept()` and this one fails with [`Error::PeerRestarted`]; otherwise
    /// this session goes on.
    fn restart(&mut self, d: &Datagram<'_>) -> Result<()> {
        let Some(shared) = self.listener.as_ref().and_then(Weak::upgrade) else {
            log::debug!("ClientHello on an established link, listener gone: dropped");
            return Ok(());
        };
        let Session::Active(c) = &mut self.session else {
            return Ok(());
        };
        let peer = self.transport.peer_addr()?;
        let admitted = shared
            .door
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit_established(c, d);
        match admitted {
            Admitted::Reply(r) => {
                if let Err(e) = self.transport.send(&r) {
                    log::trace!("HelloVerifyRequest to {peer} not sent: {e}");
                }
                Ok(())
            }
            Admitted::Drop(_) => Ok(()),
            Admitted::Refused(Refusal { alert, error }) => {
                log::debug!("{peer}: ClientHello on an established session refused: {error}");
                if let Some(a) = alert {
                    let _ = self.transport.send(&a);
                }
                Ok(())
            }
            Admitted::Accepted(conn) => {
                // The old link goes (the peer's datagrams reach the new one from
                // now on); a datagram of the old session still queued is lost.
                shared.demux.detach(peer);
                self.restarted = true;
                if let Some(s) = DtlsSocket::open_accepted(&shared, peer, *conn)? {
                    shared
                        .restarted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back((s, peer));
                    // A thread blocked in accept() hears of it now.
                    shared.demux.wake_listener();
                    log::debug!("{peer}: peer restarted; the new session waits for accept()");
                }
                Err(Error::PeerRestarted)
            }
        }
    }

    /// The loop behind every call: flush, try `attempt`, read a datagram,
    /// wait for the descriptor or the DTLS deadline, until `attempt` gives a
    /// value, fails, or the caller's deadline passes.
    pub(super) fn drive<T>(
        &mut self,
        op: Op,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut Connection) -> Result<Option<T>>,
    ) -> Result<T> {
        if self.restarted {
            return Err(Error::PeerRestarted);
        }
        self.start()?;
        let mut budget = NONBLOCKING_READ_BUDGET;
        loop {
            if let Err(e) = self.fire_timer() {
                self.flush_quietly();
                return Err(e);
            }
            match self.flush(deadline, op, false) {
                Ok(()) => {}
                Err(Error::WouldBlock) if op == Op::Read => {}
                Err(e) => return Err(e),
            }
            if let Session::Active(c) = &mut self.session {
                match attempt(c) {
                    Ok(Some(v)) => {
                        // Answers the attempt produced (close_notify reply,
                        // handshake retransmissions): best effort.
                        if op == Op::Read {
                            self.flush_quietly();
                        }
                        return Ok(v);
                    }
                    Ok(None) => {
                        // The attempt may have queued an answer (this side's
                        // last flight for a peer that lost it): out before
                        // this call waits.
                        if c.has_transmit() {
                            self.flush_quietly();
                        }
                    }
                    Err(e) => {
                        self.flush_quietly();
                        return Err(e);
                    }
                }
            }
            // A stream of datagrams that make no progress (a flood, garbage)
            // must not outlast the caller's timeout.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.timeout_error(op));
            }
            match self.read_one() {
                Ok(true) if self.nonblocking => {
                    // Non-blocking calls do a bounded amount of work.
                    budget -= 1;
                    if budget == 0 {
                        return Err(Error::WouldBlock);
                    }
                    continue;
                }
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.flush_quietly();
                    return Err(e);
                }
            }
            if self.nonblocking {
                return Err(Error::WouldBlock);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(self.timeout_error(op));
            }
            match self.readiness() {
                Some(r) => r.wait(left)?,
                None => continue,
            }
        }
    }

    /// What a call that found nothing to do waits for (see [`Readiness`]):
    /// `None` when a datagram already waits in the link's memory queue (try
    /// again now). A datagram the demux puts in that queue makes no
    /// descriptor readable but the link's wake descriptor (without one, the
    /// wait is cut at [`MEMORY_QUEUE_CHECK`]); the wake is cleared before the
    /// queue is checked, so a datagram queued after the check still ends the
    /// wait. Call it, then [`Readiness::wait`] (with the socket let go, if
    /// other threads share it), then try the call again.
    pub fn readiness(&mut self) -> Option<Readiness> {
        let (wake, mut cap) = match &self.transport {
            Transport::Link(l) => match l.wake_fd() {
                Ok(fd) => {
                    l.clear_wake();
                    (Some(fd.as_raw_fd()), None)
                }
                Err(_) => (None, Some(MEMORY_QUEUE_CHECK)),
            },
            Transport::Socket(_) => (None, None),
        };
        if self.transport.has_queued() {
            return None;
        }
        cap = min_wait(cap, self.next_timeout());
        Some(Readiness::new(self.transport.as_raw_fd(), wake, cap))
    }

    /// Sends what is queued without waiting, ignoring failures (alerts and
    /// replies whose loss the peer survives).
    pub(super) fn flush_quietly(&mut self) {
        if let Err(e) = self.flush(None, Op::Write, true) {
            log::trace!("flush: {e}");
        }
    }
}
