//! The datagram suites over blocking UDP sockets: `udp` (raw, one datagram
//! per call), `udp-batch` (one-way only: raw with the reactor's batching) and
//! `dtls` (the engine's `Connection` over the same sockets, one session, the
//! cookie exchange and handshake done before timing), one-way and echo.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dtls_reactor::{Admission, Admitted, Connection, Datagram, FrontDoor};

use crate::loss::{probe_peer, via, LossPath};
use crate::relay::Relay;
use crate::{client_config, common, cpus, server_config, Run};

/// One end of a DTLS session: its connected socket and its engine.
type DtlsEnd = (UdpSocket, Connection);

/// A DTLS session over two connected UDP sockets, handshake done (through
/// the relay returned, at loss above 0).
fn dtls_pair(path: &LossPath, dur: Duration) -> (DtlsEnd, DtlsEnd, Option<Relay>) {
    let ssock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = path.relay(ssock.local_addr().unwrap(), 4, dur);
    let client_socket = || {
        let csock = UdpSocket::bind("127.0.0.1:0").unwrap();
        csock
            .connect(via(&relay, ssock.local_addr().unwrap()))
            .unwrap();
        csock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        csock
    };
    let mut csock = client_socket();
    // Where the server sees the client: the client's socket, or the
    // relay's upstream socket for it (learnt from the first datagram).
    let mut caddr = csock.local_addr().unwrap();
    // Under loss a handshake can fail (OpenSSL gives up a flight after too
    // many retransmissions, or the 60 s deadline passes): it starts again
    // from a new client socket, at most 3 times; the addresses the server
    // saw the clients given up on at are ignored from then on.
    let mut restarts = 0;
    let mut stale: Vec<SocketAddr> = Vec::new();
    let limit = Duration::from_secs(if relay.is_some() { 250 } else { 10 });
    let scfg = server_config(path.loss);
    let ccfg = client_config(path.loss);
    let mut stage = FrontDoor::new(&scfg, &Admission::default()).unwrap();
    let mut client = Connection::client(&ccfg, None).unwrap();
    let mut server: Option<Connection> = None;
    ssock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 65536];
    let start = Instant::now();
    while !(client.is_established() && server.as_ref().is_some_and(|s| s.is_established())) {
        assert!(
            start.elapsed() < limit,
            "DTLS handshake did not finish in {limit:?}: client {:?} {:?}, server {:?}",
            client.state(),
            client.stats(),
            server.as_ref().map(|s| (s.state(), s.stats()))
        );
        while let Some(d) = client.poll_transmit() {
            csock.send(&d).unwrap();
        }
        if let Ok((n, from)) = ssock.recv_from(&mut buf) {
            if stale.contains(&from) {
                continue;
            }
            caddr = from;
            match server.as_mut() {
                Some(s) => s.feed(&buf[..n]).unwrap(),
                None => match stage.admit(from, &Datagram::parse(&buf[..n])) {
                    Admitted::Reply(h) => {
                        ssock.send_to(&h, from).unwrap();
                    }
                    Admitted::Accepted(c) => server = Some(*c),
                    other => panic!("cookie stage: {other:?}"),
                },
            }
            if let Some(s) = server.as_mut() {
                if s.is_established() {
                    // Once established, OpenSSL answers a resent client
                    // Finished (the client lost the server's last flight)
                    // only when it reads: let it, or the client never
                    // finishes. Nothing else arrives before the client is
                    // established, which ends this loop.
                    while let Ok(Some(_)) = s.recv(&mut plain) {}
                }
                while let Some(d) = s.poll_transmit() {
                    ssock.send_to(&d, from).unwrap();
                }
            }
        }
        if let Ok(n) = csock.recv(&mut buf) {
            client.feed(&buf[..n]).unwrap();
        }
        let now = Instant::now();
        let _ = client.handle_timeout(now);
        if let Some(s) = server.as_mut() {
            let _ = s.handle_timeout(now);
            while let Some(d) = s.poll_transmit() {
                ssock.send_to(&d, caddr).unwrap();
            }
        }
        let failed = client.is_closed() || server.as_ref().is_some_and(|s| s.is_closed());
        if failed && relay.is_some() {
            assert!(
                restarts < 3,
                "DTLS handshake through the fault relay failed 4 times: client {:?}",
                client.state()
            );
            eprintln!(
                "dtls: handshake through the fault relay failed ({:?}), starting again",
                client.state()
            );
            restarts += 1;
            if caddr != csock.local_addr().unwrap() {
                stale.push(caddr);
            }
            csock = client_socket();
            caddr = csock.local_addr().unwrap();
            client = Connection::client(&ccfg, None).unwrap();
            server = None;
        }
    }
    ssock.connect(caddr).unwrap();
    ((csock, client), (ssock, server.unwrap()), relay)
}

/// Sends one plaintext datagram through a DTLS session on a connected socket.
fn dtls_send(sock: &UdpSocket, conn: &mut Connection, msg: &[u8]) -> bool {
    if conn.send(msg).is_err() {
        return false;
    }
    let mut ok = true;
    while let Some(d) = conn.peek_transmit() {
        ok &= sock.send(d).is_ok();
        conn.pop_transmit();
    }
    ok
}

/// The one-way harness: `burst` runs on the sender thread (CPU 0) until `dur`
/// has passed and returns how many records each call sent; `receive` runs on
/// this thread (CPU 1) and returns the records of the expected size each call
/// got, `None` once nothing more arrives (its read timeout passed).
fn oneway(
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
    relay: Option<Relay>,
    mut burst: impl FnMut() -> u64 + Send + 'static,
    mut receive: impl FnMut() -> Option<u64>,
) -> (Run, String) {
    let (c0, c1) = cpus();
    let sender = thread::spawn(move || {
        let where_ = common::placement(c0, pinning);
        let end = Instant::now() + dur;
        let mut sent = 0u64;
        while Instant::now() < end {
            sent += burst();
        }
        (sent, where_)
    });
    let where_rx = common::placement(c1, pinning);
    let start = Instant::now();
    let mut received = 0u64;
    let mut last = start;
    while let Some(got) = receive() {
        if got > 0 {
            received += got;
            last = Instant::now();
        }
    }
    let (sent, where_tx) = sender.join().unwrap();
    let via_relay = path.finish(relay);
    let elapsed = (last - start).as_secs_f64().max(dur.as_secs_f64() * 0.5);
    (
        Run {
            sent,
            received,
            elapsed,
        },
        format!("sender {where_tx}, receiver {where_rx}{via_relay}"),
    )
}

/// Raw UDP one-way. `batched`: with the batching the reactor uses
/// (`dtls_demux::batch`): the sender hands 64 datagrams per `sendmmsg` (one UDP
/// GSO message per run), the receiver reads with `recvmmsg` and GRO on; the
/// fair baseline for batched DTLS. Otherwise blocking `send` / `recv`, one
/// datagram per call.
pub(crate) fn oneway_udp(
    size: usize,
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
    batched: bool,
) -> (Run, String) {
    use dtls_demux::batch::{enable_gro, recv_batch, send_batch, RecvBatch};
    use std::os::fd::AsRawFd;
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay = path.relay(rx.local_addr().unwrap(), 1, dur);
    tx.connect(via(&relay, rx.local_addr().unwrap())).unwrap();
    if batched {
        enable_gro(&rx).expect("UDP GRO");
    } else {
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let msg = vec![0x42u8; size];
    let burst = move || {
        let burst: [&[u8]; 64] = [&msg[..]; 64];
        if batched {
            match send_batch(&tx, None, &burst) {
                Ok(n) => n as u64,
                Err(_) => {
                    thread::yield_now();
                    0
                }
            }
        } else {
            burst.iter().filter(|d| tx.send(d).is_ok()).count() as u64
        }
    };
    let mut buf = vec![0u8; 65536];
    let mut batch = RecvBatch::new(if batched { 32 } else { 1 });
    let receive = move || {
        if !batched {
            return rx.recv(&mut buf).ok().map(|n| u64::from(n == size));
        }
        match recv_batch(&rx, &mut batch) {
            Ok(_) => Some(batch.iter().filter(|d| d.len() == size).count() as u64),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: rx.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                (unsafe { libc::poll(&mut pfd, 1, 200) } > 0).then_some(0)
            }
            Err(e) => panic!("recv_batch: {e}"),
        }
    };
    oneway(dur, pinning, path, relay, burst, receive)
}

pub(crate) fn oneway_dtls(
    size: usize,
    dur: Duration,
    pinning: bool,
    path: &mut LossPath,
) -> (Run, String) {
    let ((csock, mut client), (ssock, mut server), relay) = dtls_pair(path, dur);
    ssock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = vec![0x42u8; size];
    let burst = move || {
        (0..64)
            .filter(|_| dtls_send(&csock, &mut client, &msg))
            .count() as u64
    };
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 65536];
    let receive = move || {
        let n = ssock.recv(&mut buf).ok()?;
        server.feed(&buf[..n]).ok()?;
        let mut got = 0;
        while let Ok(Some(m)) = server.recv(&mut plain) {
            got += u64::from(m == size);
        }
        Some(got)
    };
    oneway(dur, pinning, path, relay, burst, receive)
}

/// Request/response over datagrams; `send`/`recv` abstract UDP vs DTLS.
pub(crate) fn echo_datagrams(
    size: usize,
    dur: Duration,
    pinning: bool,
    dtls: bool,
    path: &mut LossPath,
) -> (Run, String) {
    let (c0, c1) = cpus();
    let stop = Arc::new(AtomicBool::new(false));
    let (client_side, server_side, relay) = if dtls {
        let ((cs, c), (ss, s), relay) = dtls_pair(path, dur);
        ((cs, Some(c)), (ss, Some(s)), relay)
    } else {
        let ss = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cs = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = path.relay(ss.local_addr().unwrap(), 1, dur);
        cs.connect(via(&relay, ss.local_addr().unwrap())).unwrap();
        let peer = match relay {
            Some(_) => probe_peer(&cs, &ss, size),
            None => cs.local_addr().unwrap(),
        };
        ss.connect(peer).unwrap();
        ((cs, None), (ss, None), relay)
    };
    let stop2 = stop.clone();
    let server = thread::spawn(move || {
        let where_ = common::placement(c1, pinning);
        let (sock, mut conn) = server_side;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let mut plain = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            match conn.as_mut() {
                None => {
                    let _ = sock.send(&buf[..n]);
                }
                Some(c) => {
                    if c.feed(&buf[..n]).is_err() {
                        break;
                    }
                    while let Ok(Some(m)) = c.recv(&mut plain) {
                        dtls_send(&sock, c, &plain[..m]);
                    }
                }
            }
        }
        where_
    });
    let where_c = common::placement(c0, pinning);
    let (sock, mut conn) = client_side;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let msg = vec![0x42u8; size];
    let mut buf = vec![0u8; 65536];
    let mut plain = vec![0u8; 65536];
    let (mut sent, mut received) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < dur {
        sent += 1;
        match conn.as_mut() {
            None => {
                let _ = sock.send(&msg);
            }
            Some(c) => {
                dtls_send(&sock, c, &msg);
            }
        }
        // Wait for the reply (or give up after the read timeout: lost).
        'reply: while let Ok(n) = sock.recv(&mut buf) {
            match conn.as_mut() {
                None => {
                    if n == size {
                        received += 1;
                        break 'reply;
                    }
                }
                Some(c) => {
                    let _ = c.feed(&buf[..n]);
                    if let Ok(Some(m)) = c.recv(&mut plain) {
                        if m == size {
                            received += 1;
                            break 'reply;
                        }
                    }
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let where_s = server.join().unwrap();
    let via_relay = path.finish(relay);
    (
        Run {
            sent,
            received,
            elapsed,
        },
        format!("client {where_c}, server {where_s}{via_relay}"),
    )
}
