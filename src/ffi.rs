//! The few OpenSSL calls that rust-openssl does not bind.
//!
//! Everything here is a thin, safe wrapper around one C function or macro. The
//! wrappers take rust-openssl's `&SslRef`: its pointer is valid for the
//! borrow, and `SslRef` is an opaque (`UnsafeCell`) type, so OpenSSL may mutate
//! the object behind a shared reference, as rust-openssl's own `&self`
//! methods already let it do.

use std::os::raw::{c_int, c_long, c_uint, c_void};
use std::time::Duration;

use foreign_types_shared::ForeignTypeRef;
use openssl::ssl::SslRef;
use openssl_sys::SSL;

/// `DTLS_CTRL_GET_TIMEOUT` from `<openssl/ssl.h>`: the macro `DTLSv1_get_timeout`.
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
/// `DTLS_CTRL_HANDLE_TIMEOUT`: the macro `DTLSv1_handle_timeout`.
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

/// The callback type of `DTLS_set_timer_cb`: given the previous timeout in
/// microseconds (0 at the start of a flight), return the next one.
pub(crate) type TimerCb = unsafe extern "C" fn(s: *mut SSL, timer_us: c_uint) -> c_uint;

/// Opaque `BIO_ADDR`.
#[repr(C)]
pub(crate) struct BioAddr {
    _private: [u8; 0],
}

extern "C" {
    fn DTLSv1_listen(s: *mut SSL, client: *mut BioAddr) -> c_int;
    fn DTLS_set_timer_cb(s: *mut SSL, cb: Option<TimerCb>);
    fn DTLS_get_data_mtu(s: *const SSL) -> usize;
    fn SSL_has_pending(s: *const SSL) -> c_int;
    fn SSL_free_buffers(s: *mut SSL) -> c_int;
    fn SSL_alloc_buffers(s: *mut SSL) -> c_int;
    fn BIO_ADDR_new() -> *mut BioAddr;
    fn SSL_CTX_use_psk_identity_hint(
        ctx: *mut openssl_sys::SSL_CTX,
        hint: *const std::os::raw::c_char,
    ) -> c_int;
    fn BIO_ADDR_free(a: *mut BioAddr);
}

/// Remaining time of the DTLS retransmission timer, or `None` when no timer runs.
pub(crate) fn get_timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: the pointer comes from a live SslRef; the control writes one
    // `struct timeval` through `parg`, which points at our local.
    let r = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            &mut tv as *mut libc::timeval as *mut c_void,
        )
    };
    if r <= 0 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Acts on an expired retransmission timer: 1 when a flight was resent, 0 when
/// the timer had not expired, negative when the retransmission limit is reached.
pub(crate) fn handle_timeout(ssl: &SslRef) -> c_long {
    // SAFETY: live SSL pointer; this control takes no argument.
    unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    }
}

/// Installs the retransmission timer callback.
pub(crate) fn set_timer_cb(ssl: &SslRef, cb: TimerCb) {
    // SAFETY: live SSL pointer; `cb` is a plain function with the C signature
    // OpenSSL expects and lives for the whole program.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(cb)) }
}

/// Largest plaintext that fits one record in one datagram of the configured MTU.
pub(crate) fn data_mtu(ssl: &SslRef) -> usize {
    // SAFETY: live SSL pointer; the call only reads.
    unsafe { DTLS_get_data_mtu(ssl.as_ptr()) }
}

/// True when OpenSSL holds unprocessed records or decrypted plaintext.
pub(crate) fn has_pending(ssl: &SslRef) -> bool {
    // SAFETY: live SSL pointer; the call only reads.
    unsafe { SSL_has_pending(ssl.as_ptr()) == 1 }
}

/// `SSL_free_buffers`: frees the record layer's read and write buffers when
/// nothing is pending in them (false: nothing freed). On OpenSSL 3.0 a DTLS
/// write does not re-allocate the write buffer, so [`alloc_buffers`] must run
/// before the SSL is used again.
pub(crate) fn free_buffers(ssl: &SslRef) -> bool {
    // SAFETY: live SSL pointer; OpenSSL checks for pending data itself and
    // frees nothing in that case.
    unsafe { SSL_free_buffers(ssl.as_ptr()) == 1 }
}

/// `SSL_alloc_buffers`: allocates the record layer's buffers again (no-op for
/// a buffer that exists). False on allocation failure.
pub(crate) fn alloc_buffers(ssl: &SslRef) -> bool {
    // SAFETY: live SSL pointer; allocation only.
    unsafe { SSL_alloc_buffers(ssl.as_ptr()) == 1 }
}

/// `SSL_CIPHER_get_digest_nid`: the record MAC's digest, `NID_undef` (0)
/// for AEAD ciphers.
pub(crate) fn cipher_digest_nid(cipher: &openssl::ssl::SslCipherRef) -> c_int {
    // SAFETY: live SSL_CIPHER pointer (ciphers are static tables in
    // OpenSSL); the call only reads.
    unsafe { openssl_sys::SSL_CIPHER_get_digest_nid(cipher.as_ptr()) }
}

/// One `BIO_ADDR`, owned, for `DTLSv1_listen` to write the (unknown) peer into.
pub(crate) struct OwnedBioAddr(*mut BioAddr);

// SAFETY: a BIO_ADDR is plain memory with no thread affinity; we never share it.
unsafe impl Send for OwnedBioAddr {}

impl OwnedBioAddr {
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: allocation function with no preconditions; null means failure.
        let p = unsafe { BIO_ADDR_new() };
        if p.is_null() {
            None
        } else {
            Some(OwnedBioAddr(p))
        }
    }
}

impl Drop for OwnedBioAddr {
    fn drop(&mut self) {
        // SAFETY: we own the pointer, allocated by BIO_ADDR_new, freed once.
        unsafe { BIO_ADDR_free(self.0) }
    }
}

/// Runs `DTLSv1_listen` on a server SSL whose read BIO holds one datagram.
/// Returns 1 for a ClientHello with a valid cookie (the SSL is then primed
/// for `SSL_accept`), 0 when more input is needed (a HelloVerifyRequest may
/// have been written), negative on a fatal error.
pub(crate) fn listen(ssl: &SslRef, addr: &mut OwnedBioAddr) -> c_int {
    // SAFETY: live SSL pointer with both BIOs set; `addr.0` is a valid
    // BIO_ADDR that OpenSSL may clear or fill.
    unsafe { DTLSv1_listen(ssl.as_ptr(), addr.0) }
}

/// Sets the PSK identity hint a server sends. False if OpenSSL refused it.
pub(crate) fn set_psk_identity_hint(
    ctx: &openssl::ssl::SslContextBuilder,
    hint: &std::ffi::CStr,
) -> bool {
    // SAFETY: live SSL_CTX pointer; OpenSSL copies the NUL-terminated string.
    unsafe { SSL_CTX_use_psk_identity_hint(ctx.as_ptr(), hint.as_ptr()) == 1 }
}

/// `SSL_CTRL_SET_MAX_SEND_FRAGMENT` from `<openssl/ssl.h>`.
const SSL_CTRL_SET_MAX_SEND_FRAGMENT: c_int = 52;

/// Caps the plaintext of one record (512..=16384). OpenSSL sizes each
/// session's write buffer from it, so a cap near the MTU saves ~15 KiB a session.
pub(crate) fn set_max_send_fragment(ctx: &openssl::ssl::SslContextBuilder, len: u32) -> bool {
    // SAFETY: live SSL_CTX pointer; this control takes its value in `larg`.
    unsafe {
        openssl_sys::SSL_CTX_ctrl(
            ctx.as_ptr(),
            SSL_CTRL_SET_MAX_SEND_FRAGMENT,
            c_long::from(len as i32),
            std::ptr::null_mut(),
        ) == 1
    }
}

/// The callback type of `SSL_CTX_set_cert_verify_callback`: replaces
/// `X509_verify_cert` for the peer's chain (1 accept, 0 reject).
pub(crate) type CertVerifyCb =
    unsafe extern "C" fn(ctx: *mut openssl_sys::X509_STORE_CTX, arg: *mut c_void) -> c_int;

/// The callback type of `SSL_CTX_set_tlsext_ticket_key_cb`.
pub(crate) type TicketKeyCb = unsafe extern "C" fn(
    s: *mut SSL,
    key_name: *mut u8,
    iv: *mut u8,
    cipher: *mut openssl_sys::EVP_CIPHER_CTX,
    hmac: *mut openssl_sys::HMAC_CTX,
    enc: c_int,
) -> c_int;

extern "C" {
    fn SSL_CTX_set_cert_verify_callback(
        ctx: *mut openssl_sys::SSL_CTX,
        cb: Option<CertVerifyCb>,
        arg: *mut c_void,
    );
    fn X509_STORE_CTX_get0_untrusted(
        ctx: *mut openssl_sys::X509_STORE_CTX,
    ) -> *mut openssl_sys::stack_st_X509;
    fn SSL_certs_clear(s: *mut SSL);
}

/// Installs the whole-chain verification callback (`arg` is unused: the
/// callback finds its state through the SSL).
pub(crate) fn set_cert_verify_cb(ctx: &openssl::ssl::SslContextBuilder, cb: CertVerifyCb) {
    // SAFETY: live SSL_CTX pointer; `cb` is a plain function with the C
    // signature OpenSSL expects and lives for the whole program.
    unsafe { SSL_CTX_set_cert_verify_callback(ctx.as_ptr(), Some(cb), std::ptr::null_mut()) }
}

/// `X509_STORE_CTX_get0_untrusted`: the chain the peer sent, leaf first
/// (borrowed from the store context; may be null).
///
/// # Safety
/// `ctx` must be a live store context, for the duration of the returned borrow.
pub(crate) unsafe fn untrusted_chain<'a>(
    ctx: *mut openssl_sys::X509_STORE_CTX,
) -> Option<&'a openssl::stack::StackRef<openssl::x509::X509>> {
    // SAFETY: the caller guarantees `ctx` is live; the stack it returns is
    // owned by the store context and outlives the borrow by the same guarantee.
    unsafe {
        let p = X509_STORE_CTX_get0_untrusted(ctx);
        if p.is_null() {
            None
        } else {
            Some(openssl::stack::StackRef::from_ptr(p))
        }
    }
}

/// `SSL_certs_clear`: forgets the SSL's own certificates and keys (copied
/// from its context), so a certificate chosen for this handshake replaces
/// them instead of joining them.
pub(crate) fn certs_clear(ssl: &SslRef) {
    // SAFETY: live SSL pointer; only the SSL's own CERT structure changes.
    unsafe { SSL_certs_clear(ssl.as_ptr()) }
}

/// `SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB` from `<openssl/ssl.h>`.
const SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB: c_int = 72;
/// `SSL_CTRL_CHAIN_CERT` from `<openssl/ssl.h>` (`SSL_CTX_add0_chain_cert`).
const SSL_CTRL_CHAIN_CERT: c_int = 89;

/// `SSL_CTX_set_tlsext_ticket_key_cb`: the server's session tickets are
/// sealed and opened with keys the callback picks.
pub(crate) fn set_ticket_key_cb(ctx: &openssl::ssl::SslContextBuilder, cb: TicketKeyCb) -> bool {
    // SAFETY: live SSL_CTX pointer; OpenSSL stores the function pointer and
    // calls it with the signature of `TicketKeyCb` (the macro casts it to
    // `void (*)(void)` the same way); `cb` lives for the whole program.
    unsafe {
        let fp: unsafe extern "C" fn() =
            std::mem::transmute::<TicketKeyCb, unsafe extern "C" fn()>(cb);
        openssl_sys::SSL_CTX_callback_ctrl__fixed_rust(
            ctx.as_ptr(),
            SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB,
            Some(fp),
        ) == 1
    }
}

/// `SSL_CTX_add0_chain_cert`: appends `cert` to the chain of the context's
/// current certificate (not to the context-wide extra certificates, which
/// would also go out with a certificate chosen by SNI).
pub(crate) fn ctx_add_chain_cert(
    ctx: &openssl::ssl::SslContextBuilder,
    cert: openssl::x509::X509,
) -> bool {
    use foreign_types_shared::ForeignType;
    // SAFETY: live SSL_CTX pointer; on success OpenSSL takes ownership of the
    // certificate (add0), so it is forgotten here; on failure we keep it and
    // it is freed when dropped.
    unsafe {
        let ok = openssl_sys::SSL_CTX_ctrl(
            ctx.as_ptr(),
            SSL_CTRL_CHAIN_CERT,
            0,
            cert.as_ptr() as *mut c_void,
        ) == 1;
        if ok {
            std::mem::forget(cert);
        }
        ok
    }
}

/// `EVP_PKEY_TLS1_PRF` (`NID_tls1_prf`) from `<openssl/evp.h>`.
const EVP_PKEY_TLS1_PRF: c_int = 1021;
/// `EVP_PKEY_CTRL_TLS_MD`, `EVP_PKEY_CTRL_TLS_SECRET`, `EVP_PKEY_CTRL_TLS_SEED`
/// from `<openssl/kdf.h>` (the controls behind `EVP_PKEY_CTX_set_tls1_prf_md`
/// and friends, which are macros in OpenSSL 1.1.1 and functions in 3.x).
const EVP_PKEY_CTRL_TLS_MD: c_int = openssl_sys::EVP_PKEY_ALG_CTRL;
const EVP_PKEY_CTRL_TLS_SECRET: c_int = openssl_sys::EVP_PKEY_ALG_CTRL + 1;
const EVP_PKEY_CTRL_TLS_SEED: c_int = openssl_sys::EVP_PKEY_ALG_CTRL + 2;

/// The TLS 1.2 PRF (RFC 5246 section 5) with `md`, through OpenSSL's KDF:
/// fills `out` with `PRF(secret, label, seed)`, where `label_seed` is the
/// label followed by the seed.
pub(crate) fn tls1_prf(
    md: openssl::hash::MessageDigest,
    secret: &[u8],
    label_seed: &[u8],
    out: &mut [u8],
) -> Result<(), openssl::error::ErrorStack> {
    use openssl::pkey::Id;
    use openssl::pkey_ctx::PkeyCtx;
    let mut ctx = PkeyCtx::new_id(Id::from_raw(EVP_PKEY_TLS1_PRF))?;
    ctx.derive_init()?;
    let ctrl = |cmd: c_int, len: usize, p: *mut c_void| -> Result<(), openssl::error::ErrorStack> {
        let len = c_int::try_from(len).map_err(|_| openssl::error::ErrorStack::get())?;
        // SAFETY: live EVP_PKEY_CTX of the TLS1-PRF method in derive mode;
        // each of these controls reads `len` bytes at `p` (or, for the
        // digest, takes a static EVP_MD) and copies what it keeps.
        let r = unsafe { openssl_sys::EVP_PKEY_CTX_ctrl(ctx.as_ptr(), -1, -1, cmd, len, p) };
        if r > 0 {
            Ok(())
        } else {
            Err(openssl::error::ErrorStack::get())
        }
    };
    ctrl(EVP_PKEY_CTRL_TLS_MD, 0, md.as_ptr() as *mut c_void)?;
    ctrl(
        EVP_PKEY_CTRL_TLS_SECRET,
        secret.len(),
        secret.as_ptr() as *mut c_void,
    )?;
    ctrl(
        EVP_PKEY_CTRL_TLS_SEED,
        label_seed.len(),
        label_seed.as_ptr() as *mut c_void,
    )?;
    let n = ctx.derive(Some(out))?;
    if n != out.len() {
        return Err(openssl::error::ErrorStack::get());
    }
    Ok(())
}

/// `ERR_LIB_SSL` from `<openssl/err.h>`.
const ERR_LIB_SSL: c_int = 20;

extern "C" {
    fn ERR_new();
    fn ERR_set_error(lib: c_int, reason: c_int, fmt: *const std::os::raw::c_char, ...);
}

/// Queues an SSL-library error with `reason` on this thread's error queue
/// (what `ERR_raise(ERR_LIB_SSL, reason)` does), for `ErrorStack::get`.
pub(crate) fn push_ssl_error(reason: c_int) {
    // SAFETY: ERR_new starts a new error record on this thread's queue;
    // ERR_set_error fills it. A null format means no additional data, so no
    // variadic argument is read.
    unsafe {
        ERR_new();
        ERR_set_error(ERR_LIB_SSL, reason, std::ptr::null());
    }
}

extern "C" {
    fn OPENSSL_cleanse(ptr: *mut c_void, len: usize);
}

/// Overwrites `buf` with zeros in a way the compiler does not remove
/// (`OPENSSL_cleanse`), for key material about to be freed.
pub(crate) fn cleanse(buf: &mut [u8]) {
    // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
    unsafe { OPENSSL_cleanse(buf.as_mut_ptr().cast(), buf.len()) }
}
