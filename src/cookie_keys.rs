//! Cookie secrets (RFC 6347 section 4.2.1). A cookie is
//! `timestamp ‖ HMAC-SHA256(secret, timestamp ‖ peer address ‖ port)`, the
//! HMAC cut to 24 bytes so the cookie fits the 32 bytes that DTLS 1.0
//! (RFC 4347) and GnuTLS allow: the timestamp (milliseconds since the Unix
//! epoch, 8 bytes big-endian) is under the MAC, so a cookie stops verifying after its age limit whether or not
//! anyone rotates the secret; the current and the previous secret both
//! verify, and the secrets can be set explicitly so servers behind one load
//! balancer share them and rotate together. The front door's cookie
//! stage (`src/cookie.rs`) and the server configuration's OpenSSL callbacks
//! use these keys.

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::error::ErrorStack;
use openssl::sha::Sha256;

use crate::key_ring::KeyRing;

/// Length of a cookie secret.
pub const COOKIE_SECRET_LEN: usize = 32;
const SECRET_LEN: usize = COOKIE_SECRET_LEN;
const STAMP_LEN: usize = 8;
/// HMAC-SHA256 cut to 192 bits. GnuTLS refuses a HelloVerifyRequest whose
/// cookie is longer than 32 bytes (seen: "Error decoding the received TLS
/// packet" in `recv_hello_verify_request` with a 40-byte cookie).
const MAC_LEN: usize = 24;
/// Length of the cookies we issue: an 8-byte timestamp and 24 bytes of
/// HMAC-SHA256 (32 bytes, the most DTLS 1.0 and GnuTLS accept).
pub const COOKIE_LEN: usize = STAMP_LEN + MAC_LEN;
/// Default age limit of a cookie.
pub const DEFAULT_COOKIE_MAX_AGE: Duration = Duration::from_secs(60);
/// How far in the future a cookie's timestamp may lie and still verify: the
/// clocks of servers that share secrets may differ by this much.
const CLOCK_SKEW_MS: u64 = 2_000;

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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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

    fn mac(&self, stamp: &[u8; STAMP_LEN], peer: SocketAddr) -> [u8; 32] {
        let mut h = self.inner.clone();
        h.update(stamp);
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

/// The cookie secrets of a server: the current one and the one before it,
/// and the age limit of a cookie (default 60 s).
///
/// Clones share the same secrets and limit, so rotating one rotates all.
/// Servers behind one load balancer agree by setting the same secrets
/// ([`CookieKeys::set`], [`CookieKeys::rotate_to`]) at the same times.
///
/// ```
/// use dtls_reactor::CookieKeys;
/// let keys = CookieKeys::random().unwrap();
/// let peer = "192.0.2.1:5684".parse().unwrap();
/// let mut cookie = [0u8; dtls_reactor::COOKIE_LEN];
/// let n = keys.generate(peer, &mut cookie).unwrap();
/// assert!(keys.verify(peer, &cookie[..n]));
/// keys.rotate().unwrap();
/// assert!(keys.verify(peer, &cookie[..n]), "the previous secret still verifies");
/// keys.rotate().unwrap();
/// assert!(!keys.verify(peer, &cookie[..n]), "two rotations retire it");
///
/// // A fleet: every server sets the same secrets, and rotates to the same next one.
/// let a = CookieKeys::from_secret([1; 32]);
/// let b = CookieKeys::from_secret([9; 32]);
/// b.set([1; 32], None);
/// let n = a.generate(peer, &mut cookie).unwrap();
/// assert!(b.verify(peer, &cookie[..n]), "issued by a, verified by b");
/// a.rotate_to([2; 32]);
/// b.rotate_to([2; 32]);
/// assert!(b.verify(peer, &cookie[..n]), "the previous secret still verifies");
/// ```
#[derive(Clone)]
pub struct CookieKeys {
    secrets: KeyRing<Hmac>,
    max_age_ms: Arc<AtomicU64>,
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieKeys")
            .field("max_age", &self.max_age())
            .finish_non_exhaustive()
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
    /// processes). Keep it secret and random.
    pub fn from_secret(secret: [u8; SECRET_LEN]) -> Self {
        CookieKeys {
            secrets: KeyRing::new(Hmac::new(&secret), None),
            max_age_ms: Arc::new(AtomicU64::new(DEFAULT_COOKIE_MAX_AGE.as_millis() as u64)),
        }
    }

    /// Sets both secrets at once: cookies made under `current` or
    /// `previous` verify; new cookies use `current`.
    pub fn set(&self, current: [u8; SECRET_LEN], previous: Option<[u8; SECRET_LEN]>) {
        self.secrets
            .set(Hmac::new(&current), previous.as_ref().map(Hmac::new));
    }

    /// Makes `secret` current; the old current one still verifies until the
    /// next rotation. Servers of a fleet call this with the same secret.
    pub fn rotate_to(&self, secret: [u8; SECRET_LEN]) {
        self.secrets.rotate_to(Hmac::new(&secret));
    }

    /// Makes a new random secret current (for a server on its own); the old
    /// current one still verifies until the next rotation.
    pub fn rotate(&self) -> Result<(), ErrorStack> {
        self.rotate_to(random_secret()?);
        Ok(())
    }

    /// How long a cookie verifies after it was made (default 60 s; at
    /// least 1 ms). The client answers a HelloVerifyRequest within a round
    /// trip, so a few seconds are enough; the limit bounds how long a
    /// captured cookie can be replayed from a spoofed address.
    pub fn set_max_age(&self, age: Duration) {
        let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX).max(1);
        self.max_age_ms.store(ms, Ordering::Relaxed);
    }

    /// The age limit of a cookie.
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.max_age_ms.load(Ordering::Relaxed))
    }

    /// Writes the cookie for `peer` into `out` (at least [`COOKIE_LEN`]
    /// bytes; OpenSSL gives 255) and returns its length.
    pub fn generate(&self, peer: SocketAddr, out: &mut [u8]) -> Result<usize, ErrorStack> {
        self.generate_at(peer, out, now_ms())
    }

    fn generate_at(&self, peer: SocketAddr, out: &mut [u8], now: u64) -> Result<usize, ErrorStack> {
        if out.len() < COOKIE_LEN {
            return Err(ErrorStack::get());
        }
        let stamp = now.to_be_bytes();
        let mac = self.secrets.read().current.mac(&stamp, peer);
        out[..STAMP_LEN].copy_from_slice(&stamp);
        out[STAMP_LEN..COOKIE_LEN].copy_from_slice(&mac[..MAC_LEN]);
        Ok(COOKIE_LEN)
    }

    /// Whether `cookie` was issued to `peer` under the current or previous
    /// secret and is younger than the age limit. Compares the MACs in
    /// constant time.
    pub fn verify(&self, peer: SocketAddr, cookie: &[u8]) -> bool {
        self.verify_at(peer, cookie, now_ms())
    }

    fn verify_at(&self, peer: SocketAddr, cookie: &[u8], now: u64) -> bool {
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let mut stamp = [0u8; STAMP_LEN];
        stamp.copy_from_slice(&cookie[..STAMP_LEN]);
        let made = u64::from_be_bytes(stamp);
        let fresh = made <= now.saturating_add(CLOCK_SKEW_MS)
            && now.saturating_sub(made) <= self.max_age_ms.load(Ordering::Relaxed);
        let mac = &cookie[STAMP_LEN..];
        let s = self.secrets.read();
        // Evaluate both so timing does not reveal which secret matched.
        let a = openssl::memcmp::eq(&s.current.mac(&stamp, peer)[..MAC_LEN], mac);
        let b = s
            .previous
            .as_ref()
            .is_some_and(|p| openssl::memcmp::eq(&p.mac(&stamp, peer)[..MAC_LEN], mac));
        fresh & (a | b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn hmac_matches_openssl() {
        let key = [7u8; SECRET_LEN];
        let keys = CookieKeys::from_secret(key);
        for peer in ["192.0.2.1:5684", "[2001:db8::1%3]:443", "[::1]:1"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut msg = T0.to_be_bytes().to_vec();
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
            let mut c = [0u8; COOKIE_LEN];
            assert_eq!(keys.generate_at(peer, &mut c, T0).unwrap(), COOKIE_LEN);
            assert_eq!(
                &c[..STAMP_LEN],
                &T0.to_be_bytes(),
                "{peer}: timestamp first"
            );
            assert_eq!(
                c[STAMP_LEN..],
                want[..MAC_LEN],
                "{peer}: then the HMAC, cut"
            );
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
        assert!(!keys.verify(a, &c[..COOKIE_LEN - 1]), "short cookie");
        let other = CookieKeys::from_secret([2u8; SECRET_LEN]);
        assert!(!other.verify(a, &c));
        assert!(
            keys.generate(a, &mut [0u8; COOKIE_LEN - 1]).is_err(),
            "no room"
        );
    }

    #[test]
    fn cookies_expire_by_their_own_timestamp() {
        let keys = CookieKeys::from_secret([3u8; SECRET_LEN]);
        let a: SocketAddr = "[2001:db8::7]:5684".parse().unwrap();
        let mut c = [0u8; COOKIE_LEN];
        keys.generate_at(a, &mut c, T0).unwrap();
        let max = DEFAULT_COOKIE_MAX_AGE.as_millis() as u64;
        assert!(keys.verify_at(a, &c, T0));
        assert!(keys.verify_at(a, &c, T0 + max), "at the limit");
        assert!(
            !keys.verify_at(a, &c, T0 + max + 1),
            "past the limit, no rotation"
        );
        assert!(
            keys.verify_at(a, &c, T0 - CLOCK_SKEW_MS),
            "a peer server's clock ahead"
        );
        assert!(
            !keys.verify_at(a, &c, T0 - CLOCK_SKEW_MS - 1),
            "too far in the future"
        );
        keys.set_max_age(Duration::from_millis(500));
        assert!(keys.verify_at(a, &c, T0 + 500));
        assert!(!keys.verify_at(a, &c, T0 + 501));
        // The timestamp is under the MAC: moving it forward breaks the cookie.
        let mut forged = c;
        forged[..STAMP_LEN].copy_from_slice(&(T0 + 400).to_be_bytes());
        assert!(!keys.verify_at(a, &forged, T0 + 600));
    }

    #[test]
    fn fleet_secrets_set_and_rotated_together() {
        let a = CookieKeys::from_secret([10; SECRET_LEN]);
        let b = CookieKeys::random().unwrap();
        let peer: SocketAddr = "198.51.100.4:40000".parse().unwrap();
        let mut c = [0u8; COOKIE_LEN];
        a.generate_at(peer, &mut c, T0).unwrap();
        assert!(!b.verify_at(peer, &c, T0), "different secrets");
        b.set([11; SECRET_LEN], Some([10; SECRET_LEN]));
        assert!(b.verify_at(peer, &c, T0), "a's secret is b's previous");
        let mut c2 = [0u8; COOKIE_LEN];
        b.generate_at(peer, &mut c2, T0).unwrap();
        assert!(
            !a.verify_at(peer, &c2, T0),
            "b issues under 11, which a lacks"
        );
        a.rotate_to([11; SECRET_LEN]);
        assert!(a.verify_at(peer, &c2, T0) && a.verify_at(peer, &c, T0));
        a.rotate_to([12; SECRET_LEN]);
        assert!(!a.verify_at(peer, &c, T0), "two rotations retire secret 10");
        assert!(a.verify_at(peer, &c2, T0));
    }
}
