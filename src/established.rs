//! `Established`: a DTLS 1.2 AEAD session after the handshake, carried by
//! the engine's own record layer ([`RecordLayer`]) once OpenSSL's `SSL` has
//! been freed.
//!
//! What the public API reads from a session is copied out of the `SSL`
//! when the handshake completes ([`SessionInfo`]); the record state
//! continues from what went over the wire: this side writes on from the
//! highest sequence number OpenSSL wrote, and the replay window starts
//! with the peer's protected handshake records that authenticate (its
//! Finished). The handshake's last flight is kept as sent, so a peer that
//! retransmits its final flight (its Finished arrives again, under a new
//! sequence number) gets ours again, as OpenSSL would send it.

use std::ops::Range;

use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, NameType, SslRef};
use openssl::x509::X509;

use crate::error::Error;
use crate::ffi;
use crate::pipe::Pipe;
use crate::record::{CONTENT_APPLICATION_DATA, RECORD_HEADER};
use crate::record_layer::{Aead, Opened, RecordLayer, SealError, Secrets};
use crate::role::Role;
use crate::ssl_error::alert_error;

const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const RECORD_OVERFLOW: u8 = 22;
const HANDSHAKE_FAILURE: u8 = 40;
const ILLEGAL_PARAMETER: u8 = 47;
const DECODE_ERROR: u8 = 50;
const NO_RENEGOTIATION: u8 = 100;
const HELLO_REQUEST: u8 = 0;
const CLIENT_HELLO: u8 = 1;
const FINISHED: u8 = 20;
/// DTLS handshake message header: type, length, message_seq, fragment.
const HANDSHAKE_HEADER: usize = 12;
/// OpenSSL's limit on answering a peer's retransmitted final flight
/// (`DTLS1_TMO_ALERT_COUNT`): one more and the session fails.
const MAX_RESENDS: u32 = 12;
/// OpenSSL's reason codes (`<openssl/sslerr.h>`) for the failures this
/// record layer reports as OpenSSL would.
const R_DATA_LENGTH_TOO_LONG: i32 = 146;
const R_INVALID_ALERT: i32 = 205;
const R_UNEXPECTED_RECORD: i32 = 245;
const R_UNKNOWN_ALERT_TYPE: i32 = 246;
const R_NO_RENEGOTIATION: i32 = 339;
const R_SHUTDOWN_WHILE_IN_INIT: i32 = 407;
const R_TOO_MANY_WARN_ALERTS: i32 = 409;

/// What the public API reads from a session, copied when OpenSSL's `SSL`
/// goes.
#[derive(Debug)]
pub(crate) struct SessionInfo {
    pub(crate) cipher: &'static str,
    pub(crate) version: &'static str,
    pub(crate) peer_certificate: Option<X509>,
    pub(crate) peer_chain: Vec<X509>,
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) server_name: Option<String>,
    pub(crate) srtp_profile: Option<&'static str>,
    pub(crate) session_reused: bool,
    pub(crate) data_mtu: usize,
    pub(crate) cipher_bits: Option<i32>,
    pub(crate) verified: bool,
}

impl SessionInfo {
    fn of(ssl: &SslRef) -> Self {
        SessionInfo {
            cipher: ssl.current_cipher().map_or("", |c| c.name()),
            version: ssl.version_str(),
            peer_certificate: ssl.peer_certificate(),
            peer_chain: ssl
                .peer_cert_chain()
                .map(|s| s.iter().map(|c| c.to_owned()).collect())
                .unwrap_or_default(),
            alpn: ssl.selected_alpn_protocol().map(<[u8]>::to_vec),
            server_name: ssl.servername(NameType::HOST_NAME).map(str::to_string),
            srtp_profile: ssl.selected_srtp_profile().map(|p| p.name()),
            session_reused: ssl.session_reused(),
            data_mtu: ffi::data_mtu(ssl),
            cipher_bits: ssl.current_cipher().map(|c| c.bits().secret),
            verified: verified(ssl),
        }
    }
}

/// Whether the peer sent a certificate and OpenSSL's verification of it
/// passed.
pub(crate) fn verified(ssl: &SslRef) -> bool {
    ssl.peer_certificate().is_some() && ssl.verify_result() == openssl::x509::X509VerifyResult::OK
}

/// The datagram being read: its buffer (records are opened in place), where
/// its next record starts, and the plaintext of a record not yet read whole.
#[derive(Debug)]
struct Reading {
    buf: Vec<u8>,
    next: usize,
    plain: Range<usize>,
}

/// What [`Established::recv`] found.
#[derive(Debug)]
pub(crate) enum Got {
    /// `n` bytes of plaintext; `first` when they start a record.
    Data { n: usize, first: bool },
    /// Nothing readable now.
    Nothing,
    /// The peer's close_notify.
    CloseNotify,
    /// The session is over (a fatal alert received, or one sent).
    Failed(Error),
}

/// An established session on the engine's record layer. See the module docs.
#[derive(Debug)]
pub(crate) struct Established {
    pub(crate) pipe: Pipe,
    layer: RecordLayer,
    secrets: Secrets,
    pub(crate) info: SessionInfo,
    role: Role,
    /// The datagrams of this side's last handshake flight, until the peer's
    /// first application record shows it has them.
    last_flight: Vec<Vec<u8>>,
    /// Times the last flight was sent again (counted in
    /// `ConnStats::retransmissions`).
    pub(crate) resends: u32,
    reading: Option<Reading>,
    /// A handshake message other than a Finished arrived (renegotiation):
    /// as in OpenSSL, the next application record ends the session.
    in_handshake: bool,
    /// Warning alerts received since the last record with content.
    warnings: u8,
    /// Whether warnings are counted against [`MAX_WARNINGS`] (OpenSSL 3.2
    /// and later) or end the session ([`counts_warnings`]).
    count_warnings: bool,
}

/// OpenSSL's `MAX_WARN_ALERT_COUNT`: the fifth warning alert in a row ends
/// a session.
const MAX_WARNINGS: u8 = 5;

/// Whether the OpenSSL in use counts warning alerts on an established DTLS
/// session (3.2 and later: measured with 3.6.3) instead of ending it on the
/// first one other than close_notify (3.0 and 3.1: measured with 3.0.19).
fn counts_warnings() -> bool {
    openssl::version::number() >= 0x3020_0000
}

impl Established {
    /// Takes over a session OpenSSL has just established, when its suite is
    /// one of ours and the record state can be seen: `None` otherwise (the
    /// session stays on OpenSSL's record layer). The caller then frees the
    /// `SSL`; the pipe (queues, counters) moves here.
    pub(crate) fn take_over(
        ssl: &SslRef,
        pipe: &mut Pipe,
        role: Role,
        last_flight: Vec<Vec<u8>>,
    ) -> Option<Result<Box<Established>, ErrorStack>> {
        let aead = Aead::of(ssl.current_cipher()?)?;
        if ssl.version_str() != "DTLSv1.2" || ffi::has_pending(ssl) {
            return None;
        }
        let (epoch, seq) = pipe.written.filter(|(e, _)| *e > 0)?;
        let secrets = Secrets::from_ssl(ssl)?;
        let mut layer = match RecordLayer::new(aead, &secrets, role, epoch, seq + 1) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        // The protected records OpenSSL read during the handshake: those
        // that authenticate are in OpenSSL's replay window, so in ours.
        for mut rec in pipe.stash.take().unwrap_or_default() {
            let _ = layer.open(&mut rec);
        }
        let info = SessionInfo::of(ssl);
        let pipe = std::mem::replace(pipe, Pipe::new(1, 0));
        Some(Ok(Box::new(Established {
            pipe,
            layer,
            secrets,
            info,
            role,
            last_flight,
            resends: 0,
            reading: None,
            in_handshake: false,
            warnings: 0,
            count_warnings: counts_warnings(),
        })))
    }

    /// The AEAD's record overhead after the header: explicit nonce and tag
    /// (the smallest authentic protected record body).
    pub(crate) fn min_body(&self) -> usize {
        let a = self.layer.aead();
        a.explicit_len() + a.tag_len()
    }

    /// Plaintext of the current record not read yet.
    pub(crate) fn pending(&self) -> usize {
        self.reading.as_ref().map_or(0, |r| r.plain.len())
    }

    /// Whether [`Self::recv`] may find something without new input.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pipe.inbound.is_empty()
            || self
                .reading
                .as_ref()
                .is_some_and(|r| !r.plain.is_empty() || r.next < r.buf.len())
    }

    /// RFC 5705 keying material.
    pub(crate) fn export(
        &self,
        out: &mut [u8],
        label: &str,
        context: Option<&[u8]>,
    ) -> Result<(), ErrorStack> {
        self.secrets.export(out, label, context)
    }

    /// Seals one application record into its own datagram.
    pub(crate) fn send(&mut self, plain: &[u8]) -> Result<(), Error> {
        self.seal_datagram(CONTENT_APPLICATION_DATA, plain)
    }

    /// Queues close_notify; not after a handshake message put the session
    /// back into a handshake (OpenSSL refuses to shut down then).
    pub(crate) fn close(&mut self) -> Result<(), Error> {
        if self.in_handshake {
            return Err(local_error(R_SHUTDOWN_WHILE_IN_INIT));
        }
        self.seal_datagram(CONTENT_ALERT, &[ALERT_WARNING, CLOSE_NOTIFY])
    }

    pub(crate) fn seal_datagram(&mut self, ty: u8, plain: &[u8]) -> Result<(), Error> {
        let mut v = self.pipe.buffer(&[]);
        match self.layer.seal(ty, plain, &mut v) {
            Ok(()) => {
                self.pipe.push_outbound(v);
                Ok(())
            }
            Err(e) => {
                self.pipe.recycle(v);
                Err(match e {
                    SealError::Ssl(s) => Error::Ssl {
                        code: ErrorCode::SSL.as_raw(),
                        stack: Some(s),
                    },
                    SealError::Exhausted => local_error(R_DATA_LENGTH_TOO_LONG),
                })
            }
        }
    }

    /// Sends a fatal alert and gives the error that ends the session.
    fn fatal(&mut self, description: u8, reason: i32) -> Got {
        let _ = self.seal_datagram(CONTENT_ALERT, &[ALERT_FATAL, description]);
        Got::Failed(local_error(reason))
    }

    /// Reads into `buf` the plaintext of the next application record (or
    /// the rest of one read in part), acting on the other records met on
    /// the way: alerts, the peer's retransmitted Finished, refused
    /// renegotiation.
    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> Got {
        let overhead = self.min_body();
        loop {
            let Some(r) = &mut self.reading else {
                match self.pipe.pop_inbound() {
                    Some(d) => {
                        self.reading = Some(Reading {
                            buf: d,
                            next: 0,
                            plain: 0..0,
                        })
                    }
                    None => return Got::Nothing,
                }
                continue;
            };
            if !r.plain.is_empty() {
                let n = r.plain.len().min(buf.len());
                buf[..n].copy_from_slice(&r.buf[r.plain.start..r.plain.start + n]);
                r.plain.start += n;
                self.release_read();
                return Got::Data { n, first: false };
            }
            let rest = &r.buf[r.next..];
            if rest.len() < RECORD_HEADER {
                let done = self.reading.take().map(|r| r.buf);
                if let Some(b) = done {
                    self.pipe.recycle(b);
                }
                continue;
            }
            let len = usize::from(u16::from_be_bytes([rest[11], rest[12]]));
            let start = r.next;
            let end = (start + RECORD_HEADER + len).min(r.buf.len());
            r.next = end;
            // Application data that fits goes straight to the caller.
            let direct = rest[0] == CONTENT_APPLICATION_DATA
                && (end - start - RECORD_HEADER)
                    .checked_sub(overhead)
                    .is_some_and(|n| n <= buf.len());
            if direct {
                match self.layer.open_into(&mut r.buf[start..end], buf) {
                    Opened::Plain { .. } if self.in_handshake => {
                        return self.fatal(UNEXPECTED_MESSAGE, R_UNEXPECTED_RECORD);
                    }
                    Opened::Plain { len, .. } => {
                        self.last_flight = Vec::new();
                        if len == 0 {
                            continue;
                        }
                        self.warnings = 0;
                        self.release_read();
                        return Got::Data {
                            n: len,
                            first: true,
                        };
                    }
                    Opened::Overflow => return self.fatal(RECORD_OVERFLOW, R_DATA_LENGTH_TOO_LONG),
                    Opened::OldEpoch => {
                        log::trace!("record of the handshake's epoch ignored");
                        continue;
                    }
                    Opened::Discard(why) => {
                        log::trace!("record discarded: {why}");
                        continue;
                    }
                }
            }
            let opened = self.layer.open(&mut r.buf[start..end]);
            match opened {
                Opened::Plain { ty, at, len } => {
                    let at = start + at;
                    if ty != CONTENT_ALERT && len > 0 {
                        self.warnings = 0;
                    }
                    match ty {
                        CONTENT_APPLICATION_DATA if self.in_handshake => {
                            return self.fatal(UNEXPECTED_MESSAGE, R_UNEXPECTED_RECORD);
                        }
                        CONTENT_APPLICATION_DATA => {
                            self.last_flight = Vec::new();
                            if len == 0 {
                                continue;
                            }
                            r.plain = at..at + len;
                            let n = len.min(buf.len());
                            buf[..n].copy_from_slice(&r.buf[at..at + n]);
                            r.plain.start += n;
                            self.release_read();
                            return Got::Data { n, first: true };
                        }
                        CONTENT_ALERT => {
                            if len != 2 {
                                return self.fatal(DECODE_ERROR, R_INVALID_ALERT);
                            }
                            let (level, desc) = (r.buf[at], r.buf[at + 1]);
                            if level == ALERT_FATAL {
                                log::debug!("fatal alert {desc} received");
                                return Got::Failed(alert_error(desc));
                            }
                            if level != ALERT_WARNING {
                                return self.fatal(ILLEGAL_PARAMETER, R_UNKNOWN_ALERT_TYPE);
                            }
                            // Warning alerts as OpenSSL's DTLS treats them on
                            // an established session, so that a session ends
                            // alike on either record layer. OpenSSL 3.2 and
                            // later count every warning, close_notify too,
                            // and end the session at the fifth in a row
                            // (unexpected_message, "too many warn alerts");
                            // close_notify closes; no_renegotiation ends the
                            // session with a fatal handshake_failure (the
                            // peer refused what this side must have asked
                            // for); any other is ignored. OpenSSL 3.0 and 3.1
                            // close on close_notify and end the session on
                            // any other warning.
                            log::debug!("warning alert {desc} received");
                            if self.count_warnings {
                                self.warnings += 1;
                                if self.warnings >= MAX_WARNINGS {
                                    return self.fatal(UNEXPECTED_MESSAGE, R_TOO_MANY_WARN_ALERTS);
                                }
                            }
                            if desc == CLOSE_NOTIFY {
                                return Got::CloseNotify;
                            }
                            if desc == NO_RENEGOTIATION {
                                return self.fatal(HANDSHAKE_FAILURE, R_NO_RENEGOTIATION);
                            }
                            if !self.count_warnings {
                                return self.fatal(UNEXPECTED_MESSAGE, R_TOO_MANY_WARN_ALERTS);
                            }
                        }
                        CONTENT_HANDSHAKE if len >= HANDSHAKE_HEADER => match r.buf[at] {
                            FINISHED if !self.in_handshake => {
                                if let Some(g) = self.resend_last_flight() {
                                    return g;
                                }
                            }
                            // Any other message (a ClientHello or a
                            // HelloRequest: renegotiation) puts OpenSSL
                            // 3.0's DTLS back into its handshake, where the
                            // peer's next application record ends the session
                            // (unexpected_message, "unexpected record"):
                            // renegotiation refused. The same here.
                            other => {
                                if (other == CLIENT_HELLO && self.role == Role::Server)
                                    || (other == HELLO_REQUEST && self.role == Role::Client)
                                {
                                    log::debug!("renegotiation refused");
                                }
                                self.in_handshake = true;
                            }
                        },
                        // A short handshake record, a change_cipher_spec:
                        // nothing to act on (OpenSSL drops them too).
                        CONTENT_HANDSHAKE | CONTENT_CHANGE_CIPHER_SPEC => {}
                        _ => {}
                    }
                }
                Opened::OldEpoch => {
                    log::trace!("record of the handshake's epoch ignored");
                }
                Opened::Discard(why) => {
                    log::trace!("record discarded: {why}");
                }
                Opened::Overflow => return self.fatal(RECORD_OVERFLOW, R_DATA_LENGTH_TOO_LONG),
            }
        }
    }

    /// Gives the datagram being read back to the pool once nothing of it is
    /// left, so an idle session holds no datagram buffer.
    fn release_read(&mut self) {
        if let Some(r) = &self.reading {
            if r.plain.is_empty() && r.next >= r.buf.len() {
                if let Some(r) = self.reading.take() {
                    self.pipe.recycle(r.buf);
                }
            }
        }
    }

    /// Whether the handshake's last flight is still kept: this side sent it,
    /// and no application record from the peer has shown that it arrived.
    #[cfg(feature = "socket")]
    pub(crate) fn keeps_last_flight(&self) -> bool {
        !self.last_flight.is_empty()
    }

    /// The peer sent its Finished again: it lacks our last flight.
    fn resend_last_flight(&mut self) -> Option<Got> {
        if self.last_flight.is_empty() {
            return None;
        }
        self.resends += 1;
        if self.resends > MAX_RESENDS {
            return Some(Got::Failed(Error::RetransmitLimit));
        }
        for i in 0..self.last_flight.len() {
            let v = self.pipe.buffer(&self.last_flight[i]);
            self.pipe.push_outbound(v);
        }
        log::debug!("the peer's final flight again: our last flight resent");
        None
    }

    /// The record state of a session OpenSSL still carries, copied
    /// (nothing taken from `pipe`): what [`Self::take_over`] would make
    /// with this last flight.
    #[cfg(test)]
    pub(crate) fn twin(
        ssl: &SslRef,
        pipe: &Pipe,
        role: Role,
        last_flight: Vec<Vec<u8>>,
    ) -> Box<Established> {
        let mut copy = Pipe::new(pipe.cap, pipe.mtu as u32);
        copy.written = pipe.written;
        copy.stash = pipe.stash.clone();
        copy.app_records_read = 0;
        match Self::take_over(ssl, &mut copy, role, last_flight) {
            Some(Ok(e)) => e,
            other => panic!("no twin: {:?}", other.map(|r| r.err())),
        }
    }
}

/// An error this side detected, as OpenSSL reports it: `SSL_ERROR_SSL` with
/// the reason on the stack.
fn local_error(reason: i32) -> Error {
    ffi::push_ssl_error(reason);
    Error::Ssl {
        code: ErrorCode::SSL.as_raw(),
        stack: Some(ErrorStack::get()),
    }
}
