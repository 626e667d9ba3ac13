//! Session ticket keys a fleet of servers can share and rotate (RFC 5077):
//! a ticket sealed by one server opens on every server with the same keys,
//! so a client resumes on any of them, and after a restart.
//!
//! rust-openssl does not bind `SSL_CTX_set_tlsext_ticket_key_cb`; the
//! callback below is installed through [`crate::ffi::set_ticket_key_cb`].

use std::fmt;
use std::os::raw::c_int;
use std::sync::OnceLock;

use foreign_types_shared::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{SslContext, SslContextBuilder, SslRef};

use super::{ConfigBuilder, Server};
use crate::error::{Error, Result};
use crate::ffi;
use crate::key_ring::KeyRing;

/// Length of a ticket secret.
pub const TICKET_SECRET_LEN: usize = 32;

/// The three keys OpenSSL needs, derived from one secret.
#[derive(Clone)]
struct TicketKey {
    /// Names the key inside the ticket, so the server finds it again.
    name: [u8; 16],
    hmac: [u8; 32],
    aes: [u8; 32],
}

impl TicketKey {
    fn derive(secret: &[u8; TICKET_SECRET_LEN]) -> Self {
        let part = |label: &[u8]| {
            let mut h = openssl::sha::Sha256::new();
            h.update(b"dtls-reactor ticket key ");
            h.update(label);
            h.update(secret);
            h.finish()
        };
        let mut name = [0u8; 16];
        name.copy_from_slice(&part(b"name")[..16]);
        TicketKey {
            name,
            hmac: part(b"hmac"),
            aes: part(b"aes"),
        }
    }
}

/// The session ticket keys of a server: the current one seals new tickets,
/// the current and the previous one open tickets (a ticket opened with the
/// previous key is replaced by a fresh one in the same handshake).
///
/// Clones share the keys, so rotating one rotates all; servers of a fleet
/// (and a server after its restart) agree by setting the same secrets.
/// Without [`ConfigBuilder::ticket_keys`] OpenSSL uses random keys of its
/// own, per configuration: tickets then only open on the configuration that
/// issued them.
///
/// ```
/// use dtls_reactor::{ServerConfig, TicketKeys};
/// let keys = TicketKeys::from_secret([7; 32]); // the same secret on every server
/// # let (cert_pem, key_pem) = include!("../doc_pki.rs");
/// let cfg = ServerConfig::builder()
///     .certificate_chain_pem(&cert_pem)
///     .private_key_pem(&key_pem)
///     .ticket_keys(keys.clone())
///     .build()
///     .unwrap();
/// keys.rotate_to([8; 32]); // later, on every server: [7; 32] still opens
/// # let _ = cfg;
/// ```
#[derive(Clone)]
pub struct TicketKeys {
    ring: KeyRing<TicketKey>,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKeys { .. }")
    }
}

fn random_secret() -> std::result::Result<[u8; TICKET_SECRET_LEN], ErrorStack> {
    let mut s = [0u8; TICKET_SECRET_LEN];
    openssl::rand::rand_bytes(&mut s)?;
    Ok(s)
}

impl TicketKeys {
    /// Keys with a given current secret and no previous one. Keep it secret
    /// and random: whoever has it can read every session's keys.
    pub fn from_secret(secret: [u8; TICKET_SECRET_LEN]) -> Self {
        TicketKeys {
            ring: KeyRing::new(TicketKey::derive(&secret), None),
        }
    }

    /// Keys with a random current secret.
    pub fn random() -> std::result::Result<Self, ErrorStack> {
        Ok(Self::from_secret(random_secret()?))
    }

    /// Sets both secrets at once.
    pub fn set(&self, current: [u8; TICKET_SECRET_LEN], previous: Option<[u8; TICKET_SECRET_LEN]>) {
        self.ring.set(
            TicketKey::derive(&current),
            previous.as_ref().map(TicketKey::derive),
        );
    }

    /// Makes `secret` current; the old current one still opens tickets
    /// until the next rotation.
    pub fn rotate_to(&self, secret: [u8; TICKET_SECRET_LEN]) {
        self.ring.rotate_to(TicketKey::derive(&secret));
    }

    /// Makes a new random secret current.
    pub fn rotate(&self) -> std::result::Result<(), ErrorStack> {
        self.rotate_to(random_secret()?);
        Ok(())
    }
}

fn ticket_index() -> Index<SslContext, TicketKeys> {
    static IDX: OnceLock<Index<SslContext, TicketKeys>> = OnceLock::new();
    *IDX.get_or_init(|| {
        SslContext::new_ex_index().expect("OpenSSL could not allocate an ex_data index")
    })
}

/// Installs `keys` as the context's ticket keys.
pub(crate) fn install(b: &mut SslContextBuilder, keys: &TicketKeys) -> Result<()> {
    b.set_ex_data(ticket_index(), keys.clone());
    if !ffi::set_ticket_key_cb(b, ticket_key_cb) {
        return Err(Error::config_ssl("ticket_keys", ErrorStack::get()));
    }
    Ok(())
}

/// AES-256-CBC's IV length, which OpenSSL's `iv` buffer
/// (`EVP_MAX_IV_LENGTH`, 16) holds.
const IV_LEN: usize = 16;

/// `SSL_CTX_set_tlsext_ticket_key_cb` callback. Sealing (`enc` = 1): name the
/// current key, draw an IV, set up AES-256-CBC and HMAC-SHA256; returns 1.
/// Opening: find the key named in the ticket: 1 (current), 2 (previous: the
/// client gets a new ticket), 0 (unknown: a full handshake); -1 on failure.
unsafe extern "C" fn ticket_key_cb(
    s: *mut openssl_sys::SSL,
    key_name: *mut u8,
    iv: *mut u8,
    cctx: *mut openssl_sys::EVP_CIPHER_CTX,
    hctx: *mut openssl_sys::HMAC_CTX,
    enc: c_int,
) -> c_int {
    // SAFETY: OpenSSL calls us with the live SSL whose ticket it handles.
    let ssl = unsafe { SslRef::from_ptr(s) };
    let Some(keys) = ssl.ssl_context().ex_data(ticket_index()) else {
        return -1;
    };
    let pair = keys.ring.read();
    // SAFETY: OpenSSL passes a 16-byte key name buffer (the ticket's first
    // 16 bytes when opening, ours to fill when sealing) and an IV buffer of
    // EVP_MAX_IV_LENGTH (16) bytes, both valid for this call.
    let (name, iv) = unsafe {
        (
            std::slice::from_raw_parts_mut(key_name, 16),
            std::slice::from_raw_parts_mut(iv, IV_LEN),
        )
    };
    let (key, answer) = if enc == 1 {
        if openssl::rand::rand_bytes(iv).is_err() {
            return -1;
        }
        name.copy_from_slice(&pair.current.name);
        (&pair.current, 1)
    } else if *name == pair.current.name {
        (&pair.current, 1)
    } else {
        match &pair.previous {
            Some(p) if *name == p.name => (p, 2),
            _ => return 0,
        }
    };
    // SAFETY: `cctx` and `hctx` are the live contexts OpenSSL set aside for
    // this ticket; the key buffers are 32 bytes as AES-256 and our HMAC key
    // length say; `iv` is 16 bytes as AES-CBC needs.
    let init = if enc == 1 {
        openssl_sys::EVP_EncryptInit_ex
    } else {
        openssl_sys::EVP_DecryptInit_ex
    };
    let ok = unsafe {
        let cipher = openssl_sys::EVP_aes_256_cbc();
        let c = init(
            cctx,
            cipher,
            std::ptr::null_mut(),
            key.aes.as_ptr(),
            iv.as_ptr(),
        );
        c == 1
            && openssl_sys::HMAC_Init_ex(
                hctx,
                key.hmac.as_ptr().cast(),
                key.hmac.len() as c_int,
                openssl_sys::EVP_sha256(),
                std::ptr::null_mut(),
            ) == 1
    };
    if ok {
        answer
    } else {
        -1
    }
}

impl ConfigBuilder<Server> {
    /// Seals and opens session tickets with these keys instead of OpenSSL's
    /// per-configuration random ones, so every server given the same
    /// [`TicketKeys`] (a fleet behind one address, or this server after a
    /// restart) resumes the sessions of the others. Rotate them with
    /// [`TicketKeys::rotate_to`] on every server.
    pub fn ticket_keys(mut self, keys: TicketKeys) -> Self {
        self.hooks.ticket_keys = Some(keys);
        self
    }
}
