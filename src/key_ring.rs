//! A current key and the one before it, shared by clones and rotated
//! together: the shape of both the cookie secrets and the ticket keys.

use std::sync::{Arc, RwLock, RwLockReadGuard};

/// The current key and, after a rotation, the previous one.
pub(crate) struct Pair<K> {
    pub(crate) current: K,
    pub(crate) previous: Option<K>,
}

/// `Pair<K>` behind a shared lock; clones share it.
pub(crate) struct KeyRing<K> {
    inner: Arc<RwLock<Pair<K>>>,
}

impl<K> Clone for KeyRing<K> {
    fn clone(&self) -> Self {
        KeyRing {
            inner: self.inner.clone(),
        }
    }
}

impl<K> KeyRing<K> {
    pub(crate) fn new(current: K, previous: Option<K>) -> Self {
        KeyRing {
            inner: Arc::new(RwLock::new(Pair { current, previous })),
        }
    }

    /// Replaces both keys.
    pub(crate) fn set(&self, current: K, previous: Option<K>) {
        let mut p = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *p = Pair { current, previous };
    }

    /// Makes `fresh` current; the current one becomes the previous one.
    pub(crate) fn rotate_to(&self, fresh: K) {
        let mut p = self.inner.write().unwrap_or_else(|p| p.into_inner());
        p.previous = Some(std::mem::replace(&mut p.current, fresh));
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Pair<K>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}
