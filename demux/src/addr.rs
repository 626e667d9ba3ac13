//! Peer address normalisation: one key per peer, whatever form the caller wrote it in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The address family and dual-stack setting of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Family {
    /// The listener is an `AF_INET6` socket.
    pub(crate) v6: bool,
    /// `IPV6_V6ONLY` of the listener (always true-ish meaningless for IPv4; stored false).
    pub(crate) v6only: bool,
}

impl Family {
    /// The key under which a peer is known to a listener of this family, or `None` when
    /// such a listener can never exchange datagrams with that address.
    ///
    /// - IPv4 listener: IPv4 peers as they are; IPv4-mapped IPv6 peers as IPv4.
    /// - IPv6 listener: IPv6 peers with the flow label cleared (the kernel reports 0
    ///   unless asked otherwise) and the scope id kept; IPv4 peers as `::ffff:a.b.c.d`
    ///   when the listener is dual-stack (`IPV6_V6ONLY` off).
    pub(crate) fn normalize(self, peer: SocketAddr) -> Option<SocketAddr> {
        match (self.v6, peer) {
            (false, SocketAddr::V4(_)) => Some(peer),
            (false, SocketAddr::V6(p)) => p
                .ip()
                .to_ipv4_mapped()
                .map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, p.port()))),
            (true, SocketAddr::V6(p)) => {
                if self.v6only && p.ip().to_ipv4_mapped().is_some() {
                    return None;
                }
                Some(SocketAddr::V6(SocketAddrV6::new(
                    *p.ip(),
                    p.port(),
                    0,
                    p.scope_id(),
                )))
            }
            (true, SocketAddr::V4(p)) => {
                if self.v6only {
                    None
                } else {
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        p.ip().to_ipv6_mapped(),
                        p.port(),
                        0,
                        0,
                    )))
                }
            }
        }
    }
}

/// The address a Router link socket binds to: the listener's own address, or the
/// loopback address of the same family when the listener is on the wildcard.
pub(crate) fn router_link_bind(listener: SocketAddr) -> SocketAddr {
    match listener {
        SocketAddr::V4(l) => {
            let ip = if l.ip().is_unspecified() {
                Ipv4Addr::LOCALHOST
            } else {
                *l.ip()
            };
            SocketAddr::V4(SocketAddrV4::new(ip, 0))
        }
        SocketAddr::V6(l) => {
            let (ip, scope) = if l.ip().is_unspecified() {
                (Ipv6Addr::LOCALHOST, 0)
            } else {
                (*l.ip(), l.scope_id())
            };
            SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, scope))
        }
    }
}

/// True when `ip` is an IPv4-mapped IPv6 address (needs `IPV6_V6ONLY` off to be used).
pub(crate) fn is_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_listener() {
        let f = Family {
            v6: false,
            v6only: false,
        };
        let a: SocketAddr = "10.0.0.1:5".parse().unwrap();
        assert_eq!(f.normalize(a), Some(a));
        assert_eq!(f.normalize("[::ffff:10.0.0.1]:5".parse().unwrap()), Some(a));
        assert_eq!(f.normalize("[::1]:5".parse().unwrap()), None);
    }

    #[test]
    fn v6_listener() {
        let dual = Family {
            v6: true,
            v6only: false,
        };
        let only = Family {
            v6: true,
            v6only: true,
        };
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(dual.normalize("10.0.0.1:5".parse().unwrap()), Some(mapped));
        assert_eq!(only.normalize("10.0.0.1:5".parse().unwrap()), None);
        assert_eq!(only.normalize(mapped), None);
        let with_flow = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 7, 99, 3));
        let want = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 7, 0, 3));
        assert_eq!(dual.normalize(with_flow), Some(want));
    }

    #[test]
    fn router_bind() {
        assert_eq!(
            router_link_bind("0.0.0.0:9".parse().unwrap()),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            router_link_bind("[::]:9".parse().unwrap()),
            "[::1]:0".parse().unwrap()
        );
        assert_eq!(
            router_link_bind("10.1.2.3:9".parse().unwrap()),
            "10.1.2.3:0".parse().unwrap()
        );
    }
}
