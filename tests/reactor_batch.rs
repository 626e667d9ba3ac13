//! Batched I/O in the reactor: records a handler sends in one callback leave in
//! a few `sendmmsg` calls (UDP GSO where the kernel has it), arrive whole and in
//! order through `recvmmsg` (GRO on), and come back echoed the same way. Each test
//! in the four variants. Also: quiet connections give their buffers back
//! (`Limits::shrink_after`) and keep working.

mod common;
mod reactor_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{six_ways, Variant};
use dtls_reactor::{ConnId, Ctx, Error, Handler, Limits};
use reactor_support::*;

const T: Duration = Duration::from_secs(20);
/// More than one send batch (64) in one callback.
const RECORDS: u32 = 150;
const SIZE: usize = 500;

fn record(i: u32) -> Vec<u8> {
    let mut r = vec![(i % 251) as u8; SIZE];
    r[..4].copy_from_slice(&i.to_be_bytes());
    r
}

/// Echoes every record and keeps the sequence numbers it saw.
#[derive(Default)]
struct Echo {
    seen: Arc<Mutex<Vec<u32>>>,
}

impl Handler for Echo {
    fn on_data(&mut self, ctx: &mut Ctx<'_>, id: ConnId, data: &[u8]) {
        if data.len() == SIZE {
            let seq = u32::from_be_bytes(data[..4].try_into().unwrap());
            self.seen.lock().unwrap().push(seq);
        }
        ctx.send(id, data).expect("echo");
    }
}

/// Sends all records in the connect callback (resuming from `on_writable` if the
/// socket fills), collects the echoes, stops when all are back.
#[derive(Default)]
struct Burst {
    next: u32,
    echoes: Vec<u32>,
    corrupt: usize,
}

impl Burst {
    fn send_more(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        while self.next < RECORDS {
            match ctx.send(id, &record(self.next)) {
                Ok(()) => self.next += 1,
                Err(Error::WouldBlock) => return,
                Err(e) => panic!("send: {e}"),
            }
        }
    }
}

impl Handler for Burst {
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.send_more(ctx, id);
    }
    fn on_writable(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.send_more(ctx, id);
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, _id: ConnId, data: &[u8]) {
        let seq = u32::from_be_bytes(data[..4].try_into().unwrap());
        if data != record(seq).as_slice() {
            self.corrupt += 1;
        }
        self.echoes.push(seq);
        if self.echoes.len() == RECORDS as usize {
            ctx.stop();
        }
    }
}

fn burst_in_one_callback(v: Variant) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = serve(
        v,
        &common::server().build().unwrap(),
        Limits::default(),
        Echo { seen: seen.clone() },
    );
    let addr = server.addr.unwrap();
    let client = clients(
        addr,
        &common::client().build().unwrap(),
        1,
        Limits::default(),
        Burst::default(),
    );
    let cstats = client.handle.clone();
    let done = client.join_within(T);
    let want: Vec<u32> = (0..RECORDS).collect();
    assert_eq!(done.corrupt, 0);
    assert_eq!(
        *seen.lock().unwrap(),
        want,
        "server: every record, in order"
    );
    assert_eq!(done.echoes, want, "client: every echo, in order");
    let c = stats_of(&cstats);
    let s = stats_of(&server.handle);
    // The client's records left in batches: far fewer send calls than datagrams.
    assert!(
        c.datagrams_out >= u64::from(RECORDS) && c.send_batches * 4 <= c.datagrams_out,
        "client sent {} datagrams in {} calls",
        c.datagrams_out,
        c.send_batches
    );
    assert!(s.recv_batches > 0 && s.recv_batches < s.datagrams_in);
    assert_eq!(s.oversized, 0);
    server.stop();
}

six_ways!(burst_in_one_callback);

/// Sends one record, waits `PAUSE` after its echo (longer than `shrink_after`),
/// and again, `ROUNDS` times; then stops.
#[derive(Default)]
struct Slow {
    echoes: usize,
    id: Option<ConnId>,
}

const ROUNDS: usize = 3;
const PAUSE: Duration = Duration::from_millis(250);
const QUIET: Duration = Duration::from_millis(50);

impl Handler for Slow {
    fn on_connected(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.id = Some(id);
        ctx.send(id, &record(0)).expect("send");
    }
    fn on_data(&mut self, ctx: &mut Ctx<'_>, _id: ConnId, data: &[u8]) {
        assert_eq!(data, record(self.echoes as u32).as_slice());
        self.echoes += 1;
        if self.echoes == ROUNDS {
            ctx.stop();
        } else {
            ctx.set_timer(PAUSE, 0);
        }
    }
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _t: dtls_reactor::TimerId, _token: u64) {
        let id = self.id.unwrap();
        ctx.send(id, &record(self.echoes as u32)).expect("send");
    }
}

/// Connections quiet for `shrink_after` release OpenSSL's buffers on both
/// sides; the next record takes them back and the session goes on.
fn quiet_connections_release_buffers(v: Variant) {
    let limits = Limits::default().shrink_after(Some(QUIET));
    let server = serve(
        v,
        &common::server().build().unwrap(),
        limits,
        Echo::default(),
    );
    let client = clients(
        server.addr.unwrap(),
        &common::client().build().unwrap(),
        1,
        limits,
        Slow::default(),
    );
    let cstats = client.handle.clone();
    let done = client.join_within(T);
    assert_eq!(done.echoes, ROUNDS);
    let (c, s) = (stats_of(&cstats), stats_of(&server.handle));
    // A release in each pause (two pauses).
    assert!(c.shrunk >= 2, "client released {} times", c.shrunk);
    assert!(s.shrunk >= 2, "server released {} times", s.shrunk);
    server.stop();
}

six_ways!(quiet_connections_release_buffers);
