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
            log::debug!(
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
            log::debug!(
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
        Err(e) => log::debug!(
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
