//! Test scaffolding of the dtls-reactor workspace, written once for both crates.
//!
//! - [`variant`]: [`Fam`], [`Variant`] and [`four_ways!`], the four ways every socket test
//!   runs (IPv4 or IPv6 loopback, OsNet or Router), and [`six_ways!`], which adds the
//!   shared socket for reactor tests. Used by the tests of `dtls-demux` and of
//!   `dtls-reactor`.
//! - [`pki`] (feature `engine`): the test PKI of `tests/certs/` and the standard client and
//!   server configs.
//! - [`pair`] (feature `engine`): the in-memory pair driver, a client and a server
//!   [`Connection`](dtls_reactor::Connection) taken through the cookie stage to established by
//!   passing datagrams in one thread. Used by the tests, `benches/engine.rs`, the fuzz targets
//!   and the reactor's unit test.
//!
//! Not published: the real crates name it as a path dev-dependency without a version, which
//! `cargo publish` strips from their manifests.
#![warn(missing_docs)]

pub mod variant;

#[cfg(feature = "engine")]
pub mod pair;
#[cfg(feature = "engine")]
pub mod pki;

pub use dtls_demux::DemuxKind;
pub use variant::{Fam, Variant};

#[cfg(feature = "engine")]
pub use pair::{
    admit, cookie_exchange, echo, established_pair, handshake, handshake_in, handshake_with, peer,
    stage, transfer, CookieExchange, Dir, Pair, Stage,
};
#[cfg(feature = "engine")]
pub use pki::*;
