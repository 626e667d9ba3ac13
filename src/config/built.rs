//! Built configurations and what connections take from them: a new SSL
//! with the MTU and the retransmission timer callback ([`Shared`]), and for
//! a client the server name, hostname check and session resumption (load
//! before the handshake, store after it). Made by [`ConfigBuilder::build`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::raw::c_uint;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use foreign_types_shared::ForeignTypeRef;
use openssl::ssl::{Ssl, SslContext, SslRef, SslSession};

use super::{Client, ConfigBuilder, Protocol, Server, Timers, Verify};
use crate::cookie_keys::CookieKeys;
use crate::error::{Error, Result};
use crate::ffi;
use crate::session_store::{SessionKey, SessionStore};

pub(crate) struct Shared {
    pub(crate) ctx: SslContext,
    pub(crate) mtu: u32,
    pub(crate) timers: Timers,
    pub(crate) recv_queue: usize,
    pub(crate) protocol: Protocol,
    /// Sessions move to the engine's record layer once established (when
    /// their suite allows).
    pub(crate) own_records: bool,
}

impl Shared {
    /// A new SSL object with the MTU, the timer callback and its settings.
    pub(crate) fn new_ssl(&self) -> Result<Ssl> {
        let mut ssl = Ssl::new(&self.ctx).map_err(|e| Error::Ssl {
            code: 1,
            stack: Some(e),
        })?;
        ssl.set_ex_data(timer_index(), self.timers);
        ffi::set_timer_cb(&ssl, timer_cb);
        Ok(ssl)
    }
}

fn timer_index() -> openssl::ex_data::Index<Ssl, Timers> {
    static IDX: OnceLock<openssl::ex_data::Index<Ssl, Timers>> = OnceLock::new();
    *IDX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL could not allocate an ex_data index"))
}

/// `DTLS_set_timer_cb` callback: initial timeout for a new flight, then doubling
/// up to the configured maximum.
unsafe extern "C" fn timer_cb(s: *mut openssl_sys::SSL, timer_us: c_uint) -> c_uint {
    // SAFETY: OpenSSL calls us with the live SSL it is working on.
    let ssl = unsafe { SslRef::from_ptr(s) };
    let t = ssl.ex_data(timer_index()).copied().unwrap_or_default();
    let cap = |d: Duration| d.as_micros().min(u128::from(c_uint::MAX)) as c_uint;
    if timer_us == 0 {
        cap(t.initial)
    } else {
        timer_us.saturating_mul(2).min(cap(t.max))
    }
}

/// A built client configuration; cheap to clone.
#[derive(Clone)]
pub struct ClientConfig {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) shared: Shared,
    pub(crate) server_name: Option<String>,
    pub(crate) verify_hostname: bool,
    pub(crate) sessions: Option<Arc<dyn SessionStore>>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("protocol", &self.inner.shared.protocol)
            .field("mtu", &self.inner.shared.mtu)
            .field("server_name", &self.inner.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A builder with client defaults: DTLS 1.2, `Verify::Required`, MTU 1400.
    pub fn builder() -> ConfigBuilder<Client> {
        ConfigBuilder::new(Verify::Required)
    }
    /// The timers connections of this configuration use.
    pub fn timers(&self) -> Timers {
        self.inner.shared.timers
    }
    /// The configured server name, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.inner.server_name.as_deref()
    }

    /// A client SSL for a connection to the server known by `name` (falls back
    /// to the configured server name) at `addr`, with verification and
    /// resumption set up; the key its session is stored under, if any.
    pub(crate) fn new_ssl(
        &self,
        name: Option<&str>,
        addr: Option<SocketAddr>,
    ) -> Result<(Ssl, Option<SessionKey>)> {
        let mut ssl = self.inner.shared.new_ssl()?;
        let name = name.or(self.inner.server_name.as_deref());
        if let Some(name) = name {
            let ip = name
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>();
            if ip.is_err() {
                ssl.set_hostname(name)
                    .map_err(|e| Error::config_ssl("server_name", e))?;
            }
            if self.inner.verify_hostname {
                let param = ssl.param_mut();
                match ip {
                    Ok(ip) => param.set_ip(ip),
                    Err(_) => param.set_host(name),
                }
                .map_err(|e| Error::config_ssl("server_name", e))?;
            }
        }
        let Some(store) = &self.inner.sessions else {
            return Ok((ssl, None));
        };
        if name.is_none() && addr.is_none() {
            return Ok((ssl, None));
        }
        let key = SessionKey {
            server_name: name.map(str::to_string),
            server_addr: addr,
        };
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.load(&key)))
            .unwrap_or_else(|_| {
                log::debug!("session store: load panicked; no session offered");
                None
            });
        if let Some(sess) = found.and_then(|der| SslSession::from_der(&der).ok()) {
            // SAFETY: `sess` was just parsed from DER into an object nothing
            // else holds; it belongs to no context's cache, so the context
            // callbacks rust-openssl's contract guards against never see it.
            // OpenSSL itself checks that the session's version fits this SSL.
            unsafe { ssl.set_session(&sess) }
                .map_err(|e| Error::config_ssl("resume_sessions", e))?;
        }
        Ok((ssl, Some(key)))
    }

    pub(crate) fn store_session(&self, key: &SessionKey, der: Vec<u8>) {
        if let Some(store) = &self.inner.sessions {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.store(key, der)))
                .is_err()
            {
                log::debug!("session store: store panicked; session not kept");
            }
        }
    }
}

/// A built server configuration; cheap to clone.
#[derive(Clone)]
pub struct ServerConfig {
    pub(crate) inner: Arc<ServerInner>,
}

pub(crate) struct ServerInner {
    pub(crate) shared: Shared,
    pub(crate) cookie: CookieKeys,
    pub(crate) require_cookie: bool,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("protocol", &self.inner.shared.protocol)
            .field("mtu", &self.inner.shared.mtu)
            .field("require_cookie", &self.inner.require_cookie)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// A builder with server defaults: DTLS 1.2, `Verify::None` (no client
    /// certificate asked), cookie exchange on, MTU 1400.
    pub fn builder() -> ConfigBuilder<Server> {
        ConfigBuilder::new(Verify::None)
    }
    /// The cookie secrets; rotate them with [`CookieKeys::rotate`].
    pub fn cookie_keys(&self) -> &CookieKeys {
        &self.inner.cookie
    }
    /// The timers connections of this configuration use.
    pub fn timers(&self) -> Timers {
        self.inner.shared.timers
    }
    /// Whether unknown peers must pass the cookie exchange first.
    pub fn requires_cookie(&self) -> bool {
        self.inner.require_cookie
    }
}
