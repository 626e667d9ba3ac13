//! `make_config`: one call builds the crate's `ClientConfig` or
//! `ServerConfig` from the arguments `ssl.wrap_socket` / PyDTLS take.

use std::path::PathBuf;
use std::time::Duration;

use dtls_reactor::{ClientConfig, ConfigBuilder, Protocol, ServerConfig, Verify};
use openssl::error::ErrorStack;
use openssl::ssl::SslContextBuilder;
use pyo3::prelude::*;

use crate::errors::{ssl, Res, ERR_BOTH_KEY_CERT_FILES, ERR_BOTH_KEY_CERT_FILES_SVR};

/// A built configuration: one side's OpenSSL context and timers.
#[pyclass(module = "dtls._native", name = "Config", frozen)]
pub(crate) struct PyConfig {
    pub(crate) side: Side,
}

pub(crate) enum Side {
    Client(ClientConfig),
    Server(ServerConfig),
}

impl PyConfig {
    pub(crate) fn client(&self) -> Option<&ClientConfig> {
        match &self.side {
            Side::Client(c) => Some(c),
            Side::Server(_) => None,
        }
    }
    pub(crate) fn server(&self) -> Option<&ServerConfig> {
        match &self.side {
            Side::Server(s) => Some(s),
            Side::Client(_) => None,
        }
    }
}

/// Settings common to both sides, as the Python layer passes them.
struct Common {
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    ca_certs: Option<PathBuf>,
    verify: Verify,
    protocol: Protocol,
    ciphers: Option<String>,
    groups: Option<String>,
    sigalgs: Option<String>,
    mtu: Option<u32>,
    handshake_timeout: Option<Duration>,
    build_chain: Option<i64>,
    ssl_logging: bool,
}

fn apply<R>(mut b: ConfigBuilder<R>, c: &Common) -> ConfigBuilder<R> {
    b = b.protocol(c.protocol).verify(c.verify);
    if let Some(p) = &c.certfile {
        b = b.certificate_chain_file(p);
    }
    if let Some(p) = &c.keyfile {
        b = b.private_key_file(p);
    }
    if let Some(p) = &c.ca_certs {
        b = b.ca_file(p);
    }
    if let Some(s) = &c.ciphers {
        b = b.ciphers(s);
    }
    if let Some(s) = &c.groups {
        b = b.groups(s);
    }
    if let Some(s) = &c.sigalgs {
        b = b.sigalgs(s);
    }
    if let Some(m) = c.mtu {
        b = b.mtu(m);
    }
    if let Some(t) = c.handshake_timeout {
        b = b.handshake_timeout(Some(t));
    }
    if c.ssl_logging {
        // OpenSSL's states and alerts come from OpenSSL's own session: keep
        // it (and its record layer) after the handshake, so the close_notify
        // exchange and any later alert are logged too.
        b = b.openssl_record_layer(true).configure_context(|ctx| {
            crate::ssl_info::enable(ctx);
            Ok(())
        });
    }
    if let Some(flags) = c.build_chain {
        // Through the crate's escape hatch: it runs after the certificate,
        // its chain and the CAs are loaded.
        b = b.configure_context(move |ctx| build_cert_chain(ctx, flags));
    }
    b
}

/// `SSL_CTX_build_cert_chain(ctx, flags)`: the chain sent with the
/// certificate, rebuilt from the CAs (and, with
/// `SSL_BUILD_CHAIN_FLAG_UNTRUSTED`, the chain the file gave) as OpenSSL
/// verifies it; `SSL_BUILD_CHAIN_FLAG_NO_ROOT` leaves the root out. A macro
/// over `SSL_CTX_ctrl` that rust-openssl does not bind.
fn build_cert_chain(ctx: &mut SslContextBuilder, flags: i64) -> Result<(), ErrorStack> {
    const SSL_CTRL_BUILD_CERT_CHAIN: libc::c_int = 105;
    // SAFETY: `ctx.as_ptr()` is the live SSL_CTX being built, borrowed
    // mutably for this call; this control takes no pointer argument.
    let r = unsafe {
        openssl_sys::SSL_CTX_ctrl(
            ctx.as_ptr(),
            SSL_CTRL_BUILD_CERT_CHAIN,
            flags as libc::c_long,
            std::ptr::null_mut(),
        )
    };
    // 1: built; 2: an error ignored (SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR) or,
    // with SSL_BUILD_CHAIN_FLAG_CHECK, the chain checked.
    if r > 0 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

fn duration(secs: f64, what: &str) -> Res<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ssl(
                1,
                format!("{what}: {secs} is not a positive number of seconds"),
            )
        })
}

/// Builds a configuration. `verify`: 0 `CERT_NONE`, 1 `CERT_OPTIONAL`,
/// 2 `CERT_REQUIRED`; `protocol`: "1.0", "1.2" or "any".
#[pyfunction]
#[pyo3(signature = (server_side, certfile=None, keyfile=None, ca_certs=None, verify=0,
    protocol="any", ciphers=None, groups=None, sigalgs=None, mtu=None, handshake_timeout=None,
    build_chain=None, ssl_logging=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_config(
    py: Python<'_>,
    server_side: bool,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    ca_certs: Option<PathBuf>,
    verify: u8,
    protocol: &str,
    ciphers: Option<String>,
    groups: Option<String>,
    sigalgs: Option<String>,
    mtu: Option<u32>,
    handshake_timeout: Option<f64>,
    build_chain: Option<i64>,
    ssl_logging: bool,
) -> PyResult<PyConfig> {
    // PyDTLS: the key defaults to the certificate file; a key alone is an error.
    let keyfile = keyfile.or_else(|| certfile.clone());
    if certfile.is_none() && keyfile.is_some() {
        return Err(ssl(
            ERR_BOTH_KEY_CERT_FILES,
            "Both the key & certificate files must be specified",
        )
        .into());
    }
    if server_side && certfile.is_none() {
        return Err(ssl(
            ERR_BOTH_KEY_CERT_FILES_SVR,
            "Both the key & certificate files must be specified for server-side operation",
        )
        .into());
    }
    let verify = match verify {
        0 => Verify::None,
        1 => Verify::Optional,
        2 => Verify::Required,
        v => {
            return Err(ssl(
                1,
                format!("cert_reqs: {v} is not CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED"),
            )
            .into())
        }
    };
    let protocol: Protocol = protocol.parse().map_err(crate::errors::Failure::from)?;
    let handshake_timeout = handshake_timeout
        .map(|t| duration(t, "handshake_timeout"))
        .transpose()?;
    let c = Common {
        certfile,
        keyfile,
        ca_certs,
        verify,
        protocol,
        ciphers,
        groups,
        sigalgs,
        mtu,
        handshake_timeout,
        build_chain,
        ssl_logging,
    };
    // Reading files and building the context: no network wait, but file I/O.
    let side = py.allow_threads(|| -> dtls_reactor::Result<Side> {
        Ok(if server_side {
            Side::Server(apply(ServerConfig::builder(), &c).build()?)
        } else {
            Side::Client(apply(ClientConfig::builder(), &c).build()?)
        })
    });
    Ok(PyConfig {
        side: side.map_err(crate::errors::Failure::from)?,
    })
}
