//! The OpenSSL hooks a deployment needs beyond plain settings: a peer
//! verification callback, certificates chosen by SNI, ALPN, key logging, and
//! the escape hatch to the `SslContextBuilder` itself.
//!
//! Every user callback runs inside `catch_unwind`: a panic never unwinds
//! into OpenSSL; it fails the handshake (or, for the escape hatch, the build).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use foreign_types_shared::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    AlpnError, NameType, SniError, Ssl, SslAlert, SslContext, SslContextBuilder, SslRef,
};
use openssl::x509::{X509StoreContextRef, X509VerifyResult};

use super::credentials::Credentials;
use super::{ConfigBuilder, Server, Verify};
use crate::error::{Error, Result};
use crate::ffi;
use crate::role::Role;

/// What a verification callback is shown: the chain the peer sent and
/// OpenSSL's own verdict on it.
#[derive(Debug)]
pub struct PeerChain {
    der: Vec<Vec<u8>>,
    openssl: std::result::Result<(), String>,
    role: Role,
    server_name: Option<String>,
}

impl PeerChain {
    /// The certificates as the peer sent them, in DER, leaf first (never empty).
    pub fn certificates_der(&self) -> &[Vec<u8>] {
        &self.der
    }
    /// The leaf certificate in DER.
    pub fn leaf_der(&self) -> &[u8] {
        &self.der[0]
    }
    /// The SHA-256 fingerprint of the leaf (what WebRTC's SDP `a=fingerprint`
    /// carries for `sha-256`).
    pub fn leaf_sha256(&self) -> [u8; 32] {
        openssl::sha::sha256(&self.der[0])
    }
    /// OpenSSL's verdict on the chain with this side's trust anchors and,
    /// on a client, the server name: `Err` holds OpenSSL's reason
    /// (e.g. `"unable to get local issuer certificate"`, `"hostname mismatch"`).
    pub fn openssl_result(&self) -> std::result::Result<(), &str> {
        self.openssl.as_ref().map(|_| ()).map_err(String::as_str)
    }
    /// Which side this is: a client checks the server's chain, a server the client's.
    pub fn role(&self) -> Role {
        self.role
    }
    /// On a client, the name it expects the server to have; on a server, the
    /// name the client asked for by SNI.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }
}

/// The answer of a verification callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertVerdict {
    /// Accept the peer's certificate.
    Accept,
    /// Refuse it: the handshake fails with
    /// [`Error::CertificateRejected`] carrying this reason.
    Reject(String),
}

type VerifyFn = dyn Fn(&PeerChain) -> CertVerdict + Send + Sync;
type ResolveFn = dyn Fn(Option<&str>) -> Option<Credentials> + Send + Sync;
type AlpnSelectFn = dyn Fn(&[&[u8]]) -> Option<Vec<u8>> + Send + Sync;
type KeyLogFn = dyn Fn(&str) + Send + Sync;
type ContextFn = dyn FnOnce(&mut SslContextBuilder) -> std::result::Result<(), ErrorStack> + Send;

/// The hooks a builder collects; applied to the context when it is built.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) credentials: Option<Credentials>,
    verify: Option<Arc<VerifyFn>>,
    sni: Vec<(String, Credentials)>,
    resolver: Option<Arc<ResolveFn>>,
    alpn: Option<Vec<Vec<u8>>>,
    alpn_select: Option<Arc<AlpnSelectFn>>,
    key_log: Option<Arc<KeyLogFn>>,
    key_log_file: Option<PathBuf>,
    context: Vec<Box<ContextFn>>,
    pub(crate) ticket_keys: Option<super::TicketKeys>,
    pub(crate) session_store: Option<Arc<dyn crate::session_store::SessionStore>>,
}

/// The verification callback and the side it runs on, kept in the context's
/// ex_data so it lives exactly as long as the `SSL_CTX`.
struct VerifyHook {
    role: Role,
    f: Arc<VerifyFn>,
}

fn verify_index() -> Index<SslContext, VerifyHook> {
    static IDX: OnceLock<Index<SslContext, VerifyHook>> = OnceLock::new();
    *IDX.get_or_init(|| {
        SslContext::new_ex_index().expect("OpenSSL could not allocate an ex_data index")
    })
}

/// Where a rejected handshake keeps the callback's reason for
/// `ssl_error::map_ssl_error`.
pub(crate) fn rejection_index() -> Index<Ssl, String> {
    static IDX: OnceLock<Index<Ssl, String>> = OnceLock::new();
    *IDX.get_or_init(|| Ssl::new_ex_index().expect("OpenSSL could not allocate an ex_data index"))
}

/// `X509_V_ERR_APPLICATION_VERIFICATION` from `<openssl/x509_vfy.h>`.
const X509_V_ERR_APPLICATION_VERIFICATION: c_int = 50;

/// `SSL_CTX_set_cert_verify_callback` callback: OpenSSL's own verification
/// first, then the application's callback with its result; the callback's
/// answer is final.
unsafe extern "C" fn cert_verify_cb(
    ctx: *mut openssl_sys::X509_STORE_CTX,
    _arg: *mut c_void,
) -> c_int {
    // SAFETY: OpenSSL calls us with the live store context it set up for
    // the peer's chain (leaf and untrusted chain set, param copied from the SSL).
    let ok = unsafe { openssl_sys::X509_verify_cert(ctx) } == 1;
    // SAFETY: same live store context; the reference does not outlive this call.
    let store = unsafe { X509StoreContextRef::from_ptr_mut(ctx) };
    let openssl_result = if ok {
        Ok(())
    } else {
        Err(store.error().error_string().to_string())
    };
    // SAFETY: during a handshake the store context's ex_data at OpenSSL's
    // SSL index is the live SSL being verified (set by ssl_verify_cert_chain).
    let ssl = unsafe {
        let p = openssl_sys::X509_STORE_CTX_get_ex_data(
            ctx,
            openssl_sys::SSL_get_ex_data_X509_STORE_CTX_idx(),
        ) as *mut openssl_sys::SSL;
        if p.is_null() {
            return 0;
        }
        SslRef::from_ptr_mut(p)
    };
    let Some((role, f)) = ssl
        .ssl_context()
        .ex_data(verify_index())
        .map(|h| (h.role, h.f.clone()))
    else {
        // Our callback without our hook: refuse rather than guess.
        return 0;
    };
    // SAFETY: the store context is live for this call; the stack is borrowed from it.
    let der: Vec<Vec<u8>> = unsafe { ffi::untrusted_chain(ctx) }
        .map(|s| s.iter().filter_map(|c| c.to_der().ok()).collect())
        .unwrap_or_default();
    if der.is_empty() {
        return 0;
    }
    let server_name = match role {
        Role::Server => ssl.servername(NameType::HOST_NAME).map(str::to_string),
        // The SNI this client sent (none for an IP address).
        Role::Client => ssl.servername(NameType::HOST_NAME).map(str::to_string),
    };
    let chain = PeerChain {
        der,
        openssl: openssl_result,
        role,
        server_name,
    };
    let verdict = catch_unwind(AssertUnwindSafe(|| f(&chain)))
        .unwrap_or_else(|_| CertVerdict::Reject("the verification callback panicked".into()));
    match verdict {
        CertVerdict::Accept => {
            store.set_error(X509VerifyResult::OK);
            // A failed X509_verify_cert may have queued errors; the
            // application overrode it, so they must not fail a later call.
            let _ = ErrorStack::get();
            1
        }
        CertVerdict::Reject(reason) => {
            log::debug!("verification callback rejected the peer: {reason}");
            ssl.set_ex_data(rejection_index(), reason);
            // SAFETY: live store context; sets its error code only.
            unsafe {
                openssl_sys::X509_STORE_CTX_set_error(ctx, X509_V_ERR_APPLICATION_VERIFICATION)
            };
            0
        }
    }
}

/// The ALPN wire format (length-prefixed names) of `protos`.
fn alpn_wire(protos: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Vec::new();
    for p in protos {
        w.push(p.len() as u8);
        w.extend_from_slice(p);
    }
    w
}

/// The client's offered names from the wire format; `None` when malformed.
fn parse_alpn(mut wire: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while let Some((&n, rest)) = wire.split_first() {
        let n = usize::from(n);
        if n == 0 || rest.len() < n {
            return None;
        }
        out.push(&rest[..n]);
        wire = &rest[n..];
    }
    Some(out)
}

/// `name` matches `pattern`: equal ignoring ASCII case, or `*.rest` for one
/// leading label.
fn name_matches(pattern: &str, name: &str) -> bool {
    if pattern.eq_ignore_ascii_case(name) {
        return true;
    }
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && suffix.eq_ignore_ascii_case(rest)
        }
        _ => false,
    }
}

fn open_key_log(path: &Path) -> Result<Arc<KeyLogFn>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::config("key_log_file", format!("{}: {e}", path.display())))?;
    let file = Mutex::new(file);
    Ok(Arc::new(move |line: &str| {
        let mut f: std::sync::MutexGuard<'_, File> = file.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line, so lines of concurrent handshakes never interleave.
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if let Err(e) = f.write_all(&buf) {
            log::debug!("key log: write failed: {e}");
        }
    }))
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("verify_callback", &self.verify.is_some())
            .field(
                "sni_names",
                &self.sni.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

impl Hooks {
    /// Whether a verification callback is set (it needs the peer's certificate).
    pub(crate) fn has_verify_callback(&self) -> bool {
        self.verify.is_some()
    }

    /// Installs every hook on `b`, the context of one side. Runs after every
    /// plain setting; the escape-hatch closures run last of all.
    pub(crate) fn apply(
        &mut self,
        b: &mut SslContextBuilder,
        server: bool,
        verify: Verify,
    ) -> Result<()> {
        let role = if server { Role::Server } else { Role::Client };
        if let Some(f) = &self.verify {
            if server && verify == Verify::None {
                return Err(Error::config(
                    "verify_callback",
                    "a server with Verify::None asks for no client certificate: \
                     use Verify::Optional or Verify::Required",
                ));
            }
            b.set_ex_data(verify_index(), VerifyHook { role, f: f.clone() });
            ffi::set_cert_verify_cb(b, cert_verify_cb);
        }
        if let Some(protos) = &self.alpn {
            if protos.is_empty() || protos.iter().any(|p| p.is_empty() || p.len() > 255) {
                return Err(Error::config(
                    "alpn_protocols",
                    "give 1 or more names of 1-255 bytes each",
                ));
            }
            if !server {
                b.set_alpn_protos(&alpn_wire(protos))
                    .map_err(|e| Error::config_ssl("alpn_protocols", e))?;
            }
        }
        if server {
            self.apply_server(b)?;
        }
        let log = match (&self.key_log, &self.key_log_file) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "key_log",
                    "set key_log or key_log_file, not both",
                ))
            }
            (Some(f), None) => Some(f.clone()),
            (None, Some(p)) => Some(open_key_log(p)?),
            (None, None) => None,
        };
        if let Some(f) = log {
            b.set_keylog_callback(move |_ssl, line| {
                if catch_unwind(AssertUnwindSafe(|| f(line))).is_err() {
                    log::debug!("key log callback panicked; line dropped");
                }
            });
        }
        for hook in self.context.drain(..) {
            match catch_unwind(AssertUnwindSafe(|| hook(b))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Error::config_ssl("configure_context", e)),
                Err(_) => return Err(Error::config("configure_context", "the closure panicked")),
            }
        }
        Ok(())
    }

    fn apply_server(&self, b: &mut SslContextBuilder) -> Result<()> {
        if let Some(keys) = &self.ticket_keys {
            super::tickets::install(b, keys)?;
        }
        if !self.sni.is_empty() || self.resolver.is_some() {
            let names = self.sni.clone();
            let resolver = self.resolver.clone();
            b.set_servername_callback(move |ssl, alert| {
                let name = ssl.servername(NameType::HOST_NAME).map(str::to_string);
                let chosen = match &resolver {
                    Some(r) => match catch_unwind(AssertUnwindSafe(|| r(name.as_deref()))) {
                        Ok(c) => c,
                        Err(_) => {
                            log::debug!("certificate resolver panicked: handshake refused");
                            *alert = SslAlert::HANDSHAKE_FAILURE;
                            return Err(SniError::ALERT_FATAL);
                        }
                    },
                    None => None,
                };
                let chosen = chosen.or_else(|| {
                    let n = name.as_deref()?;
                    names
                        .iter()
                        .find(|(p, _)| name_matches(p, n))
                        .map(|(_, c)| c.clone())
                });
                // No match: the context's default certificate stays.
                if let Some(c) = chosen {
                    if let Err(e) = c.apply_to_ssl(ssl) {
                        log::debug!("SNI {name:?}: the chosen certificate could not be set: {e}");
                        *alert = SslAlert::HANDSHAKE_FAILURE;
                        return Err(SniError::ALERT_FATAL);
                    }
                }
                Ok(())
            });
        }
        let prefs = self.alpn.clone();
        let select = self.alpn_select.clone();
        if prefs.is_some() || select.is_some() {
            b.set_alpn_select_callback(move |_ssl, wire| {
                let Some(offered) = parse_alpn(wire) else {
                    return Err(AlpnError::ALERT_FATAL);
                };
                let want: Option<Vec<u8>> = match &select {
                    Some(f) => {
                        catch_unwind(AssertUnwindSafe(|| f(&offered))).unwrap_or_else(|_| {
                            log::debug!("ALPN callback panicked: handshake refused");
                            None
                        })
                    }
                    None => prefs
                        .iter()
                        .flatten()
                        .find(|p| offered.contains(&p.as_slice()))
                        .cloned(),
                };
                // The answer must be one of the client's names (a slice of its list).
                match want.and_then(|w| offered.iter().copied().find(|o| *o == w.as_slice())) {
                    Some(p) => Ok(p),
                    None => Err(AlpnError::ALERT_FATAL),
                }
            });
        }
        Ok(())
    }
}

impl<R> ConfigBuilder<R> {
    /// This side's certificate chain and key, in any form [`Credentials`]
    /// takes (instead of the PEM methods such as
    /// [`Self::certificate_chain_pem`]; setting both is an error).
    pub fn credentials(mut self, c: Credentials) -> Self {
        self.hooks.credentials = Some(c);
        self
    }

    /// Decides on the peer's certificate chain, on either side. Runs once per
    /// handshake, after OpenSSL verified the chain against the configured CAs
    /// (and, on a client, the server name); [`PeerChain::openssl_result`]
    /// says how that went. **The callback's answer is final**: it may accept
    /// a chain OpenSSL refused (a self-signed WebRTC certificate checked by
    /// its fingerprint) or refuse one OpenSSL accepted (pinning). To keep
    /// OpenSSL's verdict as well, reject when `openssl_result()` is an error.
    ///
    /// A rejection fails the handshake with [`Error::CertificateRejected`]
    /// (`io::ErrorKind::PermissionDenied`) carrying the reason; a panic in
    /// the callback is a rejection too. The callback runs only when the peer
    /// sends a certificate: on a client always (a server must send one,
    /// unless PSK), on a server with [`Verify::Required`] (a client without
    /// one fails) or [`Verify::Optional`] (a client without one is let in
    /// unchecked). On a server, `Verify::None` with a callback is a
    /// configuration error; on a client, `Verify::None` with a callback lets
    /// the callback alone decide (no hostname check). A resumed session
    /// exchanges no certificate, so the callback does not run for it: the
    /// session was checked when it was made (a [`crate::SessionStore`] shared
    /// between configurations with different callbacks hands that check on).
    ///
    /// ```
    /// use dtls_reactor::{CertVerdict, ClientConfig};
    /// let pinned = [0u8; 32]; // the server certificate's SHA-256
    /// let cfg = ClientConfig::builder()
    ///     .verify_callback(move |chain| {
    ///         if chain.leaf_sha256() == pinned {
    ///             CertVerdict::Accept
    ///         } else {
    ///             CertVerdict::Reject("fingerprint does not match the pin".into())
    ///         }
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = cfg;
    /// ```
    pub fn verify_callback(
        mut self,
        f: impl Fn(&PeerChain) -> CertVerdict + Send + Sync + 'static,
    ) -> Self {
        self.hooks.verify = Some(Arc::new(f));
        self
    }

    /// ALPN (RFC 7301) protocol names. A client offers them in this order; a
    /// server picks the first of these the client offered (unless
    /// [`ConfigBuilder::alpn_select`] decides) and refuses a client whose
    /// offer shares none (alert no_application_protocol). A client that
    /// offers nothing is served without ALPN. What was agreed:
    /// [`crate::Connection::alpn_protocol`].
    pub fn alpn_protocols<P: AsRef<[u8]>>(mut self, protocols: &[P]) -> Self {
        self.hooks.alpn = Some(protocols.iter().map(|p| p.as_ref().to_vec()).collect());
        self
    }

    /// Logs each handshake's secrets, one line at a time in the NSS key log
    /// format (`CLIENT_RANDOM <client random> <master secret>`, hex), which
    /// Wireshark reads to decrypt captures. Anyone with these lines can read
    /// the traffic: for debugging only.
    pub fn key_log(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.hooks.key_log = Some(Arc::new(f));
        self
    }

    /// Appends the key log (see [`Self::key_log`]) to this file, created if
    /// needed (opened when the configuration is built).
    pub fn key_log_file(mut self, path: impl AsRef<Path>) -> Self {
        self.hooks.key_log_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// [`Self::key_log_file`] with the path in the `SSLKEYLOGFILE`
    /// environment variable, when it is set and not empty; otherwise nothing.
    pub fn key_log_from_env(self) -> Self {
        match std::env::var_os("SSLKEYLOGFILE") {
            Some(p) if !p.is_empty() => self.key_log_file(PathBuf::from(p)),
            _ => self,
        }
    }

    /// The escape hatch: `f` gets rust-openssl's `SslContextBuilder` after
    /// every other setting of this builder has been applied (only a server's
    /// cookie callbacks and session id context, which the crate needs, are
    /// set after it) and before the context is built. This is the way to reach what the builder does not
    /// offer (an OpenSSL option, a callback, a certificate store setting).
    /// Closures run in the order given; an error or a panic fails
    /// [`ConfigBuilder::build`] with a `configure_context` error. What the
    /// closure changes is the caller's responsibility: overriding settings
    /// this crate relies on (the cookie callbacks, `SSL_OP_NO_QUERY_MTU`,
    /// the read-ahead and buffer modes) can break it.
    ///
    /// ```
    /// use dtls_reactor::ServerConfig;
    /// use openssl::ssl::SslOptions;
    /// # let (cert_pem, key_pem) = include!("../doc_pki.rs");
    /// let cfg = ServerConfig::builder()
    ///     .certificate_chain_pem(&cert_pem)
    ///     .private_key_pem(&key_pem)
    ///     .configure_context(|ctx| {
    ///         ctx.set_options(SslOptions::NO_TICKET); // no session tickets
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = cfg;
    /// ```
    pub fn configure_context(
        mut self,
        f: impl FnOnce(&mut SslContextBuilder) -> std::result::Result<(), ErrorStack> + Send + 'static,
    ) -> Self {
        self.hooks.context.push(Box::new(f));
        self
    }
}

impl ConfigBuilder<Server> {
    /// Presents `c` to clients whose SNI server name matches `name` (ASCII
    /// case ignored; `*.example.com` matches one leading label). Clients
    /// that send no name, or one that matches nothing, get the default
    /// certificate ([`Self::credentials`] or the PEM methods), which a
    /// certificate server still needs. The first matching entry wins.
    pub fn certificate_for_name(mut self, name: &str, c: Credentials) -> Self {
        self.hooks.sni.push((name.to_string(), c));
        self
    }

    /// Chooses the certificate per handshake from the client's SNI name
    /// (`None`: the client sent none), like pion's `GetCertificate`:
    /// `Some(c)` presents `c`, `None` falls back to
    /// [`Self::certificate_for_name`] entries, then the default. Runs on the
    /// thread doing the handshake, so it should be quick. A panic refuses
    /// the handshake.
    pub fn certificate_resolver(
        mut self,
        f: impl Fn(Option<&str>) -> Option<Credentials> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.resolver = Some(Arc::new(f));
        self
    }

    /// Chooses the ALPN protocol from the client's offer (in the client's
    /// order): return one of the offered names, or `None` to refuse the
    /// handshake (alert no_application_protocol). Takes precedence over the
    /// preference list of [`ConfigBuilder::alpn_protocols`]. An answer that
    /// is not among the offers, or a panic, refuses too.
    pub fn alpn_select(
        mut self,
        f: impl Fn(&[&[u8]]) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.alpn_select = Some(Arc::new(f));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_wire_round_trip_and_hostile_lists() {
        let w = alpn_wire(&[b"h2".to_vec(), b"coap".to_vec()]);
        assert_eq!(w, b"\x02h2\x04coap");
        assert_eq!(parse_alpn(&w).unwrap(), vec![&b"h2"[..], &b"coap"[..]]);
        assert!(parse_alpn(b"\x05ab").is_none(), "length past the end");
        assert!(parse_alpn(b"\x00").is_none(), "empty name");
        assert_eq!(parse_alpn(b"").unwrap().len(), 0);
    }

    #[test]
    fn sni_patterns() {
        assert!(name_matches("other.test", "OTHER.test"));
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(!name_matches("other.test", "other.test.evil"));
    }
}
