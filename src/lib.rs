//! DTLS 1.0 and 1.2 (RFC 6347) over OpenSSL for UDP programs.
//!
//! The engine, usable on its own with any I/O:
//! - [`ClientConfig`] / [`ServerConfig`]: validated settings ([`ConfigBuilder`]).
//! - [`Connection`]: one sans-IO DTLS session: feed datagrams, drain the ones
//!   it wants sent, honour its deadline.
//! - [`FrontDoor`]: every decision about a datagram that could start a
//!   session (the stateless HelloVerifyRequest exchange, late copies of
//!   hellos, the caps of an [`Admission`], peer restarts), made once for
//!   every front end; [`Datagram`]: a datagram's records, parsed once.
//! - [`Error`]: one error type, convertible to `std::io::Error`.
//!
#![cfg_attr(
    feature = "socket",
    doc = r#"
Sockets in the shape of `std::net` ([`socket`] module, feature `socket`):
- [`DtlsSocket`]: one connection, client or server side, blocking with
  timeouts or non-blocking; `shutdown`/`unwrap` give the UDP socket back.
- [`DtlsListener`]: bind a port with a demux ([`DemuxKind`]) and
  `accept()` connections (or `None`).

Coming from Python's `ssl` module or PyDTLS? The [`socket`] module docs
have [a table from each Python call to
ours](socket#from-pythons-ssl--pydtls).
"#
)]
#![cfg_attr(
    feature = "reactor",
    doc = r#"
The reactor (feature `reactor`): [`Reactor`] (a single-threaded mio event
loop serving many peers), [`Handler`] (what the application does on each
event), [`Ctx`], [`ReactorHandle`] (for other threads), [`Limits`].
"#
)]
//!
//! # Features
//!
//! | feature | default | what it adds | dependencies it adds |
//! |---|---|---|---|
//! | `socket` | on | `DtlsSocket`, `DtlsListener`, `DemuxKind` (the `socket` module) | `dtls-demux`, `socket2` (and through `dtls-demux`, `mio`) |
//! | `reactor` | on | `Reactor`, `Handler`, `Ctx`, `ReactorHandle`, `Limits`, `ReactorStats`, `CloseCause`... | `dtls-demux`, `mio`, `slab`, `crossbeam-channel`, `socket2` |
//! | `tokio` | off | `tokio::DtlsStream`, `tokio::DtlsListener` (async, over the same engine and front door) | `tokio` (`net`, `rt`, `time`, `sync`, `macros`), `dtls-demux` |
//! | `vendored` | off | builds OpenSSL from source and links it statically (`openssl/vendored`) | `openssl-src` (needs a C compiler, perl and make) |
//!
//! With `default-features = false` the crate is the engine alone
//! ([`Connection`], [`FrontDoor`], the configurations and errors), on
//! `openssl`, `openssl-sys`, `foreign-types-shared`, `libc`, `log` and
//! `thiserror`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod admission;
mod config;
mod conn;
mod conn_data;
mod conn_info;
mod conn_state;
mod cookie;
mod cookie_keys;
mod error;
mod established;
mod ffi;
mod front_door;
mod key_ring;
mod peer_cert;
mod pipe;
#[cfg(feature = "reactor")]
mod reactor;
mod record;
mod record_layer;
#[cfg(test)]
mod record_tests;
mod replay;
mod role;
mod session_store;
#[cfg(feature = "socket")]
pub mod socket;
mod ssl_error;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use admission::{Admission, AdmissionLimits, AdmissionStats, DropReason};
pub use config::{
    CertVerdict, Client, ClientConfig, ConfigBuilder, Credentials, PeerChain, Protocol, Server,
    ServerConfig, TicketKeys, Timers, Verify, DEFAULT_MTU, MIN_INITIAL_TIMEOUT, MIN_MTU,
    TICKET_SECRET_LEN,
};
pub use conn::{CloseReason, ConnStats, Connection, Event, Role, State};
pub use cookie_keys::{CookieKeys, COOKIE_LEN, COOKIE_SECRET_LEN, DEFAULT_COOKIE_MAX_AGE};
pub use error::{Error, Result};
pub use front_door::{Admit, Admitted, FrontDoor, Incoming, Refusal, RECENT_HELLOS};
pub use peer_cert::PeerCertificate;
pub use record::Datagram;
pub use session_store::{MemorySessionStore, SessionKey, SessionStore, DEFAULT_SESSION_CAPACITY};
#[cfg(feature = "socket")]
pub use socket::{DtlsListener, DtlsSocket, ListenerStats, Transport, UnwrapError};

/// The demux choice of `DtlsListener::bind`, from the `dtls-demux` crate.
#[cfg(any(feature = "socket", feature = "reactor"))]
pub use dtls_demux::DemuxKind;
#[cfg(feature = "reactor")]
pub use reactor::{
    CloseCause, ConnId, Ctx, DtlsTimeout, Handler, Limits, ListenerId, Reactor, ReactorHandle,
    ReactorStats, Readiness, SourceId, SourceRegistry, SourceToken, TimerId,
};

/// The `mio` this crate's reactor runs on: [`SourceRegistry::register`] takes its
/// [`mio::event::Source`] and [`mio::Interest`].
#[cfg(feature = "reactor")]
pub use mio;

/// The OpenSSL version this library runs on, as OpenSSL prints it.
///
/// ```
/// assert!(dtls_reactor::openssl_version().starts_with("OpenSSL"));
/// ```
pub fn openssl_version() -> &'static str {
    openssl::version::version()
}

/// The README's Rust snippets, compiled and run as doctests (they use every front end).
#[cfg(all(doctest, feature = "socket", feature = "reactor", feature = "tokio"))]
#[doc = include_str!("../README.md")]
mod readme {}
