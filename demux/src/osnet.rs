//! `OsNet`: the kernel routes each peer to its own connected socket (Linux SO_REUSEPORT).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::core::Core;
use crate::DemuxKind;

/// Options of an [`OsNet`] listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct OsNetOptions {
    /// Attach the reuseport BPF program `ret #0` to the listener (default: true). Turn
    /// it off when the listener shares its port with other listeners that need another
    /// program (e.g. one spreading new peers over several reactors); the race handling
    /// then does all the work.
    pub reuseport_bpf: bool,
}

impl Default for OsNetOptions {
    fn default() -> Self {
        OsNetOptions {
            reuseport_bpf: true,
        }
    }
}

impl OsNetOptions {
    /// Set [`reuseport_bpf`](OsNetOptions::reuseport_bpf).
    pub fn reuseport_bpf(mut self, on: bool) -> Self {
        self.reuseport_bpf = on;
        self
    }
}

/// A socket per peer, bound with `SO_REUSEADDR` + `SO_REUSEPORT` to the listener's exact
/// local address and port and connected to the peer: the kernel delivers the peer's
/// datagrams straight to it.
///
/// The listener gets the classic BPF program `ret #0` (`SO_ATTACH_REUSEPORT_CBPF`), so
/// datagrams of peers without a connected socket always go to it (index 0 of the
/// reuseport group) rather than to a per-peer socket caught between bind() and connect().
/// The race is still handled: such datagrams are read once after connect() and kept in
/// the demux's stray queue, which [`Demux::recv_from`](crate::Demux::recv_from) returns
/// first; datagrams of the peer itself found on the listener are routed to its link's
/// memory queue ([`Route::Delivered`](crate::Route::Delivered)).
///
/// Linux and Android only: elsewhere the constructors fail with
/// [`io::ErrorKind::Unsupported`].
#[derive(Debug)]
pub struct OsNet {
    pub(crate) core: Arc<Core>,
}

impl OsNet {
    /// Bind a new listener on `addr` (port 0 picks a free port).
    ///
    /// The socket is bound *without* `SO_REUSEPORT`, so the bind fails with
    /// [`io::ErrorKind::AddrInUse`] if anything already holds the port, and the port
    /// picked for port 0 is guaranteed unshared; `SO_REUSEPORT` is set just after, which
    /// makes the listener the first member (index 0) of its reuseport group. For an IPv6
    /// address `IPV6_V6ONLY` is left at the system default (off on Linux unless
    /// `net.ipv6.bindv6only` is set), as `std::net::UdpSocket::bind` does.
    pub fn bind(addr: SocketAddr) -> io::Result<Arc<OsNet>> {
        Self::bind_with(addr, OsNetOptions::default())
    }

    /// [`bind`](OsNet::bind) with options.
    pub fn bind_with(addr: SocketAddr, opts: OsNetOptions) -> io::Result<Arc<OsNet>> {
        unsupported()?;
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.bind(&addr.into())?;
        s.set_reuse_port(true)?;
        Self::setup(s.into(), opts)
    }

    /// Bind `n` listeners on one address and port (port 0 picks a free port), for `n`
    /// reactors or threads, each serving its own [`OsNet`]: one reuseport group whose first
    /// `n` members are these listeners, with a classic BPF program that spreads new peers
    /// over them by a hash of the peer's address and port. Every datagram of one peer
    /// reaches the same listener (so a DTLS cookie retry from the same address and port
    /// reaches the reactor that sent the cookie) until the peer has its own socket.
    ///
    /// The first socket is bound without `SO_REUSEPORT`, as in [`bind`](OsNet::bind),
    /// so the bind fails with [`io::ErrorKind::AddrInUse`] if the port is taken. `n` must
    /// be between 1 and 256 ([`io::ErrorKind::InvalidInput`] otherwise). If the program
    /// cannot be attached the kernel's own reuseport hash spreads peers, which also sends
    /// some to per-peer sockets; the race handling catches those (see
    /// [`Demux::has_buffered`](crate::Demux::has_buffered)). As with one listener, IPv4
    /// groups with connected members still see strays (datagrams of new peers caught by
    /// another member); each listener's race handling keeps them, so such a peer may be
    /// served by another listener of the group than the hash chose.
    pub fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<Arc<OsNet>>> {
        unsupported()?;
        if !(1..=256).contains(&n) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dtls-demux: a listener group has 1 to 256 members",
            ));
        }
        let first = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        first.bind(&addr.into())?;
        first.set_reuse_port(true)?;
        let local = first
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an inet socket"))?;
        let v6only = if local.is_ipv6() {
            Some(first.only_v6()?)
        } else {
            None
        };
        let mut socks: Vec<UdpSocket> = vec![first.into()];
        for _ in 1..n {
            let s = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            if let Some(only) = v6only {
                s.set_only_v6(only)?;
            }
            s.bind(&local.into())?;
            socks.push(s.into());
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if n > 1 {
            // With one member there is no group yet: `setup` installs `ret #0` as `bind` does.
            match crate::sys::attach_reuseport_hash(&socks[0], n as u32) {
                Ok(()) => log::debug!("dtls-demux: {local}: group of {n}, reuseport hash BPF attached"),
                Err(e) => log::warn!(
                    "dtls-demux: {local}: cannot attach the group's reuseport BPF ({e}); relying on race handling"
                ),
            }
        }
        let opts = OsNetOptions::default().reuseport_bpf(n == 1);
        socks.into_iter().map(|s| Self::setup(s, opts)).collect()
    }

    /// Wrap an already-bound socket. It must have `SO_REUSEPORT` set (else
    /// [`io::ErrorKind::InvalidInput`]) and should be the first socket of its reuseport
    /// group: the BPF program sends unmatched traffic to index 0 of the group.
    pub fn from_socket(sock: UdpSocket) -> io::Result<Arc<OsNet>> {
        Self::from_socket_with(sock, OsNetOptions::default())
    }

    /// [`from_socket`](OsNet::from_socket) with options.
    pub fn from_socket_with(sock: UdpSocket, opts: OsNetOptions) -> io::Result<Arc<OsNet>> {
        unsupported()?;
        if !SockRef::from(&sock).reuse_port()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dtls-demux: OsNet needs SO_REUSEPORT set on the listening socket",
            ));
        }
        Self::setup(sock, opts)
    }

    fn setup(sock: UdpSocket, opts: OsNetOptions) -> io::Result<Arc<OsNet>> {
        let core = Core::new(DemuxKind::OsNet, sock)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if opts.reuseport_bpf {
            install_ret0(&core);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = opts;
        log::debug!(
            "dtls-demux: OsNet listening on {} ({:?})",
            core.local,
            core.family
        );
        Ok(Arc::new(OsNet {
            core: Arc::new(core),
        }))
    }

    /// Test hook, not part of the API: pause this long between bind() and connect() of
    /// each new per-peer socket, to widen the race the demux must handle.
    #[doc(hidden)]
    pub fn __set_race_window(&self, pause: Duration) {
        self.core
            .race_window_us
            .store(pause.as_micros() as u64, Ordering::Relaxed);
    }
}

fn unsupported() -> io::Result<()> {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "dtls-demux: OsNet needs Linux SO_REUSEPORT semantics; use Router",
        ))
    }
}

/// Attach `ret #0` to the listener's reuseport group. A socket whose `SO_REUSEPORT` was
/// set after bind() has no group yet (the kernel answers EINVAL): a short-lived socket
/// bound to the same address creates it, with the listener at index 0; whatever reaches
/// that socket before the program is in place goes to the stray queue.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn install_ret0(core: &Core) {
    use crate::sys;
    match sys::attach_reuseport_ret0(&core.listener) {
        Ok(()) => {
            log::debug!(
                "dtls-demux: {}: reuseport BPF `ret #0` attached",
                core.local
            );
            return;
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => {
            log::warn!(
                "dtls-demux: {}: cannot attach reuseport BPF ({}); relying on race handling",
                core.local,
                e
            );
            return;
        }
    }
    let joined = (|| -> io::Result<UdpSocket> {
        let s = Socket::new(
            Domain::for_address(core.local),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        if core.family.v6 {
            s.set_only_v6(core.family.v6only)?;
        }
        s.bind(&core.local.into())?;
        Ok(s.into())
    })();
    let helper = match joined {
        Ok(h) => h,
        Err(e) => {
            log::warn!(
                "dtls-demux: {}: cannot create the reuseport group ({}); relying on race handling",
                core.local,
                e
            );
            return;
        }
    };
    match sys::attach_reuseport_ret0(&core.listener) {
        Ok(()) => log::debug!(
            "dtls-demux: {}: reuseport BPF `ret #0` attached",
            core.local
        ),
        Err(e) => log::warn!(
            "dtls-demux: {}: cannot attach reuseport BPF ({}); relying on race handling",
            core.local,
            e
        ),
    }
    let mut buf = vec![0u8; 65_536];
    for _ in 0..4096 {
        match sys::recv_from_dontwait(&helper, &mut buf) {
            Ok((n, Some(from))) => core.stray_from_link(from, &buf[..n]),
            Ok((_, None)) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
