//! The stream suites: `tcp` (`std::net::TcpStream`, `TCP_NODELAY`) and `tls`
//! (rust-openssl TLS 1.2 over TCP, ECDHE-ECDSA-AES128-GCM-SHA256), records
//! written back to back one-way, or one at a time in echo.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};

use crate::{common, cpus, Run};

/// A connected TCP pair, optionally wrapped in TLS.
type Stream = Box<dyn ReadWrite + Send>;
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn stream_pair(tls: bool) -> (Stream, Stream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let accept = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        if !tls {
            return Box::new(s) as Stream;
        }
        let mut a = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        a.set_certificate(&openssl::x509::X509::from_pem(common::TEST_CERT).unwrap())
            .unwrap();
        a.set_private_key(&openssl::pkey::PKey::private_key_from_pem(common::TEST_KEY).unwrap())
            .unwrap();
        a.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        a.set_cipher_list("ECDHE-ECDSA-AES128-GCM-SHA256").unwrap();
        Box::new(a.build().accept(s).unwrap()) as Stream
    });
    let c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let client: Stream = if tls {
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_verify(SslVerifyMode::NONE);
        b.set_max_proto_version(Some(openssl::ssl::SslVersion::TLS1_2))
            .unwrap();
        Box::new(b.build().connect("localhost", c).unwrap())
    } else {
        Box::new(c)
    };
    (client, accept.join().unwrap())
}

pub(crate) fn oneway_stream(size: usize, dur: Duration, pinning: bool, tls: bool) -> (Run, String) {
    let (mut tx, mut rx) = stream_pair(tls);
    let (c0, c1) = cpus();
    let sender = thread::spawn(move || {
        let where_ = common::placement(c0, pinning);
        let msg = vec![0x42u8; size];
        let end = Instant::now() + dur;
        let mut sent = 0u64;
        while Instant::now() < end {
            for _ in 0..64 {
                if tx.write_all(&msg).is_err() {
                    return (sent, where_);
                }
                sent += 1;
            }
        }
        let _ = tx.flush();
        drop(tx);
        (sent, where_)
    });
    let where_rx = common::placement(c1, pinning);
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut last = start;
    while let Ok(n) = rx.read(&mut buf) {
        if n == 0 {
            break;
        }
        bytes += n as u64;
        last = Instant::now();
    }
    let (sent, where_tx) = sender.join().unwrap();
    (
        Run {
            sent,
            received: bytes / size as u64,
            elapsed: (last - start).as_secs_f64().max(1e-6),
        },
        format!("sender {where_tx}, receiver {where_rx}"),
    )
}

pub(crate) fn echo_stream(size: usize, dur: Duration, pinning: bool, tls: bool) -> (Run, String) {
    let (mut c, mut s) = stream_pair(tls);
    let (c0, c1) = cpus();
    let server = thread::spawn(move || {
        let where_ = common::placement(c1, pinning);
        let mut buf = vec![0u8; size];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
        where_
    });
    let where_c = common::placement(c0, pinning);
    let msg = vec![0x42u8; size];
    let mut buf = vec![0u8; size];
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < dur {
        sent += 1;
        if c.write_all(&msg).is_err() || c.read_exact(&mut buf).is_err() {
            break;
        }
        received += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(c);
    let where_s = server.join().unwrap();
    (
        Run {
            sent,
            received,
            elapsed,
        },
        format!("client {where_c}, server {where_s}"),
    )
}
