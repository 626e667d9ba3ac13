//! The crate's [`Error`] as the Python exception PyDTLS raises: built by
//! `dtls.err._from_native`, so `do_patch()` can switch the class to
//! `ssl.SSLError` in one place.

use std::io;

use dtls_reactor::Error;
use openssl::error::ErrorStack;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

// `SSL_ERROR_*` classes and PyDTLS's own codes (dtls/err.py has the same values).
const SSL_ERROR_SSL: i32 = 1;
const SSL_ERROR_WANT_READ: i32 = 2;
const SSL_ERROR_WANT_WRITE: i32 = 3;
const SSL_ERROR_SYSCALL: i32 = 5;
const SSL_ERROR_ZERO_RETURN: i32 = 6;
const ERR_NO_CIPHER: i32 = 501;
const ERR_READ_TIMEOUT: i32 = 502;
const ERR_WRITE_TIMEOUT: i32 = 503;
const ERR_HANDSHAKE_TIMEOUT: i32 = 504;
const ERR_PORT_UNREACHABLE: i32 = 505;
pub(crate) const ERR_BOTH_KEY_CERT_FILES: i32 = 500;
pub(crate) const ERR_BOTH_KEY_CERT_FILES_SVR: i32 = 298;

/// What a failed call raises: an `SSL_ERROR_*` / `ERR_*` code with a message
/// and OpenSSL's error queue, or a plain `OSError` (errno) for I/O errors of
/// the operating system.
pub(crate) enum Failure {
    Ssl {
        code: i32,
        message: String,
        queue: Vec<(std::ffi::c_ulong, String)>,
    },
    Os(io::Error),
}

fn queue_of(stack: Option<&ErrorStack>) -> Vec<(std::ffi::c_ulong, String)> {
    stack
        .map(|s| {
            s.errors()
                .iter()
                .map(|e| (e.code(), e.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn ssl(code: i32, message: impl Into<String>) -> Failure {
    Failure::Ssl {
        code,
        message: message.into(),
        queue: Vec::new(),
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let with = |code: i32, stack: Option<&ErrorStack>| Failure::Ssl {
            code,
            message: message.clone(),
            queue: queue_of(stack),
        };
        match &e {
            Error::WouldBlock => ssl(SSL_ERROR_WANT_READ, "The operation did not complete (read)"),
            Error::ClosedByPeer => ssl(
                SSL_ERROR_ZERO_RETURN,
                "TLS/SSL connection has been closed (EOF)",
            ),
            Error::ReadTimeout => ssl(ERR_READ_TIMEOUT, "The read operation timed out"),
            Error::WriteTimeout => ssl(ERR_WRITE_TIMEOUT, "The write operation timed out"),
            Error::HandshakeTimeout | Error::RetransmitLimit | Error::PeerSilent => ssl(
                ERR_HANDSHAKE_TIMEOUT,
                format!("The handshake operation timed out ({message})"),
            ),
            Error::PeerUnreachable(_) => ssl(
                ERR_PORT_UNREACHABLE,
                format!("The peer address is not reachable ({message})"),
            ),
            Error::Config { setting, stack, .. } if *setting == "ciphers" => {
                with(ERR_NO_CIPHER, stack.as_ref())
            }
            Error::Config { stack, .. } => with(SSL_ERROR_SSL, stack.as_ref()),
            Error::VersionMismatch(stack) => with(SSL_ERROR_SSL, Some(stack)),
            Error::Verification { stack, .. } | Error::CertificateRejected { stack, .. } => {
                with(SSL_ERROR_SSL, stack.as_ref())
            }
            Error::Ssl { code, stack } => with(*code, stack.as_ref()),
            Error::Closed | Error::PeerRestarted => with(SSL_ERROR_ZERO_RETURN, None),
            Error::NotConnected => Failure::Os(io::Error::from_raw_os_error(libc::ENOTCONN)),
            Error::TooLarge { .. } => {
                Failure::Os(io::Error::new(io::ErrorKind::InvalidInput, message.clone()))
            }
            Error::Io(_) => match e {
                Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock => ssl(
                    SSL_ERROR_WANT_WRITE,
                    "The operation did not complete (write)",
                ),
                Error::Io(io) => Failure::Os(io),
                _ => unreachable!("matched Io above"),
            },
            _ => with(SSL_ERROR_SYSCALL, None),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Os(e)
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::with_gil(|py| f.into_pyerr(py))
    }
}

impl Failure {
    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Failure::Os(e) => match e.raw_os_error() {
                Some(errno) => PyOSError::new_err((errno, e.to_string())),
                None => PyErr::from(e),
            },
            Failure::Ssl {
                code,
                message,
                queue,
            } => {
                let made = py
                    .import("dtls.err")
                    .and_then(|m| m.getattr("_from_native"))
                    .and_then(|f| f.call1((code, message.clone(), queue)));
                match made {
                    Ok(exc) => PyErr::from_value(exc),
                    Err(e) => e,
                }
            }
        }
    }
}

/// `Result` of the module's functions before the conversion to Python.
pub(crate) type Res<T> = std::result::Result<T, Failure>;
