//! Many datagrams per system call: `recvmmsg` with UDP GRO on the receive side,
//! `sendmmsg` with UDP GSO on the send side (Linux). Elsewhere the same functions
//! fall back to one `recv` / `send` per datagram, so callers need no `cfg`.
//!
//! - [`recv_batch`] reads up to [`RecvBatch::slots`] messages in one `recvmmsg`
//!   without blocking. A socket with [`enable_gro`] may receive a run of equal-size
//!   datagrams of one sender as one message (the kernel's `UDP_GRO`); the batch splits
//!   it back into datagrams, so a caller always sees datagrams as the peer sent them.
//! - [`send_batch`] sends datagrams in order in one `sendmmsg`: each run of equal-size
//!   datagrams (the last of a run may be shorter) becomes one message with
//!   `UDP_SEGMENT`, which the kernel cuts back into the same datagrams (on loopback
//!   the receiver gets them whole when it enabled GRO). When the kernel or the route
//!   refuses segmentation, GSO is switched off for the process and the batch is sent
//!   one datagram per message.
//!
//! ```
//! use std::net::UdpSocket;
//! use dtls_demux::batch::{enable_gro, recv_batch, send_batch, RecvBatch};
//!
//! let rx = UdpSocket::bind("127.0.0.1:0")?;
//! let tx = UdpSocket::bind("127.0.0.1:0")?;
//! tx.connect(rx.local_addr()?)?;
//! enable_gro(&rx)?;
//! let records = [[1u8; 100], [2u8; 100], [3u8; 100]];
//! let slices: Vec<&[u8]> = records.iter().map(|r| &r[..]).collect();
//! assert_eq!(send_batch(&tx, None, &slices)?, 3);
//! let mut batch = RecvBatch::new(8);
//! let mut got = Vec::new();
//! while got.len() < 3 {
//!     match recv_batch(&rx, &mut batch) {
//!         Ok(_) => got.extend(batch.iter().map(|d| d.to_vec())),
//!         Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
//!         Err(e) => return Err(e),
//!     }
//! }
//! assert_eq!(got, records.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

mod to_many;
pub use to_many::{send_to_many, Transmit};

/// Bytes per receive slot: the largest UDP payload, so neither a plain datagram nor a
/// GRO message is ever cut.
pub const SLOT_BYTES: usize = 65_536;
/// Most messages one [`recv_batch`] call reads ([`RecvBatch::new`] clamps to this).
pub const MAX_SLOTS: usize = 64;
/// Most datagrams one [`send_batch`] call looks at; the rest of a longer slice is left
/// for the next call (the return value says how many went).
pub const MAX_SEND: usize = 64;
/// Most datagrams of one GSO message, and most payload bytes of one.
const GSO_SEGMENTS: usize = 64;
const GSO_BYTES: usize = 60_000;
/// Most datagrams taken out of one GRO message; a message holding more (which the
/// kernel does not build: it stops at 64) has the rest dropped and counted.
const GRO_SEGMENTS: usize = 128;

#[cfg(any(target_os = "linux", target_os = "android"))]
const SOL_UDP: libc::c_int = 17;
#[cfg(any(target_os = "linux", target_os = "android"))]
const UDP_SEGMENT: libc::c_int = 103;
#[cfg(any(target_os = "linux", target_os = "android"))]
const UDP_GRO: libc::c_int = 104;

/// Cleared the first time the kernel refuses a segmented send: every later batch goes
/// one datagram per message.
static GSO_OK: AtomicBool = AtomicBool::new(true);

/// Whether [`send_batch`] still uses UDP GSO in this process (false on systems without
/// it, or after the kernel refused it once).
pub fn gso_enabled() -> bool {
    cfg!(any(target_os = "linux", target_os = "android")) && GSO_OK.load(Ordering::Relaxed)
}

/// Receive buffers for [`recv_batch`], reused from call to call: `slots` buffers of
/// [`SLOT_BYTES`] (allocated zeroed, so pages nothing was written to stay unmapped)
/// plus the list of datagrams the last call produced.
pub struct RecvBatch {
    data: Vec<u8>,
    slots: usize,
    /// (offset into `data`, length, source, local address it was sent to) of each
    /// datagram of the last call.
    items: Vec<(usize, usize, Option<SocketAddr>, Option<IpAddr>)>,
    truncated: u64,
    drained: bool,
    /// The last socket read filled every slot it asked for: ask for all next time.
    wide: bool,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    names: Vec<libc::sockaddr_storage>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    control: Vec<[u64; CONTROL_WORDS]>,
}

/// Receive control buffer per slot, in 8-byte words: a `UDP_GRO` message (24 bytes)
/// plus an `IPV6_PKTINFO` one (40 bytes; `IP_PKTINFO` takes 32).
#[cfg(any(target_os = "linux", target_os = "android"))]
const CONTROL_WORDS: usize = 8;

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.slots)
            .field("datagrams", &self.items.len())
            .field("truncated", &self.truncated)
            .finish()
    }
}

impl RecvBatch {
    /// Buffers for up to `slots` messages per call (1 to [`MAX_SLOTS`]).
    pub fn new(slots: usize) -> RecvBatch {
        let slots = slots.clamp(1, MAX_SLOTS);
        RecvBatch {
            data: vec![0u8; slots * SLOT_BYTES],
            slots,
            items: Vec::with_capacity(slots),
            truncated: 0,
            drained: false,
            wide: false,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            names: vec![unsafe { std::mem::zeroed() }; slots],
            #[cfg(any(target_os = "linux", target_os = "android"))]
            control: vec![[0u64; CONTROL_WORDS]; slots],
        }
    }

    /// How many messages one call reads at most.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Datagrams the last call produced.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the last call produced none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Datagram `i` of the last call. Panics when `i >= len()`.
    pub fn get(&self, i: usize) -> &[u8] {
        let (off, len, _, _) = self.items[i];
        &self.data[off..off + len]
    }

    /// The sender of datagram `i`, when the socket reported one.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        self.items[i].2
    }

    /// The local address datagram `i` was sent to, when the socket reports it (after
    /// [`enable_pktinfo`]; a socket bound to one address needs no report: it is that
    /// address).
    pub fn local(&self, i: usize) -> Option<IpAddr> {
        self.items[i].3
    }

    /// The datagrams of the last call, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.items
            .iter()
            .map(move |&(off, len, _, _)| &self.data[off..off + len])
    }

    /// Datagrams dropped so far because they did not fit (a message longer than
    /// [`SLOT_BYTES`], or GRO segments past the cap).
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Forgets the datagrams of the last call.
    pub fn clear(&mut self) {
        self.items.clear();
        self.drained = false;
    }

    /// True when the last [`recv_batch`] got fewer messages than it had slots: the
    /// socket's queue was empty at that moment (false after [`RecvBatch::clear`] and
    /// for batches filled by [`RecvBatch::push_copy`]).
    pub fn socket_drained(&self) -> bool {
        self.drained
    }

    /// Removes datagram `i` from the list (its bytes stay where they are).
    pub fn remove(&mut self, i: usize) {
        self.items.remove(i);
    }

    /// Adds a copy of `d` as the next datagram, in slot `slot` (for callers that merge
    /// datagrams from elsewhere, such as a memory queue, into a batch). Returns false,
    /// adding nothing, when the slot is out of range or `d` is longer than a slot.
    pub fn push_copy(&mut self, slot: usize, d: &[u8], from: Option<SocketAddr>) -> bool {
        if slot >= self.slots || d.len() > SLOT_BYTES {
            return false;
        }
        let off = slot * SLOT_BYTES;
        self.data[off..off + d.len()].copy_from_slice(d);
        self.items.push((off, d.len(), from, None));
        true
    }

    /// Splits message `slot` of `len` bytes into datagrams of `seg` bytes (0: one
    /// datagram).
    fn push_message(
        &mut self,
        slot: usize,
        len: usize,
        seg: usize,
        from: Option<SocketAddr>,
        local: Option<IpAddr>,
    ) {
        let off = slot * SLOT_BYTES;
        if seg == 0 || seg >= len {
            self.items.push((off, len, from, local));
            return;
        }
        let mut at = 0;
        let mut n = 0;
        while at < len {
            if n == GRO_SEGMENTS {
                let rest = (len - at).div_ceil(seg);
                self.truncated += rest as u64;
                log::trace!("dtls-demux: GRO message of {len} bytes: {rest} segments dropped");
                break;
            }
            let l = seg.min(len - at);
            self.items.push((off + at, l, from, local));
            at += l;
            n += 1;
        }
    }
}

/// Asks the kernel to hand runs of equal-size datagrams from one sender to this socket
/// as one message (`UDP_GRO`). Only for sockets read with [`recv_batch`], which splits
/// them again: a plain `recv` would see the run as one datagram. On systems without it:
/// `Unsupported`.
pub fn enable_gro(sock: &impl AsRawFd) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        crate::sys::setsockopt(sock.as_raw_fd(), SOL_UDP, UDP_GRO, &(1 as libc::c_int))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = sock;
        Err(io::Error::new(io::ErrorKind::Unsupported, "UDP GRO"))
    }
}

/// Reads up to `batch.slots()` messages without blocking (`MSG_DONTWAIT`, whatever the
/// socket's mode) and returns how many datagrams they held (GRO messages split), which
/// are then in `batch`. Nothing queued: `WouldBlock`. A message longer than a slot is
/// dropped and counted in [`RecvBatch::truncated`]; if every message of the call was
/// dropped this way the call returns `Ok(0)`. A call that got fewer messages than it
/// asked for found the socket's queue empty: with edge-triggered polling the next
/// datagram raises a new event, so the caller need not read again.
pub fn recv_batch(sock: &impl AsRawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.clear();
    recv_into(sock.as_raw_fd(), batch)?;
    Ok(batch.items.len())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv_into(fd: std::os::fd::RawFd, batch: &mut RecvBatch) -> io::Result<()> {
    // After a call that came back short, ask for a few messages: setting up all slots
    // for the one datagram a request/response peer sends costs more than the read.
    // A full small call switches back to all slots.
    if batch.wide || batch.slots <= SMALL {
        recv_into_n::<MAX_SLOTS>(fd, batch, batch.slots)
    } else {
        recv_into_n::<SMALL>(fd, batch, SMALL)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv_into_n<const N: usize>(
    fd: std::os::fd::RawFd,
    batch: &mut RecvBatch,
    n: usize,
) -> io::Result<()> {
    let n = n.min(N);
    // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is valid (null
    // pointers, zero lengths); every field the kernel reads is set below.
    let mut iov: [libc::iovec; N] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
    let base = batch.data.as_mut_ptr();
    for i in 0..n {
        // SAFETY: slot i lies inside `data` (slots * SLOT_BYTES bytes long).
        iov[i].iov_base = unsafe { base.add(i * SLOT_BYTES) }.cast();
        iov[i].iov_len = SLOT_BYTES;
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = 1;
        h.msg_control = batch.control[i].as_mut_ptr().cast();
        h.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
    }
    // SAFETY: `hdrs[..n]` describe buffers owned by `batch` (data, names, control) and
    // `iov`, all alive and not otherwise borrowed across the call; the kernel writes at
    // most the lengths given. No timeout pointer: MSG_DONTWAIT returns at once.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    batch.drained = (got as usize) < n;
    batch.wide = got as usize == n;
    for (i, m) in hdrs.iter().enumerate().take(got as usize) {
        let h = &m.msg_hdr;
        if h.msg_flags & libc::MSG_TRUNC != 0 {
            batch.truncated += 1;
            log::trace!("dtls-demux: datagram longer than {SLOT_BYTES} bytes dropped");
            continue;
        }
        let from = sockaddr_to_std(&batch.names[i], h.msg_namelen);
        let (seg, local) = control_info(h);
        batch.push_message(i, m.msg_len as usize, seg, from, local);
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn recv_into(fd: std::os::fd::RawFd, batch: &mut RecvBatch) -> io::Result<()> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the caller's socket owns `fd` and outlives this call.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&b);
    for i in 0..batch.slots {
        let off = i * SLOT_BYTES;
        let buf = &mut batch.data[off..off + SLOT_BYTES];
        // SAFETY: MaybeUninit<u8> has u8's layout and the bytes are initialised.
        let ubuf = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
        match sock.recv_from_with_flags(ubuf, libc::MSG_DONTWAIT) {
            Ok((len, addr)) => batch.items.push((off, len, addr.as_socket(), None)),
            Err(e) if i > 0 && e.kind() == io::ErrorKind::WouldBlock => {
                batch.drained = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the control messages of a received message say: the GRO segment size (0 when
/// the message is one datagram) and the local address it was sent to (packet info).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn control_info(h: &libc::msghdr) -> (usize, Option<IpAddr>) {
    let mut seg = 0;
    let mut local = None;
    if h.msg_controllen == 0 {
        return (seg, local);
    }
    // SAFETY: `h` is the header recvmmsg filled; CMSG_FIRSTHDR / CMSG_NXTHDR stay inside
    // msg_control[..msg_controllen] and return null past the end.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
    while !c.is_null() {
        // SAFETY: `c` is non-null and points at a cmsghdr inside the control buffer.
        let cm = unsafe { &*c };
        // SAFETY (the three reads): the kernel wrote a payload of the type the level and
        // type name right after the header; read unaligned, as the payload has no
        // alignment promise for us.
        match (cm.cmsg_level, cm.cmsg_type) {
            (SOL_UDP, UDP_GRO) => {
                let v =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) };
                seg = usize::try_from(v).unwrap_or(0);
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                let p = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>())
                };
                local = Some(IpAddr::from(u32::from_be(p.ipi_addr.s_addr).to_be_bytes()));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                let p = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>())
                };
                local = Some(IpAddr::from(p.ipi6_addr.s6_addr));
            }
            _ => {}
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(h, c) };
    }
    (seg, local)
}

/// Asks the kernel to report with every datagram the local address it was sent to
/// (`IP_PKTINFO`, or `IPV6_RECVPKTINFO` on an IPv6 socket), which [`RecvBatch::local`]
/// then returns: what a socket bound to a wildcard address needs to know which of the
/// host's addresses a peer wrote to. On systems without it: `Unsupported`.
pub fn enable_pktinfo(sock: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let on: libc::c_int = 1;
        if ipv6 {
            crate::sys::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                &on,
            )
        } else {
            crate::sys::setsockopt(sock.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, &on)
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (sock, ipv6);
        Err(io::Error::new(io::ErrorKind::Unsupported, "packet info"))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn sockaddr_to_std(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    if len == 0 {
        return None;
    }
    // SAFETY: the kernel wrote a socket address of `len` bytes into `s`; SockAddr only
    // reads it as the family it says it is.
    unsafe { socket2::SockAddr::new(*s, len) }.as_socket()
}

/// Sends `datagrams` in order, to the socket's connected peer (`to` = `None`) or to
/// `to`, without blocking (`MSG_DONTWAIT`), and returns how many were sent: the first
/// `n`, at most [`MAX_SEND`]. Nothing could be sent: the error (`WouldBlock` when the
/// send buffer is full). An error after some were sent ends the call with the count
/// (the next call sees the error).
pub fn send_batch(
    sock: &impl AsRawFd,
    to: Option<SocketAddr>,
    datagrams: &[&[u8]],
) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(MAX_SEND)];
    if datagrams.is_empty() {
        return Ok(0);
    }
    let dest = to.map(socket2::SockAddr::from);
    send_into(sock.as_raw_fd(), dest.as_ref(), datagrams)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_into(
    fd: std::os::fd::RawFd,
    dest: Option<&socket2::SockAddr>,
    datagrams: &[&[u8]],
) -> io::Result<usize> {
    let gso = GSO_OK.load(Ordering::Relaxed);
    match send_mmsg(fd, dest, datagrams, gso) {
        Err(e) if gso && gso_refused(&e) => {
            GSO_OK.store(false, Ordering::Relaxed);
            log::warn!(
                "dtls-demux: UDP GSO refused ({e}); sending one datagram per message from now on"
            );
            send_mmsg(fd, dest, datagrams, false)
        }
        r => r,
    }
}

/// The end (exclusive) of the GSO run of datagrams that starts at `i` of `n`:
/// equal sizes (`len(k)`), the last one may be shorter; never an empty one (as a
/// segment it would vanish); at most `GSO_SEGMENTS` datagrams and `GSO_BYTES`;
/// only datagrams `joins` lets in (same destination). `i + 1`: no run.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn gso_run_end(
    i: usize,
    n: usize,
    len: impl Fn(usize) -> usize,
    joins: impl Fn(usize) -> bool,
) -> usize {
    let seg = len(i);
    let mut j = i + 1;
    if seg == 0 {
        return j;
    }
    let mut bytes = seg;
    while j < n
        && j - i < GSO_SEGMENTS
        && joins(j)
        && bytes + len(j) <= GSO_BYTES
        && (1..=seg).contains(&len(j))
    {
        bytes += len(j);
        j += 1;
        if len(j - 1) < seg {
            break;
        }
    }
    j
}

/// Errors by which the kernel or the device says no to `UDP_SEGMENT`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_mmsg(
    fd: std::os::fd::RawFd,
    dest: Option<&socket2::SockAddr>,
    datagrams: &[&[u8]],
    gso: bool,
) -> io::Result<usize> {
    // Small batches (the common case of a reply or two) set up small arrays.
    if datagrams.len() <= SMALL {
        send_mmsg_n::<SMALL>(fd, dest, datagrams, gso)
    } else {
        send_mmsg_n::<MAX_SEND>(fd, dest, datagrams, gso)
    }
}

/// Batches of at most this many datagrams (messages) use arrays of this size.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SMALL: usize = 4;

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_mmsg_n<const N: usize>(
    fd: std::os::fd::RawFd,
    dest: Option<&socket2::SockAddr>,
    datagrams: &[&[u8]],
    gso: bool,
) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(N)];
    // SAFETY: plain C structs; all-zero is valid and every used field is set below.
    let mut iov: [libc::iovec; N] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
    let mut control = [[0u64; 3]; N];
    // Datagrams per message, to turn the kernel's message count into datagrams.
    let mut counts = [0usize; N];
    for (i, d) in datagrams.iter().enumerate() {
        iov[i].iov_base = d.as_ptr() as *mut libc::c_void;
        iov[i].iov_len = d.len();
    }
    let mut msgs = 0;
    let mut i = 0;
    while i < datagrams.len() {
        let j = if gso {
            gso_run_end(i, datagrams.len(), |k| datagrams[k].len(), |_| true)
        } else {
            i + 1
        };
        let seg = datagrams[i].len();
        let h = &mut hdrs[msgs].msg_hdr;
        if let Some(a) = dest {
            h.msg_name = a.as_ptr() as *mut libc::c_void;
            h.msg_namelen = a.len();
        }
        h.msg_iov = &mut iov[i];
        h.msg_iovlen = (j - i) as _;
        if j - i > 1 {
            let c = &mut control[msgs];
            h.msg_control = c.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is a pure size computation.
            h.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as _;
            // SAFETY: the control buffer (24 bytes) holds CMSG_SPACE(2) = 24 bytes on
            // 64-bit Linux (checked by the assertion in tests), so the first header and
            // its data lie inside it.
            unsafe {
                let cm = libc::CMSG_FIRSTHDR(h);
                (*cm).cmsg_level = SOL_UDP;
                (*cm).cmsg_type = UDP_SEGMENT;
                (*cm).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg as u16);
            }
        }
        counts[msgs] = j - i;
        msgs += 1;
        i = j;
    }
    // SAFETY: `hdrs[..msgs]` point into `iov`, `control`, `dest` and the caller's
    // datagrams, all alive and unmodified during the call; the kernel only reads them.
    let sent = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr(),
            msgs as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(counts[..sent as usize].iter().sum())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_into(
    fd: std::os::fd::RawFd,
    dest: Option<&socket2::SockAddr>,
    datagrams: &[&[u8]],
) -> io::Result<usize> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the caller's socket owns `fd` and outlives this call.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&b);
    let mut n = 0;
    for d in datagrams {
        let r = match dest {
            Some(a) => sock.send_to_with_flags(d, a, libc::MSG_DONTWAIT),
            None => sock.send_with_flags(d, libc::MSG_DONTWAIT),
        };
        match r {
            Ok(_) => n += 1,
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    fn read_all(rx: &UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<Vec<u8>> {
        let end = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < end {
            match recv_batch(rx, batch) {
                Ok(_) => got.extend(batch.iter().map(|d| d.to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        got
    }

    #[test]
    fn control_buffer_fits_one_segment_option() {
        // SAFETY: pure size computation.
        let need = unsafe { libc::CMSG_SPACE(2) } as usize;
        assert!(need <= std::mem::size_of::<[u64; 3]>());
    }

    /// Mixed sizes, equal-size runs, a shorter tail and an empty datagram arrive
    /// intact and in order, with and without GRO, to a connected and an unconnected
    /// destination, IPv4 and IPv6.
    #[test]
    fn round_trip_preserves_datagrams() {
        for (host, gro, connected) in [
            ("127.0.0.1:0", true, true),
            ("127.0.0.1:0", false, false),
            ("[::1]:0", true, false),
            ("[::1]:0", false, true),
        ] {
            let rx = UdpSocket::bind(host).unwrap();
            let tx = UdpSocket::bind(host).unwrap();
            if gro {
                enable_gro(&rx).unwrap();
            }
            let to = rx.local_addr().unwrap();
            let mut msgs: Vec<Vec<u8>> = Vec::new();
            for i in 0..40u8 {
                msgs.push(vec![i; 1229]);
            }
            msgs.push(vec![200; 700]);
            msgs.push(Vec::new());
            for i in 0..10u8 {
                msgs.push(vec![i; 64 + i as usize]);
            }
            for i in 0..12u8 {
                msgs.push(vec![i; 9000]);
            }
            let slices: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
            let mut off = 0;
            if connected {
                tx.connect(to).unwrap();
            }
            while off < slices.len() {
                off += send_batch(&tx, (!connected).then_some(to), &slices[off..]).unwrap();
            }
            let mut batch = RecvBatch::new(8);
            let got = read_all(&rx, &mut batch, msgs.len());
            assert_eq!(got, msgs, "{host} gro={gro} connected={connected}");
            assert_eq!(batch.source(0), Some(tx.local_addr().unwrap()));
            assert_eq!(batch.truncated(), 0);
        }
    }

    #[test]
    fn empty_socket_would_block() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = RecvBatch::new(4);
        let e = recv_batch(&rx, &mut batch).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(batch.is_empty());
    }

    /// With GRO on, a run sent as one GSO message is read in one call, split.
    #[test]
    fn gro_message_is_split() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        enable_gro(&rx).unwrap();
        let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
        let slices: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
        assert_eq!(send_batch(&tx, None, &slices).unwrap(), 20);
        let mut batch = RecvBatch::new(1);
        let got = read_all(&rx, &mut batch, 20);
        assert_eq!(got, msgs);
        if gso_enabled() {
            // One message carried all twenty: one call read them.
            assert_eq!(batch.len(), 20);
        }
    }
}
