//! The sans-IO DTLS connection: datagrams in, datagrams out, a deadline.
//!
//! A [`Connection`] owns one OpenSSL session whose BIO is an in-memory
//! [`Pipe`] of whole datagrams; once a DTLS 1.2 handshake with an AEAD suite
//! completes, the engine's record layer (`src/established.rs`) takes the
//! session over and OpenSSL's is freed. The owner feeds it every datagram that arrives
//! from the peer ([`Connection::feed`]), sends every datagram it produces
//! ([`Connection::poll_transmit`]), and calls [`Connection::handle_timeout`]
//! when [`Connection::deadline`] passes. Plaintext goes in and out one
//! datagram at a time ([`Connection::send`], [`Connection::recv`]).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::ssl::{ErrorCode, ShutdownResult, SslStream};
use openssl::symm::Cipher;

use crate::admission::Slot;
use crate::config::{ClientConfig, ServerConfig, Shared, Timers};
pub use crate::conn_state::{CloseReason, ConnStats, Event, State};
use crate::error::{Error, Result};
use crate::established::Established;
use crate::ffi;
use crate::pipe::Pipe;
use crate::record::Datagram;
pub use crate::role::Role;
use crate::session_store::SessionKey;
use crate::ssl_error::{
    clone_error, map_ssl_error, reason_in, ssl_new_error, would_block, R_READ_TIMEOUT_EXPIRED,
};

/// One DTLS session, without sockets. See the module docs.
///
/// ```
/// use dtls_reactor::{ClientConfig, Connection, ServerConfig};
/// # let (cert_pem, key_pem) = include!("doc_pki.rs");
/// let server_cfg = ServerConfig::builder()
///     .certificate_chain_pem(&cert_pem)
///     .private_key_pem(&key_pem)
///     .require_cookie(false)
///     .build().unwrap();
/// let client_cfg = ClientConfig::builder()
///     .ca_pem(&cert_pem) // self-signed: its own CA
///     .server_name("localhost")
///     .build().unwrap();
/// let peer = "127.0.0.1:9".parse().unwrap();
/// let mut client = Connection::client(&client_cfg, None).unwrap();
/// let hello = client.poll_transmit().unwrap();
/// let mut server = Connection::server(&server_cfg, peer, &hello).unwrap();
/// // Pass datagrams back and forth until both sides are established.
/// while !(client.is_established() && server.is_established()) {
///     while let Some(d) = server.poll_transmit() { client.feed(&d).unwrap(); }
///     while let Some(d) = client.poll_transmit() { server.feed(&d).unwrap(); }
/// }
/// client.send(b"hello").unwrap();
/// server.feed(&client.poll_transmit().unwrap()).unwrap();
/// let mut buf = [0u8; 1500];
/// let n = server.recv(&mut buf).unwrap().unwrap();
/// assert_eq!(&buf[..n], b"hello");
/// ```
pub struct Connection {
    pub(crate) tls: Tls,
    /// Sessions of this connection's configuration move to the engine's
    /// record layer once established (when their suite allows).
    own_records: bool,
    /// When the handshake completes (`own_records`): the datagrams of the
    /// flight OpenSSL wrote in the completing call, for the engine's record
    /// layer.
    last_flight: Vec<Vec<u8>>,
    /// How long after the handshake a peer may still retransmit its final
    /// flight for this side's last (this side's handshake timeout, 60 s
    /// without one: the peer's own deadline is not known).
    answer_window: Duration,
    /// When this side sent the handshake's last flight: the end of
    /// `answer_window` after it.
    pub(crate) answer_until: Option<Instant>,
    role: Role,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) state: State,
    error: Option<Error>,
    pub(crate) events: VecDeque<Event>,
    handshake_deadline: Option<Instant>,
    /// Server side: the silence allowed now in the handshake (the
    /// configured limit, doubled with every datagram heard and at least twice
    /// the longest gap the peer has shown), and when the peer was last heard
    /// (a datagram of whole records).
    silence: Option<Duration>,
    last_heard: Instant,
    client: Option<(ClientConfig, Option<SessionKey>)>,
    pub(crate) close_sent: bool,
    pub(crate) close_received: bool,
    /// OpenSSL's record buffers were freed by [`Connection::shrink`].
    pub(crate) buffers_released: bool,
    pub(crate) stats: ConnStats,
    /// Application records delivered by `recv` (each counted once).
    pub(crate) app_records_delivered: u64,
    /// `stats().discarded` when last logged.
    pub(crate) discards_logged: u64,
    /// The cipher (its address) and the smallest authentic protected record
    /// body under it, from the last datagram that needed it.
    min_protected: Option<(usize, usize)>,
    /// A server connection's place in its front door's admission caps.
    slot: Option<Slot>,
    /// The client random of the ClientHello that opened a server connection:
    /// a late copy of that datagram is not a restart.
    hello_random: Option<[u8; 32]>,
}

/// Who carries a connection's records.
pub(crate) enum Tls {
    /// OpenSSL: during the handshake, and for the whole session when the
    /// engine's record layer does not take it over.
    Ssl(SslStream<Pipe>),
    /// The engine's record layer; OpenSSL's session is freed.
    Own(Box<Established>),
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn with_stream(
        mut stream: SslStream<Pipe>,
        role: Role,
        peer: Option<SocketAddr>,
        shared: &Shared,
    ) -> Self {
        if shared.own_records {
            stream.get_mut().stash = Some(Vec::new());
        }
        Self::with_tls(
            Tls::Ssl(stream),
            role,
            peer,
            shared.timers,
            shared.own_records,
        )
    }

    fn with_tls(
        tls: Tls,
        role: Role,
        peer: Option<SocketAddr>,
        timers: Timers,
        own_records: bool,
    ) -> Self {
        let hs = timers.handshake;
        Connection {
            tls,
            own_records,
            last_flight: Vec::new(),
            answer_window: hs.unwrap_or(Duration::from_secs(60)),
            answer_until: None,
            role,
            peer,
            state: State::Handshaking,
            error: None,
            events: VecDeque::new(),
            handshake_deadline: hs.map(|d| Instant::now() + d),
            silence: if role == Role::Server {
                timers.silence
            } else {
                None
            },
            last_heard: Instant::now(),
            client: None,
            close_sent: false,
            buffers_released: false,
            close_received: false,
            stats: ConnStats::default(),
            app_records_delivered: 0,
            discards_logged: 0,
            min_protected: None,
            slot: None,
            hello_random: None,
        }
    }

    /// An established connection on the engine's record layer made from
    /// another's record state (the differential tests feed both the same
    /// records).
    #[cfg(test)]
    pub(crate) fn established_twin(e: Box<Established>, role: Role) -> Self {
        let mut c = Self::with_tls(Tls::Own(e), role, None, Timers::default(), true);
        c.state = State::Established;
        c
    }

    /// Gives the connection its admission slot and opening client random
    /// (the front door, on accept).
    pub(crate) fn admitted(&mut self, slot: Slot, random: Option<[u8; 32]>) {
        self.slot = Some(slot);
        self.hello_random = random;
        self.settle_slot();
    }

    /// Takes the admission slot away (a restarted peer's new connection takes
    /// it over).
    pub(crate) fn take_slot(&mut self) -> Option<Slot> {
        self.slot.take()
    }

    /// Gives the connection a slot: back after a refused restart, or one
    /// its front end took for a connection it opened (a reactor's client).
    pub(crate) fn put_slot(&mut self, slot: Slot) {
        self.slot = Some(slot);
        self.settle_slot();
    }

    /// Once the handshake is over (established or failed), its handshake
    /// slot goes back.
    fn settle_slot(&mut self) {
        if self.state != State::Handshaking {
            if let Some(s) = &mut self.slot {
                s.handshake_over();
            }
        }
    }

    /// The client random of the ClientHello that opened this server
    /// connection, when it was unfragmented.
    pub(crate) fn hello_random(&self) -> Option<[u8; 32]> {
        self.hello_random
    }

    /// A client connection; its ClientHello is ready in [`Self::poll_transmit`].
    /// `server_name` overrides the configured name (SNI, hostname check and
    /// the key under which a session is kept for resumption).
    pub fn client(config: &ClientConfig, server_name: Option<&str>) -> Result<Self> {
        Self::client_to(config, server_name, None)
    }

    /// [`Self::client`] for a server known to be at `server_addr`: sessions
    /// are stored and resumed under the server's name *and* address (the
    /// socket API and the reactor pass the address they connect to).
    pub fn client_to(
        config: &ClientConfig,
        server_name: Option<&str>,
        server_addr: Option<SocketAddr>,
    ) -> Result<Self> {
        let (mut ssl, key) = config.new_ssl(server_name, server_addr)?;
        ssl.set_connect_state();
        let shared = &config.inner.shared;
        ssl.set_mtu(shared.mtu)
            .map_err(|e| Error::config_ssl("mtu", e))?;
        let stream =
            SslStream::new(ssl, Pipe::new(shared.recv_queue, shared.mtu)).map_err(ssl_new_error)?;
        let mut c = Self::with_stream(stream, Role::Client, None, shared);
        c.client = Some((config.clone(), key));
        c.drive()?;
        Ok(c)
    }

    /// A server connection without the cookie exchange, started by `first`
    /// (the peer's ClientHello). Prefer [`crate::FrontDoor`], which checks
    /// the cookie first and calls this only when configured without cookies.
    ///
    /// Errors only when no session could be created; a handshake that fails
    /// on `first` gives a closed connection whose alert waits in
    /// [`Self::poll_transmit`] and whose [`Self::error`] says why.
    pub fn server(config: &ServerConfig, peer: SocketAddr, first: &[u8]) -> Result<Self> {
        let shared = &config.inner.shared;
        let mut ssl = shared.new_ssl()?;
        ssl.set_accept_state();
        ssl.set_mtu(shared.mtu)
            .map_err(|e| Error::config_ssl("mtu", e))?;
        let stream =
            SslStream::new(ssl, Pipe::new(shared.recv_queue, shared.mtu)).map_err(ssl_new_error)?;
        let mut c = Self::with_stream(stream, Role::Server, Some(peer), shared);
        let _ = c.feed(first);
        Ok(c)
    }

    /// A server connection from the cookie stage's session, which holds the
    /// verified ClientHello.
    /// A failed handshake leaves the connection closed with its alert queued.
    pub(crate) fn from_listen(
        config: &ServerConfig,
        peer: SocketAddr,
        stream: SslStream<Pipe>,
    ) -> Self {
        let shared = &config.inner.shared;
        let mut c = Self::with_stream(stream, Role::Server, Some(peer), shared);
        let _ = c.drive();
        c
    }

    /// Takes the error out of a failed connection (the cookie stage hands it on).
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Records a fatal error: state, event, and the value for [`Self::error`].
    pub(crate) fn fail(&mut self, e: Error) -> Error {
        let reason = match &e {
            Error::HandshakeTimeout => CloseReason::HandshakeTimeout,
            Error::PeerSilent => CloseReason::PeerSilent,
            Error::RetransmitLimit => CloseReason::RetransmitLimit,
            other => CloseReason::Failed(other.to_string()),
        };
        log::debug!("connection {:?}: failed: {e}", self.peer);
        if let Tls::Ssl(s) = &mut self.tls {
            s.get_mut().drop_partly_read();
        }
        if !matches!(self.state, State::Closed(_)) {
            self.state = State::Closed(reason.clone());
            self.events.push_back(Event::Closed(reason));
        }
        self.settle_slot();
        // Keep a copy for later calls; io errors are not Clone, keep their text.
        self.error = Some(clone_error(&e));
        e
    }

    /// Ends the connection with an error its owner found outside OpenSSL (an
    /// ICMP port unreachable on a client's socket): the same state, event and
    /// [`Self::error`] as a failure inside.
    #[cfg(feature = "tokio")]
    pub(crate) fn abort(&mut self, e: Error) {
        let _ = self.fail(e);
    }

    /// The error to report for calls after a failure.
    pub(crate) fn closed_error(&self) -> Error {
        match &self.state {
            State::Closed(CloseReason::PeerClosed) => Error::ClosedByPeer,
            State::Closed(CloseReason::Local) => Error::Closed,
            _ => self
                .error
                .as_ref()
                .map(clone_error)
                .unwrap_or(Error::Closed),
        }
    }

    pub(crate) fn drive(&mut self) -> Result<()> {
        if self.state != State::Handshaking {
            return Ok(());
        }
        // OpenSSL resends the last flight from inside a read when its timer
        // has expired: a datagram fed late (after the timer, before
        // `handle_timeout`) would pack that stale retransmission with the
        // flight it answers, and a receiver that discards the rest of a
        // datagram after a stale message (OpenSSL does) loses the new flight.
        // Due now, the retransmission goes first, in a datagram of its own.
        self.retransmit_if_due()?;
        let Tls::Ssl(stream) = &mut self.tls else {
            return Ok(());
        };
        let from = stream.get_ref().outbound.len();
        stream.get_mut().begin_flight();
        let r = stream.do_handshake();
        stream.get_mut().end_flight();
        let r = match r {
            Ok(()) => {
                // The flight written by the call that completed the
                // handshake is this side's last (empty when the peer's
                // flight was the last): kept for the engine's record layer.
                let out = &stream.get_ref().outbound;
                if out.len() > from {
                    self.answer_until = Some(Instant::now() + self.answer_window);
                    if self.own_records {
                        self.last_flight = out.range(from..).cloned().collect();
                    }
                }
                if let Some((cfg, Some(key))) = &self.client {
                    if let Some(der) = stream.ssl().session().and_then(|s| s.to_der().ok()) {
                        cfg.store_session(key, der);
                    }
                }
                Ok(())
            }
            Err(e) if would_block(&e) => return Ok(()),
            Err(e) => Err(map_ssl_error(e, stream.ssl())),
        };
        match r {
            Ok(()) => {
                self.state = State::Established;
                self.events.push_back(Event::Connected);
                self.settle_slot();
                self.take_over();
                log::debug!(
                    "connection {:?}: established, {} {}",
                    self.peer,
                    self.version(),
                    self.cipher().unwrap_or_default()
                );
                Ok(())
            }
            Err(err) => Err(self.fail(err)),
        }
    }

    /// Moves an established session to the engine's record layer and frees
    /// OpenSSL's, when the configuration and the suite allow.
    fn take_over(&mut self) {
        let flight = std::mem::take(&mut self.last_flight);
        let Tls::Ssl(stream) = &mut self.tls else {
            return;
        };
        if !self.own_records {
            return;
        }
        let mut pipe = std::mem::replace(stream.get_mut(), Pipe::new(1, 0));
        match Established::take_over(stream.ssl(), &mut pipe, self.role, flight) {
            Some(Ok(e)) => {
                log::debug!(
                    "connection {:?}: records carried by the engine, OpenSSL's session freed",
                    self.peer
                );
                self.tls = Tls::Own(e);
            }
            other => {
                if let Some(Err(e)) = other {
                    log::debug!(
                        "connection {:?}: record layer not taken over: {e}",
                        self.peer
                    );
                }
                pipe.stash = None;
                *stream.get_mut() = pipe;
            }
        }
    }

    /// The datagram queues.
    pub(crate) fn pipe(&self) -> &Pipe {
        match &self.tls {
            Tls::Ssl(s) => s.get_ref(),
            Tls::Own(e) => &e.pipe,
        }
    }

    pub(crate) fn pipe_mut(&mut self) -> &mut Pipe {
        match &mut self.tls {
            Tls::Ssl(s) => s.get_mut(),
            Tls::Own(e) => &mut e.pipe,
        }
    }

    /// Feeds one datagram received from the peer. Empty datagrams and those
    /// that are not whole DTLS records are dropped before OpenSSL sees them;
    /// when the receive queue is full the datagram is dropped. Each drop is
    /// counted ([`ConnStats::dropped`]); records OpenSSL rejects later are
    /// counted in [`ConnStats::discarded`]. During the handshake this
    /// advances it; an error ends the connection. Once established,
    /// application data waits for [`Self::recv`]; a datagram of other records
    /// alone (an alert; the peer's final flight again, when it lost this
    /// side's last handshake flight) is acted on here, its answer queued for
    /// [`Self::poll_transmit`], so the owner need not read to keep the peer's
    /// handshake going. What it ends the session with (close_notify, a fatal
    /// alert) the next call reports.
    pub fn feed(&mut self, datagram: &[u8]) -> Result<()> {
        self.feed_datagram(&Datagram::parse(datagram))
    }

    /// [`Self::feed`] for a datagram already parsed (the front ends parse each
    /// datagram once, for the front door and for the connection).
    pub fn feed_datagram(&mut self, d: &Datagram<'_>) -> Result<()> {
        self.stats.datagrams_in += 1;
        let datagram = d.bytes();
        if datagram.is_empty() {
            self.stats.dropped += 1;
            log::trace!("connection {:?}: dropped an empty datagram", self.peer);
            return Ok(());
        }
        if matches!(self.state, State::Closed(_)) && self.close_received {
            self.stats.dropped += 1;
            return Ok(());
        }
        let short = match d.min_protected_body() {
            Some(body) => body < self.min_protected_body(),
            None => false,
        };
        if !d.is_whole() || short {
            self.stats.dropped += 1;
            log::trace!(
                "connection {:?}: dropped a datagram that is not whole DTLS records ({} bytes)",
                self.peer,
                datagram.len()
            );
            return Ok(());
        }
        if self.state == State::Handshaking {
            // The peer is still there: its silence starts again, and it may
            // be longer. A peer on a lossy link answers at the pace of the
            // retransmission timers (its own, and ours, whose flights it
            // answers), which double: every datagram heard doubles the
            // silence allowed, and a gap the peer has shown may come again
            // twice as long. A peer that goes quiet after the hello that made
            // the connection keeps the configured limit; the overall
            // handshake deadline bounds them all.
            let now = Instant::now();
            if let Some(s) = &mut self.silence {
                let gap = now.saturating_duration_since(self.last_heard);
                *s = s.saturating_mul(2).max(gap.saturating_mul(2));
            }
            self.last_heard = now;
        }
        let act_now = self.acts_on_arrival(d.application_records());
        if !self.pipe_mut().push_inbound(d) {
            self.stats.dropped += 1;
            log::trace!(
                "connection {:?}: receive queue full, datagram dropped",
                self.peer
            );
            return Ok(());
        }
        if act_now {
            self.act_on_arrival();
        }
        self.drive()
    }

    /// The smallest body an authentic protected record can have under the
    /// negotiated cipher: the overhead of sealing an empty plaintext. OpenSSL
    /// 3.0 ends the session with a fatal alert (internal_error or
    /// decode_error) on a protected record shorter than its cipher's
    /// overhead instead of discarding it, so anyone able to send one
    /// datagram from the peer's address could end the session: such records
    /// are dropped here before OpenSSL sees them. 0 before a cipher is known.
    fn min_protected_body(&mut self) -> usize {
        let ssl = match &self.tls {
            Tls::Ssl(s) => s.ssl(),
            Tls::Own(e) => return e.min_body(),
        };
        let Some(c) = ssl.current_cipher() else {
            return 0;
        };
        let key = c as *const openssl::ssl::SslCipherRef as usize;
        if let Some((k, min)) = self.min_protected {
            if k == key {
                return min;
            }
        }
        let digest = ffi::cipher_digest_nid(c);
        let min = if digest == 0 {
            // AEAD: explicit nonce + tag. ChaCha20-Poly1305: no explicit
            // nonce, 16-byte tag; AES-CCM8: 8 + 8; AES-GCM, AES-CCM: 8 + 16.
            let name = c.name();
            if name.contains("CHACHA20") || name.contains("CCM8") {
                16
            } else {
                8 + 16
            }
        } else {
            let mac = MessageDigest::from_nid(Nid::from_raw(digest)).map_or(0, |m| m.size());
            let bs = c
                .cipher_nid()
                .and_then(Cipher::from_nid)
                .map_or(1, |c| c.block_size());
            if bs <= 1 {
                mac
            } else {
                // Explicit IV, then MAC and at least one byte of padding
                // (MAC-then-encrypt), or one block and the MAC
                // (encrypt-then-MAC): the smaller of the two.
                let round = |n: usize| n.div_ceil(bs) * bs;
                bs + round(mac + 1).min(bs + mac)
            }
        };
        self.min_protected = Some((key, min));
        min
    }

    /// The next datagram to send to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        let d = self.pipe_mut().pop_outbound();
        if d.is_some() {
            self.stats.datagrams_out += 1;
        }
        d
    }

    /// The next datagram to send, without taking it (send it, then call
    /// [`Self::pop_transmit`]; a send that would block can retry it later).
    pub fn peek_transmit(&self) -> Option<&[u8]> {
        self.pipe().outbound.front().map(Vec::as_slice)
    }

    /// All datagrams waiting to be sent, oldest first, without taking them: send
    /// as many as the socket takes in one go (`sendmmsg`), then
    /// [`Self::pop_transmits`] that many.
    pub fn transmits(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.pipe().outbound.iter().map(Vec::as_slice)
    }

    /// Discards the first `n` datagrams [`Self::transmits`] showed (all of them
    /// when fewer wait), reusing their buffers.
    pub fn pop_transmits(&mut self, n: usize) {
        for _ in 0..n {
            self.pop_transmit();
        }
    }

    /// Discards the datagram [`Self::peek_transmit`] showed, reusing its buffer.
    pub fn pop_transmit(&mut self) {
        let pipe = self.pipe_mut();
        if let Some(v) = pipe.outbound.pop_front() {
            pipe.recycle(v);
            self.stats.datagrams_out += 1;
        }
    }

    /// Whether datagrams wait to be sent.
    pub fn has_transmit(&self) -> bool {
        !self.pipe().outbound.is_empty()
    }

    /// Time left until [`Self::handle_timeout`] must be called: the earliest
    /// of the retransmission timer, the handshake deadline and (server side)
    /// the end of the peer's allowed silence.
    pub fn timeout(&self) -> Option<Duration> {
        if matches!(self.state, State::Closed(_)) {
            return None;
        }
        let now = Instant::now();
        let rt = match &self.tls {
            Tls::Ssl(s) => ffi::get_timeout(s.ssl()),
            Tls::Own(_) => None,
        };
        let hs = self
            .handshake_limit()
            .map(|(at, _)| at.saturating_duration_since(now));
        match (rt, hs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// While handshaking: the earlier of the overall deadline and the end of
    /// the peer's allowed silence, with the error that ends the handshake then.
    fn handshake_limit(&self) -> Option<(Instant, Error)> {
        if self.state != State::Handshaking {
            return None;
        }
        let quiet = self
            .silence
            .map(|s| (self.last_heard + s, Error::PeerSilent));
        let overall = self
            .handshake_deadline
            .map(|d| (d, Error::HandshakeTimeout));
        match (quiet, overall) {
            (Some(q), Some(o)) => Some(if q.0 < o.0 { q } else { o }),
            (q, o) => q.or(o),
        }
    }

    /// The instant at which [`Self::handle_timeout`] must be called.
    pub fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|t| Instant::now() + t)
    }

    /// Acts on a passed deadline: resends the last flight when its timer
    /// expired (returns true), or ends the connection with
    /// [`Error::HandshakeTimeout`], [`Error::PeerSilent`] or
    /// [`Error::RetransmitLimit`]. Calling it
    /// early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<bool> {
        if matches!(self.state, State::Closed(_)) {
            return Ok(false);
        }
        if let Some((at, why)) = self.handshake_limit() {
            if now >= at {
                log::debug!("connection {:?}: handshake ended: {why}", self.peer);
                return Err(self.fail(why));
            }
        }
        self.retransmit_if_due()
    }

    /// Resends the last flight when OpenSSL's retransmission timer has
    /// expired (true when it did), as a flight of its own.
    fn retransmit_if_due(&mut self) -> Result<bool> {
        self.restore_buffers()?;
        let Tls::Ssl(stream) = &mut self.tls else {
            return Ok(false);
        };
        stream.get_mut().begin_flight();
        let r = ffi::handle_timeout(stream.ssl());
        stream.get_mut().end_flight();
        match r {
            r if r > 0 => {
                self.stats.retransmissions += 1;
                log::debug!("connection {:?}: retransmitted a flight", self.peer);
                Ok(true)
            }
            0 => Ok(false),
            _ => {
                let stack = ErrorStack::get();
                let e = if reason_in(&stack, &[R_READ_TIMEOUT_EXPIRED]).is_some()
                    || stack.errors().is_empty()
                {
                    Error::RetransmitLimit
                } else {
                    Error::Ssl {
                        code: ErrorCode::SSL.as_raw(),
                        stack: Some(stack),
                    }
                };
                Err(self.fail(e))
            }
        }
    }

    /// Starts the close: queues close_notify for the peer. After it nothing
    /// can be sent; [`Self::recv`] still reports the peer's close_notify
    /// ([`Error::ClosedByPeer`]). Idempotent.
    pub fn close(&mut self) {
        if self.close_sent {
            return;
        }
        self.close_sent = true;
        if let Err(e) = self.restore_buffers() {
            log::debug!("connection {:?}: close_notify not sent: {e}", self.peer);
            return;
        }
        match &mut self.tls {
            Tls::Ssl(stream) => match stream.shutdown() {
                Ok(ShutdownResult::Received) => self.close_received = true,
                Ok(ShutdownResult::Sent) => {}
                Err(e) => log::debug!("connection {:?}: close_notify not sent: {e}", self.peer),
            },
            Tls::Own(e) => {
                if let Err(e) = e.close() {
                    log::debug!("connection {:?}: close_notify not sent: {e}", self.peer);
                }
            }
        }
        if !matches!(self.state, State::Closed(_)) {
            self.state = State::Closed(CloseReason::Local);
            self.events.push_back(Event::Closed(CloseReason::Local));
        }
        self.settle_slot();
    }

    /// Whether this side queued its close_notify.
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether the peer's close_notify arrived.
    pub fn is_close_received(&self) -> bool {
        self.close_received
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Where the connection is.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// True while the handshake runs.
    pub fn is_handshaking(&self) -> bool {
        self.state == State::Handshaking
    }

    /// True once the handshake completed and until the connection closes.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// True once closed, for any reason.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// The error that ended the connection, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's address, for server connections.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}
