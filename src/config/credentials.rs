//! A side's own certificate chain and private key, from whatever form the
//! application holds them in: PEM (plain or with an encrypted key), DER,
//! PKCS#12 (with its password), or rust-openssl `X509` / `PKey` objects.

use std::fmt;
use std::path::Path;

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslContextBuilder, SslRef};
use openssl::x509::X509;

use crate::error::{Error, Result};
use crate::ffi;

/// A certificate chain (leaf first) and the private key of its leaf,
/// checked to belong together when made.
///
/// Give it to [`crate::ConfigBuilder::credentials`] (the certificate this
/// side presents) or, on a server, to
/// [`crate::ConfigBuilder::certificate_for_name`] (the certificate for one
/// SNI name). Cheap to clone (the objects are reference-counted by OpenSSL).
///
/// ```
/// use dtls_reactor::Credentials;
/// # let (cert_pem, key_pem) = include!("../doc_pki.rs");
/// # let (_, other_key_pem) = include!("../doc_pki.rs");
/// let creds = Credentials::from_pem(&cert_pem, &key_pem).unwrap();
/// assert_eq!(creds.chain().len(), 1);
/// // A key that is not the certificate's is refused at once.
/// let wrong = Credentials::from_pem(&cert_pem, &other_key_pem);
/// assert!(wrong.is_err());
/// ```
#[derive(Clone)]
pub struct Credentials {
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = self.chain[0]
            .subject_name()
            .entries()
            .filter_map(|e| e.data().to_string().ok())
            .collect::<Vec<_>>()
            .join(", ");
        f.debug_struct("Credentials")
            .field("leaf", &subject)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn pem_chain(pem: &[u8]) -> Result<Vec<X509>> {
    let certs = X509::stack_from_pem(pem).map_err(|e| Error::config_ssl("certificate_chain", e))?;
    if certs.is_empty() {
        return Err(Error::config(
            "certificate_chain",
            "no PEM certificate found",
        ));
    }
    Ok(certs)
}

impl Credentials {
    /// From rust-openssl objects: `chain` leaf first (at least the leaf).
    pub fn from_x509(chain: Vec<X509>, key: PKey<Private>) -> Result<Self> {
        let leaf = chain
            .first()
            .ok_or_else(|| Error::config("certificate_chain", "the chain is empty"))?;
        let public = leaf
            .public_key()
            .map_err(|e| Error::config_ssl("certificate_chain", e))?;
        if !public.public_eq(&key) {
            return Err(Error::config(
                "private_key",
                "the key does not match the certificate",
            ));
        }
        Ok(Credentials { chain, key })
    }

    /// From a PEM chain (leaf first) and a PEM key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let key =
            PKey::private_key_from_pem(key_pem).map_err(|e| Error::config_ssl("private_key", e))?;
        Self::from_x509(pem_chain(chain_pem)?, key)
    }

    /// From a PEM chain and an encrypted PEM key (`-----BEGIN ENCRYPTED
    /// PRIVATE KEY-----`, or a traditional key with `Proc-Type: 4,ENCRYPTED`)
    /// and its password. A wrong password is an error naming `private_key`.
    pub fn from_pem_encrypted(chain_pem: &[u8], key_pem: &[u8], password: &[u8]) -> Result<Self> {
        let key = PKey::private_key_from_pem_passphrase(key_pem, password)
            .map_err(|e| Error::config_ssl("private_key", e))?;
        Self::from_x509(pem_chain(chain_pem)?, key)
    }

    /// From DER: the certificates leaf first, and the key (PKCS#8 or the
    /// algorithm's own form).
    pub fn from_der(chain_der: &[&[u8]], key_der: &[u8]) -> Result<Self> {
        let chain = chain_der
            .iter()
            .map(|d| X509::from_der(d).map_err(|e| Error::config_ssl("certificate_chain", e)))
            .collect::<Result<Vec<_>>>()?;
        let key =
            PKey::private_key_from_der(key_der).map_err(|e| Error::config_ssl("private_key", e))?;
        Self::from_x509(chain, key)
    }

    /// From a PKCS#12 file's bytes (`.p12` / `.pfx`) and its password: the
    /// certificate, its key and any CA certificates it carries (sent as the
    /// chain, in the file's order). A wrong password is an error naming `pkcs12`.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self> {
        if password.contains('\0') {
            return Err(Error::config("pkcs12", "the password contains a NUL byte"));
        }
        let p12 = Pkcs12::from_der(der).map_err(|e| Error::config_ssl("pkcs12", e))?;
        let parsed = p12
            .parse2(password)
            .map_err(|e| Error::config_ssl("pkcs12", e))?;
        let (Some(cert), Some(key)) = (parsed.cert, parsed.pkey) else {
            return Err(Error::config(
                "pkcs12",
                "the file holds no certificate with its private key",
            ));
        };
        let mut chain = vec![cert];
        if let Some(ca) = parsed.ca {
            chain.extend(ca);
        }
        Self::from_x509(chain, key)
    }

    /// From a PEM chain file and a PEM key file.
    pub fn from_pem_files(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let read = |p: &Path, setting| {
            std::fs::read(p).map_err(|e| Error::config(setting, format!("{}: {e}", p.display())))
        };
        let c = read(chain.as_ref(), "certificate_chain")?;
        let k = read(key.as_ref(), "private_key")?;
        Self::from_pem(&c, &k)
    }

    /// The certificates, leaf first.
    pub fn chain(&self) -> &[X509] {
        &self.chain
    }

    /// The leaf's private key.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.key
    }

    /// Makes these the context's own certificate, key and chain.
    pub(crate) fn apply_to_context(&self, b: &mut SslContextBuilder) -> Result<()> {
        b.set_certificate(&self.chain[0])
            .map_err(|e| Error::config_ssl("certificate_chain", e))?;
        for c in &self.chain[1..] {
            if !ffi::ctx_add_chain_cert(b, c.clone()) {
                return Err(Error::config_ssl(
                    "certificate_chain",
                    openssl::error::ErrorStack::get(),
                ));
            }
        }
        b.set_private_key(&self.key)
            .map_err(|e| Error::config_ssl("private_key", e))?;
        b.check_private_key().map_err(|e| Error::Config {
            setting: "private_key",
            reason: "the key does not match the certificate".into(),
            stack: Some(e),
        })
    }

    /// Makes these the one certificate of this handshake (SNI selection):
    /// whatever the SSL inherited from its context is cleared first.
    pub(crate) fn apply_to_ssl(
        &self,
        ssl: &mut SslRef,
    ) -> std::result::Result<(), openssl::error::ErrorStack> {
        ffi::certs_clear(ssl);
        ssl.set_certificate(&self.chain[0])?;
        for c in &self.chain[1..] {
            ssl.add_chain_cert(c.clone())?;
        }
        ssl.set_private_key(&self.key)
    }
}
