//! `Pipe`: the in-memory datagram BIO under every OpenSSL session here.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use crate::record::{record_end, Datagram, CONTENT_APPLICATION_DATA};

/// Reusable buffers kept per pipe, so steady traffic does not allocate.
const POOL_MAX: usize = 16;

/// The BIO behind every OpenSSL session here: queues of whole datagrams.
///
/// One `read` by OpenSSL takes one datagram; one `write` is one datagram.
#[derive(Debug)]
pub struct Pipe {
    /// Received datagrams with their count of application-data records.
    pub(crate) inbound: VecDeque<(Vec<u8>, u32)>,
    pub(crate) outbound: VecDeque<Vec<u8>>,
    pub(crate) pool: Vec<Vec<u8>>,
    pub(crate) cap: usize,
    pub(crate) dropped: u64,
    /// The datagram size limit (the configured MTU).
    pub(crate) mtu: usize,
    /// The front of `inbound` is the rest of a datagram OpenSSL has read
    /// records of (it reads one record per call).
    pub(crate) partly_read: bool,
    /// While OpenSSL writes a handshake flight: the first outbound datagram
    /// of the flight; its records are packed into as few datagrams as the
    /// MTU allows.
    pub(crate) pack_from: Option<usize>,
    /// Application-data records in the datagrams OpenSSL (or, after a
    /// takeover, the engine's record layer) has read.
    pub(crate) app_records_read: u64,
    /// The highest (epoch, sequence number) of the records OpenSSL wrote:
    /// where the engine's record layer continues.
    pub(crate) written: Option<(u16, u64)>,
    /// While a handshake that the engine may take over runs: copies of the
    /// protected (epoch above 0) handshake, alert and change_cipher_spec
    /// records OpenSSL read (at most [`STASH_MAX`] of at most
    /// [`STASH_RECORD_MAX`] bytes), so that the records OpenSSL accepted
    /// can be marked in the engine's replay window.
    pub(crate) stash: Option<Vec<Vec<u8>>>,
}

/// Protected handshake records kept per handshake for the replay window
/// (the peer's Finished, perhaps a retransmission of it).
const STASH_MAX: usize = 4;
/// A Finished record is 12 + 12 bytes of message plus at most 24 of AEAD
/// overhead; anything much longer is not one.
const STASH_RECORD_MAX: usize = 256;

impl Pipe {
    pub(crate) fn new(cap: usize, mtu: u32) -> Self {
        Pipe {
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
            pool: Vec::new(),
            cap,
            dropped: 0,
            mtu: mtu as usize,
            partly_read: false,
            pack_from: None,
            app_records_read: 0,
            written: None,
            stash: None,
        }
    }

    pub(crate) fn buffer(&mut self, data: &[u8]) -> Vec<u8> {
        let mut v = self.pool.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(data);
        v
    }

    pub(crate) fn recycle(&mut self, mut v: Vec<u8>) {
        if self.pool.len() < POOL_MAX && v.capacity() <= 65536 {
            v.clear();
            self.pool.push(v);
        }
    }

    /// Queues a received datagram; false (and counted) when the queue is full.
    pub(crate) fn push_inbound(&mut self, d: &Datagram<'_>) -> bool {
        if self.inbound.len() >= self.cap {
            self.dropped += 1;
            return false;
        }
        let v = self.buffer(d.bytes());
        self.inbound.push_back((v, d.application_records() as u32));
        true
    }

    /// The next received datagram for the engine's record layer, counted
    /// as OpenSSL's reads are.
    pub(crate) fn pop_inbound(&mut self) -> Option<Vec<u8>> {
        let (d, app) = self.inbound.pop_front()?;
        self.app_records_read += u64::from(app);
        self.partly_read = false;
        Some(d)
    }

    /// Queues one datagram for sending (a record the engine sealed).
    pub(crate) fn push_outbound(&mut self, d: Vec<u8>) {
        self.outbound.push_back(d);
    }

    pub(crate) fn pop_outbound(&mut self) -> Option<Vec<u8>> {
        self.outbound.pop_front()
    }

    /// Empties both queues and the record count (the cookie stage reuses
    /// one pipe).
    pub(crate) fn reset(&mut self) {
        self.app_records_read = 0;
        self.partly_read = false;
        self.written = None;
        self.stash = None;
        while let Some((v, _)) = self.inbound.pop_front() {
            self.recycle(v);
        }
        while let Some(v) = self.outbound.pop_front() {
            self.recycle(v);
        }
    }
}

/// OpenSSL reads one record per call, as if each had come in a datagram of
/// its own: when OpenSSL's DTLS meets a record it drops (a stale handshake
/// message, a record it cannot open), it drops the rest of the datagram with
/// it, so a peer that packs a retransmitted message with its next flight, or
/// a forged record in front of genuine ones, would cost the genuine records.
/// Records never span datagrams (RFC 6347 section 4.1.1), so nothing else
/// changes; the connection checked when it was fed that the datagram is
/// whole records.
impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some((d, app)) = self.inbound.front_mut() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let len = record_end(d).map_or(d.len(), |end| end.min(d.len()));
        let n = len.min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        // The datagram's application records count when its first record
        // is read, as they do for the engine's record layer.
        self.app_records_read += u64::from(std::mem::take(app));
        if let Some(stash) = &mut self.stash {
            stash_protected(stash, &d[..len]);
        }
        self.partly_read = len < d.len();
        if self.partly_read {
            d.drain(..len);
        } else if let Some((d, _)) = self.inbound.pop_front() {
            self.recycle(d);
        }
        Ok(n)
    }
}

impl Pipe {
    /// Forgets the rest of a datagram OpenSSL stopped reading in (its session
    /// failed there): what OpenSSL would have dropped with it, reading whole
    /// datagrams, and what the engine's record layer drops.
    pub(crate) fn drop_partly_read(&mut self) {
        if std::mem::take(&mut self.partly_read) {
            if let Some((d, _)) = self.inbound.pop_front() {
                self.recycle(d);
            }
        }
    }
}

impl Pipe {
    /// From now until [`Pipe::end_flight`], records OpenSSL writes share
    /// datagrams up to the MTU: a flight of several handshake records
    /// (ServerHello, Certificate, ServerKeyExchange, ServerHelloDone...) then
    /// takes one or two datagrams instead of one per record, so on a lossy
    /// link it arrives whole far more often (each datagram is lost on its
    /// own). OpenSSL's record layer writes one record per call and keeps
    /// every record within the MTU; the receiver reads the records of a
    /// datagram one after another (RFC 6347 section 4.1.1 allows several
    /// records per datagram).
    pub(crate) fn begin_flight(&mut self) {
        self.pack_from = Some(self.outbound.len());
    }

    /// Ends the packing that [`Pipe::begin_flight`] started: the next write
    /// starts a new datagram.
    pub(crate) fn end_flight(&mut self) {
        self.pack_from = None;
    }
}

/// Keeps copies of the protected non-application records of `d` (whole
/// records: the connection checked it when it was fed).
fn stash_protected(stash: &mut Vec<Vec<u8>>, mut d: &[u8]) {
    while let Some(end) = record_end(d) {
        let Some(rec) = d.get(..end) else { return };
        let epoch = u16::from_be_bytes([d[3], d[4]]);
        if epoch > 0
            && rec[0] != CONTENT_APPLICATION_DATA
            && rec.len() <= STASH_RECORD_MAX
            && stash.len() < STASH_MAX
        {
            stash.push(rec.to_vec());
        }
        d = &d[end..];
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One or more whole records.
        let mut rest = buf;
        while let Some(es) = crate::record_layer::header_epoch_seq(rest) {
            if self.written.is_none_or(|w| es > w) {
                self.written = Some(es);
            }
            rest = record_end(rest)
                .and_then(|end| rest.get(end..))
                .unwrap_or_default();
        }
        if let Some(from) = self.pack_from {
            if self.outbound.len() > from {
                if let Some(last) = self.outbound.back_mut() {
                    if last.len() + buf.len() <= self.mtu {
                        last.extend_from_slice(buf);
                        return Ok(buf.len());
                    }
                }
            }
        }
        let v = self.buffer(buf);
        self.outbound.push_back(v);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
