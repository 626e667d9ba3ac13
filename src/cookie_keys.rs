//! Cookie secrets (RFC 6347 section 4.2.1): HMAC-SHA256 over the peer's
//! address and port, keyed with a secret that can be rotated; the current and
//! the previous secret both verify. The front door's cookie stage (`src/cookie.rs`)
//! and the server configuration's OpenSSL callbacks use these keys.

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use openssl::error::ErrorStack;
use openssl::sha::Sha256;

const SECRET_LEN: usize = 32;
/// Length of the cookies we issue (a full HMAC-SHA256).
pub const COOKIE_LEN: usize = 32;

thread_local! {
    static CURRENT_PEER: Cell<Option<SocketAddr>> = const { Cell::new(None) };
}

/// Runs `f` with `peer` as the peer whose cookie OpenSSL checks on this
/// thread (`DTLSv1_listen`, and `SSL_accept`, which checks it once more).
pub(crate) fn with_current_peer<R>(peer: SocketAddr, f: impl FnOnce() -> R) -> R {
    CURRENT_PEER.with(|c| c.set(Some(peer)));
    let r = f();
    CURRENT_PEER.with(|c| c.set(None));
    r
}

/// The peer whose ClientHello OpenSSL is checking on this thread, if any.
pub(crate) fn current_peer() -> Option<SocketAddr> {
    CURRENT_PEER.with(|c| c.get())
}

/// HMAC-SHA256 with the key's inner and outer pad states absorbed once, so a
/// cookie costs two short SHA-256 finishes and no allocation.
#[derive(Clone)]
struct Hmac {
    inner: Sha256,
    outer: Sha256,
}

impl Hmac {
    fn new(key: &[u8; SECRET_LEN]) -> Self {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = Sha256::new();
        inner.update(&ipad);
        let mut outer = Sha256::new();
        outer.update(&opad);
        Hmac { inner, outer }
    }

    fn mac(&self, peer: SocketAddr) -> [u8; COOKIE_LEN] {
        let mut h = self.inner.clone();
        match peer {
            SocketAddr::V4(a) => {
                h.update(&[4]);
                h.update(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                h.update(&[6]);
                h.update(&a.ip().octets());
                h.update(&a.scope_id().to_be_bytes());
            }
        }
        h.update(&peer.port().to_be_bytes());
        let mut o = self.outer.clone();
        o.update(&h.finish());
        o.finish()
    }
}

struct Secrets {
    current: Hmac,
    previous: Option<Hmac>,
}

/// The cookie secrets of a server: the current one and the one before it.
///
/// Clones share the same secrets, so rotating one rotates all.
///
/// ```
/// use dtls_reactor::CookieKeys;
/// let keys = CookieKeys::random().unwrap();
/// let peer = "192.0.2.1:5684".parse().unwrap();
/// let mut cookie = [0u8; 32];
/// let n = keys.generate(peer, &mut cookie).unwrap();
/// assert!(keys.verify(peer, &cookie[..n]));
/// keys.rotate().unwrap();
/// assert!(keys.verify(peer, &cookie[..n]), "the previous secret still verifies");
/// keys.rotate().unwrap();
/// assert!(!keys.verify(peer, &cookie[..n]), "two rotations retire it");
/// ```
#[derive(Clone)]
pub struct CookieKeys {
    secrets: Arc<RwLock<Secrets>>,
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieKeys { .. }")
    }
}

fn random_secret() -> Result<[u8; SECRET_LEN], ErrorStack> {
    let mut s = [0u8; SECRET_LEN];
    openssl::rand::rand_bytes(&mut s)?;
    Ok(s)
}

impl CookieKeys {
    /// New keys with a random current secret and no previous one.
    pub fn random() -> Result<Self, ErrorStack> {
        Ok(Self::from_secret(random_secret()?))
    }

    /// Keys with a given current secret (for servers that must agree across
    /// processes). Keep it secret and at least 16 random bytes.
    pub fn from_secret(secret: [u8; SECRET_LEN]) -> Self {
        CookieKeys {
            secrets: Arc::new(RwLock::new(Secrets {
                current: Hmac::new(&secret),
                previous: None,
            })),
        }
    }

    /// Makes a new random secret current; the old current one still verifies
    /// until the next rotation.
    pub fn rotate(&self) -> Result<(), ErrorStack> {
        let fresh = random_secret()?;
        let fresh = Hmac::new(&fresh);
        let mut s = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        s.previous = Some(std::mem::replace(&mut s.current, fresh));
        Ok(())
    }

    /// Writes the cookie for `peer` into `out` and returns its length.
    pub fn generate(&self, peer: SocketAddr, out: &mut [u8]) -> Result<usize, ErrorStack> {
        let mac = self
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current
            .mac(peer);
        let n = COOKIE_LEN.min(out.len());
        out[..n].copy_from_slice(&mac[..n]);
        Ok(n)
    }

    /// Whether `cookie` was issued to `peer` under the current or previous
    /// secret. Compares in constant time.
    pub fn verify(&self, peer: SocketAddr, cookie: &[u8]) -> bool {
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let s = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        // Evaluate both so timing does not reveal which secret matched.
        let a = openssl::memcmp::eq(&s.current.mac(peer), cookie);
        let b = s
            .previous
            .as_ref()
            .is_some_and(|p| openssl::memcmp::eq(&p.mac(peer), cookie));
        a | b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;

    #[test]
    fn hmac_matches_openssl() {
        let key = [7u8; SECRET_LEN];
        for peer in ["192.0.2.1:5684", "[2001:db8::1%3]:443", "[::1]:1"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut msg = Vec::new();
            match peer {
                SocketAddr::V4(a) => {
                    msg.push(4);
                    msg.extend_from_slice(&a.ip().octets());
                }
                SocketAddr::V6(a) => {
                    msg.push(6);
                    msg.extend_from_slice(&a.ip().octets());
                    msg.extend_from_slice(&a.scope_id().to_be_bytes());
                }
            }
            msg.extend_from_slice(&peer.port().to_be_bytes());
            let pkey = PKey::hmac(&key).unwrap();
            let mut signer = Signer::new(MessageDigest::sha256(), &pkey).unwrap();
            signer.update(&msg).unwrap();
            let want = signer.sign_to_vec().unwrap();
            assert_eq!(Hmac::new(&key).mac(peer).to_vec(), want, "{peer}");
        }
    }

    #[test]
    fn cookies_depend_on_address_port_and_secret() {
        let keys = CookieKeys::from_secret([1u8; SECRET_LEN]);
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut c = [0u8; COOKIE_LEN];
        keys.generate(a, &mut c).unwrap();
        assert!(keys.verify(a, &c));
        assert!(!keys.verify("127.0.0.1:1001".parse().unwrap(), &c));
        assert!(!keys.verify("127.0.0.2:1000".parse().unwrap(), &c));
        assert!(!keys.verify(a, &c[..31]), "short cookie");
        let other = CookieKeys::from_secret([2u8; SECRET_LEN]);
        assert!(!other.verify(a, &c));
    }
}
