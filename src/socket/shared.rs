//! What a listener shares with the connections it accepted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use dtls_demux::Demux;

use crate::FrontDoor;

/// A listener's front door and the queue where a restarted peer's new
/// connection `S` waits for `accept()`. A restarting peer's ClientHello
/// (RFC 6347 section 4.2.8) reaches its old connection's link, whose owner
/// brings it to the door; the connection that replaces the old one is queued
/// here.
pub(crate) struct Shared<S> {
    pub(crate) demux: Arc<dyn Demux>,
    pub(crate) door: Mutex<FrontDoor>,
    /// New connections of restarted peers, for `accept()` (at most one per
    /// connection that ended, so bounded by the connections the listener made).
    pub(crate) restarted: Mutex<VecDeque<(S, SocketAddr)>>,
    /// Admitted peers for which no link could be attached.
    pub(crate) attach_failed: AtomicU64,
}
