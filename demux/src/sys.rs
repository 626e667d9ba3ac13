//! Thin wrappers around the few system calls socket2 and std do not cover.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use socket2::SockRef;

/// `SO_ATTACH_REUSEPORT_CBPF` (Linux `asm-generic/socket.h`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attach the classic BPF program `ret #0` to the reuseport group of `sock`, so that
/// datagrams which match no connected socket always go to index 0 of the group.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn attach_reuseport_ret0(sock: &UdpSocket) -> io::Result<()> {
    // BPF_RET | BPF_K, k = 0: "return socket index 0".
    let mut filter = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points to `filter`, which outlives the call; the option length is the
    // size of `sock_fprog`, as the kernel expects for this option. The fd is valid for the
    // duration of the borrow of `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make `dst` refer to the open file description of `src` (atomically closing what `dst`
/// referred to), keeping close-on-exec set on `dst`.
pub(crate) fn dup_over(src: RawFd, dst: RawFd) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: dup3 only manipulates the descriptor table; both descriptors are owned
        // by the caller and stay open across the call (the caller holds the lock that
        // guards `dst` against being closed concurrently).
        let rc = unsafe { libc::dup3(src, dst, libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        // SAFETY: as above; dup2 then fcntl on a descriptor we own.
        let rc = unsafe { libc::dup2(src, dst) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dst` is a valid descriptor we own (dup2 succeeded).
        let rc = unsafe { libc::fcntl(dst, libc::F_SETFD, libc::FD_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Read one datagram without blocking, whatever the socket's blocking mode
/// (`MSG_DONTWAIT`). The socket's mode is left untouched.
pub(crate) fn recv_from_dontwait(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>)> {
    let sref = SockRef::from(sock);
    // SAFETY: `MaybeUninit<u8>` has the same layout as `u8`; the buffer is already
    // initialised and the callee only ever writes initialised bytes into it, so viewing
    // it as possibly-uninitialised cannot expose uninitialised memory to us.
    let ubuf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let (n, addr) = sref.recv_from_with_flags(ubuf, libc::MSG_DONTWAIT)?;
    Ok((n, addr.as_socket()))
}
