//! The socket API under 30 % loss each way plus duplication and reordering,
//! through the fault relay, in the four variants: 50 sequential handshakes
//! with 20 echoes each all complete.

mod common;
mod socket_util;

use std::time::{Duration, Instant};

use common::relay::{Faults, Relay, RelayConfig};
use common::{four_ways, Variant};
use dtls_reactor::{DtlsSocket, Error};
use socket_util::*;

fn lossy_echo(v: Variant) {
    let _ = env_logger::builder().is_test(true).try_init();
    let rto = Duration::from_millis(100);
    let scfg = common::server()
        .initial_timeout(rto)
        .max_timeout(Duration::from_millis(200))
        .handshake_timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    // Users of lossy links cap the backoff: with the default 60 s ceiling a
    // side whose last flight keeps getting lost waits longer and longer.
    let ccfg = common::client()
        .initial_timeout(rto)
        .max_timeout(Duration::from_millis(200))
        .handshake_timeout(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    // Server: an accept loop and an echo thread per connection whose reads
    // wait long enough to outlast the client's retransmissions.
    let listener = listen(v, &scfg);
    let server_addr = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (l, st) = (listener.clone(), stop.clone());
    let accept = std::thread::spawn(move || {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(Some((mut s, _))) = l.accept() {
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    let mut buf = vec![0u8; 2048];
                    while let Ok(n) = s.recv(&mut buf) {
                        if s.send(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    let faults: Faults = "drop=0.3,dup=0.1,reorder=0.1".parse().unwrap();
    let seed = 0x10_55
        + u64::from(v.ip().is_ipv6()) * 2
        + (v.demux == dtls_demux::DemuxKind::Router) as u64;
    let mut rc = RelayConfig::new(server_addr).faults(faults).seed(seed);
    rc.reorder_hold = Duration::from_millis(20);
    rc.max_duration = Duration::from_secs(240);
    let relay = Relay::start(rc).unwrap();
    let start = Instant::now();
    let (mut retries, mut reconnects) = (0u64, 0u64);
    for h in 0..50 {
        let mut attempt = 0;
        let mut c: DtlsSocket = loop {
            match DtlsSocket::connect_timeout(relay.local_addr(), &ccfg, Duration::from_secs(30)) {
                Ok(c) => break c,
                // OpenSSL gives up a flight after 12 timeouts; at 30 % loss
                // each way that happens about once in a thousand handshakes.
                Err(Error::RetransmitLimit) if attempt < 2 => {
                    attempt += 1;
                    reconnects += 1;
                }
                Err(e) => panic!("{v:?}: handshake {h} failed: {e}"),
            }
        };
        // Loopback answers in well under a millisecond; the relay holds a
        // reordered datagram up to 20 ms. Resend after 10 ms.
        c.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let mut buf = [0u8; 256];
        for i in 0..20 {
            let msg = format!("h{h}-m{i}");
            c.send(msg.as_bytes()).unwrap();
            let t0 = Instant::now();
            loop {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "{v:?}: echo {h}/{i} never came back"
                );
                match c.recv(&mut buf) {
                    Ok(n) if &buf[..n] == msg.as_bytes() => break,
                    Ok(_) => {} // a late or duplicated earlier echo
                    Err(Error::ReadTimeout) => {
                        // DTLS does not retransmit application data: the
                        // application does.
                        retries += 1;
                        c.send(msg.as_bytes()).unwrap();
                    }
                    Err(e) => panic!("{v:?}: echo {h}/{i}: {e}"),
                }
            }
        }
        // No close_notify exchange here: under this loss it would mostly wait
        // out its timeout. The server's thread ends on its read timeout.
        drop(c);
    }
    let stats = relay.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    accept.join().unwrap();
    eprintln!(
        "{v:?}: 50 handshakes x 20 echoes in {:?}, {retries} echo retries, {reconnects} reconnects; relay to server {}; to client {}",
        start.elapsed(),
        stats.to_server,
        stats.to_client
    );
    assert!(
        reconnects <= 3,
        "{reconnects} reconnects: far more than the odds allow"
    );
    for d in [&stats.to_server, &stats.to_client] {
        assert!(
            d.dropped > 0 && d.duplicated > 0 && d.reordered > 0,
            "faults happened: {d}"
        );
    }
}

four_ways!(lossy_echo);
