//! Where a client keeps the sessions it may resume: a trait, and the
//! default in-process bounded map.
//!
//! Sessions are keyed by the server's name *and* address, so two servers
//! that share a name (a fleet behind different addresses, or one that moved)
//! are not offered each other's sessions unless they share ticket keys and
//! one address. Sessions travel as OpenSSL's DER encoding, so a store may
//! keep them across restarts (a file, a database).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;

/// Which server a session belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The name the client used for the server (SNI / certificate check).
    pub server_name: Option<String>,
    /// The server's address and port, when the client knows it (the socket
    /// API and the reactor always do; [`crate::Connection::client_to`] takes it).
    pub server_addr: Option<SocketAddr>,
}

/// A client's session store: give one to
/// [`crate::ConfigBuilder::session_store`] to keep sessions outside the
/// process or share them between configurations.
///
/// Both methods are called on the thread driving the handshake, so they
/// should be quick; a panic in either is caught and treated as a miss. The
/// bytes `load` returns are parsed as an OpenSSL session and ignored when
/// they are not one. A store is trusted: a session it hands back is offered
/// to the server as is, and a resumed session is not verified again (no
/// certificate is exchanged), so share a store only between configurations
/// that trust the same servers.
pub trait SessionStore: Send + Sync {
    /// The session last stored for `key` (OpenSSL's DER encoding), if any.
    fn load(&self, key: &SessionKey) -> Option<Vec<u8>>;
    /// Keeps `session` (OpenSSL's DER encoding) for `key`, replacing any older one.
    fn store(&self, key: &SessionKey, session: Vec<u8>);
}

/// The default store: an in-process map of at most `capacity` sessions;
/// when full, the server stored first is forgotten first.
pub struct MemorySessionStore {
    capacity: usize,
    inner: Mutex<Sessions>,
}

/// The sessions by server, and the servers in the order first stored.
type Sessions = (HashMap<SessionKey, Vec<u8>>, VecDeque<SessionKey>);

/// The capacity of the store `resume_sessions(true)` makes.
pub const DEFAULT_SESSION_CAPACITY: usize = 1024;

impl fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySessionStore")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl MemorySessionStore {
    /// A store for at most `capacity` servers (at least 1).
    pub fn new(capacity: usize) -> Self {
        MemorySessionStore {
            capacity: capacity.max(1),
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// How many servers have a session stored.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }

    /// Whether no session is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemorySessionStore {
    fn load(&self, key: &SessionKey) -> Option<Vec<u8>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.get(key).cloned()
    }

    fn store(&self, key: &SessionKey, session: Vec<u8>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *g;
        if map.insert(key.clone(), session).is_none() {
            order.push_back(key.clone());
            while map.len() > self.capacity {
                match order.pop_front() {
                    Some(old) => {
                        map.remove(&old);
                    }
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, port: u16) -> SessionKey {
        SessionKey {
            server_name: Some(name.into()),
            server_addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        }
    }

    #[test]
    fn keyed_by_name_and_address_and_bounded() {
        let s = MemorySessionStore::new(2);
        s.store(&key("a", 1), vec![1]);
        assert_eq!(s.load(&key("a", 1)), Some(vec![1]));
        assert_eq!(s.load(&key("a", 2)), None, "same name, other port");
        assert_eq!(s.load(&key("b", 1)), None, "same address, other name");
        s.store(&key("a", 1), vec![2]);
        assert_eq!(s.load(&key("a", 1)), Some(vec![2]), "replaced");
        s.store(&key("b", 1), vec![3]);
        s.store(&key("c", 1), vec![4]);
        assert_eq!(s.len(), 2, "bounded");
        assert_eq!(s.load(&key("a", 1)), None, "the first stored goes first");
        assert_eq!(s.load(&key("c", 1)), Some(vec![4]));
    }
}
