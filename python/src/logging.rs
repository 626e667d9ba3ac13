//! The crate's `log` records handed to Python's `logging`: a record of
//! target `dtls_reactor::socket::listener` goes to the logger
//! `dtls.dtls_reactor.socket.listener` (a child of `dtls`), at the matching
//! level (`trace` below `DEBUG`, as 5). Python's logger configuration then
//! decides what is shown.

use std::sync::atomic::{AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;

/// The lowest `log` level forwarded (as `Level as usize`): `debug` unless
/// `set_log_level` asked for trace. Per-datagram `trace!` lines cost a GIL
/// acquisition each, so they are off until asked for.
static MAX: AtomicUsize = AtomicUsize::new(Level::Debug as usize);

struct Bridge;

fn python_level(l: Level) -> i32 {
    match l {
        Level::Error => 40,
        Level::Warn => 30,
        Level::Info => 20,
        Level::Debug => 10,
        Level::Trace => 5,
    }
}

impl Log for Bridge {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        (m.level() as usize) <= MAX.load(Ordering::Relaxed)
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        // SAFETY: none needed; `Py_IsInitialized` is a plain query.
        if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
            return;
        }
        let name = format!("dtls.{}", r.target().replace("::", "."));
        let msg = r.args().to_string();
        Python::with_gil(|py| {
            let res = py
                .import("logging")
                .and_then(|m| m.call_method1("getLogger", (name,)))
                .and_then(|l| l.call_method1("log", (python_level(r.level()), "%s", msg)));
            if let Err(e) = res {
                e.print(py);
            }
        });
    }

    fn flush(&self) {}
}

static BRIDGE: Bridge = Bridge;

/// Installs the bridge as the process's `log` logger (once; a second call,
/// or another logger already installed, leaves things as they are).
pub(crate) fn install() {
    if log::set_logger(&BRIDGE).is_ok() {
        log::set_max_level(LevelFilter::Trace);
    }
}

/// Lowest Python level forwarded: below 10 (DEBUG) turns on the crate's
/// per-datagram trace lines.
#[pyfunction]
pub(crate) fn set_log_level(level: i32) {
    let l = if level < 10 {
        Level::Trace
    } else {
        Level::Debug
    };
    MAX.store(l as usize, Ordering::Relaxed);
}
