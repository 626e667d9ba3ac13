//! Waiting on one descriptor, and the timeout rules of `std::net`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
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
    let mut pfds = [
        libc::pollfd {
            fd: fd.as_raw_fd(),
            events: if write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        },
        libc::pollfd {
            fd: wake.map_or(-1, |w| w.as_raw_fd()),
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
    // SAFETY: `pfds[..n]` are valid pollfds on our stack; the descriptors are
    // borrowed, so they stay open for the duration of the call.
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
