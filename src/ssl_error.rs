//! From OpenSSL's errors to this crate's [`Error`]: which reasons mean a
//! version mismatch, a failed verification or a timeout, and copies of an
//! error for reporting it again.

use std::io;

use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, SslRef};
use openssl::x509::X509VerifyResult;

use crate::error::Error;

const R_VERSION: &[i32] = &[116, 166, 191, 258, 259, 266, 267, 396, 1070];
const R_VERIFY: &[i32] = &[134, 199, 1042, 1043, 1045, 1046, 1048, 1049, 1116];
pub(crate) const R_READ_TIMEOUT_EXPIRED: i32 = 312;

pub(crate) fn reason_in(stack: &ErrorStack, set: &[i32]) -> Option<String> {
    stack
        .errors()
        .iter()
        .find(|e| set.contains(&e.reason_code()))
        .map(|e| e.reason().unwrap_or("unknown").to_string())
}

/// Turns an OpenSSL failure into our error, naming version and verification
/// problems and the retransmission limit.
pub(crate) fn map_ssl_error(e: openssl::ssl::Error, ssl: &SslRef) -> Error {
    let code = e.code();
    if let Some(reason) = ssl.ex_data(crate::config::rejection_index()) {
        return Error::CertificateRejected {
            reason: reason.clone(),
            stack: e.ssl_error().cloned(),
        };
    }
    let verify = ssl.verify_result();
    let stack = e.ssl_error().cloned();
    if let Some(s) = &stack {
        if reason_in(s, &[R_READ_TIMEOUT_EXPIRED]).is_some() {
            return Error::RetransmitLimit;
        }
    }
    if verify != X509VerifyResult::OK {
        return Error::Verification {
            reason: verify.error_string().to_string(),
            stack,
        };
    }
    match stack {
        Some(s) => map_stack(code, s),
        None => match e.into_io_error() {
            Ok(io) => Error::Io(io),
            Err(e) => Error::Ssl {
                code: e.code().as_raw(),
                stack: None,
            },
        },
    }
}

/// The part of [`map_ssl_error`] that reads OpenSSL's error stack:
/// verification and version reasons, else [`Error::Ssl`].
fn map_stack(code: ErrorCode, s: ErrorStack) -> Error {
    {
        {
            if let Some(reason) = reason_in(&s, R_VERIFY) {
                return Error::Verification {
                    reason,
                    stack: Some(s),
                };
            }
            if reason_in(&s, R_VERSION).is_some() {
                return Error::VersionMismatch(s);
            }
            Error::Ssl {
                code: code.as_raw(),
                stack: Some(s),
            }
        }
    }
}

/// The error OpenSSL reports for a fatal alert `description` received from
/// the peer (reason `SSL_AD_REASON_OFFSET` + description, e.g. "sslv3 alert
/// handshake failure"), for sessions the engine's record layer carries: the
/// same [`Error`] as when OpenSSL's record layer received it.
pub(crate) fn alert_error(description: u8) -> Error {
    crate::ffi::push_ssl_error(1000 + i32::from(description));
    map_stack(ErrorCode::SSL, ErrorStack::get())
}

/// OpenSSL wants more input. Besides WANT_READ, OpenSSL 3 sometimes reports
/// SSL_ERROR_SYSCALL with an empty error queue when our pipe ran dry.
pub(crate) fn would_block(e: &openssl::ssl::Error) -> bool {
    match e.code() {
        ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => true,
        ErrorCode::SYSCALL => {
            e.ssl_error().is_none_or(|s| s.errors().is_empty())
                && e.io_error()
                    .is_some_and(|io| io.kind() == io::ErrorKind::WouldBlock)
        }
        _ => false,
    }
}

pub(crate) fn ssl_new_error(e: ErrorStack) -> Error {
    Error::Ssl {
        code: ErrorCode::SSL.as_raw(),
        stack: Some(e),
    }
}

/// A copy of an error for reporting again later (`io::Error` keeps its kind and text).
pub(crate) fn clone_error(e: &Error) -> Error {
    match e {
        Error::Config {
            setting,
            reason,
            stack,
        } => Error::Config {
            setting,
            reason: reason.clone(),
            stack: stack.clone(),
        },
        Error::WouldBlock => Error::WouldBlock,
        Error::HandshakeTimeout => Error::HandshakeTimeout,
        Error::PeerSilent => Error::PeerSilent,
        Error::ReadTimeout => Error::ReadTimeout,
        Error::WriteTimeout => Error::WriteTimeout,
        Error::RetransmitLimit => Error::RetransmitLimit,
        Error::PeerUnreachable(io) => {
            Error::PeerUnreachable(io::Error::new(io.kind(), io.to_string()))
        }
        Error::ClosedByPeer => Error::ClosedByPeer,
        Error::PeerRestarted => Error::PeerRestarted,
        Error::Limit(r) => Error::Limit(*r),
        Error::Closed => Error::Closed,
        Error::NotConnected => Error::NotConnected,
        Error::VersionMismatch(s) => Error::VersionMismatch(s.clone()),
        Error::Verification { reason, stack } => Error::Verification {
            reason: reason.clone(),
            stack: stack.clone(),
        },
        Error::CertificateRejected { reason, stack } => Error::CertificateRejected {
            reason: reason.clone(),
            stack: stack.clone(),
        },
        Error::TooLarge { len, mtu } => Error::TooLarge {
            len: *len,
            mtu: *mtu,
        },
        Error::Ssl { code, stack } => Error::Ssl {
            code: *code,
            stack: stack.clone(),
        },
        Error::Io(io) => Error::Io(io::Error::new(io.kind(), io.to_string())),
    }
}
