//! The handler's own event sources in the reactor's loop: a TCP control
//! socket, a pipe, a timerfd... registered through a [`SourceRegistry`]
//! ([`Ctx::sources`], or [`Reactor::sources`] before [`Reactor::run`]) and reported to
//! [`Handler::on_source`] under the token the handler chose.
//!
//! The reactor's own tokens (connection slab keys, `LISTENER_BASE + i`, the
//! waker) are not the handler's: each registration gets a mio token of its
//! own from `SOURCE_BASE` up, never reused, and [`Sources`] maps it back to
//! the handler's [`SourceToken`]. An event whose token is no longer in the
//! table (its source was deregistered after the poll) is dropped.

use std::collections::HashMap;
use std::fmt;
use std::io;

use mio::event::{Event, Source};
use mio::{Interest, Registry, Token};

#[cfg(doc)]
use super::Ctx;
use super::{Handler, Inner, Reactor, SOURCE_BASE, WAKER};
use crate::error::{Error, Result};

/// The token a handler chooses for a source it registers
/// ([`SourceRegistry::register`]);
/// [`Handler::on_source`] hands it back. Any value: the reactor maps it
/// through a table of its own, so it never collides with the reactor's
/// tokens. Several sources may share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceToken(pub u64);

/// One registration of a handler's source ([`SourceRegistry::register`]),
/// for [`SourceRegistry::reregister`] and [`SourceRegistry::deregister`].
/// Never reused: a stale id names no source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(u64);

/// What a handler's source is ready for ([`Handler::on_source`]): mio's
/// [`Event`](mio::event::Event) readiness, copied out of the event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    readable: bool,
    writable: bool,
    error: bool,
    read_closed: bool,
    write_closed: bool,
    priority: bool,
}

impl Readiness {
    /// Readable (see [`mio::event::Event::is_readable`]).
    pub fn is_readable(&self) -> bool {
        self.readable
    }
    /// Writable (see [`mio::event::Event::is_writable`]).
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    /// An error is pending on the source (see [`mio::event::Event::is_error`]).
    pub fn is_error(&self) -> bool {
        self.error
    }
    /// The read half closed (see [`mio::event::Event::is_read_closed`]).
    pub fn is_read_closed(&self) -> bool {
        self.read_closed
    }
    /// The write half closed (see [`mio::event::Event::is_write_closed`]).
    pub fn is_write_closed(&self) -> bool {
        self.write_closed
    }
    /// Priority data (see [`mio::event::Event::is_priority`]).
    pub fn is_priority(&self) -> bool {
        self.priority
    }
}

impl From<&Event> for Readiness {
    fn from(ev: &Event) -> Self {
        Readiness {
            readable: ev.is_readable(),
            writable: ev.is_writable(),
            error: ev.is_error(),
            read_closed: ev.is_read_closed(),
            write_closed: ev.is_write_closed(),
            priority: ev.is_priority(),
        }
    }
}

/// The handler's registrations: the reactor's mio token of each (from
/// `SOURCE_BASE`) to the handler's token.
#[derive(Debug, Default)]
pub(super) struct Sources {
    next: u64,
    table: HashMap<u64, SourceToken>,
}

impl Sources {
    /// The reactor's mio token of registration `n`.
    fn token(n: u64) -> Token {
        Token(SOURCE_BASE + n as usize)
    }

    /// The handler's token for the reactor's mio `token` (at or above
    /// `SOURCE_BASE`), while its source is registered.
    pub(super) fn lookup(&self, token: Token) -> Option<SourceToken> {
        let n = token.0.checked_sub(SOURCE_BASE)?;
        self.table.get(&(n as u64)).copied()
    }
}

/// Puts the handler's own sources (a TCP socket, a pipe, a timerfd: any
/// [`mio::event::Source`]) in a reactor's loop, from [`Ctx::sources`] inside
/// callbacks or [`Reactor::sources`] before [`Reactor::run`]: mio's
/// [`Registry`] with the reactor's token table in front.
///
/// A registered source's readiness reaches [`Handler::on_source`] with the
/// handler's [`SourceToken`]. The handler keeps the source and reads it
/// itself (the registration follows the descriptor, so the source may move
/// into the handler after [`Reactor::sources`]). Registration is
/// edge-triggered: each callback must drain the source to `WouldBlock`.
/// Deregister a source before dropping it: the kernel forgets a closed
/// descriptor, but the reactor's table keeps its entry until then.
///
/// ```no_run
/// use std::io::Read;
/// use dtls_reactor::mio::{net::TcpStream, Interest};
/// use dtls_reactor::{Ctx, Handler, Reactor, Readiness, SourceToken};
///
/// struct Control { stream: Option<TcpStream> }
/// impl Handler for Control {
///     fn on_source(&mut self, ctx: &mut Ctx<'_>, token: SourceToken, _r: Readiness) {
///         let Some(stream) = self.stream.as_mut() else { return };
///         let mut buf = [0u8; 512];
///         // Edge-triggered: read until WouldBlock (Err) or the end (0).
///         while let Ok(n) = stream.read(&mut buf) {
///             if n == 0 { ctx.stop(); break; }
///             println!("{token:?}: {:?}", &buf[..n]);
///         }
///     }
/// }
///
/// let mut stream = TcpStream::connect("127.0.0.1:9000".parse().unwrap()).unwrap();
/// let mut reactor = Reactor::new(Control { stream: None }).unwrap();
/// reactor.sources().register(&mut stream, SourceToken(7), Interest::READABLE).unwrap();
/// reactor.handler_mut().stream = Some(stream); // the registration follows the descriptor
/// reactor.run().unwrap();
/// ```
pub struct SourceRegistry<'a> {
    sources: &'a mut Sources,
    registry: &'a Registry,
}

impl fmt::Debug for SourceRegistry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceRegistry")
            .field("registered", &self.sources.table.len())
            .finish_non_exhaustive()
    }
}

impl SourceRegistry<'_> {
    /// Registers `source` for `interest` under the handler's `token`.
    pub fn register<S: Source + ?Sized>(
        &mut self,
        source: &mut S,
        token: SourceToken,
        interest: Interest,
    ) -> Result<SourceId> {
        let n = self.sources.next;
        if n as usize >= WAKER.0 - SOURCE_BASE {
            return Err(Error::Io(io::Error::other(
                "reactor: no source tokens left",
            )));
        }
        self.registry
            .register(source, Sources::token(n), interest)?;
        self.sources.next += 1;
        self.sources.table.insert(n, token);
        Ok(SourceId(n))
    }

    /// Changes the token or interest of registration `id` of `source`.
    /// `NotFound` for an id that is not registered.
    pub fn reregister<S: Source + ?Sized>(
        &mut self,
        source: &mut S,
        id: SourceId,
        token: SourceToken,
        interest: Interest,
    ) -> Result<()> {
        let Some(t) = self.sources.table.get_mut(&id.0) else {
            return Err(unknown());
        };
        self.registry
            .reregister(source, Sources::token(id.0), interest)?;
        *t = token;
        Ok(())
    }

    /// Takes `source` (registration `id`) out of the loop: no
    /// [`Handler::on_source`] follows for it, not even for readiness already
    /// polled in this turn. `NotFound` for an id that is not registered.
    pub fn deregister<S: Source + ?Sized>(&mut self, source: &mut S, id: SourceId) -> Result<()> {
        if self.sources.table.remove(&id.0).is_none() {
            return Err(unknown());
        }
        self.registry.deregister(source)?;
        Ok(())
    }
}

fn unknown() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::NotFound,
        "not a source registered with this reactor",
    ))
}

impl Inner {
    /// The handler's sources, for [`Ctx::sources`] and [`Reactor::sources`].
    pub(super) fn source_registry(&mut self) -> SourceRegistry<'_> {
        SourceRegistry {
            sources: &mut self.sources,
            registry: self.poll.registry(),
        }
    }
}

impl<H: Handler> Reactor<H> {
    /// A readiness event of the reactor's mio `token` (a handler's source):
    /// [`Handler::on_source`] with the handler's token, unless the source
    /// was deregistered since the poll.
    pub(super) fn source_ready(&mut self, token: Token, readiness: Readiness) {
        let Some(t) = self.inner.sources.lookup(token) else {
            return;
        };
        let (h, mut ctx) = self.ctx_handler();
        h.on_source(&mut ctx, t, readiness);
    }
}
