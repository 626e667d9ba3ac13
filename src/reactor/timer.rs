//! The reactor's one timer structure: an ordered map of `(deadline, sequence)`
//! to what fires, with lazy invalidation (an owner remembers the sequence it
//! armed last; a fired entry whose sequence is not the owner's is ignored).

use std::collections::BTreeMap;
use std::time::Instant;

/// What a timer entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The connection's DTLS deadline (retransmission or handshake).
    Dtls { key: usize, gen: u64 },
    /// The connection's idle timeout check.
    Idle { key: usize, gen: u64 },
    /// The connection's quiet check: release its buffers when nothing arrived
    /// for `Limits::shrink_after`.
    Shrink { key: usize, gen: u64 },
    /// A user timer.
    User { id: u64 },
}

/// Deadlines in order; equal instants fire in the order they were armed.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    map: BTreeMap<(Instant, u64), Timer>,
    seq: u64,
}

impl Timers {
    /// Arms `t` at `at`; returns the sequence number identifying this entry.
    pub(crate) fn insert(&mut self, at: Instant, t: Timer) -> u64 {
        self.seq += 1;
        self.map.insert((at, self.seq), t);
        self.seq
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.map.keys().next().map(|k| k.0)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(u64, Timer)> {
        let (&(at, seq), _) = self.map.iter().next()?;
        if at > now {
            return None;
        }
        self.map.remove(&(at, seq)).map(|t| (seq, t))
    }

    /// Removes an entry armed at `at` with sequence `seq`, if it is still there.
    pub(crate) fn remove(&mut self, at: Instant, seq: u64) {
        self.map.remove(&(at, seq));
    }

    /// Entries held (live and stale).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn order_and_due() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.insert(now + Duration::from_millis(20), Timer::User { id: 2 });
        let a = t.insert(now + Duration::from_millis(10), Timer::User { id: 1 });
        t.insert(now + Duration::from_millis(10), Timer::User { id: 3 });
        assert_eq!(t.next(), Some(now + Duration::from_millis(10)));
        assert!(t.pop_due(now).is_none());
        let later = now + Duration::from_millis(15);
        assert_eq!(t.pop_due(later), Some((a, Timer::User { id: 1 })));
        assert_eq!(t.pop_due(later).map(|x| x.1), Some(Timer::User { id: 3 }));
        assert!(t.pop_due(later).is_none());
        assert_eq!(t.len(), 1);
        t.remove(now + Duration::from_millis(20), 1);
        assert_eq!(t.len(), 0);
    }
}
