//! `Pipe`: the in-memory datagram BIO under every OpenSSL session here.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use crate::record::Datagram;

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
    /// While OpenSSL writes a handshake flight: the first outbound datagram
    /// of the flight; its records are packed into as few datagrams as the
    /// MTU allows.
    pub(crate) pack_from: Option<usize>,
    /// Application-data records in the datagrams OpenSSL has read.
    pub(crate) app_records_read: u64,
}

impl Pipe {
    pub(crate) fn new(cap: usize, mtu: u32) -> Self {
        Pipe {
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
            pool: Vec::new(),
            cap,
            dropped: 0,
            mtu: mtu as usize,
            pack_from: None,
            app_records_read: 0,
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

    pub(crate) fn pop_outbound(&mut self) -> Option<Vec<u8>> {
        self.outbound.pop_front()
    }

    /// Empties both queues and the record count (the cookie stage reuses
    /// one pipe).
    pub(crate) fn reset(&mut self) {
        self.app_records_read = 0;
        while let Some((v, _)) = self.inbound.pop_front() {
            self.recycle(v);
        }
        while let Some(v) = self.outbound.pop_front() {
            self.recycle(v);
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbound.pop_front() {
            Some((d, app)) => {
                self.app_records_read += u64::from(app);
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                self.recycle(d);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
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

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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
