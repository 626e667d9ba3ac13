//! Waiting on one descriptor, and the timeout rules of `std::net`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// How often a blocking call on a server-side connection, or a blocking
/// `accept()`, re-checks the memory queues the demux fills without making the
/// descriptor readable, where the demux has no wake descriptor (off Linux, or
/// when the descriptor limit refused one): on Linux an `eventfd` wakes the
/// waiting thread at once (`Link::wake_fd`, `Demux::listener_wake_fd`). Ten
/// wake-ups a second cost microseconds of CPU; a datagram handed over that way
/// waits at most this long.
pub const MEMORY_QUEUE_CHECK: Duration = Duration::from_millis(100);

/// Waits until `fd` is readable (or writable with `write`) or `timeout`
/// passes (`None`: no limit). True when an event (including an error
/// condition) is pending; false on timeout or a signal. The timeout is
/// rounded up to whole milliseconds so a sub-millisecond rest never spins.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    write: bool,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    wait_fds(fd, write, None, timeout)
}

/// [`wait_fd`], also woken when `wake` (a demux's wake descriptor: its memory
/// queue got a datagram) becomes readable.
pub(crate) fn wait_fds(
    fd: BorrowedFd<'_>,
    write: bool,
    wake: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    poll_fds(fd.as_raw_fd(), write, wake.map(|w| w.as_raw_fd()), timeout)
}

/// What a blocked [`DtlsSocket`](super::DtlsSocket) call waits for, taken
/// with [`DtlsSocket::readiness`](super::DtlsSocket::readiness) so that the
/// caller can wait without holding the socket (another thread may send on it
/// meanwhile, as with Python's sockets): the socket's descriptor, the wake
/// descriptor of its link's memory queue, and how long at most until the
/// call must be tried again (the DTLS timer; [`MEMORY_QUEUE_CHECK`] for a
/// link without a wake descriptor). The socket API's own blocking calls wait
/// the same way.
#[derive(Clone, Copy, Debug)]
pub struct Readiness {
    fd: RawFd,
    wake: Option<RawFd>,
    cap: Option<Duration>,
}

impl Readiness {
    pub(crate) fn new(fd: RawFd, wake: Option<RawFd>, cap: Option<Duration>) -> Self {
        Readiness { fd, wake, cap }
    }

    /// Waits until the socket may make progress (a datagram on its
    /// descriptor or in its memory queue, its DTLS timer due) or `timeout`
    /// passes (`None`: no limit of the caller's); then try the call again.
    /// Spurious wake-ups happen (a signal; the socket closed meanwhile, whose
    /// descriptor number poll then reports invalid or another file reuses).
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<()> {
        let rest = min_wait(timeout, self.cap);
        if rest == Some(Duration::ZERO) {
            return Ok(());
        }
        poll_fds(self.fd, false, self.wake, rest).map(|_| ())
    }
}

/// `poll(2)` on `fd` (and `wake`, for reading) for at most `timeout`.
fn poll_fds(
    fd: RawFd,
    write: bool,
    wake: Option<RawFd>,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let mut pfds = [
        libc::pollfd {
            fd,
            events: if write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        },
        libc::pollfd {
            fd: wake.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let n = if wake.is_some() { 2 } else { 1 };
    let ms: libc::c_int = match timeout {
        None => -1,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    };
    // SAFETY: `pfds[..n]` are valid pollfds on our stack and `n` counts
    // them; poll only reads the descriptor numbers (a closed one is reported
    // as POLLNVAL), it does not act on the files.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// The smaller of two optional durations (`None` is infinite).
pub(crate) fn min_wait(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// Rejects a zero timeout, as `std::net` does.
pub(crate) fn check_timeout(t: Option<Duration>) -> crate::Result<()> {
    if t == Some(Duration::ZERO) {
        return Err(crate::Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        )));
    }
    Ok(())
}
