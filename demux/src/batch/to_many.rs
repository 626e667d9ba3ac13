//! One `sendmmsg` for datagrams addressed to many peers: what a socket shared by every
//! peer ([`SharedSocket`](crate::SharedSocket)) sends in one turn.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use super::MAX_SEND;
#[cfg(any(target_os = "linux", target_os = "android"))]
use super::{gso_refused, gso_run_end, GSO_OK, SOL_UDP, UDP_SEGMENT};
#[cfg(any(target_os = "linux", target_os = "android"))]
use std::sync::atomic::Ordering;

/// One datagram for [`send_to_many`]: where it goes, from which local address, what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The destination.
    pub to: SocketAddr,
    /// The source address, for a socket bound to a wildcard address (`IP_PKTINFO` /
    /// `IPV6_PKTINFO` on the message); `None`: the kernel's choice (or the socket's
    /// own address when it is bound to one).
    pub from: Option<IpAddr>,
    /// The payload.
    pub data: &'a [u8],
}

/// Sends `msgs` in order without blocking (`MSG_DONTWAIT`) in one `sendmmsg`, each to
/// its own destination, and returns how many were sent: the first `n`, at most
/// [`MAX_SEND`]. Consecutive datagrams to the same destination from the same source go
/// as one `UDP_SEGMENT` message when their sizes allow (as in
/// [`send_batch`](super::send_batch)). Nothing could be sent: the error (`WouldBlock`
/// when the send buffer is full).
pub fn send_to_many(sock: &impl AsRawFd, msgs: &[Transmit<'_>]) -> io::Result<usize> {
    let msgs = &msgs[..msgs.len().min(MAX_SEND)];
    if msgs.is_empty() {
        return Ok(0);
    }
    send_into(sock.as_raw_fd(), msgs)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_into(fd: std::os::fd::RawFd, msgs: &[Transmit<'_>]) -> io::Result<usize> {
    let gso = GSO_OK.load(Ordering::Relaxed);
    match send_many(fd, msgs, gso) {
        Err(e) if gso && gso_refused(&e) => {
            GSO_OK.store(false, Ordering::Relaxed);
            log::warn!(
                "dtls-demux: UDP GSO refused ({e}); sending one datagram per message from now on"
            );
            send_many(fd, msgs, false)
        }
        r => r,
    }
}

/// Control buffer per message, in 8-byte words: `UDP_SEGMENT` (24 bytes) plus
/// `IPV6_PKTINFO` (40 bytes).
#[cfg(any(target_os = "linux", target_os = "android"))]
const CONTROL_WORDS: usize = 8;

/// The `cmsg` payload size of packet info for `ip`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pktinfo_len(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => std::mem::size_of::<libc::in_pktinfo>(),
        IpAddr::V6(_) => std::mem::size_of::<libc::in6_pktinfo>(),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_many(fd: std::os::fd::RawFd, msgs: &[Transmit<'_>], gso: bool) -> io::Result<usize> {
    const N: usize = MAX_SEND;
    let msgs = &msgs[..msgs.len().min(N)];
    // SAFETY: plain C structs; all-zero is valid and every used field is set below.
    let mut iov: [libc::iovec; N] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
    // SAFETY: as above (sockaddr_storage is plain old data).
    let mut names: [libc::sockaddr_storage; N] = unsafe { std::mem::zeroed() };
    let mut control = [[0u64; CONTROL_WORDS]; N];
    let mut counts = [0usize; N];
    for (i, m) in msgs.iter().enumerate() {
        iov[i].iov_base = m.data.as_ptr() as *mut libc::c_void;
        iov[i].iov_len = m.data.len();
    }
    let mut n = 0;
    let mut i = 0;
    while i < msgs.len() {
        let first = &msgs[i];
        let seg = first.data.len();
        let j = if gso {
            gso_run_end(
                i,
                msgs.len(),
                |k| msgs[k].data.len(),
                |k| msgs[k].to == first.to && msgs[k].from == first.from,
            )
        } else {
            i + 1
        };
        let sa = socket2::SockAddr::from(first.to);
        // SAFETY: `sa` holds `sa.len()` valid bytes of a socket address, which fit in a
        // sockaddr_storage (the largest socket address).
        unsafe {
            std::ptr::copy_nonoverlapping(
                sa.as_ptr().cast::<u8>(),
                (&mut names[n] as *mut libc::sockaddr_storage).cast::<u8>(),
                sa.len() as usize,
            );
        }
        let h = &mut hdrs[n].msg_hdr;
        h.msg_name = (&mut names[n] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = sa.len();
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = (j - i) as _;
        let segmented = j - i > 1;
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe {
            (if segmented {
                libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32)
            } else {
                0
            }) + first
                .from
                .map_or(0, |ip| libc::CMSG_SPACE(pktinfo_len(ip) as u32))
        } as usize;
        if space > 0 {
            debug_assert!(space <= CONTROL_WORDS * 8);
            h.msg_control = control[n].as_mut_ptr().cast();
            h.msg_controllen = space as _;
            // SAFETY: the control buffer (64 bytes) holds CMSG_SPACE(2) + CMSG_SPACE(20)
            // = 24 + 40 bytes at most (checked in the tests), and msg_controllen says
            // exactly the space used, so CMSG_FIRSTHDR / CMSG_NXTHDR return headers
            // inside it; each header's length is set before the next is asked for.
            unsafe {
                let mut cm = libc::CMSG_FIRSTHDR(h);
                if segmented {
                    (*cm).cmsg_level = SOL_UDP;
                    (*cm).cmsg_type = UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg as u16);
                    cm = libc::CMSG_NXTHDR(h, cm);
                }
                if let Some(ip) = first.from {
                    (*cm).cmsg_len = libc::CMSG_LEN(pktinfo_len(ip) as u32) as _;
                    match ip {
                        IpAddr::V4(v4) => {
                            (*cm).cmsg_level = libc::IPPROTO_IP;
                            (*cm).cmsg_type = libc::IP_PKTINFO;
                            let p = libc::in_pktinfo {
                                ipi_ifindex: 0,
                                ipi_spec_dst: libc::in_addr {
                                    s_addr: u32::from_ne_bytes(v4.octets()),
                                },
                                ipi_addr: libc::in_addr { s_addr: 0 },
                            };
                            std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast(), p);
                        }
                        IpAddr::V6(v6) => {
                            (*cm).cmsg_level = libc::IPPROTO_IPV6;
                            (*cm).cmsg_type = libc::IPV6_PKTINFO;
                            let p = libc::in6_pktinfo {
                                ipi6_addr: libc::in6_addr {
                                    s6_addr: v6.octets(),
                                },
                                ipi6_ifindex: 0,
                            };
                            std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast(), p);
                        }
                    }
                }
            }
        }
        counts[n] = j - i;
        n += 1;
        i = j;
    }
    // SAFETY: `hdrs[..n]` point into `iov`, `names`, `control` and the caller's
    // datagrams, all alive and unmodified during the call; the kernel only reads them.
    let sent =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(counts[..sent as usize].iter().sum())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_into(fd: std::os::fd::RawFd, msgs: &[Transmit<'_>]) -> io::Result<usize> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the caller's socket owns `fd` and outlives this call.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&b);
    let mut n = 0;
    for m in msgs {
        // No packet info off Linux: the kernel picks the source.
        match sock.send_to_with_flags(m.data, &m.to.into(), libc::MSG_DONTWAIT) {
            Ok(_) => n += 1,
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::{enable_gro, enable_pktinfo, recv_batch, RecvBatch};
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    #[test]
    fn control_buffer_fits_segment_and_pktinfo() {
        // SAFETY: pure size computations.
        let need = unsafe {
            libc::CMSG_SPACE(2) + libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32)
        } as usize;
        assert!(need <= CONTROL_WORDS * 8, "{need}");
    }

    fn recv_n(rx: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr, Option<IpAddr>)> {
        let mut b = RecvBatch::new(8);
        let end = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < end {
            match recv_batch(rx, &mut b) {
                Ok(_) => {
                    for i in 0..b.len() {
                        got.push((b.get(i).to_vec(), b.source(i).unwrap(), b.local(i)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    /// Datagrams to three receivers in one call arrive at each in order, runs to one
    /// receiver segmented or not.
    #[test]
    fn many_destinations_in_order() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let tx = UdpSocket::bind(host).unwrap();
            let rxs: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind(host).unwrap()).collect();
            for r in &rxs {
                enable_gro(r).unwrap();
            }
            let payloads: Vec<Vec<u8>> = (0..30u8).map(|i| vec![i; 300]).collect();
            // Receiver i % 3 for the first ten, then runs of ten to each.
            let dest = |k: usize| if k < 10 { k % 3 } else { (k - 10) / 7 % 3 };
            let msgs: Vec<Transmit> = payloads
                .iter()
                .enumerate()
                .map(|(k, p)| Transmit {
                    to: rxs[dest(k)].local_addr().unwrap(),
                    from: None,
                    data: p,
                })
                .collect();
            let mut off = 0;
            while off < msgs.len() {
                off += send_to_many(&tx, &msgs[off..]).unwrap();
            }
            for (r, rx) in rxs.iter().enumerate() {
                let want: Vec<Vec<u8>> = (0..30)
                    .filter(|&k| dest(k) == r)
                    .map(|k| payloads[k].clone())
                    .collect();
                let got = recv_n(rx, want.len());
                let got: Vec<Vec<u8>> = got.into_iter().map(|g| g.0).collect();
                assert_eq!(got, want, "{host} receiver {r}");
            }
        }
    }

    /// A wildcard socket with packet info learns which local address a peer wrote to
    /// and answers from it: a client connected to 127.0.0.2 accepts only datagrams
    /// from 127.0.0.2.
    #[test]
    fn wildcard_socket_answers_from_the_address_written_to() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        enable_pktinfo(&server, false).unwrap();
        let port = server.local_addr().unwrap().port();
        for last in [2u8, 3] {
            let dst: SocketAddr = (std::net::Ipv4Addr::new(127, 0, 0, last), port).into();
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client.connect(dst).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client.send(b"ping").unwrap();
            let got = recv_n(&server, 1);
            assert_eq!(got[0].0, b"ping");
            assert_eq!(got[0].2, Some(dst.ip()));
            let m = [Transmit {
                to: got[0].1,
                from: got[0].2,
                data: b"pong",
            }];
            assert_eq!(send_to_many(&server, &m).unwrap(), 1);
            let mut buf = [0u8; 16];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
        }
    }

    /// The same on an IPv6 wildcard socket, for ::1.
    #[test]
    fn wildcard_v6_reports_local_address() {
        let server = UdpSocket::bind("[::]:0").unwrap();
        enable_pktinfo(&server, true).unwrap();
        let port = server.local_addr().unwrap().port();
        let dst: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
        let client = UdpSocket::bind("[::1]:0").unwrap();
        client.connect(dst).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send(b"ping").unwrap();
        let got = recv_n(&server, 1);
        assert_eq!(got[0].2, Some(dst.ip()));
        let m = [Transmit {
            to: got[0].1,
            from: got[0].2,
            data: b"pong",
        }];
        assert_eq!(send_to_many(&server, &m).unwrap(), 1);
        let mut buf = [0u8; 16];
        assert_eq!(client.recv(&mut buf).unwrap(), 4);
    }
}
