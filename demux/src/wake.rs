//! `Wake`: a descriptor that becomes readable when memory a poll cannot see
//! gets work (a link's memory queue, the stray queue), so a thread blocked in
//! `poll` on a link or listener is woken at once instead of re-checking on a
//! timer. An `eventfd`, made on first use (Linux, Android); elsewhere none.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

#[derive(Debug, Default)]
pub(crate) struct Wake {
    fd: OnceLock<OwnedFd>,
}

impl Wake {
    /// The descriptor (made now if it was not): readable after a `signal`
    /// until `clear`. `Unsupported` off Linux; the error of `eventfd` (the
    /// descriptor limit) otherwise.
    pub(crate) fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.fd.get() {
            return Ok(fd.as_fd());
        }
        let made = make()?;
        // Another thread may have made one meanwhile: keep the first.
        let _ = self.fd.set(made);
        Ok(self.fd.get().expect("set above").as_fd())
    }

    /// Makes the descriptor readable, if one was asked for.
    pub(crate) fn signal(&self) {
        if let Some(fd) = self.fd.get() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; a
            // full counter (EAGAIN) means it is readable already.
            unsafe {
                libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        }
    }

    /// Makes it unreadable again (reads the counter), before looking at the
    /// memory it watches.
    pub(crate) fn clear(&self) {
        if let Some(fd) = self.fd.get() {
            let mut n: u64 = 0;
            // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd
            // we own; EAGAIN (nothing signalled) leaves it untouched.
            unsafe {
                libc::read(fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8);
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn make() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no memory preconditions; a non-negative result is a
    // new descriptor this process owns.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn make() -> io::Result<OwnedFd> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no eventfd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: BorrowedFd<'_>) -> bool {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) > 0 }
    }

    #[test]
    fn signal_then_clear() {
        let w = Wake::default();
        w.signal(); // before the descriptor exists: nothing to do
        let fd = w.fd().unwrap();
        assert!(!readable(fd));
        w.signal();
        w.signal();
        assert!(readable(w.fd().unwrap()));
        w.clear();
        assert!(!readable(w.fd().unwrap()));
    }
}
