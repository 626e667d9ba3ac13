//! Socket API: dropped sockets, listeners and links free their descriptors
//! (PyDTLS's "wrapped socket is freed when dropped"). Four variants, run one
//! at a time (they count this process's open descriptors).

mod common;
mod socket_util;

use std::sync::Mutex;

use common::{four_ways, Variant};
use socket_util::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn round(v: Variant) {
    let scfg = server_cfg();
    let ccfg = client_cfg();
    for i in 0..4 {
        let mut o = pair(v, &scfg, &ccfg);
        o.client().send(b"x").unwrap();
        let mut b = [0u8; 8];
        assert_eq!(o.server().recv(&mut b).unwrap(), 1);
        // Half dropped without shutdown, half unwrapped and then dropped.
        if i % 2 == 1 {
            let mut c = o.client.take().unwrap().unwrap();
            c.set_read_timeout(Some(std::time::Duration::from_millis(20)))
                .unwrap();
            let t = match c.unwrap() {
                Ok(t) => t,
                Err(e) => e.into_socket().into_transport(),
            };
            drop(t);
        }
        drop(o);
    }
}

fn sockets_free_their_descriptors(v: Variant) {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    round(v); // warm-up: lazily initialised OpenSSL and thread state
    let before = open_fds();
    round(v);
    round(v);
    let after = open_fds();
    assert_eq!(before, after, "descriptors leaked");
}

four_ways!(sockets_free_their_descriptors);
