//! The front door of a DTLS server: every decision about a datagram that
//! could start a session, made once for every front end (socket API,
//! reactor), sans-IO.
//!
//! [`FrontDoor::handle`] looks at a datagram from a peer without a
//! connection and needs no OpenSSL handshake to do it: it answers with a
//! reply to send (HelloVerifyRequest), a drop with its reason, or an
//! [`Incoming`] peer whose cookie verified. The caller applies its own
//! policy (a reactor asks its handler, a listener queues for `accept()`) and
//! then calls [`FrontDoor::accept`], which runs `SSL_accept` and gives the
//! [`Connection`] with the server's first flight queued, or
//! [`FrontDoor::refuse`]. Before any of that the door checks, in this order:
//! the datagram is an epoch-0 ClientHello; it is not a late copy of a hello
//! already admitted (same peer, same client random, remembered for the last
//! [`RECENT_HELLOS`] admissions, also after their sessions ended); and when it
//! carries a cookie, that the [`Admission`]'s caps leave room. So a flood of
//! cookie-carrying hellos at a cap costs a few bytes of parsing each, no
//! OpenSSL session and no signature.
//!
//! A ClientHello on the link of an established server connection (RFC 6347
//! section 4.2.8, a peer that restarted) is the door's too:
//! [`FrontDoor::wants`] tells the front end to bring it, and
//! [`FrontDoor::handle_established`] answers as for a new peer (a late copy
//! of the session's own hello is dropped; without a valid cookie it only earns
//! a HelloVerifyRequest and the session stays); an [`Incoming`] from it
//! [`is_restart`](Incoming::is_restart), and [`FrontDoor::accept_restart`]
//! moves the old connection's slot to the new one.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use openssl::ssl::SslStream;

use crate::admission::{Admission, Count, DropReason, Slot};
use crate::config::ServerConfig;
use crate::conn::{Connection, Role};
use crate::cookie::{Checked, CookieStage};
use crate::cookie_keys::with_current_peer;
use crate::error::{Error, Result};
use crate::pipe::Pipe;
use crate::record::{Datagram, Kind};

/// How many admitted ClientHellos (peer and client random) a front door
/// remembers to recognise late copies.
pub const RECENT_HELLOS: usize = 4096;

/// Bounded memory of admitted (peer, client random) pairs, oldest forgotten first.
#[derive(Default)]
struct RecentHellos {
    set: HashSet<(SocketAddr, [u8; 32])>,
    order: VecDeque<(SocketAddr, [u8; 32])>,
}

impl RecentHellos {
    fn contains(&self, k: &(SocketAddr, [u8; 32])) -> bool {
        self.set.contains(k)
    }

    fn insert(&mut self, k: (SocketAddr, [u8; 32])) {
        if self.set.insert(k) {
            self.order.push_back(k);
            if self.order.len() > RECENT_HELLOS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// What the front door made of a datagram.
#[derive(Debug)]
#[non_exhaustive]
pub enum Admit {
    /// Send this datagram (a HelloVerifyRequest) back to the peer; nothing
    /// was kept.
    Reply(Vec<u8>),
    /// Dropped and counted, for the reason given.
    Drop(DropReason),
    /// A peer whose cookie verified: apply your policy, then
    /// [`FrontDoor::accept`] (or [`FrontDoor::accept_restart`] when
    /// [`Incoming::is_restart`]) or [`FrontDoor::refuse`] it.
    Incoming(Incoming),
}

enum Start {
    /// `DTLSv1_listen` verified the cookie; the session holds the hello.
    Listened(SslStream<Pipe>),
    /// Cookies are off: the hello, to start a fresh session with.
    Hello(Vec<u8>),
}

/// A peer that passed the cookie exchange; no handshake has run for it yet.
pub struct Incoming {
    peer: SocketAddr,
    random: Option<[u8; 32]>,
    restart: bool,
    start: Start,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("peer", &self.peer)
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True when the hello came on an established connection's link: the
    /// peer restarted, and accepting replaces that connection.
    pub fn is_restart(&self) -> bool {
        self.restart
    }

    /// The ClientHello's client random, when the hello was unfragmented.
    pub fn client_random(&self) -> Option<[u8; 32]> {
        self.random
    }
}

/// What [`FrontDoor::admit`] did with a datagram: the front door's answer
/// with every incoming peer accepted at once (a front end with no policy of
/// its own, such as the socket API).
#[derive(Debug)]
#[non_exhaustive]
pub enum Admitted {
    /// Send this datagram (a HelloVerifyRequest) back to the peer.
    Reply(Vec<u8>),
    /// Dropped and counted, for the reason given.
    Drop(DropReason),
    /// A new server connection, its first flight queued.
    Accepted(Box<Connection>),
    /// The handshake was refused on the ClientHello (send the alert), or a
    /// cap filled up.
    Refused(Refusal),
}

/// Why [`FrontDoor::accept`] made no connection.
#[derive(Debug)]
pub struct Refusal {
    /// The fatal alert to send to the peer, when there is one.
    pub alert: Option<Vec<u8>>,
    /// Why: the handshake failed on the ClientHello itself (no shared
    /// version, cipher, group...), or [`Error::Limit`] when a cap filled up
    /// between [`FrontDoor::handle`] and the accept.
    pub error: Error,
}

/// The front door of one listening port: see the module docs.
///
/// ```
/// use dtls_reactor::{Admission, Admit, ClientConfig, Connection, Datagram, FrontDoor, ServerConfig};
/// # let (cert_pem, key_pem) = include!("doc_pki.rs");
/// let server = ServerConfig::builder()
///     .certificate_chain_pem(&cert_pem)
///     .private_key_pem(&key_pem)
///     .build().unwrap();
/// let client_cfg = ClientConfig::builder()
///     .ca_pem(&cert_pem) // self-signed: its own CA
///     .server_name("localhost").build().unwrap();
/// let mut door = FrontDoor::new(&server, &Admission::default()).unwrap();
/// let mut client = Connection::client(&client_cfg, None).unwrap();
/// let peer = "127.0.0.1:40000".parse().unwrap();
///
/// // The first ClientHello has no cookie: the answer is a HelloVerifyRequest.
/// let hello = client.poll_transmit().unwrap();
/// let Admit::Reply(hvr) = door.handle(peer, &Datagram::parse(&hello)) else { panic!() };
/// client.feed(&hvr).unwrap();
/// // The second carries the cookie: an incoming peer, accepted into a connection.
/// let hello2 = client.poll_transmit().unwrap();
/// let Admit::Incoming(incoming) = door.handle(peer, &Datagram::parse(&hello2)) else { panic!() };
/// let mut server_conn = door.accept(incoming).unwrap();
/// assert!(server_conn.poll_transmit().is_some(), "the server's first flight");
/// ```
pub struct FrontDoor {
    stage: CookieStage,
    admission: Admission,
    recent: RecentHellos,
}

impl fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontDoor")
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl FrontDoor {
    /// A front door for connections of `config`, counted in `admission`.
    pub fn new(config: &ServerConfig, admission: &Admission) -> Result<Self> {
        Ok(FrontDoor {
            stage: CookieStage::new(config)?,
            admission: admission.clone(),
            recent: RecentHellos::default(),
        })
    }

    /// The configuration new connections get.
    pub fn config(&self) -> &ServerConfig {
        self.stage.config()
    }

    /// Takes `config` for every handshake from now on (certificate rotation,
    /// new settings); connections already made keep theirs. Cookies issued
    /// under the old configuration's [`crate::CookieKeys`] verify only if the
    /// new one shares them.
    pub fn set_config(&mut self, config: &ServerConfig) -> Result<()> {
        self.stage = CookieStage::new(config)?;
        log::debug!("front door: new server configuration for the next handshakes");
        Ok(())
    }

    /// The caps and counters this door shares.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// True when `d`, arriving on the link of `conn`, belongs to the front
    /// door rather than to the connection: an epoch-0 ClientHello on an
    /// established server connection (the peer may have restarted). Give it
    /// to [`Self::handle_established`]; feed anything else to `conn`.
    pub fn wants(conn: &Connection, d: &Datagram<'_>) -> bool {
        conn.role() == Role::Server && conn.is_established() && d.is_client_hello()
    }

    fn drop_with(&self, peer: SocketAddr, reason: DropReason) -> Admit {
        self.admission.dropped(reason);
        log::trace!("front door: datagram from {peer} dropped: {reason}");
        Admit::Drop(reason)
    }

    /// Looks at one datagram from `peer`, which has no connection.
    pub fn handle(&mut self, peer: SocketAddr, d: &Datagram<'_>) -> Admit {
        self.screen(peer, d, false)
    }

    /// Looks at a datagram for which [`Self::wants`] said true: a ClientHello
    /// on the link of `conn`, an established server connection.
    pub fn handle_established(&mut self, conn: &Connection, d: &Datagram<'_>) -> Admit {
        let peer = conn.peer_addr().unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        if d.client_random().is_some() && d.client_random() == conn.hello_random() {
            return self.drop_with(peer, DropReason::DuplicateHello);
        }
        if !self.stage.config().inner.require_cookie {
            return self.drop_with(peer, DropReason::Unproven);
        }
        let admit = self.screen(peer, d, true);
        if let Admit::Reply(_) = admit {
            log::debug!("front door: {peer}: ClientHello on an established session, cookie asked");
        }
        admit
    }

    fn screen(&mut self, peer: SocketAddr, d: &Datagram<'_>, restart: bool) -> Admit {
        if d.bytes().is_empty() {
            return self.drop_with(peer, DropReason::Empty);
        }
        match d.kind() {
            Kind::ClientHello => {}
            Kind::OtherHandshake => return self.drop_with(peer, DropReason::NotClientHello),
            Kind::Other => return self.drop_with(peer, DropReason::NotHandshake),
        }
        let random = d.client_random();
        if random.is_some_and(|r| self.recent.contains(&(peer, r))) {
            return self.drop_with(peer, DropReason::DuplicateHello);
        }
        let cookies = self.stage.config().inner.require_cookie;
        // At a cap, a hello that would pass the cookie is dropped before the
        // cookie is checked: no OpenSSL work, no signature. One without a
        // cookie still gets its (stateless, cheap) HelloVerifyRequest.
        if d.carries_cookie() || !cookies {
            if let Some(cap) = self.admission.full(restart) {
                log::trace!("front door: {peer} dropped: {cap}");
                return self.drop_with(peer, cap);
            }
        }
        let start = if cookies {
            match self.stage.check(peer, d) {
                Checked::HelloVerify(hvr) => {
                    self.admission.count(Count::HelloVerify);
                    log::trace!("front door: HelloVerifyRequest to {peer}");
                    return Admit::Reply(hvr);
                }
                Checked::Drop(reason) => return self.drop_with(peer, reason),
                Checked::Verified(s) => Start::Listened(s),
            }
        } else {
            Start::Hello(d.bytes().to_vec())
        };
        self.admission.count(Count::Incoming);
        Admit::Incoming(Incoming {
            peer,
            random,
            restart,
            start,
        })
    }

    /// Starts the handshake of `incoming` (`SSL_accept` on its ClientHello):
    /// a server connection with its first flight queued, holding a slot of
    /// the door's [`Admission`].
    pub fn accept(&mut self, incoming: Incoming) -> std::result::Result<Connection, Refusal> {
        let slot = self.admission.take(true).map_err(|cap| {
            self.admission.dropped(cap);
            Refusal {
                alert: None,
                error: Error::Limit(cap),
            }
        })?;
        self.start(incoming, slot)
    }

    /// [`Self::accept`] for an incoming peer that
    /// [restarted](Incoming::is_restart): the new connection takes over
    /// `old`'s connection slot (so a full server still lets a known peer
    /// restart), and `old` should be closed without close_notify and
    /// replaced. On a refusal `old` keeps its slot and may go on.
    pub fn accept_restart(
        &mut self,
        incoming: Incoming,
        old: &mut Connection,
    ) -> std::result::Result<Connection, Refusal> {
        let Some(mut slot) = old.take_slot() else {
            return self.accept(incoming);
        };
        if let Err(cap) = slot.begin_handshake() {
            old.put_slot(slot);
            self.admission.dropped(cap);
            return Err(Refusal {
                alert: None,
                error: Error::Limit(cap),
            });
        }
        match self.start(incoming, slot) {
            Ok(c) => {
                self.admission.count(Count::PeerRestarts);
                log::debug!("front door: {:?} restarted", c.peer_addr());
                Ok(c)
            }
            Err(r) => Err(r),
        }
    }

    fn start(&mut self, inc: Incoming, slot: Slot) -> std::result::Result<Connection, Refusal> {
        let peer = inc.peer;
        let config = self.stage.config();
        let mut conn = match inc.start {
            Start::Listened(s) => {
                // OpenSSL checks the cookie once more while it processes the hello.
                with_current_peer(peer, || Connection::from_listen(config, peer, s))
            }
            Start::Hello(h) => match Connection::server(config, peer, &h) {
                Ok(c) => c,
                Err(error) => {
                    log::warn!("front door: no session for {peer}: {error}");
                    return Err(Refusal { alert: None, error });
                }
            },
        };
        if conn.is_closed() {
            self.admission.count(Count::Refused);
            let alert = conn.poll_transmit();
            let error = conn.take_error().unwrap_or(Error::Closed);
            log::debug!("front door: handshake with {peer} refused: {error}");
            return Err(Refusal { alert, error });
        }
        conn.admitted(slot, inc.random);
        if let Some(r) = inc.random {
            self.recent.insert((peer, r));
        }
        self.admission.count(Count::Accepted);
        log::debug!("front door: {peer} admitted");
        Ok(conn)
    }

    /// [`Self::handle`], accepting an incoming peer at once.
    pub fn admit(&mut self, peer: SocketAddr, d: &Datagram<'_>) -> Admitted {
        match self.handle(peer, d) {
            Admit::Reply(r) => Admitted::Reply(r),
            Admit::Drop(why) => Admitted::Drop(why),
            Admit::Incoming(i) => Self::admitted(self.accept(i)),
        }
    }

    /// [`Self::handle_established`], accepting a restarted peer at once
    /// ([`Self::accept_restart`]): on [`Admitted::Accepted`] close `old`
    /// without close_notify and let the new connection take its place.
    pub fn admit_established(&mut self, old: &mut Connection, d: &Datagram<'_>) -> Admitted {
        match self.handle_established(old, d) {
            Admit::Reply(r) => Admitted::Reply(r),
            Admit::Drop(why) => Admitted::Drop(why),
            Admit::Incoming(i) => Self::admitted(self.accept_restart(i, old)),
        }
    }

    fn admitted(r: std::result::Result<Connection, Refusal>) -> Admitted {
        match r {
            Ok(c) => Admitted::Accepted(Box::new(c)),
            Err(r) => Admitted::Refused(r),
        }
    }

    /// Turns `incoming` away (the front end's policy said no): nothing was
    /// started for it, nothing is sent; the peer retries or gives up.
    pub fn refuse(&mut self, incoming: Incoming) {
        self.admission.count(Count::PolicyRefused);
        log::debug!("front door: {} refused", incoming.peer);
    }
}
