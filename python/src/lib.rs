//! `dtls._native`: the Rust half of the `dtls` Python package (PyDTLS's
//! API, in `python/dtls/`), over dtls-reactor's socket API. Python code
//! never calls OpenSSL: every TLS operation happens here, in the crate.
//!
//! - `config`: `make_config`, a `ClientConfig` / `ServerConfig` from
//!   `ssl.wrap_socket`'s arguments.
//! - `conn`: `Conn` (a `DtlsSocket`) and `Plain` (what `unwrap` returns).
//! - `listener`: `Listener` (a `DtlsListener`, osnet or router demux).
//! - `cert`: certificates as `getpeercert()`'s dict.
//! - `curves`: the curve helpers of PyDTLS's `SSLContext`.
//! - `errors`: the crate's errors as PyDTLS's `SSLError` codes.
//! - `logging`: `log` records into Python's `logging` (`dtls.*` loggers).
//! - `ssl_info`: OpenSSL's state machine as log records (`set_ssl_logging`).
#![deny(unsafe_op_in_unsafe_fn)]

use pyo3::prelude::*;

mod cert;
mod config;
mod conn;
mod curves;
mod errors;
mod listener;
mod logging;
mod ssl_info;

/// The OpenSSL version the crate runs on, as OpenSSL prints it, and its number.
#[pyfunction]
fn openssl_version() -> (&'static str, i64) {
    (openssl::version::version(), openssl::version::number())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    m.add_class::<config::PyConfig>()?;
    m.add_class::<conn::Conn>()?;
    m.add_class::<conn::Plain>()?;
    m.add_class::<listener::Listener>()?;
    m.add_function(wrap_pyfunction!(config::make_config, m)?)?;
    m.add_function(wrap_pyfunction!(cert::decode_cert, m)?)?;
    m.add_function(wrap_pyfunction!(cert::pem_to_der, m)?)?;
    m.add_function(wrap_pyfunction!(logging::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(openssl_version, m)?)?;
    m.add_function(wrap_pyfunction!(curves::ec_available, m)?)?;
    m.add_function(wrap_pyfunction!(curves::ec_nist2nid, m)?)?;
    m.add_function(wrap_pyfunction!(curves::ec_nid2nist, m)?)?;
    Ok(())
}
