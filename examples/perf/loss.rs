//! The path between client and server of one run: direct at loss 0, else
//! through the fault relay of `tests/common/relay/` ([`LossPath`]), whose
//! thread runs unpinned (with the CPU set the process started with), and
//! how a client finds its address as the server sees it through a relay.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use crate::relay::{Faults, Relay, RelayConfig, RelayStats};

/// The process's CPU set when it started, before any thread pinned itself
/// (threads inherit the affinity of the thread that spawns them).
pub(crate) fn initial_affinity() -> Option<libc::cpu_set_t> {
    static SET: std::sync::OnceLock<Option<libc::cpu_set_t>> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
        // size_of::<cpu_set_t>() bytes into our local value, for the calling
        // thread (pid 0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            (rc == 0).then_some(set)
        }
    })
}

/// Placement of the fault relay's thread, appended to a run's placement.
const RELAY_PLACEMENT: &str = ", fault relay thread unpinned (a third busy thread)";
/// The same when the relay could not be given the initial CPU set.
const RELAY_PLACEMENT_INHERITED: &str =
    ", fault relay thread on the starting thread's CPUs (unpinning failed; a third busy thread)";

/// The path between client and server of one run: direct at loss 0 (no
/// relay), else through a fault relay dropping each datagram with
/// probability `loss` in both directions.
pub(crate) struct LossPath {
    pub(crate) loss: f64,
    seed: u64,
    /// The relay's counters, once the run stopped it.
    pub(crate) stats: Option<RelayStats>,
    /// Where the relay thread runs, for the placement.
    placement: std::cell::Cell<&'static str>,
}

impl LossPath {
    pub(crate) fn new(loss: f64, seed: u64) -> LossPath {
        LossPath {
            loss,
            seed,
            stats: None,
            placement: std::cell::Cell::new(""),
        }
    }

    /// Starts a relay to `upstream` for at most `clients` clients (one per
    /// client socket); `None` at loss 0. The relay thread inherits the
    /// affinity of the thread that starts it, and this thread may be pinned
    /// from an earlier run, so a fresh thread with the process's initial CPU
    /// set starts it: the relay runs unpinned.
    pub(crate) fn relay(
        &self,
        upstream: SocketAddr,
        clients: usize,
        dur: Duration,
    ) -> Option<Relay> {
        if self.loss <= 0.0 {
            return None;
        }
        let mut cfg = RelayConfig::new(upstream)
            .faults(Faults::loss(self.loss))
            .seed(self.seed);
        cfg.max_clients = clients + 16;
        // A safety net only (the run stops it): the duration plus the
        // longest setup (the reactor suites give up after 120 s).
        cfg.max_duration = dur + Duration::from_secs(180);
        let starter = thread::spawn(move || {
            let unpinned = initial_affinity().is_some_and(|set| {
                // SAFETY: sched_setaffinity reads size_of::<cpu_set_t>()
                // bytes of our local value, for the calling thread (pid 0).
                unsafe {
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
                }
            });
            (Relay::start(cfg), unpinned)
        });
        let (relay, unpinned) = starter.join().expect("relay starter thread");
        self.placement.set(if unpinned {
            RELAY_PLACEMENT
        } else {
            RELAY_PLACEMENT_INHERITED
        });
        Some(relay.expect("start the fault relay"))
    }

    /// Stops the relay (if any), keeps its counters, and returns the
    /// placement note for it ("" without a relay).
    pub(crate) fn finish(&mut self, relay: Option<Relay>) -> &'static str {
        match relay {
            Some(r) => {
                self.stats = Some(r.stop());
                self.placement.get()
            }
            None => "",
        }
    }
}

/// Where the client sends: the relay, or the server itself.
pub(crate) fn via(relay: &Option<Relay>, server: SocketAddr) -> SocketAddr {
    relay.as_ref().map_or(server, Relay::local_addr)
}

/// Through a relay the server sees the client at the relay's upstream socket
/// for it, known only once a datagram came through: the client sends probes
/// (never `size` bytes long, so the echo loops ignore a late one) until one
/// does. Returns that address.
pub(crate) fn probe_peer(client: &UdpSocket, server: &UdpSocket, size: usize) -> SocketAddr {
    let probe = vec![0u8; if size == 1 { 2 } else { 1 }];
    server
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..1000 {
        let _ = client.send(&probe);
        if let Ok((_, from)) = server.recv_from(&mut buf) {
            return from;
        }
    }
    panic!("no probe got through the fault relay in 1,000 tries");
}
