//! `DtlsListener`: a DTLS server for tokio tasks.

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use dtls_demux::SharedSocket;

use super::endpoint::Endpoint;
use super::DtlsStream;
use crate::admission::{Admission, AdmissionStats};
use crate::config::ServerConfig;
use crate::error::Result;
use crate::FrontDoor;

/// A DTLS server for tokio: one UDP socket for every peer
/// ([`SharedSocket`]: no descriptor per peer), the crate's front door
/// (cookie exchange, caps, late copies, peer restarts), and a driver task
/// that runs every handshake concurrently: one peer's slow or abandoned
/// handshake never delays another's; the engine's limits
/// (`handshake_silence`, `handshake_timeout`) end it and free its place
/// under the caps (`AdmissionLimits`: 1,000 handshakes, 10,000 connections
/// by default, as the reactor's).
///
/// Dropping the listener closes the connections nobody accepted; accepted
/// streams live on until they are dropped.
pub struct DtlsListener {
    ep: Arc<Endpoint>,
}

impl fmt::Debug for DtlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsListener")
            .field("local", &self.ep.local_addr())
            .finish_non_exhaustive()
    }
}

impl DtlsListener {
    /// Binds a shared socket on `addr` (port 0: a free port) and serves DTLS
    /// on it with `config` and the default caps.
    pub async fn bind(addr: SocketAddr, config: &ServerConfig) -> Result<DtlsListener> {
        Self::from_shared(SharedSocket::bind(addr)?, config, &Admission::default())
    }

    /// Serves DTLS on a shared socket you made (for instance a member of
    /// [`SharedSocket::bind_group`], one listener per runtime thread), under
    /// `admission`'s caps (share one `Admission` among listeners for common
    /// caps). Must be called inside a tokio runtime.
    pub fn from_shared(
        socket: Arc<SharedSocket>,
        config: &ServerConfig,
        admission: &Admission,
    ) -> Result<DtlsListener> {
        let door = FrontDoor::new(config, admission)?;
        let ep = Endpoint::new(socket, Some(door))?;
        ep.spawn_driver();
        Ok(DtlsListener { ep })
    }

    /// The next connection whose handshake completed, and its peer.
    /// Connections are accepted in the order their peers were admitted; one
    /// still handshaking is passed over (and handed out when it completes),
    /// one that failed is dropped.
    pub async fn accept(&self) -> Result<(DtlsStream, SocketAddr)> {
        self.take(true).await
    }

    /// The next admitted connection, its handshake possibly still running
    /// (its cookie verified, the server's first flight sent): for callers
    /// that want to run the handshake in their own task
    /// ([`DtlsStream::handshake`], or `send`/`recv`, which wait for it).
    pub async fn accept_handshaking(&self) -> Result<(DtlsStream, SocketAddr)> {
        self.take(false).await
    }

    async fn take(&self, established: bool) -> Result<(DtlsStream, SocketAddr)> {
        let cell = poll_fn(|cx| match self.ep.take_pending(established, cx.waker()) {
            Some(c) => Poll::Ready(c),
            None => Poll::Pending,
        })
        .await;
        let peer = cell.flow.remote;
        Ok((DtlsStream::new(self.ep.clone(), cell, false), peer))
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.ep.local_addr()
    }

    /// The front door's counters (admitted, refused, dropped, caps...).
    pub fn admission_stats(&self) -> AdmissionStats {
        self.ep
            .admission_stats()
            .expect("a listener's endpoint has a front door")
    }

    /// The shared socket's counters (datagrams, flows).
    pub fn socket_counters(&self) -> dtls_demux::SharedCounters {
        self.ep.socket.counters()
    }

    /// A new configuration for every handshake from now on (certificate
    /// rotation without a restart); accepted connections keep theirs.
    pub fn set_config(&self, config: &ServerConfig) -> Result<()> {
        self.ep.set_config(config)
    }
}

impl Drop for DtlsListener {
    fn drop(&mut self) {
        self.ep.close_owner();
    }
}
