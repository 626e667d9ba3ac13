//! Thin wrappers around the few system calls socket2 and std do not cover.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use socket2::SockRef;

/// `SO_ATTACH_REUSEPORT_CBPF` (Linux `asm-generic/socket.h`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// `setsockopt(fd, level, name, value)` for an option whose value is a plain `T`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` for the duration of the call and its exact size is
    // passed, so the kernel reads only that value; the caller owns `fd` for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

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
    // `prog` points to `filter`, which outlives the call.
    setsockopt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        SO_ATTACH_REUSEPORT_CBPF,
        &prog,
    )
}

/// Attach a classic BPF program to the reuseport group of `sock` that picks socket index
/// `hash(source address, source port) % n`: every datagram of one peer goes to the same
/// index among the first `n` members (the group's listeners), whatever its address family
/// (the IP version is read from the packet, so a dual-stack IPv6 group handles IPv4 peers
/// too). Assumes IPv4 packets without options and IPv6 packets without extension headers
/// for the port; other packets are still hashed deterministically per peer.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn attach_reuseport_hash(sock: &UdpSocket, n: u32) -> io::Result<()> {
    // Loads relative to the network header (the program's data starts after the UDP
    // header for reuseport programs).
    const NET: u32 = 0xfff0_0000; // SKF_NET_OFF = -0x100000
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld, ldh, ldb, abs) = (libc::BPF_LD, libc::BPF_H, libc::BPF_B, libc::BPF_ABS);
    let w = libc::BPF_W;
    let tax = libc::BPF_MISC | libc::BPF_TAX;
    let add_x = libc::BPF_ALU | libc::BPF_ADD | libc::BPF_X;
    let mix = [
        op(
            libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K,
            0,
            0,
            0x9E37_79B1,
        ),
        op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 0, 0, 16),
        op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, 0, 0, n.max(1)),
        op(libc::BPF_RET | libc::BPF_A, 0, 0, 0),
    ];
    let mut v6 = vec![
        op(ld | w | abs, 0, 0, NET + 8),
        op(tax, 0, 0, 0),
        op(ld | w | abs, 0, 0, NET + 12),
        op(add_x, 0, 0, 0),
        op(tax, 0, 0, 0),
        op(ld | w | abs, 0, 0, NET + 16),
        op(add_x, 0, 0, 0),
        op(tax, 0, 0, 0),
        op(ld | w | abs, 0, 0, NET + 20),
        op(add_x, 0, 0, 0),
        op(tax, 0, 0, 0),
        op(ld | ldh | abs, 0, 0, NET + 40),
        op(add_x, 0, 0, 0),
    ];
    v6.extend_from_slice(&mix);
    let mut v4 = vec![
        op(ld | w | abs, 0, 0, NET + 12),
        op(tax, 0, 0, 0),
        op(ld | ldh | abs, 0, 0, NET + 20),
        op(add_x, 0, 0, 0),
    ];
    v4.extend_from_slice(&mix);
    let mut filter = vec![
        op(ld | ldb | abs, 0, 0, NET),
        op(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 0, 0, 4),
        // IPv6: fall through; else jump over the IPv6 part.
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            v6.len() as u8,
            6,
        ),
    ];
    filter.extend(v6);
    filter.extend(v4);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // `prog` points to `filter`, which outlives the call.
    setsockopt(
        sock.as_raw_fd(),
        libc::SOL_SOCKET,
        SO_ATTACH_REUSEPORT_CBPF,
        &prog,
    )
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
