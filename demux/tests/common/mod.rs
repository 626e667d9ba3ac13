//! Helpers shared by the integration tests: loopback sockets, a pump thread that keeps
//! reading the listener (Router needs it to forward). The four variants and `four_ways!`
//! come from `dtls-test-support` (`test-support/`), shared with dtls-reactor's tests.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use dtls_demux::{Demux, DemuxKind, Incoming, Link, Route};
pub use dtls_test_support::{four_ways, Fam, Variant};

/// Generous bound for anything that should happen "at once" on loopback.
pub const T: Duration = Duration::from_secs(5);

/// Raise RLIMIT_NOFILE to the hard limit (hundreds of sockets per test, tests in parallel).
pub fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A demux on the loopback address of `fam`, port 0, listener read timeout `T`.
pub fn server(kind: DemuxKind, fam: Fam) -> Arc<dyn Demux> {
    raise_nofile();
    let d = dtls_demux::bind(kind, fam.any_port()).expect("bind demux");
    d.listener().set_read_timeout(Some(T)).unwrap();
    d
}

/// A client socket on the loopback address of `fam`, read timeout `T`.
pub fn client(fam: Fam) -> UdpSocket {
    let c = UdpSocket::bind(fam.any_port()).expect("bind client");
    c.set_read_timeout(Some(T)).unwrap();
    c
}

/// Read the listener until `n` unknown-peer datagrams arrived (bounded by `T`).
pub fn accept_unknown(d: &dyn Demux, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + T;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {} unknown datagrams arrived",
            out.len(),
            n
        );
        match d.recv_from(&mut buf).expect("listener recv_from") {
            Incoming::Unknown { len, peer } => out.push((peer, buf[..len].to_vec())),
            other => panic!("unexpected {other:?} while accepting"),
        }
    }
    out
}

/// Attach a link with read timeout `T`.
pub fn attach(d: &dyn Demux, peer: SocketAddr) -> Link {
    let l = d.attach(peer).expect("attach");
    l.socket().set_read_timeout(Some(T)).unwrap();
    l
}

/// A thread that keeps calling `recv_from` on the listener until stopped; it returns the
/// datagrams of unknown peers it saw (bounded) and the routes of the others.
pub struct Pump {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<PumpResult>>,
}

#[derive(Debug, Default)]
pub struct PumpResult {
    pub unknown: Vec<(SocketAddr, Vec<u8>)>,
    pub routed: Vec<(SocketAddr, Route)>,
    pub errors: usize,
}

impl Pump {
    pub fn start(d: Arc<dyn Demux>) -> Pump {
        d.listener()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut r = PumpResult::default();
            let mut buf = vec![0u8; 65536];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Acquire) && Instant::now() < deadline {
                match d.recv_from(&mut buf) {
                    Ok(Incoming::Unknown { len, peer }) if r.unknown.len() < 1_000_000 => {
                        r.unknown.push((peer, buf[..len].to_vec()))
                    }
                    Ok(Incoming::Unknown { .. }) => {}
                    Ok(Incoming::Routed { peer, route }) if r.routed.len() < 1_000_000 => {
                        r.routed.push((peer, route))
                    }
                    Ok(Incoming::Routed { .. }) => {}
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => r.errors += 1,
                }
            }
            // Read what is still queued.
            d.listener().set_nonblocking(true).unwrap();
            for _ in 0..100_000 {
                match d.recv_from(&mut buf) {
                    Ok(Incoming::Unknown { len, peer }) => {
                        r.unknown.push((peer, buf[..len].to_vec()))
                    }
                    Ok(Incoming::Routed { peer, route }) => r.routed.push((peer, route)),
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(_) => break,
                }
            }
            d.listener().set_nonblocking(false).unwrap();
            r
        });
        Pump {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> PumpResult {
        self.stop.store(true, Ordering::Release);
        self.handle.take().unwrap().join().expect("pump thread")
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Inode of the socket behind a descriptor ("socket:[123]"), to see it change or go away.
pub fn fd_target(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}
