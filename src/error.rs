//! One error type for the whole crate.

use std::io;

use openssl::error::ErrorStack;
use openssl::ssl::ErrorCode;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with OpenSSL's error stack where there is one.
///
/// Converts into [`std::io::Error`] with the [`io::ErrorKind`] a `std::net`
/// user expects: [`Error::WouldBlock`] is `WouldBlock`, the timeouts are
/// `TimedOut`, [`Error::PeerUnreachable`] is `ConnectionRefused`,
/// [`Error::ClosedByPeer`] is `ConnectionAborted`, [`Error::PeerRestarted`] is
/// `ConnectionReset`, [`Error::CertificateRejected`] is `PermissionDenied`,
/// configuration mistakes are
/// `InvalidInput`, protocol failures `InvalidData`.
///
/// ```
/// use std::io;
/// let e: io::Error = dtls_reactor::Error::HandshakeTimeout.into();
/// assert_eq!(e.kind(), io::ErrorKind::TimedOut);
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting was rejected when a configuration was built.
    #[error("invalid setting `{setting}`: {reason}")]
    Config {
        /// The builder method whose value was wrong.
        setting: &'static str,
        /// What was wrong with it.
        reason: String,
        /// OpenSSL's errors, when OpenSSL rejected it.
        #[source]
        stack: Option<ErrorStack>,
    },
    /// The operation cannot complete now; retry when the socket is ready or the
    /// deadline passes.
    #[error("operation would block")]
    WouldBlock,
    /// The handshake did not finish within the configured handshake deadline.
    #[error("DTLS handshake timed out")]
    HandshakeTimeout,
    /// A server's handshaking peer sent nothing for the configuration's
    /// silence limit ([`crate::Timers::silence`]).
    #[error("DTLS handshake ended: the peer went silent")]
    PeerSilent,
    /// No datagram arrived within the socket's read timeout.
    #[error("read timed out")]
    ReadTimeout,
    /// A blocking write could not complete within the socket's write timeout.
    #[error("write timed out")]
    WriteTimeout,
    /// OpenSSL gave up after its retransmission limit (twelve timeouts of one flight).
    #[error("DTLS retransmission limit reached: the peer does not answer")]
    RetransmitLimit,
    /// The peer's host answered with ICMP port unreachable (nothing listens there).
    #[error("peer unreachable: {0}")]
    PeerUnreachable(#[source] io::Error),
    /// The peer sent close_notify: no more data will come.
    #[error("connection closed by peer (close_notify)")]
    ClosedByPeer,
    /// The peer started a new session from the same address and port (RFC 6347
    /// section 4.2.8: its ClientHello passed the cookie exchange on this
    /// connection's link): this connection is over and the listener's
    /// `accept()` returns the new one.
    #[error("the peer restarted: a new session from the same address replaced this one")]
    PeerRestarted,
    /// This side closed the connection; it can no longer send.
    #[error("connection closed locally")]
    Closed,
    /// The operation needs an established session, or a connected socket.
    #[error("not connected")]
    NotConnected,
    /// The two sides share no protocol version.
    #[error("DTLS protocol version mismatch: {0}")]
    VersionMismatch(#[source] ErrorStack),
    /// Certificate verification failed, on this side or (by alert) on the peer's.
    #[error("certificate verification failed: {reason}")]
    Verification {
        /// OpenSSL's verification result or the alert received.
        reason: String,
        /// OpenSSL's errors.
        #[source]
        stack: Option<ErrorStack>,
    },
    /// This side's verification callback
    /// ([`crate::ConfigBuilder::verify_callback`]) refused the peer's
    /// certificate; maps to `io::ErrorKind::PermissionDenied`.
    #[error("peer certificate rejected: {reason}")]
    CertificateRejected {
        /// The callback's reason.
        reason: String,
        /// OpenSSL's errors (the handshake failure it reported).
        #[source]
        stack: Option<ErrorStack>,
    },
    /// A plaintext datagram larger than one record of the data MTU.
    #[error("datagram of {len} bytes exceeds the data MTU of {mtu} bytes")]
    TooLarge {
        /// The length asked for.
        len: usize,
        /// The largest plaintext one record can carry.
        mtu: usize,
    },
    /// Any other TLS-level failure, with OpenSSL's error class and stack.
    #[error("SSL error ({}): {}", ssl_code_name(*code), stack.as_ref().map(|s| s.to_string()).unwrap_or_default())]
    Ssl {
        /// `SSL_get_error`'s class (`SSL_ERROR_SSL`, `SSL_ERROR_SYSCALL`...), raw.
        code: i32,
        /// OpenSSL's errors.
        #[source]
        stack: Option<ErrorStack>,
    },
    /// A cap of the server's [`crate::Admission`] (or a reactor's
    /// connections) stood in the way: the connection was not made.
    #[error("connection not made: {0}")]
    Limit(crate::DropReason),
    /// An operating-system error from a socket.
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn ssl_code_name(code: i32) -> &'static str {
    match ErrorCode::from_raw(code) {
        ErrorCode::SSL => "SSL_ERROR_SSL",
        ErrorCode::SYSCALL => "SSL_ERROR_SYSCALL",
        ErrorCode::ZERO_RETURN => "SSL_ERROR_ZERO_RETURN",
        ErrorCode::WANT_READ => "SSL_ERROR_WANT_READ",
        ErrorCode::WANT_WRITE => "SSL_ERROR_WANT_WRITE",
        _ => "other",
    }
}

impl Error {
    /// The `io::ErrorKind` this error maps to.
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Error::Config { .. } | Error::TooLarge { .. } => K::InvalidInput,
            Error::WouldBlock => K::WouldBlock,
            Error::HandshakeTimeout
            | Error::PeerSilent
            | Error::ReadTimeout
            | Error::WriteTimeout
            | Error::RetransmitLimit => K::TimedOut,
            Error::PeerUnreachable(_) => K::ConnectionRefused,
            Error::CertificateRejected { .. } => K::PermissionDenied,
            Error::ClosedByPeer => K::ConnectionAborted,
            Error::PeerRestarted => K::ConnectionReset,
            Error::Closed => K::NotConnected,
            Error::NotConnected => K::NotConnected,
            Error::VersionMismatch(_) | Error::Verification { .. } | Error::Ssl { .. } => {
                K::InvalidData
            }
            Error::Limit(_) => K::Other,
            Error::Io(e) => e.kind(),
        }
    }

    /// OpenSSL's error stack, where the error came from OpenSSL.
    pub fn ssl_stack(&self) -> Option<&ErrorStack> {
        match self {
            Error::Config { stack, .. }
            | Error::Verification { stack, .. }
            | Error::CertificateRejected { stack, .. }
            | Error::Ssl { stack, .. } => stack.as_ref(),
            Error::VersionMismatch(s) => Some(s),
            _ => None,
        }
    }

    /// True for [`Error::WouldBlock`].
    pub fn is_would_block(&self) -> bool {
        matches!(self, Error::WouldBlock)
    }

    /// A configuration error for `setting`.
    pub(crate) fn config(setting: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            setting,
            reason: reason.into(),
            stack: None,
        }
    }

    /// A configuration error for `setting` that OpenSSL reported.
    pub(crate) fn config_ssl(setting: &'static str, stack: ErrorStack) -> Self {
        Error::Config {
            setting,
            reason: stack.to_string(),
            stack: Some(stack),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            other => io::Error::new(other.kind(), other),
        }
    }
}
