//! DTLS for tokio (feature `tokio`): [`DtlsStream`] and [`DtlsListener`], a
//! front end over the same engine and front door as the socket API and the
//! reactor.
//!
//! Each endpoint (a listener, or a client stream) is one UDP socket
//! ([`dtls_demux::SharedSocket`]: every peer on it, no descriptor per peer,
//! `recvmmsg` batches) and one driver task spawned on the current runtime:
//! it reads the socket, hands each datagram to its connection or to the
//! front door, and fires the DTLS timers (retransmission, the handshake's
//! silence and overall limits) on tokio's timer. Tasks calling
//! [`DtlsStream::recv`] wait on wakers the driver wakes when a record
//! arrives; nothing polls on a timer. `send` seals and sends from the
//! calling task.
//!
//! ```
//! use dtls_reactor::tokio::{DtlsListener, DtlsStream};
//! use dtls_reactor::{ClientConfig, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), dtls_reactor::Error> {
//! # let (cert_pem, key_pem) = include!("../doc_pki.rs");
//! let server = ServerConfig::builder()
//!     .certificate_chain_pem(&cert_pem)
//!     .private_key_pem(&key_pem)
//!     .build()?;
//! let listener = DtlsListener::bind("127.0.0.1:0".parse().unwrap(), &server).await?;
//! let addr = listener.local_addr();
//! tokio::spawn(async move {
//!     while let Ok((stream, _peer)) = listener.accept().await {
//!         tokio::spawn(async move {
//!             let mut buf = [0u8; 1500];
//!             while let Ok(n) = stream.recv(&mut buf).await {
//!                 let _ = stream.send(&buf[..n]).await;
//!             }
//!         });
//!     }
//! });
//!
//! let client = ClientConfig::builder()
//!     .ca_pem(&cert_pem)
//!     .server_name("localhost")
//!     .build()?;
//! let stream = DtlsStream::connect(addr, &client).await?;
//! stream.send(b"hello").await?;
//! let mut buf = [0u8; 1500];
//! let n = stream.recv(&mut buf).await?;
//! assert_eq!(&buf[..n], b"hello");
//! stream.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod endpoint;
mod listener;
mod stream;

pub use listener::DtlsListener;
pub use stream::DtlsStream;
