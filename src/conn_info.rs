//! What a [`Connection`] tells about its session (certificates, suite,
//! version, ALPN, SNI, SRTP, exporter), its counters, and its memory
//! management: read from OpenSSL's `SSL` while it lives, from the copy the
//! engine's record layer keeps once it is freed.

use std::collections::VecDeque;

use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, SslRef};

use crate::conn::{Connection, Tls};
use crate::conn_state::{ConnStats, State};
use crate::error::{Error, Result};
use crate::ffi;
use crate::peer_cert::PeerCertificate;

impl Connection {
    /// The peer's certificate, once the handshake has seen one.
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().peer_certificate(),
            Tls::Own(e) => e.info.peer_certificate.clone(),
        }
        .map(|x509| PeerCertificate { x509 })
    }

    /// The chain the peer sent (on a client, leaf first; on a server, without the leaf).
    pub fn peer_certificate_chain(&self) -> Vec<PeerCertificate> {
        match &self.tls {
            Tls::Ssl(s) => s
                .ssl()
                .peer_cert_chain()
                .map(|s| {
                    s.iter()
                        .map(|c| PeerCertificate { x509: c.to_owned() })
                        .collect()
                })
                .unwrap_or_default(),
            Tls::Own(e) => e
                .info
                .peer_chain
                .iter()
                .map(|c| PeerCertificate { x509: c.clone() })
                .collect(),
        }
    }

    /// The negotiated cipher suite's OpenSSL name.
    pub fn cipher(&self) -> Option<String> {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().current_cipher().map(|c| c.name().to_string()),
            Tls::Own(e) => Some(e.info.cipher.to_string()),
        }
    }

    /// The secret bits of the negotiated cipher suite (128 for AES-128-GCM).
    pub fn cipher_bits(&self) -> Option<i32> {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().current_cipher().map(|c| c.bits().secret),
            Tls::Own(e) => e.info.cipher_bits,
        }
    }

    /// Whether the peer sent a certificate and it passed verification
    /// against the configured CAs (false for an unverified or absent one,
    /// such as a server's with `Verify::None` on the client).
    pub fn peer_verified(&self) -> bool {
        match &self.tls {
            Tls::Ssl(s) => crate::established::verified(s.ssl()),
            Tls::Own(e) => e.info.verified,
        }
    }

    /// The negotiated protocol: `"DTLSv1.2"` or `"DTLSv1"`.
    pub fn version(&self) -> &'static str {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().version_str(),
            Tls::Own(e) => e.info.version,
        }
    }

    /// Whether the session was resumed rather than fully negotiated.
    pub fn session_reused(&self) -> bool {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().session_reused(),
            Tls::Own(e) => e.info.session_reused,
        }
    }

    /// Largest plaintext datagram one record can carry with the configured MTU.
    pub fn data_mtu(&self) -> usize {
        match &self.tls {
            Tls::Ssl(s) => ffi::data_mtu(s.ssl()),
            Tls::Own(e) => e.info.data_mtu,
        }
    }

    /// Decrypted plaintext bytes held from the current record (the rest of
    /// a record read into a shorter buffer).
    pub fn pending(&self) -> usize {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().pending(),
            Tls::Own(e) => e.pending(),
        }
    }

    /// Whether there is anything [`Self::recv`] can return without new input:
    /// queued datagrams or plaintext held from a record.
    pub fn has_pending(&self) -> bool {
        match &self.tls {
            Tls::Ssl(s) => !s.get_ref().inbound.is_empty() || ffi::has_pending(s.ssl()),
            Tls::Own(e) => e.has_pending(),
        }
    }

    /// RFC 5705 keying material exporter.
    pub fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &str,
        context: Option<&[u8]>,
    ) -> Result<()> {
        if *self.state() != State::Established {
            return Err(Error::NotConnected);
        }
        match &self.tls {
            Tls::Ssl(s) => s.ssl().export_keying_material(out, label, context),
            Tls::Own(e) => e.export(out, label, context),
        }
        .map_err(|e| Error::Ssl {
            code: ErrorCode::SSL.as_raw(),
            stack: Some(e),
        })
    }

    /// The ALPN protocol both sides agreed on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().selected_alpn_protocol(),
            Tls::Own(e) => e.info.alpn.as_deref(),
        }
    }

    /// The server name (SNI) the client asked for: on a server, what the
    /// client sent; on a client, what it sent (none for an IP address).
    pub fn server_name(&self) -> Option<&str> {
        match &self.tls {
            Tls::Ssl(s) => s.ssl().servername(openssl::ssl::NameType::HOST_NAME),
            Tls::Own(e) => e.info.server_name.as_deref(),
        }
    }

    /// The negotiated SRTP protection profile's name, if any.
    pub fn srtp_profile(&self) -> Option<String> {
        match &self.tls {
            Tls::Ssl(s) => s
                .ssl()
                .selected_srtp_profile()
                .map(|p| p.name().to_string()),
            Tls::Own(e) => e.info.srtp_profile.map(str::to_string),
        }
    }

    /// The connection's counters.
    pub fn stats(&self) -> ConnStats {
        let mut s = self.stats;
        let (read, resent) = match &self.tls {
            Tls::Ssl(st) => (st.get_ref().app_records_read, 0),
            Tls::Own(e) => (e.pipe.app_records_read, u64::from(e.resends)),
        };
        s.discarded = read.saturating_sub(self.app_records_delivered);
        s.retransmissions += resent;
        s
    }

    /// Gives memory back on a connection that went quiet: the spare datagram
    /// buffers and, for a session on OpenSSL's record layer, once established
    /// with nothing pending, OpenSSL's record read and write buffers (about
    /// 20 KiB with the default MTU). The next call that needs them (`recv`,
    /// `send`, `close`, `handle_timeout`) allocates them again, so calling
    /// this on a busy connection costs an allocation per datagram.
    ///
    /// On OpenSSL's record layer its handshake buffer (16 KiB) stays: DTLS
    /// keeps it for the life of the session in case the peer retransmits
    /// its last flight. A session on the engine's record layer has no
    /// OpenSSL buffers left.
    pub fn shrink(&mut self) {
        if let Tls::Ssl(st) = &self.tls {
            if *self.state() == State::Established
                && !self.buffers_released
                && !self.has_pending()
                && ffi::free_buffers(st.ssl())
            {
                self.buffers_released = true;
            }
        }
        let pipe = self.pipe_mut();
        pipe.pool = Vec::new();
        if pipe.inbound.is_empty() {
            pipe.inbound = VecDeque::new();
        }
        if pipe.outbound.is_empty() {
            pipe.outbound = VecDeque::new();
        }
    }

    /// Re-allocates the record buffers [`Self::shrink`] freed; OpenSSL 3.0's
    /// DTLS write path would otherwise use a freed (null) buffer.
    pub(crate) fn restore_buffers(&mut self) -> Result<()> {
        if self.buffers_released {
            if let Tls::Ssl(st) = &self.tls {
                if !ffi::alloc_buffers(st.ssl()) {
                    return Err(Error::Ssl {
                        code: ErrorCode::SSL.as_raw(),
                        stack: Some(ErrorStack::get()),
                    });
                }
            }
            self.buffers_released = false;
        }
        Ok(())
    }

    /// Whether [`Self::shrink`] released OpenSSL's record buffers (they come
    /// back with the next read or write).
    pub fn buffers_released(&self) -> bool {
        self.buffers_released
    }

    /// Whether the engine's own record layer carries this session: an
    /// established DTLS 1.2 session with an AEAD suite, unless the
    /// configuration asked for OpenSSL's
    /// ([`crate::ConfigBuilder::openssl_record_layer`]). OpenSSL's session
    /// has been freed then.
    pub fn engine_record_layer(&self) -> bool {
        matches!(self.tls, Tls::Own(_))
    }

    /// The rust-openssl session, for queries this type does not offer:
    /// `None` once the engine's record layer carries the session
    /// ([`Self::engine_record_layer`]), whose OpenSSL session is freed.
    pub fn ssl(&self) -> Option<&SslRef> {
        match &self.tls {
            Tls::Ssl(s) => Some(s.ssl()),
            Tls::Own(_) => None,
        }
    }
}
