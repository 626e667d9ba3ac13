//! Per-datagram cost of routing with each demux, against one unconnected socket that
//! receives the same traffic, measured in the same run (absolute figures drift 2-3x on
//! the reference machine; ratios of adjacent measurements do not).
//!
//! Traffic: IPv4 datagrams (64-byte payload) from N distinct peers 127.1.x.y:port,
//! written by one raw socket (IP_HDRINCL, needs root or CAP_NET_RAW) so that 10,000
//! peers need no sending socket each. Without raw sockets it falls back to one UDP
//! socket per peer and caps N to what the descriptor limit allows (and says so).
//!
//! One thread pinned to one CPU: send a batch of 32 datagrams round-robin over the
//! peers, then receive all 32 where they belong:
//! - baseline: `recv_from` on the one socket;
//! - OsNet: `Link::recv` on each peer's link (the kernel routed them, on loopback during
//!   the send, which is why the send time is part of the cost);
//! - Router: `Demux::recv_from` on the listener (forward) then `Link::recv` on the link;
//! - Router in memory (`RouterOptions::in_memory`): the same, the hand-over being a copy
//!   into the link's memory queue instead of a trip through the kernel.
//!
//! Reported per datagram: send + receive time, receive-only time, and their ratios to
//! the baseline of the same repetition (median over the repetitions). No assertion on
//! speed: a datagram missing after 1 s is counted and reported.
//!
//! `cargo bench -p dtls-demux --bench route` (env `ROUTE_BENCH_DATAGRAMS`, default
//! 100000 per measurement; `ROUTE_BENCH_REPS`, default 5).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtls_demux::{Demux, DemuxKind, Incoming, Link, Router, RouterOptions};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const BATCH: usize = 32;
const PAYLOAD: usize = 64;

fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

fn pin_to_cpu0() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get
    // valid pointers to it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn peer(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(127, 1, (i / 250) as u8, (1 + i % 250) as u8),
        20_000 + (i % 30_000) as u16,
    )
}

/// Where the traffic comes from.
enum Traffic {
    /// One raw socket, one prebuilt IPv4+UDP packet per peer.
    Raw {
        sock: Socket,
        dst: SockAddr,
        pkts: Vec<Vec<u8>>,
    },
    /// One UDP socket per peer.
    Sockets {
        socks: Vec<UdpSocket>,
        dst: SocketAddr,
    },
}

impl Traffic {
    fn raw(n: usize, dst: SocketAddrV4) -> io::Result<Traffic> {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        let pkts = (0..n)
            .map(|i| {
                let src = peer(i);
                let total = 20 + 8 + PAYLOAD;
                let mut p = Vec::with_capacity(total);
                // IPv4 header: the kernel fills in the checksum and the id.
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&(total as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
                p.extend_from_slice(&src.ip().octets());
                p.extend_from_slice(&dst.ip().octets());
                // UDP header, checksum 0 (none, allowed over IPv4).
                p.extend_from_slice(&src.port().to_be_bytes());
                p.extend_from_slice(&dst.port().to_be_bytes());
                p.extend_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
                p.extend_from_slice(&[0, 0]);
                p.extend_from_slice(&[0xab; PAYLOAD]);
                p
            })
            .collect();
        Ok(Traffic::Raw {
            sock,
            dst: SocketAddr::V4(dst).into(),
            pkts,
        })
    }

    fn sockets(n: usize, dst: SocketAddrV4) -> io::Result<Traffic> {
        let socks = (0..n)
            .map(|_| UdpSocket::bind("127.0.0.1:0"))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Traffic::Sockets {
            socks,
            dst: SocketAddr::V4(dst),
        })
    }

    fn peer_addr(&self, i: usize) -> SocketAddr {
        match self {
            Traffic::Raw { .. } => SocketAddr::V4(peer(i)),
            Traffic::Sockets { socks, .. } => socks[i].local_addr().unwrap(),
        }
    }

    fn send(&self, i: usize) {
        let r = match self {
            Traffic::Raw { sock, dst, pkts } => sock.send_to(&pkts[i], dst),
            Traffic::Sockets { socks, dst } => socks[i].send_to(&[0xab; PAYLOAD], *dst),
        };
        if let Err(e) = r {
            eprintln!("send failed: {e}");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Baseline,
    Demux(DemuxKind),
    /// Router handing datagrams over in memory (`RouterOptions::in_memory`).
    RouterMem,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    total_ns: f64,
    recv_ns: f64,
    lost: usize,
}

struct Receiver {
    baseline: Option<UdpSocket>,
    demux: Option<Arc<dyn Demux>>,
    links: Vec<Link>,
}

fn big_rcvbuf(s: &UdpSocket) {
    let _ = socket2::SockRef::from(s).set_recv_buffer_size(4 << 20);
}

fn setup(target: Target, n: usize, raw: bool) -> io::Result<(Receiver, Traffic)> {
    let t = Some(Duration::from_secs(1));
    let (rx, port) = match target {
        Target::Baseline => {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_read_timeout(t)?;
            big_rcvbuf(&s);
            let port = s.local_addr()?.port();
            (
                Receiver {
                    baseline: Some(s),
                    demux: None,
                    links: Vec::new(),
                },
                port,
            )
        }
        Target::Demux(_) | Target::RouterMem => {
            let addr = "127.0.0.1:0".parse().unwrap();
            let d: Arc<dyn Demux> = match target {
                Target::Demux(kind) => dtls_demux::bind(kind, addr)?,
                _ => Router::bind_with(addr, RouterOptions::default().in_memory(true))?,
            };
            d.listener().set_read_timeout(t)?;
            big_rcvbuf(d.listener());
            let port = d.local_addr()?.port();
            (
                Receiver {
                    baseline: None,
                    demux: Some(d),
                    links: Vec::new(),
                },
                port,
            )
        }
    };
    let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let traffic = if raw {
        Traffic::raw(n, dst)?
    } else {
        Traffic::sockets(n, dst)?
    };
    let mut rx = rx;
    if let Some(d) = &rx.demux {
        for i in 0..n {
            let l = d.attach(traffic.peer_addr(i))?;
            l.socket().set_read_timeout(t)?;
            rx.links.push(l);
        }
    }
    Ok((rx, traffic))
}

fn measure(target: Target, n: usize, datagrams: usize, raw: bool) -> io::Result<Sample> {
    let (rx, traffic) = setup(target, n, raw)?;
    let mut buf = vec![0u8; 2048];
    let mut lost = 0;
    let mut recv_time = Duration::ZERO;
    let mut run = |count: usize, recv_time: &mut Duration, lost: &mut usize| {
        let mut next = 0usize;
        while next < count {
            let k = BATCH.min(count - next);
            for j in 0..k {
                traffic.send((next + j) % n);
            }
            let t0 = Instant::now();
            match target {
                Target::Baseline => {
                    let s = rx.baseline.as_ref().unwrap();
                    for _ in 0..k {
                        if s.recv_from(&mut buf).is_err() {
                            *lost += 1;
                        }
                    }
                }
                Target::Demux(_) | Target::RouterMem => {
                    if target != Target::Demux(DemuxKind::OsNet) {
                        let d = rx.demux.as_ref().unwrap();
                        for _ in 0..k {
                            match d.recv_from(&mut buf) {
                                Ok(Incoming::Routed { .. }) => {}
                                _ => *lost += 1,
                            }
                        }
                    }
                    for j in 0..k {
                        if rx.links[(next + j) % n].recv(&mut buf).is_err() {
                            *lost += 1;
                        }
                    }
                }
            }
            *recv_time += t0.elapsed();
            next += k;
        }
    };
    // Warm up, then measure.
    let mut warm = Duration::ZERO;
    let mut warm_lost = 0;
    run(n.clamp(BATCH * 4, 4096), &mut warm, &mut warm_lost);
    let start = Instant::now();
    run(datagrams, &mut recv_time, &mut lost);
    let total = start.elapsed();
    Ok(Sample {
        total_ns: total.as_nanos() as f64 / datagrams as f64,
        recv_ns: recv_time.as_nanos() as f64 / datagrams as f64,
        lost: lost + warm_lost,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> io::Result<()> {
    let limit = raise_nofile();
    let pinned = pin_to_cpu0();
    let datagrams = env("ROUTE_BENCH_DATAGRAMS", 100_000);
    let reps = env("ROUTE_BENCH_REPS", 5).max(1);
    let raw = Traffic::raw(1, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9)).is_ok();
    println!(
        "route bench: {datagrams} datagrams of {PAYLOAD} B per measurement, {reps} repetitions, batch {BATCH}, \
         traffic from {}, RLIMIT_NOFILE {limit}, pinned to CPU 0: {pinned}",
        if raw { "one raw socket (spoofed 127.1.x.y sources)" } else { "one UDP socket per peer" }
    );
    // A link socket per peer, plus a sending socket per peer without raw sockets.
    let per_peer = if raw { 1 } else { 2 };
    let max_peers = (limit as usize).saturating_sub(64) / per_peer;
    println!();
    println!(
        "| peers | baseline ns/dgram (total / recv) | OsNet ns/dgram | OsNet ratio (total / recv) \
         | Router ns/dgram | Router ratio (total / recv) | Router-mem ns/dgram | Router-mem ratio (total / recv) | lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for wanted in [1usize, 100, 10_000] {
        let n = wanted.min(max_peers);
        let mut per: [Vec<Sample>; 4] = Default::default();
        let mut ratios: [[Vec<f64>; 2]; 3] = Default::default();
        for _ in 0..reps {
            let b = measure(Target::Baseline, n, datagrams, raw)?;
            let o = measure(Target::Demux(DemuxKind::OsNet), n, datagrams, raw)?;
            let r = measure(Target::Demux(DemuxKind::Router), n, datagrams, raw)?;
            let m = measure(Target::RouterMem, n, datagrams, raw)?;
            for (k, s) in [o, r, m].iter().enumerate() {
                ratios[k][0].push(s.total_ns / b.total_ns);
                ratios[k][1].push(s.recv_ns / b.recv_ns);
            }
            for (k, s) in [b, o, r, m].into_iter().enumerate() {
                per[k].push(s);
            }
        }
        let med = |v: &Vec<Sample>, f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let lost: usize = per.iter().flatten().map(|s| s.lost).sum();
        let label = if n == wanted {
            format!("{n}")
        } else {
            format!("{n} (wanted {wanted}; fd limit)")
        };
        println!(
            "| {label} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} / {:.2} | {:.0} / {:.0} | {:.2} / {:.2} | {:.0} / {:.0} | {:.2} / {:.2} | {lost} |",
            med(&per[0], |s| s.total_ns),
            med(&per[0], |s| s.recv_ns),
            med(&per[1], |s| s.total_ns),
            med(&per[1], |s| s.recv_ns),
            median(ratios[0][0].clone()),
            median(ratios[0][1].clone()),
            med(&per[2], |s| s.total_ns),
            med(&per[2], |s| s.recv_ns),
            median(ratios[1][0].clone()),
            median(ratios[1][1].clone()),
            med(&per[3], |s| s.total_ns),
            med(&per[3], |s| s.recv_ns),
            median(ratios[2][0].clone()),
            median(ratios[2][1].clone()),
        );
    }
    println!();
    println!("ratios: median over repetitions of (demux / baseline of the same repetition); total = send + receive.");
    Ok(())
}
