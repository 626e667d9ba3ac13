//! The four ways every socket test runs: IPv4 or IPv6 loopback, OsNet or Router; and
//! the six ways of reactor tests, which add the shared socket
//! (`dtls_demux::SharedSocket`, one socket for every peer), which only the reactor
//! serves.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dtls_demux::DemuxKind;

/// Address family of a test variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fam {
    /// IPv4 (`127.0.0.1`).
    V4,
    /// IPv6 (`::1`).
    V6,
}

impl Fam {
    /// The loopback address of the family.
    pub fn loopback(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Fam::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }

    /// The wildcard address of the family (`0.0.0.0`, `::`).
    pub fn wildcard(self) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Fam::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// The loopback address of the family with port 0 (the kernel picks a free port).
    pub fn any_port(self) -> SocketAddr {
        SocketAddr::new(self.loopback(), 0)
    }
}

/// One of the four ways every socket test runs: an address family and the demux the server
/// listens with. [`four_ways!`](crate::four_ways) makes one test of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The address family: the server and its clients use its loopback address.
    pub fam: Fam,
    /// The demux the server listens with (unused when `shared`).
    pub demux: DemuxKind,
    /// The server listens on a `SharedSocket` instead of a demux (reactor tests:
    /// [`six_ways!`](crate::six_ways)).
    pub shared: bool,
}

impl Variant {
    /// The four variants, in the order of the tests [`four_ways!`](crate::four_ways) makes.
    pub const ALL: [Variant; 4] = [
        Variant::of(Fam::V4, DemuxKind::OsNet),
        Variant::of(Fam::V6, DemuxKind::OsNet),
        Variant::of(Fam::V4, DemuxKind::Router),
        Variant::of(Fam::V6, DemuxKind::Router),
    ];

    /// The variant of `fam` and `demux`.
    pub const fn of(fam: Fam, demux: DemuxKind) -> Self {
        Variant {
            fam,
            demux,
            shared: false,
        }
    }

    /// The variant of `fam` whose server listens on a shared socket.
    pub const fn shared(fam: Fam) -> Self {
        Variant {
            fam,
            demux: DemuxKind::OsNet,
            shared: true,
        }
    }

    /// IPv6 when `v6`, else IPv4, with `demux`.
    pub fn new(v6: bool, demux: DemuxKind) -> Self {
        Variant::of(if v6 { Fam::V6 } else { Fam::V4 }, demux)
    }

    /// The loopback address of the family.
    pub fn ip(&self) -> IpAddr {
        self.fam.loopback()
    }

    /// The loopback address of the family with port 0 (the kernel picks a free port).
    pub fn any_port(&self) -> SocketAddr {
        self.fam.any_port()
    }
}

/// For each listed function `fn name(v: Variant)`, a module `name` with four tests, one per
/// [`Variant`]: `v4_osnet`, `v6_osnet`, `v4_router`, `v6_router`.
///
/// ```
/// use dtls_test_support::{four_ways, Variant};
///
/// /// A server on `v.any_port()` with `v.demux`, its clients on `v.ip()`...
/// fn echo(v: Variant) {
///     assert!(v.ip().is_loopback());
/// }
///
/// four_ways!(echo); // tests echo::v4_osnet, echo::v6_osnet, echo::v4_router, echo::v6_router
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! four_ways {
    ($($name:ident),* $(,)?) => {
        $(
            $crate::ways!($name;
                v4_osnet => Variant::of(Fam::V4, DemuxKind::OsNet),
                v6_osnet => Variant::of(Fam::V6, DemuxKind::OsNet),
                v4_router => Variant::of(Fam::V4, DemuxKind::Router),
                v6_router => Variant::of(Fam::V6, DemuxKind::Router),
            );
        )*
    };
}

/// [`four_ways!`](crate::four_ways) plus two tests on a shared socket, for tests of
/// the reactor (the one front end that serves `SharedSocket`): `v4_osnet`, `v6_osnet`,
/// `v4_router`, `v6_router`, `v4_shared`, `v6_shared`.
#[macro_export]
macro_rules! six_ways {
    ($($name:ident),* $(,)?) => {
        $(
            $crate::ways!($name;
                v4_osnet => Variant::of(Fam::V4, DemuxKind::OsNet),
                v6_osnet => Variant::of(Fam::V6, DemuxKind::OsNet),
                v4_router => Variant::of(Fam::V4, DemuxKind::Router),
                v6_router => Variant::of(Fam::V6, DemuxKind::Router),
                v4_shared => Variant::shared(Fam::V4),
                v6_shared => Variant::shared(Fam::V6),
            );
        )*
    };
}

/// A module `name` with one test per `test => variant`, each calling
/// `super::name(variant)`: what [`four_ways!`](crate::four_ways) and
/// [`six_ways!`](crate::six_ways) expand to.
#[doc(hidden)]
#[macro_export]
macro_rules! ways {
    ($name:ident; $($test:ident => $v:expr),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use $crate::{DemuxKind, Fam, Variant};
            $(
                #[test]
                fn $test() { super::$name($v) }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants() {
        let all: Vec<_> = Variant::ALL.iter().map(|v| (v.fam, v.demux)).collect();
        assert_eq!(
            all,
            [
                (Fam::V4, DemuxKind::OsNet),
                (Fam::V6, DemuxKind::OsNet),
                (Fam::V4, DemuxKind::Router),
                (Fam::V6, DemuxKind::Router),
            ]
        );
        assert_eq!(Variant::new(true, DemuxKind::Router), Variant::ALL[3]);
        assert_eq!(Variant::new(false, DemuxKind::OsNet), Variant::ALL[0]);
        for v in Variant::ALL {
            assert!(v.ip().is_loopback());
            assert_eq!(v.ip().is_ipv6(), v.fam == Fam::V6);
            assert_eq!(v.any_port(), std::net::SocketAddr::new(v.ip(), 0));
            assert!(v.fam.wildcard().is_unspecified());
            assert_eq!(v.fam.wildcard().is_ipv6(), v.fam == Fam::V6);
        }
    }
}
