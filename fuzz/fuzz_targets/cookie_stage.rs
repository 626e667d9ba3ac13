//! Arbitrary datagrams from arbitrary peers into one `FrontDoor` kept for
//! the whole run.
//!
//! Input: `[mode, a, b, c, d, port_hi, port_lo, datagram...]`.
//! - mode % 4 == 0 or 1: the datagram is sent as is from 127.a.b.c:port
//!   (mode 0) or [::ffff:a.b.c.d]:port / [fe80::a:b:c:d]:port (mode 1, by
//!   the low bit of `d`).
//! - mode % 4 == 2: a real cookie-carrying ClientHello for 127.0.0.1:40000,
//!   with the rest of the input XORed into it from offset `a`, sent from
//!   that peer, so OpenSSL's ClientHello parsing after a valid cookie is
//!   reachable.
//! - mode % 4 == 3: that ClientHello cut to `a * 256 + b` bytes.
//!
//! Checks: no panic; a verdict for every datagram, and the stage's counters
//! move by exactly one for each; `Accept` only from the peer the cookie
//! was issued to; every accepted connection is a server connection for that
//! peer; the stage still admits an honest client after the input.
#![no_main]

mod common;

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use dtls_reactor::{AdmissionStats, Admitted, ClientConfig, Datagram, FrontDoor, Role};
use libfuzzer_sys::fuzz_target;

struct State {
    stage: FrontDoor,
    client: ClientConfig,
    peer: SocketAddr,
    hello2: Vec<u8>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let mut stage = dtls_test_support::stage(&common::server_config());
        let client = common::client_config();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let hello2 = dtls_test_support::cookie_exchange(&mut stage, &client, peer).hello2;
        State { stage, client, peer, hello2 }
    });
}

fn total(s: &AdmissionStats) -> u64 {
    s.hello_verify + s.accepted + s.refused + s.dropped
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    STATE.with(|st| {
        let st = &mut *st.borrow_mut();
        let (mode, a, b, c, d) = (data[0] % 4, data[1], data[2], data[3], data[4]);
        let port = u16::from_be_bytes([data[5], data[6]]);
        let rest = &data[7..];
        let (peer, datagram) = match mode {
            0 => (SocketAddr::from((Ipv4Addr::new(127, a, b, c), port)), rest.to_vec()),
            1 => {
                let ip = if d & 1 == 0 {
                    Ipv4Addr::new(a, b, c, d).to_ipv6_mapped()
                } else {
                    Ipv6Addr::new(0xfe80, 0, 0, 0, a.into(), b.into(), c.into(), d.into())
                };
                (SocketAddr::from((ip, port)), rest.to_vec())
            }
            2 => {
                let mut h = st.hello2.clone();
                for (i, x) in rest.iter().enumerate() {
                    if let Some(byte) = h.get_mut(usize::from(a) + i) {
                        *byte ^= x;
                    }
                }
                (st.peer, h)
            }
            _ => {
                let n = (usize::from(a) << 8 | usize::from(b)).min(st.hello2.len());
                (st.peer, st.hello2[..n].to_vec())
            }
        };
        let before = st.stage.admission().stats();
        let verdict = st.stage.admit(peer, &Datagram::parse(&datagram));
        let after = st.stage.admission().stats();
        assert_eq!(total(&after), total(&before) + 1, "one count per datagram");
        match verdict {
            Admitted::Accepted(conn) => {
                assert_eq!(peer, st.peer, "accepted from a peer without its cookie");
                assert_eq!(conn.role(), Role::Server);
                assert_eq!(conn.peer_addr(), Some(peer));
                assert_eq!(after.accepted, before.accepted + 1);
            }
            Admitted::Reply(hvr) => {
                assert!(!hvr.is_empty() && hvr.len() <= 1400, "HVR of {} bytes", hvr.len());
                assert_eq!(after.hello_verify, before.hello_verify + 1);
            }
            Admitted::Refused(_) => assert_eq!(after.refused, before.refused + 1),
            Admitted::Drop(_) => assert_eq!(after.dropped, before.dropped + 1),
            other => panic!("unexpected verdict {other:?}"),
        }
        // Still admits an honest client (every 64th input, to keep speed).
        if data[0] & 0xfc == 0 {
            let hello2 =
                dtls_test_support::cookie_exchange(&mut st.stage, &st.client, st.peer).hello2;
            assert!(matches!(
                st.stage.admit(st.peer, &Datagram::parse(&hello2)),
                Admitted::Accepted(_)
            ));
        }
    });
});
