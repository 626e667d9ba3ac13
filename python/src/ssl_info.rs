//! PyDTLS's `set_ssl_logging`: OpenSSL's state machine (`SSL_CTX_set_info_callback`)
//! logged as `debug!` records of target `ssl`, which the logging bridge hands
//! to the Python logger `dtls.ssl`. rust-openssl binds neither the callback
//! setter nor `SSL_alert_type_string_long`.

use std::ffi::{c_char, c_int, CStr};

use openssl::ssl::SslContextBuilder;
use openssl_sys::SSL;

extern "C" {
    fn SSL_CTX_set_info_callback(
        ctx: *mut openssl_sys::SSL_CTX,
        cb: Option<unsafe extern "C" fn(*const SSL, c_int, c_int)>,
    );
    fn SSL_alert_type_string_long(value: c_int) -> *const c_char;
}

// `where` bits (ssl.h).
const SSL_CB_LOOP: c_int = 0x01;
const SSL_CB_EXIT: c_int = 0x02;
const SSL_CB_READ: c_int = 0x04;
const SSL_CB_ALERT: c_int = 0x4000;
const SSL_ST_CONNECT: c_int = 0x1000;
const SSL_ST_ACCEPT: c_int = 0x2000;

/// Installs the logging callback on a context being built.
pub(crate) fn enable(ctx: &mut SslContextBuilder) {
    // SAFETY: `ctx.as_ptr()` is the live SSL_CTX being built; the callback
    // is a plain function that lives as long as the program.
    unsafe { SSL_CTX_set_info_callback(ctx.as_ptr(), Some(info_cb)) };
}

/// # Safety
/// Called by OpenSSL with a live `SSL` for the duration of the call.
unsafe extern "C" fn info_cb(ssl: *const SSL, where_: c_int, ret: c_int) {
    // A panic must not cross into OpenSSL.
    let _ = std::panic::catch_unwind(|| {
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: OpenSSL returns static NUL-terminated strings.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        let side = if where_ & SSL_ST_CONNECT != 0 {
            "connect"
        } else if where_ & SSL_ST_ACCEPT != 0 {
            "accept"
        } else {
            "undefined"
        };
        // SAFETY: `ssl` is live for this call (see above).
        let state = text(unsafe { openssl_sys::SSL_state_string_long(ssl) });
        if where_ & SSL_CB_LOOP != 0 {
            log::debug!(target: "ssl", "{side}: {state}");
        } else if where_ & SSL_CB_ALERT != 0 {
            let dir = if where_ & SSL_CB_READ != 0 {
                "read"
            } else {
                "write"
            };
            // SAFETY: both take any value and return static strings.
            let (kind, desc) = unsafe {
                (
                    text(SSL_alert_type_string_long(ret)),
                    text(openssl_sys::SSL_alert_desc_string_long(ret)),
                )
            };
            log::debug!(target: "ssl", "alert {dir}: {kind}: {desc}");
        } else if where_ & SSL_CB_EXIT != 0 && ret <= 0 {
            let what = if ret == 0 { "failed" } else { "error" };
            log::debug!(target: "ssl", "{side}: {what} in {state}");
        }
    });
}
