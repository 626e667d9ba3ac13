//! Client and server configuration, validated when built.
//!
//! A [`ConfigBuilder`] collects plain settings; [`ConfigBuilder::build`] turns
//! them into an OpenSSL context and reports the first bad setting by the name
//! of its builder method. Built configurations (`built.rs`) are cheap to
//! clone and shared by every connection made from them.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{
    SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslSessionCacheMode,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;

use crate::cookie_keys::CookieKeys;
use crate::error::{Error, Result};
use crate::ffi;
use crate::session_store::{MemorySessionStore, SessionStore, DEFAULT_SESSION_CAPACITY};

mod built;
mod credentials;
mod hooks;
mod tickets;

pub(crate) use built::Shared;
pub use built::{ClientConfig, ServerConfig};
use built::{ClientInner, ServerInner};
pub use credentials::Credentials;
pub(crate) use hooks::rejection_index;
pub use hooks::{CertVerdict, PeerChain};
pub use tickets::{TicketKeys, TICKET_SECRET_LEN};

/// Which DTLS versions a side accepts. The maximum is always DTLS 1.2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// DTLS 1.2 only (the default).
    #[default]
    Dtls1_2,
    /// DTLS 1.0 only. Opt-in: on OpenSSL 3 this lowers the security level to 0
    /// and permits the SHA-1/CBC suites DTLS 1.0 needs.
    Dtls1_0,
    /// DTLS 1.0 or 1.2, whichever both sides support (the same caveats as 1.0).
    Any,
}

impl Protocol {
    fn range(self) -> (SslVersion, SslVersion) {
        match self {
            Protocol::Dtls1_2 => (SslVersion::DTLS1_2, SslVersion::DTLS1_2),
            Protocol::Dtls1_0 => (SslVersion::DTLS1, SslVersion::DTLS1),
            Protocol::Any => (SslVersion::DTLS1, SslVersion::DTLS1_2),
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "1.2" | "dtls1.2" | "dtls1_2" => Ok(Protocol::Dtls1_2),
            "1.0" | "dtls1.0" | "dtls1" | "dtls1_0" => Ok(Protocol::Dtls1_0),
            "any" => Ok(Protocol::Any),
            other => Err(Error::config(
                "protocol",
                format!("`{other}`: expected 1.0, 1.2 or any"),
            )),
        }
    }
}

/// Whether and how the peer's certificate is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verify {
    /// No verification. A server does not ask for a client certificate; a
    /// client accepts any server certificate (and none).
    None,
    /// A server asks for a client certificate and verifies one if sent, but
    /// accepts a client without one. On a client this is the same as `Required`.
    Optional,
    /// The peer must present a certificate that verifies against the CAs.
    Required,
}

/// Marker for client configurations.
#[derive(Debug)]
pub enum Client {}
/// Marker for server configurations.
#[derive(Debug)]
pub enum Server {}

#[derive(Clone)]
enum Source {
    Pem(Vec<u8>),
    File(PathBuf),
}

impl Source {
    fn read(&self, setting: &'static str) -> Result<Vec<u8>> {
        match self {
            Source::Pem(b) => Ok(b.clone()),
            Source::File(p) => std::fs::read(p)
                .map_err(|e| Error::config(setting, format!("{}: {e}", p.display()))),
        }
    }
}

type PskLookup = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Retransmission and handshake timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timers {
    /// First retransmission timeout of each flight (default 1 s).
    pub initial: Duration,
    /// Ceiling of the doubling timeout (default 60 s).
    pub max: Duration,
    /// Whole-handshake deadline (default 60 s; `None` for none): the
    /// overall cap, however much the peer is still answering.
    pub handshake: Option<Duration>,
    /// Server side: how long a handshaking peer may send nothing before the
    /// handshake ends (default 10 s; `None` for no such limit). Every
    /// datagram of whole records the peer sends (a new flight, or a
    /// retransmission that shows it is still there) starts it again and
    /// doubles it, and a peer that was heard after a long gap is allowed at
    /// least twice that gap next time (both sides' retransmission timers
    /// double on a lossy link), up to [`Self::handshake`]. So a peer that
    /// goes silent after its ClientHello holds its slot at most this long,
    /// and one that keeps answering on a lossy link keeps its handshake.
    /// Client connections ignore it: a client keeps to its retransmission
    /// schedule and the overall deadline.
    pub silence: Option<Duration>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            handshake: Some(Duration::from_secs(60)),
            silence: Some(Duration::from_secs(10)),
        }
    }
}

/// Smallest initial retransmission timeout accepted.
pub const MIN_INITIAL_TIMEOUT: Duration = Duration::from_millis(10);
/// Default datagram size limit (UDP payload bytes) for every record and handshake datagram.
pub const DEFAULT_MTU: u32 = 1400;
/// Smallest MTU OpenSSL can work with.
pub const MIN_MTU: u32 = 256;

/// Builder for [`ClientConfig`] (`ConfigBuilder<Client>`) and
/// [`ServerConfig`] (`ConfigBuilder<Server>`).
///
/// ```
/// use dtls_reactor::{ClientConfig, Verify};
/// # let (ca_pem, _) = include!("doc_pki.rs");
/// let cfg = ClientConfig::builder()
///     .ca_pem(&ca_pem)
///     .server_name("localhost")
///     .build()
///     .unwrap();
/// # let _ = cfg;
/// // A bad setting names itself:
/// let err = ClientConfig::builder().ciphers("NO-SUCH-CIPHER").build().unwrap_err();
/// assert!(err.to_string().contains("ciphers"));
/// ```
pub struct ConfigBuilder<R> {
    protocol: Protocol,
    chain: Option<Source>,
    key: Option<Source>,
    ca: Vec<Source>,
    ca_dir: Option<PathBuf>,
    system_roots: bool,
    verify: Verify,
    ciphers: Option<String>,
    groups: Option<String>,
    sigalgs: Option<String>,
    psk_hint: Option<String>,
    psk_client: Option<(Vec<u8>, Vec<u8>)>,
    psk_server: Option<PskLookup>,
    srtp: Option<String>,
    mtu: u32,
    timers: Timers,
    recv_queue: usize,
    renegotiation: bool,
    openssl_record_layer: bool,
    cookie: Option<CookieKeys>,
    require_cookie: bool,
    server_name: Option<String>,
    verify_hostname: bool,
    resume: bool,
    hooks: hooks::Hooks,
    _role: PhantomData<R>,
}

impl<R> fmt::Debug for ConfigBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("protocol", &self.protocol)
            .field("verify", &self.verify)
            .field("mtu", &self.mtu)
            .field("timers", &self.timers)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl<R> ConfigBuilder<R> {
    fn new(verify: Verify) -> Self {
        ConfigBuilder {
            protocol: Protocol::default(),
            chain: None,
            key: None,
            ca: Vec::new(),
            ca_dir: None,
            system_roots: false,
            verify,
            ciphers: None,
            groups: None,
            sigalgs: None,
            psk_hint: None,
            psk_client: None,
            psk_server: None,
            srtp: None,
            mtu: DEFAULT_MTU,
            timers: Timers::default(),
            recv_queue: 64,
            renegotiation: false,
            openssl_record_layer: false,
            cookie: None,
            require_cookie: true,
            server_name: None,
            verify_hostname: true,
            resume: false,
            hooks: hooks::Hooks::default(),
            _role: PhantomData,
        }
    }

    /// DTLS version(s) to accept; DTLS 1.2 by default.
    pub fn protocol(mut self, p: Protocol) -> Self {
        self.protocol = p;
        self
    }
    /// Own certificate chain (leaf first) in PEM.
    pub fn certificate_chain_pem(mut self, pem: &[u8]) -> Self {
        self.chain = Some(Source::Pem(pem.to_vec()));
        self
    }
    /// Own certificate chain (leaf first) from a PEM file.
    pub fn certificate_chain_file(mut self, path: impl AsRef<Path>) -> Self {
        self.chain = Some(Source::File(path.as_ref().to_path_buf()));
        self
    }
    /// Own private key in PEM (PKCS#8, PKCS#1 or SEC1).
    pub fn private_key_pem(mut self, pem: &[u8]) -> Self {
        self.key = Some(Source::Pem(pem.to_vec()));
        self
    }
    /// Own private key from a PEM file.
    pub fn private_key_file(mut self, path: impl AsRef<Path>) -> Self {
        self.key = Some(Source::File(path.as_ref().to_path_buf()));
        self
    }
    /// Trust the CA certificates in this PEM (may be called repeatedly).
    pub fn ca_pem(mut self, pem: &[u8]) -> Self {
        self.ca.push(Source::Pem(pem.to_vec()));
        self
    }
    /// Trust the CA certificates in this PEM file.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.ca.push(Source::File(path.as_ref().to_path_buf()));
        self
    }
    /// Trust the hashed CA directory (as made by `openssl rehash`).
    pub fn ca_dir(mut self, path: impl AsRef<Path>) -> Self {
        self.ca_dir = Some(path.as_ref().to_path_buf());
        self
    }
    /// Also trust OpenSSL's default system CA locations.
    pub fn system_roots(mut self) -> Self {
        self.system_roots = true;
        self
    }
    /// Peer verification (clients default to `Required`, servers to `None`).
    pub fn verify(mut self, v: Verify) -> Self {
        self.verify = v;
        self
    }
    /// OpenSSL cipher list for DTLS 1.2/1.0 (e.g. `"ECDHE-ECDSA-AES128-GCM-SHA256"`).
    pub fn ciphers(mut self, list: &str) -> Self {
        self.ciphers = Some(list.to_string());
        self
    }
    /// Key-exchange groups (curves), e.g. `"X25519:P-256"`. With an ECDSA P-256
    /// certificate the list must contain P-256.
    pub fn groups(mut self, list: &str) -> Self {
        self.groups = Some(list.to_string());
        self
    }
    /// Signature algorithms, e.g. `"ECDSA+SHA256:RSA+SHA256"`.
    pub fn sigalgs(mut self, list: &str) -> Self {
        self.sigalgs = Some(list.to_string());
        self
    }
    /// SRTP protection profiles (`"SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM"`).
    pub fn srtp_profiles(mut self, list: &str) -> Self {
        self.srtp = Some(list.to_string());
        self
    }
    /// Largest datagram (UDP payload bytes) any record or handshake datagram may
    /// take; default 1400. OpenSSL's own MTU discovery is always off.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = mtu;
        self
    }
    /// First retransmission timeout of a flight; default 1 s, at least 10 ms.
    pub fn initial_timeout(mut self, d: Duration) -> Self {
        self.timers.initial = d;
        self
    }
    /// Ceiling for the doubling retransmission timeout; default 60 s.
    pub fn max_timeout(mut self, d: Duration) -> Self {
        self.timers.max = d;
        self
    }
    /// Deadline for the whole handshake; default 60 s; `None` disables it.
    pub fn handshake_timeout(mut self, d: Option<Duration>) -> Self {
        self.timers.handshake = d;
        self
    }
    /// Server side: the handshake ends when the peer has sent nothing for
    /// this long (see [`Timers::silence`]); default 10 s; `None` disables it.
    pub fn handshake_silence(mut self, d: Option<Duration>) -> Self {
        self.timers.silence = d;
        self
    }
    /// Received datagrams a connection buffers before the application reads
    /// them; more are dropped and counted (default 64).
    pub fn receive_queue(mut self, datagrams: usize) -> Self {
        self.recv_queue = datagrams;
        self
    }
    /// Allow renegotiation (off by default).
    pub fn renegotiation(mut self, on: bool) -> Self {
        self.renegotiation = on;
        self
    }

    /// Keep OpenSSL's record layer for every session after the handshake
    /// (off by default). By default a DTLS 1.2 session with an AEAD suite
    /// (AES-GCM, ChaCha20-Poly1305, AES-CCM, AES-CCM-8) moves to the engine's
    /// own record layer once established and OpenSSL's session object is
    /// freed (a few KiB per session instead of tens); DTLS 1.0, CBC suites
    /// and sessions that allow [`Self::renegotiation`] always keep OpenSSL's.
    /// Either way records are sealed and opened by OpenSSL's EVP AEADs; this
    /// switch is for comparison and as a fallback.
    pub fn openssl_record_layer(mut self, on: bool) -> Self {
        self.openssl_record_layer = on;
        self
    }

    fn context(&mut self, server: bool) -> Result<SslContextBuilder> {
        if self.mtu < MIN_MTU || self.mtu > 65507 {
            return Err(Error::config(
                "mtu",
                format!("{} is outside {MIN_MTU}..=65507", self.mtu),
            ));
        }
        if self.timers.initial < MIN_INITIAL_TIMEOUT {
            return Err(Error::config(
                "initial_timeout",
                format!("{:?} is below the 10 ms minimum", self.timers.initial),
            ));
        }
        if self.timers.max < self.timers.initial || self.timers.max > Duration::from_secs(3600) {
            return Err(Error::config(
                "max_timeout",
                "must be at least the initial timeout and at most one hour",
            ));
        }
        if self.recv_queue == 0 {
            return Err(Error::config("receive_queue", "must be at least 1"));
        }
        let mut b =
            SslContext::builder(SslMethod::dtls()).map_err(|e| Error::config_ssl("protocol", e))?;
        let (min, max) = self.protocol.range();
        b.set_min_proto_version(Some(min))
            .and_then(|_| b.set_max_proto_version(Some(max)))
            .map_err(|e| Error::config_ssl("protocol", e))?;
        if self.protocol != Protocol::Dtls1_2 {
            b.set_security_level(0);
        }
        // SSL_OP_NO_ENCRYPT_THEN_MAC (SSL_OP_BIT(19) in OpenSSL 1.1.1 and 3;
        // rust-openssl names no constant for it). With encrypt-then-MAC,
        // OpenSSL 3.0's DTLS ends the session with a fatal bad_record_mac on
        // one forged CBC record instead of discarding it (openssl#24972), so
        // anyone able to send one datagram from the peer's address could end
        // it. Without it, CBC suites use MAC-then-encrypt, whose bad records
        // OpenSSL discards silently. AEAD suites (the DTLS 1.2 default) are
        // not affected by this option.
        const NO_ENCRYPT_THEN_MAC: u64 = 1 << 19;
        let mut opts =
            SslOptions::NO_QUERY_MTU | SslOptions::from_bits_retain(NO_ENCRYPT_THEN_MAC as _);
        if !self.renegotiation {
            opts |= SslOptions::NO_RENEGOTIATION;
        }
        b.set_options(opts);
        b.set_read_ahead(false);
        b.set_mode(SslMode::RELEASE_BUFFERS);
        // No record can exceed the MTU, so the write buffer need not hold 16 KiB.
        let fragment = self.mtu.clamp(512, 16384);
        if !ffi::set_max_send_fragment(&b, fragment) {
            return Err(Error::config_ssl("mtu", openssl::error::ErrorStack::get()));
        }

        if let Some(list) = &self.ciphers {
            b.set_cipher_list(list)
                .map_err(|e| Error::config_ssl("ciphers", e))?;
        } else if self.protocol != Protocol::Dtls1_2 {
            b.set_cipher_list("DEFAULT:@SECLEVEL=0")
                .map_err(|e| Error::config_ssl("protocol", e))?;
        }
        if let Some(list) = &self.groups {
            b.set_groups_list(list)
                .map_err(|e| Error::config_ssl("groups", e))?;
        }
        if let Some(list) = &self.sigalgs {
            b.set_sigalgs_list(list)
                .map_err(|e| Error::config_ssl("sigalgs", e))?;
        }
        if let Some(list) = &self.srtp {
            b.set_tlsext_use_srtp(list)
                .map_err(|e| Error::config_ssl("srtp_profiles", e))?;
        }

        // Own certificate and key.
        let own = match (&self.chain, &self.key, self.hooks.credentials.take()) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(Error::config(
                    "credentials",
                    "set credentials or the certificate_chain/private_key methods, not both",
                ))
            }
            (None, None, c) => c,
            (Some(chain), Some(key), None) => Some(Credentials::from_pem(
                &chain.read("certificate_chain")?,
                &key.read("private_key")?,
            )?),
            (Some(_), None, None) => {
                return Err(Error::config(
                    "private_key",
                    "a certificate chain needs its private key",
                ))
            }
            (None, Some(_), None) => {
                return Err(Error::config(
                    "certificate_chain",
                    "a private key needs its certificate chain",
                ))
            }
        };
        match own {
            Some(c) => c.apply_to_context(&mut b)?,
            None if server && self.psk_server.is_none() => {
                return Err(Error::config(
                    "certificate_chain",
                    "a server needs a certificate and key, or a PSK lookup",
                ))
            }
            None => {}
        }

        // Trust anchors.
        for src in &self.ca {
            let pem = src.read("ca")?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| Error::config_ssl("ca", e))?;
            if certs.is_empty() {
                return Err(Error::config("ca", "no PEM certificate found"));
            }
            for c in certs {
                b.cert_store_mut()
                    .add_cert(c)
                    .map_err(|e| Error::config_ssl("ca", e))?;
            }
        }
        if let Some(dir) = &self.ca_dir {
            if !dir.is_dir() {
                return Err(Error::config(
                    "ca_dir",
                    format!("{} is not a directory", dir.display()),
                ));
            }
            b.load_verify_locations(None, Some(dir))
                .map_err(|e| Error::config_ssl("ca_dir", e))?;
        }
        if self.system_roots {
            b.set_default_verify_paths()
                .map_err(|e| Error::config_ssl("system_roots", e))?;
        }

        // Verification mode.
        let mode = match (server, self.verify) {
            (_, Verify::None) => SslVerifyMode::NONE,
            (true, Verify::Optional) => SslVerifyMode::PEER,
            (true, Verify::Required) => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            (false, _) => SslVerifyMode::PEER,
        };
        // A client's verification callback decides even with Verify::None,
        // which OpenSSL would otherwise not enforce.
        let mode = if !server && self.hooks.has_verify_callback() {
            SslVerifyMode::PEER
        } else {
            mode
        };
        b.set_verify(mode);

        // Pre-shared keys.
        if let Some(hint) = &self.psk_hint {
            let c = std::ffi::CString::new(hint.as_str())
                .map_err(|_| Error::config("psk_identity_hint", "contains a NUL byte"))?;
            if !ffi::set_psk_identity_hint(&b, &c) {
                return Err(Error::config_ssl(
                    "psk_identity_hint",
                    openssl::error::ErrorStack::get(),
                ));
            }
        }
        if let Some((identity, key)) = self.psk_client.clone() {
            b.set_psk_client_callback(move |_ssl, _hint, id_out, key_out| {
                // The identity is written as a NUL-terminated C string.
                if identity.len() + 1 > id_out.len() || key.len() > key_out.len() {
                    return Err(openssl::error::ErrorStack::get());
                }
                id_out[..identity.len()].copy_from_slice(&identity);
                id_out[identity.len()] = 0;
                key_out[..key.len()].copy_from_slice(&key);
                Ok(key.len())
            });
        }
        if let Some(lookup) = self.psk_server.clone() {
            b.set_psk_server_callback(move |_ssl, identity, key_out| {
                let found = identity.and_then(|id| lookup(id));
                match found {
                    Some(k) if k.len() <= key_out.len() => {
                        key_out[..k.len()].copy_from_slice(&k);
                        Ok(k.len())
                    }
                    Some(k) => {
                        log::warn!(
                            "psk_lookup returned a {}-byte key, longer than OpenSSL's {}-byte \
                             buffer: handshake refused",
                            k.len(),
                            key_out.len()
                        );
                        Ok(0)
                    }
                    None => Ok(0),
                }
            });
        }
        self.hooks.apply(&mut b, server, self.verify)?;
        Ok(b)
    }

    fn shared(&self, ctx: SslContext) -> Shared {
        Shared {
            ctx,
            mtu: self.mtu,
            timers: self.timers,
            recv_queue: self.recv_queue,
            protocol: self.protocol,
            own_records: !self.openssl_record_layer
                && !self.renegotiation
                && self.protocol != Protocol::Dtls1_0,
        }
    }
}

impl ConfigBuilder<Client> {
    /// The server's name: sent as SNI (when not an IP address) and, unless
    /// disabled, checked against the server certificate.
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_string());
        self
    }
    /// Turn off the check of the server certificate against the server name.
    /// The chain is still verified: anyone with a certificate from a trusted CA
    /// can then impersonate the server. Use only in tests.
    pub fn danger_disable_hostname_verification(mut self) -> Self {
        self.verify_hostname = false;
        self
    }
    /// PSK identity and key this client offers (use a PSK cipher list too).
    pub fn psk(mut self, identity: &[u8], key: &[u8]) -> Self {
        self.psk_client = Some((identity.to_vec(), key.to_vec()));
        self
    }
    /// Keep the last session per server (name and address) in an
    /// in-process [`MemorySessionStore`] of 1,024 servers and offer it on the
    /// next connection to the same server.
    pub fn resume_sessions(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Resume sessions (as [`Self::resume_sessions`]) with this store, which
    /// may keep them across restarts or share them between configurations.
    pub fn session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.resume = true;
        self.hooks.session_store = Some(store);
        self
    }

    /// Validates every setting and builds the configuration.
    pub fn build(mut self) -> Result<ClientConfig> {
        if let Some((id, key)) = &self.psk_client {
            if id.is_empty() || id.len() > 128 || id.contains(&0) {
                return Err(Error::config(
                    "psk",
                    "identity must be 1-128 bytes without NUL",
                ));
            }
            if key.is_empty() || key.len() > 256 {
                return Err(Error::config("psk", "key must be 1-256 bytes"));
            }
        }
        let mut b = self.context(false)?;
        if self.resume {
            b.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        }
        let shared = self.shared(b.build());
        let store = self.hooks.session_store.take();
        let sessions = self.resume.then(|| {
            store.unwrap_or_else(|| Arc::new(MemorySessionStore::new(DEFAULT_SESSION_CAPACITY)))
        });
        Ok(ClientConfig {
            inner: Arc::new(ClientInner {
                shared,
                server_name: self.server_name,
                verify_hostname: self.verify_hostname && self.verify != Verify::None,
                sessions,
            }),
        })
    }
}

impl ConfigBuilder<Server> {
    /// PSK identity hint sent to clients.
    pub fn psk_identity_hint(mut self, hint: &str) -> Self {
        self.psk_hint = Some(hint.to_string());
        self
    }
    /// Looks up the key for a client's PSK identity (`None` refuses it).
    pub fn psk_lookup(
        mut self,
        lookup: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        self.psk_server = Some(Arc::new(lookup));
        self
    }
    /// Cookie secrets (random by default). Share one [`CookieKeys`] between
    /// listeners and rotate it with [`CookieKeys::rotate`].
    pub fn cookie_keys(mut self, keys: CookieKeys) -> Self {
        self.cookie = Some(keys);
        self
    }
    /// Require the HelloVerifyRequest cookie exchange before any per-peer state
    /// exists (on by default; turning it off exposes the server to spoofed
    /// floods and amplification).
    pub fn require_cookie(mut self, on: bool) -> Self {
        self.require_cookie = on;
        self
    }

    /// Validates every setting and builds the configuration.
    pub fn build(mut self) -> Result<ServerConfig> {
        let mut b = self.context(true)?;
        let keys = match &self.cookie {
            Some(k) => k.clone(),
            None => CookieKeys::random().map_err(|e| Error::config_ssl("cookie_keys", e))?,
        };
        let gen_keys = keys.clone();
        b.set_cookie_generate_cb(move |_ssl, out| {
            let peer =
                crate::cookie_keys::current_peer().ok_or_else(openssl::error::ErrorStack::get)?;
            gen_keys.generate(peer, out)
        });
        let ver_keys = keys.clone();
        b.set_cookie_verify_cb(
            move |_ssl, cookie| match crate::cookie_keys::current_peer() {
                Some(peer) => ver_keys.verify(peer, cookie),
                None => false,
            },
        );
        b.set_session_id_context(b"dtls-reactor")
            .map_err(|e| Error::config_ssl("session", e))?;
        let shared = self.shared(b.build());
        Ok(ServerConfig {
            inner: Arc::new(ServerInner {
                shared,
                cookie: keys,
                require_cookie: self.require_cookie,
            }),
        })
    }
}
