//! DTLS 1.0 and 1.2 (RFC 6347) over OpenSSL for UDP programs.
//!
//! The engine, usable on its own with any I/O:
//! - [`ClientConfig`] / [`ServerConfig`]: validated settings ([`ConfigBuilder`]).
//! - [`Connection`]: one sans-IO DTLS session: feed datagrams, drain the ones
//!   it wants sent, honour its deadline.
//! - [`CookieStage`]: the stateless HelloVerifyRequest exchange that admits a
//!   peer before any per-peer state exists.
//! - [`Error`]: one error type, convertible to `std::io::Error`.
//!
//! Sockets in the shape of `std::net` ([`socket`] module):
//! - [`DtlsSocket`]: one connection, client or server side, blocking with
//!   timeouts or non-blocking; `shutdown`/`unwrap` give the UDP socket back.
//! - [`DtlsListener`]: bind a port with a demux ([`DemuxKind`]) and
//!   `accept()` connections (or `None`).
//!
//! Coming from Python's `ssl` module or PyDTLS? The [`socket`] module docs
//! have [a table from each Python call to
//! ours](socket#from-pythons-ssl--pydtls).
//!
//! The reactor: [`Reactor`] (a single-threaded mio event loop serving many
//! peers), [`Handler`] (what the application does on each event), [`Ctx`],
//! [`ReactorHandle`] (for other threads), [`Limits`].
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod config;
mod conn;
mod cookie;
mod cookie_keys;
mod error;
mod ffi;
mod key_ring;
mod reactor;
mod record;
mod session_store;
pub mod socket;

pub use config::{
    CertVerdict, Client, ClientConfig, ConfigBuilder, Credentials, PeerChain, Protocol, Server,
    ServerConfig, TicketKeys, Timers, Verify, DEFAULT_MTU, MIN_INITIAL_TIMEOUT, MIN_MTU,
    TICKET_SECRET_LEN,
};
pub use conn::{CloseReason, ConnStats, Connection, Event, PeerCertificate, Role, State};
pub use cookie::{CookieStage, CookieStats, DropReason, Verdict};
pub use cookie_keys::{CookieKeys, COOKIE_LEN, COOKIE_SECRET_LEN, DEFAULT_COOKIE_MAX_AGE};
pub use error::{Error, Result};
pub use session_store::{MemorySessionStore, SessionKey, SessionStore, DEFAULT_SESSION_CAPACITY};
pub use socket::{DtlsListener, DtlsSocket, ListenerStats, Transport, UnwrapError};

/// The demux choice of [`DtlsListener::bind`], from the `dtls-demux` crate.
pub use dtls_demux::DemuxKind;
pub use reactor::{
    CloseCause, ConnId, Ctx, DtlsTimeout, Handler, Limits, ListenerId, Reactor, ReactorHandle,
    ReactorStats, TimerId,
};

/// The OpenSSL version this library runs on, as OpenSSL prints it.
///
/// ```
/// assert!(dtls_reactor::openssl_version().starts_with("OpenSSL"));
/// ```
pub fn openssl_version() -> &'static str {
    openssl::version::version()
}
