//! Arbitrary datagrams (raw, real, corrupted, replayed records) fed into the
//! server side of one established in-memory session built at start-up; see
//! `common::run` for the input format and the checks.
#![no_main]

mod common;

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static PAIR: RefCell<common::Pair> = RefCell::new(common::Pair::new());
}

fuzz_target!(|data: &[u8]| {
    PAIR.with(|p| common::run(&mut p.borrow_mut(), true, data));
});
