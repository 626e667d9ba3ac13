//! `DtlsStream`: one DTLS connection for tokio tasks.

use std::fmt;
use std::future::poll_fn;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::task::Poll;

use super::endpoint::{lock, Cell, Endpoint, Flushed};
use crate::config::ClientConfig;
use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::peer_cert::PeerCertificate;

/// One DTLS connection, for tokio: `connect` (client) or
/// [`DtlsListener::accept`](super::DtlsListener::accept) (server).
///
/// Every method takes `&self`: share it between tasks in an `Arc` (one task
/// receiving while others send). One datagram per call, as with UDP: a
/// `send` is one record, a `recv` one record's plaintext. Retransmissions and
/// the handshake's deadlines run on the endpoint's driver task (tokio's
/// timer); nothing polls on a timer. Dropping the stream sends close_notify
/// (if [`shutdown`](DtlsStream::shutdown) did not) and frees the connection.
pub struct DtlsStream {
    ep: Arc<Endpoint>,
    cell: Arc<Cell>,
    /// A client's own endpoint: dropping the stream ends it.
    owns_endpoint: bool,
}

impl fmt::Debug for DtlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsStream")
            .field("local", &self.ep.local_addr())
            .field("peer", &self.cell.flow.remote)
            .finish_non_exhaustive()
    }
}

impl DtlsStream {
    pub(super) fn new(ep: Arc<Endpoint>, cell: Arc<Cell>, owns_endpoint: bool) -> Self {
        DtlsStream {
            ep,
            cell,
            owns_endpoint,
        }
    }

    /// Connects to a DTLS server at `addr` and completes the handshake, from
    /// a UDP socket of its own (bound to an ephemeral port, connected to
    /// `addr`, so an ICMP port unreachable ends the handshake with
    /// [`Error::PeerUnreachable`]). Fails with the handshake's error
    /// (verification, version, [`Error::HandshakeTimeout`] after the
    /// configuration's `handshake_timeout`, [`Error::RetransmitLimit`]).
    /// For a shorter wait, wrap it in `tokio::time::timeout`.
    pub async fn connect(addr: SocketAddr, config: &ClientConfig) -> Result<DtlsStream> {
        let local: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)?;
        sock.connect(addr)?;
        let shared = dtls_demux::SharedSocket::from_socket(sock)?;
        let flow = shared.flow(None, addr)?;
        let ep = Endpoint::new(shared, None)?;
        let conn = Connection::client_to(config, None, Some(addr))?;
        let cell = ep.add_client(flow, conn)?;
        ep.spawn_driver();
        let stream = DtlsStream::new(ep, cell, true);
        stream.handshake().await?;
        Ok(stream)
    }

    /// Waits until the handshake completed (at once when it has); its error
    /// when it failed. Streams from
    /// [`DtlsListener::accept_handshaking`](super::DtlsListener::accept_handshaking)
    /// may still be handshaking; `send` and `recv` wait for it too.
    pub async fn handshake(&self) -> Result<()> {
        poll_fn(|cx| {
            let mut ci = lock(&self.cell.inner);
            if ci.restarted {
                return Poll::Ready(Err(Error::PeerRestarted));
            }
            if ci.conn.is_established() {
                return Poll::Ready(Ok(()));
            }
            if ci.conn.is_closed() {
                return Poll::Ready(Err(closed(&ci.conn)));
            }
            ci.ready_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Seals `data` as one record and sends it (waiting for the handshake,
    /// and for room in the socket's send buffer). Larger than the
    /// connection's `data_mtu()`: [`Error::TooLarge`].
    pub async fn send(&self, data: &[u8]) -> Result<usize> {
        self.handshake().await?;
        let n = {
            let mut ci = lock(&self.cell.inner);
            if ci.restarted {
                return Err(Error::PeerRestarted);
            }
            ci.conn.send(data)?
        };
        self.flush().await?;
        Ok(n)
    }

    /// Receives one record's plaintext into `buf` (waits for the handshake and
    /// for a record). [`Error::ClosedByPeer`] after the peer's close_notify
    /// (answered with ours), [`Error::PeerRestarted`] when the peer started
    /// a new session, the connection's error when it failed.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        let r = poll_fn(|cx| {
            let mut ci = lock(&self.cell.inner);
            if ci.restarted {
                return Poll::Ready(Err(Error::PeerRestarted));
            }
            match ci.conn.recv(buf) {
                Ok(Some(n)) => Poll::Ready(Ok(n)),
                Ok(None) if ci.conn.is_closed() => Poll::Ready(Err(closed(&ci.conn))),
                Ok(None) => {
                    ci.read_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await;
        // Reading may have queued datagrams (close_notify's answer, a final
        // flight for a peer that lost ours) and moved the deadline.
        self.settle();
        r
    }

    /// Sends close_notify and waits until it left; the stream then fails
    /// every `send` with [`Error::Closed`] and `recv` still reports the
    /// peer's close_notify. Idempotent.
    pub async fn shutdown(&self) -> Result<()> {
        lock(&self.cell.inner).conn.close();
        self.flush().await?;
        self.settle();
        Ok(())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.cell.flow.remote
    }

    /// The local address of the endpoint's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.ep.local_addr()
    }

    /// Runs `f` on the connection, for what it can tell (version, session
    /// reuse, SRTP profile, keying material, stats...).
    pub fn with_connection<R>(&self, f: impl FnOnce(&Connection) -> R) -> R {
        f(&lock(&self.cell.inner).conn)
    }

    /// The negotiated cipher suite (OpenSSL's name).
    pub fn cipher(&self) -> Option<String> {
        self.with_connection(|c| c.cipher())
    }

    /// The peer's certificate, when it sent one.
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        self.with_connection(|c| c.peer_certificate())
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.with_connection(|c| c.alpn_protocol().map(<[u8]>::to_vec))
    }

    /// The DTLS-SRTP profile agreed on, if any.
    pub fn srtp_profile(&self) -> Option<String> {
        self.with_connection(|c| c.srtp_profile())
    }

    /// Sends what the connection queued; when the socket is full, the rest
    /// waits in the endpoint's list and this waits until the driver sent it
    /// (the driver watches writability; nothing here does).
    async fn flush(&self) -> Result<()> {
        poll_fn(|cx| {
            let mut ci = lock(&self.cell.inner);
            if ci.restarted {
                return Poll::Ready(Err(Error::PeerRestarted));
            }
            if ci.gone {
                return Poll::Ready(Err(Error::Closed));
            }
            match self.ep.flush_or_wait(&self.cell, &mut ci) {
                Flushed::Done => Poll::Ready(Ok(())),
                Flushed::Waiting => {
                    ci.park_sender(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Lets the endpoint settle the connection after a call changed it.
    fn settle(&self) {
        let mut ci = lock(&self.cell.inner);
        self.ep.settle(&self.cell, &mut ci);
    }
}

/// The error of a closed connection, for calls after the close.
fn closed(c: &Connection) -> Error {
    match c.error() {
        Some(e) => crate::ssl_error::clone_error(e),
        None if c.is_close_received() => Error::ClosedByPeer,
        None => Error::Closed,
    }
}

impl Drop for DtlsStream {
    fn drop(&mut self) {
        {
            let mut ci = lock(&self.cell.inner);
            if !ci.conn.is_closed() && !ci.restarted {
                ci.conn.close();
            }
            // What the socket does not take now is dropped with the
            // connection when the driver removes it.
            if let Flushed::Waiting = self.ep.flush_or_wait(&self.cell, &mut ci) {
                log::debug!(
                    "dtls tokio: close_notify to {} not sent: the socket is full",
                    self.cell.flow
                );
            }
        }
        self.ep.release(&self.cell);
        if self.owns_endpoint {
            self.ep.close_owner();
        }
    }
}
