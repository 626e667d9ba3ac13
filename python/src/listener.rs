//! `Listener`: a `DtlsListener` over a Python socket's bound port.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use dtls_reactor::{DemuxKind, DtlsListener, Error};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::config::PyConfig;
use crate::conn::{addr_tuple, dup_socket, timeout_of, Conn};
use crate::errors::Failure;

fn kind_of(router: bool) -> DemuxKind {
    if router {
        DemuxKind::Router
    } else {
        DemuxKind::OsNet
    }
}

/// A DTLS server's listening port (see `dtls_reactor::DtlsListener`).
#[pyclass(module = "dtls._native", frozen)]
pub(crate) struct Listener {
    inner: Arc<DtlsListener>,
}

#[pymethods]
impl Listener {
    /// Listens on (a duplicate of) a bound UDP socket's descriptor. With
    /// osnet the socket needs SO_REUSEPORT set before it was bound.
    #[staticmethod]
    fn from_fd(fd: RawFd, config: &PyConfig, router: bool) -> PyResult<Listener> {
        let cfg = config
            .server()
            .ok_or_else(|| PyValueError::new_err("a server configuration is needed"))?;
        let sock = dup_socket(fd)?;
        let l = DtlsListener::from_socket(sock, cfg, kind_of(router)).map_err(Failure::from)?;
        Ok(Listener { inner: Arc::new(l) })
    }

    /// Reads one datagram: `(Conn, address)` for a new peer that passed the
    /// cookie exchange, else None. Blocking up to the timeout (raises
    /// ERR_READ_TIMEOUT); non-blocking returns None when nothing is there.
    fn accept(&self, py: Python<'_>) -> PyResult<Option<(Conn, PyObject)>> {
        let l = &self.inner;
        // PyDTLS answers a non-blocking accept() with nothing to read with
        // None, as for a datagram that made no connection; the crate tells
        // the two apart (WouldBlock).
        let r = match py.allow_threads(|| l.accept()) {
            Err(Error::WouldBlock) => Ok(None),
            r => r,
        }
        .map_err(|e: Error| PyErr::from(Failure::from(e)))?;
        match r {
            None => Ok(None),
            Some((s, peer)) => Ok(Some((Conn::new(s), addr_tuple(py, peer)?))),
        }
    }

    // The listener's own locks may be held by an `accept` in another
    // thread that logs (and so needs the GIL): every method that takes one
    // releases the GIL first.

    #[pyo3(signature = (secs))]
    fn set_timeout(&self, py: Python<'_>, secs: Option<f64>) -> PyResult<()> {
        let t = timeout_of(secs)?;
        let l = &self.inner;
        py.allow_threads(|| l.set_read_timeout(t))
            .map_err(Failure::from)?;
        Ok(())
    }

    fn set_nonblocking(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        let l = &self.inner;
        py.allow_threads(|| l.set_nonblocking(on))
            .map_err(Failure::from)?;
        Ok(())
    }

    /// Whether `accept` can progress without the descriptor becoming readable.
    fn has_pending(&self, py: Python<'_>) -> bool {
        let l = &self.inner;
        py.allow_threads(|| l.has_pending())
    }

    fn fileno(&self) -> RawFd {
        self.inner.as_raw_fd()
    }

    fn getsockname(&self, py: Python<'_>) -> PyResult<PyObject> {
        let a = self.inner.local_addr().map_err(Failure::from)?;
        addr_tuple(py, a)
    }
}
