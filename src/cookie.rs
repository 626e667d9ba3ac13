//! The stateless cookie stage (RFC 6347 section 4.2.1).
//!
//! A datagram from a peer that has no connection yet goes through
//! [`CookieStage::handle`]. A ClientHello without a valid cookie is answered
//! with a HelloVerifyRequest and forgotten; one with a valid cookie becomes a
//! [`Connection`] already primed with it; anything else is dropped with a
//! [`DropReason`]. The stage reuses one scratch OpenSSL session for every
//! datagram, so nothing is allocated per peer before a cookie verifies.
//!
//! The cookies themselves are made and checked by [`crate::CookieKeys`].

use std::fmt;
use std::net::SocketAddr;

use openssl::error::ErrorStack;
use openssl::ssl::SslStream;

use crate::config::ServerConfig;
use crate::conn::{Connection, Pipe};
use crate::cookie_keys::CURRENT_PEER;
use crate::error::{Error, Result};
use crate::ffi;
use crate::record;

/// Why the cookie stage dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A zero-length datagram.
    Empty,
    /// Not a DTLS handshake record, or too short to be one.
    NotHandshake,
    /// A handshake record, but not a ClientHello (a connection-less peer may
    /// only start with one).
    NotClientHello,
    /// OpenSSL rejected the ClientHello (malformed, unsupported version...).
    Rejected,
    /// The server could not create a connection (allocation or OpenSSL failure).
    Internal,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Empty => "empty datagram",
            DropReason::NotHandshake => "not a DTLS handshake record",
            DropReason::NotClientHello => "not a ClientHello",
            DropReason::Rejected => "ClientHello rejected by OpenSSL",
            DropReason::Internal => "internal error",
        })
    }
}

/// What to do with a datagram from a peer that has no connection.
///
/// Non-exhaustive: a later version may add verdicts; treat one you do not know
/// like [`Verdict::Drop`] (nothing was kept, nothing needs sending).
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict {
    /// Send this HelloVerifyRequest back to the peer; nothing else was kept.
    HelloVerify(Vec<u8>),
    /// The cookie verified: a new server connection, primed with the
    /// ClientHello. Drain its datagrams ([`Connection::poll_transmit`]) to send
    /// the server's first flight.
    Accept(Box<Connection>),
    /// The cookie verified, but the handshake failed on the ClientHello itself
    /// (no shared version, cipher or group...). Send `alert` (when there is
    /// one) back to the peer so it fails fast; nothing was kept.
    Refused {
        /// The fatal alert for the peer.
        alert: Option<Vec<u8>>,
        /// Why the handshake failed.
        error: Error,
    },
    /// Dropped, for the reason given.
    Drop(DropReason),
}

/// Counters of the cookie stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CookieStats {
    /// HelloVerifyRequests sent.
    pub hello_verify: u64,
    /// Connections created after a valid cookie.
    pub accepted: u64,
    /// Handshakes refused on the first ClientHello (see [`Verdict::Refused`]).
    pub refused: u64,
    /// Datagrams dropped, any reason.
    pub dropped: u64,
}

/// The stateless front door of a DTLS server: see the module docs.
///
/// ```
/// use dtls_reactor::{ClientConfig, Connection, CookieStage, ServerConfig, Verdict};
/// # let (cert_pem, key_pem) = include!("doc_pki.rs");
/// let server = ServerConfig::builder()
///     .certificate_chain_pem(&cert_pem)
///     .private_key_pem(&key_pem)
///     .build().unwrap();
/// let client_cfg = ClientConfig::builder()
///     .ca_pem(&cert_pem) // self-signed: its own CA
///     .server_name("localhost").build().unwrap();
/// let mut stage = CookieStage::new(&server).unwrap();
/// let mut client = Connection::client(&client_cfg, None).unwrap();
/// let peer = "127.0.0.1:40000".parse().unwrap();
///
/// // The first ClientHello has no cookie: the answer is a HelloVerifyRequest.
/// let hello = client.poll_transmit().unwrap();
/// let Verdict::HelloVerify(hvr) = stage.handle(peer, &hello) else { panic!() };
/// client.feed(&hvr).unwrap();
/// // The second carries the cookie: a connection is born.
/// let hello2 = client.poll_transmit().unwrap();
/// assert!(matches!(stage.handle(peer, &hello2), Verdict::Accept(_)));
/// ```
pub struct CookieStage {
    config: ServerConfig,
    scratch: Option<SslStream<Pipe>>,
    addr: ffi::OwnedBioAddr,
    stats: CookieStats,
}

impl fmt::Debug for CookieStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieStage")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl CookieStage {
    /// A cookie stage for listeners of `config`.
    pub fn new(config: &ServerConfig) -> Result<Self> {
        let addr = ffi::OwnedBioAddr::new().ok_or_else(|| Error::Ssl {
            code: 1,
            stack: Some(ErrorStack::get()),
        })?;
        let mut s = CookieStage {
            config: config.clone(),
            scratch: None,
            addr,
            stats: CookieStats::default(),
        };
        s.scratch = Some(s.fresh_scratch()?);
        Ok(s)
    }

    fn fresh_scratch(&self) -> Result<SslStream<Pipe>> {
        let shared = &self.config.inner.shared;
        let mut ssl = shared.new_ssl()?;
        ssl.set_accept_state();
        ssl.set_mtu(shared.mtu)
            .map_err(|e| Error::config_ssl("mtu", e))?;
        SslStream::new(ssl, Pipe::new(shared.recv_queue)).map_err(|e| Error::Ssl {
            code: 1,
            stack: Some(e),
        })
    }

    /// The stage's counters.
    pub fn stats(&self) -> CookieStats {
        self.stats
    }

    /// The configuration this stage admits connections for.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn drop_with(&mut self, peer: SocketAddr, reason: DropReason) -> Verdict {
        self.stats.dropped += 1;
        log::debug!("cookie stage: dropped datagram from {peer}: {reason}");
        Verdict::Drop(reason)
    }

    fn admit(&mut self, peer: SocketAddr, mut conn: Connection) -> Verdict {
        if conn.is_closed() {
            self.stats.refused += 1;
            let alert = conn.poll_transmit();
            let error = conn.take_error().unwrap_or(Error::Closed);
            log::debug!("cookie stage: handshake with {peer} refused: {error}");
            return Verdict::Refused { alert, error };
        }
        self.stats.accepted += 1;
        log::debug!("cookie stage: {peer} admitted");
        Verdict::Accept(Box::new(conn))
    }

    /// Checks one datagram from `peer`, which has no connection. See [`Verdict`].
    pub fn handle(&mut self, peer: SocketAddr, datagram: &[u8]) -> Verdict {
        let verdict = self.decide(peer, datagram);
        // OpenSSL reports some rejections (a ClientHello whose lengths do not
        // add up...) by returning 0 with an error on the thread's queue. Left
        // there, it would make the next SSL call on this thread that merely
        // wants more data look like a fatal error (`SSL_get_error` checks the
        // queue first) and end an innocent connection: drain it.
        let left = ErrorStack::get();
        if !left.errors().is_empty() {
            log::debug!("cookie stage: ClientHello from {peer}: {left}");
        }
        verdict
    }

    fn decide(&mut self, peer: SocketAddr, datagram: &[u8]) -> Verdict {
        if datagram.is_empty() {
            return self.drop_with(peer, DropReason::Empty);
        }
        match record::classify(datagram) {
            record::Kind::ClientHello => {}
            record::Kind::OtherHandshake => {
                return self.drop_with(peer, DropReason::NotClientHello)
            }
            record::Kind::Other => return self.drop_with(peer, DropReason::NotHandshake),
        }
        if !self.config.inner.require_cookie {
            return match Connection::server(&self.config, peer, datagram) {
                Ok(c) => self.admit(peer, c),
                Err(e) => {
                    log::debug!("cookie stage: connection for {peer} failed: {e}");
                    self.drop_with(peer, DropReason::Internal)
                }
            };
        }
        let mut stream = match self.scratch.take() {
            Some(s) => s,
            None => match self.fresh_scratch() {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("cookie stage: cannot create a session: {e}");
                    return self.drop_with(peer, DropReason::Internal);
                }
            },
        };
        stream.get_mut().reset();
        stream.get_mut().push_inbound(datagram);
        CURRENT_PEER.with(|c| c.set(Some(peer)));
        let r = ffi::listen(stream.ssl(), &mut self.addr);
        if r > 0 {
            // The scratch session is now this peer's connection. OpenSSL
            // checks the cookie once more while it processes the hello.
            let conn = Connection::from_listen(&self.config, peer, stream);
            CURRENT_PEER.with(|c| c.set(None));
            self.admit(peer, conn)
        } else {
            CURRENT_PEER.with(|c| c.set(None));
            let reply = stream.get_mut().pop_outbound();
            if r < 0 {
                // Clear the thread's error queue; the next listen starts with
                // SSL_clear, but an errored session is not worth keeping.
                let stack = ErrorStack::get();
                log::debug!("cookie stage: ClientHello from {peer} rejected: {stack}");
                self.stats.dropped += 1;
                return Verdict::Drop(DropReason::Rejected);
            }
            stream.get_mut().reset();
            self.scratch = Some(stream);
            match reply {
                Some(hvr) => {
                    self.stats.hello_verify += 1;
                    Verdict::HelloVerify(hvr)
                }
                None => self.drop_with(peer, DropReason::Rejected),
            }
        }
    }
}
