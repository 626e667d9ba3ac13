//! `ReplayWindow`: the anti-replay window of RFC 6347 section 4.1.2.6 for one
//! read epoch.
//!
//! 64 records wide, with OpenSSL's DTLS semantics (`dtls1_record_replay_check`
//! / `dtls1_record_bitmap_update`), so a session carried by the engine's record
//! layer accepts and refuses exactly the records OpenSSL's would: a record
//! newer than the newest seen is accepted; one within the 63 before it is
//! accepted once; anything older is refused. The window moves only for
//! records that authenticated ([`ReplayWindow::mark`] after opening).

/// Width of the window in records (RFC 6347 asks for at least 32; 64 is
/// OpenSSL's and the RFC's recommendation).
pub(crate) const WINDOW: u64 = 64;

/// Sequence numbers seen in one epoch: the newest, and a bitmap of the 64
/// numbers ending at it (bit 0 = the newest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplayWindow {
    newest: u64,
    map: u64,
}

impl ReplayWindow {
    /// A window that has seen nothing (OpenSSL's starts at newest 0, empty).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether a record with this sequence number may be opened: new, or
    /// inside the window and not seen yet.
    pub(crate) fn check(&self, seq: u64) -> bool {
        if seq > self.newest {
            return true;
        }
        let back = self.newest - seq;
        back < WINDOW && self.map & (1 << back) == 0
    }

    /// Records an authentic record's sequence number.
    pub(crate) fn mark(&mut self, seq: u64) {
        if seq > self.newest {
            let shift = seq - self.newest;
            self.map = if shift < WINDOW {
                (self.map << shift) | 1
            } else {
                1
            };
            self.newest = seq;
        } else {
            let back = self.newest - seq;
            if back < WINDOW {
                self.map |= 1 << back;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_once_within_the_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check(0));
        w.mark(0);
        assert!(!w.check(0), "replay");
        assert!(w.check(5));
        w.mark(5);
        assert!(w.check(3), "late but inside the window");
        w.mark(3);
        assert!(!w.check(3));
        w.mark(100);
        assert!(!w.check(100 - WINDOW), "just outside");
        assert!(w.check(100 - WINDOW + 1), "oldest inside, not seen");
        assert!(!w.check(5), "far behind");
        w.mark(100 + 2 * WINDOW);
        assert!(w.check(100 + WINDOW + 1));
        assert!(!w.check(100));
    }

    proptest! {
        /// Against a plain set of what was seen: a sequence number is
        /// accepted iff it was not seen and is no more than 63 behind the
        /// newest seen (or newer).
        #[test]
        fn matches_a_set(seqs in proptest::collection::vec(0u64..300, 0..200)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut newest = 0u64;
            for s in seqs {
                let fresh = !seen.contains(&s) && (s > newest || newest - s < WINDOW);
                prop_assert_eq!(w.check(s), fresh, "seq {}", s);
                if fresh {
                    w.mark(s);
                    seen.insert(s);
                    newest = newest.max(s);
                }
            }
        }
    }
}
