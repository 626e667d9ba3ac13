//! The stateless cookie stage (RFC 6347 section 4.2.1), the first step of
//! the [front door](crate::FrontDoor).
//!
//! A ClientHello from a peer that has no connection goes through
//! [`CookieStage::check`]: without a valid cookie it is answered with a
//! HelloVerifyRequest and forgotten; with one, `DTLSv1_listen` leaves the
//! stage's scratch OpenSSL session primed with it, and the session is handed
//! out (no key exchange has run yet). The stage reuses one scratch session
//! for every rejected datagram, so nothing is allocated per peer before a
//! cookie verifies. The cookies themselves are made and checked by
//! [`crate::CookieKeys`].

use std::fmt;
use std::net::SocketAddr;

use openssl::error::ErrorStack;
use openssl::ssl::SslStream;

use crate::admission::DropReason;
use crate::config::ServerConfig;
use crate::cookie_keys::with_current_peer;
use crate::error::{Error, Result};
use crate::ffi;
use crate::pipe::Pipe;
use crate::record::Datagram;

/// What the cookie stage made of a ClientHello.
pub(crate) enum Checked {
    /// Send this HelloVerifyRequest back; nothing was kept.
    HelloVerify(Vec<u8>),
    /// The cookie verified: an OpenSSL session holding the ClientHello, in
    /// the accept state, whose handshake has not started.
    Verified(SslStream<Pipe>),
    /// Dropped, for the reason given.
    Drop(DropReason),
}

/// The cookie exchange of one listening port: see the module docs.
pub(crate) struct CookieStage {
    config: ServerConfig,
    scratch: Option<SslStream<Pipe>>,
    addr: ffi::OwnedBioAddr,
}

impl fmt::Debug for CookieStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieStage").finish_non_exhaustive()
    }
}

impl CookieStage {
    /// A cookie stage for listeners of `config`.
    pub(crate) fn new(config: &ServerConfig) -> Result<Self> {
        let addr = ffi::OwnedBioAddr::new().ok_or_else(|| Error::Ssl {
            code: 1,
            stack: Some(ErrorStack::get()),
        })?;
        let mut s = CookieStage {
            config: config.clone(),
            scratch: None,
            addr,
        };
        s.scratch = Some(s.fresh_scratch()?);
        Ok(s)
    }

    /// A new OpenSSL session of the stage's configuration, in the accept
    /// state, with the configured MTU.
    pub(crate) fn fresh_scratch(&self) -> Result<SslStream<Pipe>> {
        let shared = &self.config.inner.shared;
        let mut ssl = shared.new_ssl()?;
        ssl.set_accept_state();
        ssl.set_mtu(shared.mtu)
            .map_err(|e| Error::config_ssl("mtu", e))?;
        SslStream::new(ssl, Pipe::new(shared.recv_queue, shared.mtu)).map_err(|e| Error::Ssl {
            code: 1,
            stack: Some(e),
        })
    }

    /// The configuration this stage admits connections for.
    pub(crate) fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Runs `DTLSv1_listen` on `hello` (an epoch-0 ClientHello) from `peer`.
    pub(crate) fn check(&mut self, peer: SocketAddr, hello: &Datagram<'_>) -> Checked {
        let checked = self.listen(peer, hello);
        // OpenSSL reports some rejections (a ClientHello whose lengths do not
        // add up...) by returning 0 with an error on the thread's queue. Left
        // there, it would make the next SSL call on this thread that merely
        // wants more data look like a fatal error (`SSL_get_error` checks the
        // queue first) and end an innocent connection: drain it.
        let left = ErrorStack::get();
        if !left.errors().is_empty() {
            log::trace!("cookie stage: ClientHello from {peer}: {left}");
        }
        checked
    }

    fn listen(&mut self, peer: SocketAddr, hello: &Datagram<'_>) -> Checked {
        let mut stream = match self.scratch.take() {
            Some(s) => s,
            None => match self.fresh_scratch() {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("cookie stage: cannot create an OpenSSL session: {e}");
                    return Checked::Drop(DropReason::Internal);
                }
            },
        };
        stream.get_mut().reset();
        stream.get_mut().push_inbound(hello);
        let r = with_current_peer(peer, || ffi::listen(stream.ssl(), &mut self.addr));
        if r > 0 {
            // The scratch session now holds this peer's ClientHello; OpenSSL
            // checks the cookie once more when the handshake processes it.
            return Checked::Verified(stream);
        }
        let reply = stream.get_mut().pop_outbound();
        if r < 0 {
            // Clear the thread's error queue; the next listen starts with
            // SSL_clear, but an errored session is not worth keeping.
            let stack = ErrorStack::get();
            log::trace!("cookie stage: ClientHello from {peer} rejected: {stack}");
            return Checked::Drop(DropReason::Rejected);
        }
        stream.get_mut().reset();
        self.scratch = Some(stream);
        match reply {
            Some(hvr) => Checked::HelloVerify(hvr),
            None => Checked::Drop(DropReason::Rejected),
        }
    }
}
