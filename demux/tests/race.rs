//! The bind/connect race of OsNet, widened on purpose: peers that keep talking while
//! other peers are attached must neither lose datagrams nor see them reach another
//! peer's link, with and without the reuseport BPF program. Without it the race must
//! really happen (else the test proves nothing) and the race handling (strays) must
//! catch every datagram. With it, on Linux 6.18 the race is closed for IPv6 but NOT for
//! IPv4 once the group holds connected sockets (measured here; design.md section 4
//! expected it closed), so no assertion is made on the stray count then: only the
//! no-loss / no-misdelivery invariants. Four variants as everywhere (Router has no such
//! race; it runs the same check).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dtls_demux::{OsNet, OsNetOptions};

const WINDOW: Duration = Duration::from_millis(2);
const NOISY: usize = 6;

fn run(d: Arc<dyn Demux>, fam: Fam) -> dtls_demux::Counters {
    d.listener().set_read_timeout(Some(T)).unwrap();
    let _ = socket2::SockRef::from(d.listener()).set_recv_buffer_size(4 << 20);
    let srv = d.local_addr().unwrap();
    let noisy: Vec<UdpSocket> = (0..NOISY).map(|_| client(fam)).collect();
    let noisy_addrs: Vec<SocketAddr> = noisy.iter().map(|s| s.local_addr().unwrap()).collect();
    let peers: Vec<UdpSocket> = (0..10).map(|_| client(fam)).collect();
    let pump = Pump::start(d.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let sender = std::thread::spawn(move || {
        let mut sent = [0u32; NOISY];
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.load(Ordering::Acquire) && Instant::now() < deadline {
            for (i, n) in noisy.iter().enumerate() {
                n.send_to(&sent[i].to_be_bytes(), srv).unwrap();
                sent[i] += 1;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        sent
    });
    let mut buf = [0u8; 64];
    for round in 0..8 {
        let links: Vec<Link> = peers
            .iter()
            .map(|p| attach(&*d, p.local_addr().unwrap()))
            .collect();
        for (i, (p, l)) in peers.iter().zip(&links).enumerate() {
            let m = format!("{round}:{i}");
            p.send_to(m.as_bytes(), srv).unwrap();
            let n = l.recv(&mut buf).unwrap();
            assert_eq!(
                &buf[..n],
                m.as_bytes(),
                "link {i} got a datagram that is not its peer's"
            );
            assert!(
                !l.has_queued(),
                "link {i} holds datagrams that are not its peer's"
            );
        }
        drop(links);
    }
    stop.store(true, Ordering::Release);
    let sent = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let r = pump.finish();
    let mut seen: Vec<Vec<bool>> = sent.iter().map(|&n| vec![false; n as usize]).collect();
    for (peer, data) in &r.unknown {
        let who = noisy_addrs
            .iter()
            .position(|a| a == peer)
            .expect("unknown datagram from an attached peer");
        let k = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        assert!(!seen[who][k], "datagram {k} of noisy peer {who} seen twice");
        seen[who][k] = true;
    }
    for (who, s) in seen.iter().enumerate() {
        let lost = s.iter().filter(|x| !**x).count();
        assert_eq!(
            lost,
            0,
            "noisy peer {who}: {lost} of {} datagrams never reached the listener",
            s.len()
        );
    }
    let c = d.counters();
    assert_eq!(c.dropped, 0);
    assert_eq!(c.links_open, 0);
    c
}

fn widened_race(
    Variant {
        fam, demux: kind, ..
    }: Variant,
) {
    raise_nofile();
    match kind {
        DemuxKind::Router => {
            let c = run(dtls_demux::bind(kind, fam.any_port()).unwrap(), fam);
            assert_eq!(c.strays, 0);
        }
        DemuxKind::OsNet => {
            for bpf in [true, false] {
                // The kernel picks the reuseport member by a hash of each flow: rarely, all
                // noisy flows keep choosing the listener for a whole run. Up to 3 runs
                // for the race to really happen without the BPF program.
                for attempt in 1..=3 {
                    let opts = OsNetOptions::default().reuseport_bpf(bpf);
                    let d = OsNet::bind_with(fam.any_port(), opts).unwrap();
                    d.__set_race_window(WINDOW);
                    let c = run(d, fam);
                    eprintln!(
                        "{kind} {fam:?} bpf={bpf}: strays={} unknown={}",
                        c.strays, c.unknown
                    );
                    if bpf || c.strays > 0 {
                        break;
                    }
                    assert!(
                        attempt < 3,
                        "the widened race never happened: the test proves nothing"
                    );
                }
            }
        }
    }
}

four_ways!(widened_race);
