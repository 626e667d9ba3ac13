//! `Conn`: one `DtlsSocket` (client, or a server's accepted connection) and
//! `Plain`, the plain transport `unwrap()` hands back.
//!
//! Every call that may wait on the network releases the GIL. The socket sits
//! behind a mutex taken only with the GIL released, so a thread blocked in
//! `recv` never holds the GIL while another waits for the socket.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use dtls_reactor::{DtlsSocket, Error, Transport};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::cert::cert_dict;
use crate::config::PyConfig;
use crate::errors::{Failure, Res};

/// Takes a duplicate of a Python socket's descriptor.
pub(crate) fn dup_socket(fd: RawFd) -> Res<UdpSocket> {
    if fd < 0 {
        return Err(Failure::Os(std::io::Error::from_raw_os_error(libc::EBADF)));
    }
    // SAFETY: `fd` is the descriptor of a Python socket object the caller
    // holds for the duration of this call; it is only borrowed to duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(UdpSocket::from(borrowed.try_clone_to_owned()?))
}

pub(crate) fn timeout_of(secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) => Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .map(Some)
            .ok_or_else(|| PyValueError::new_err("timeout must be a positive number or None")),
    }
}

pub(crate) fn addr_tuple(py: Python<'_>, a: SocketAddr) -> PyResult<PyObject> {
    Ok(match a {
        SocketAddr::V4(v4) => (v4.ip().to_string(), v4.port())
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        SocketAddr::V6(v6) => (v6.ip().to_string(), v6.port(), v6.flowinfo(), v6.scope_id())
            .into_pyobject(py)?
            .into_any()
            .unbind(),
    })
}

/// Which timeout bounds a call, and which error reports it.
#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
}

fn closed() -> Failure {
    Failure::Os(std::io::Error::from_raw_os_error(libc::EBADF))
}

/// One DTLS session over UDP (see the module docs).
#[pyclass(module = "dtls._native", frozen)]
pub(crate) struct Conn {
    inner: Arc<Mutex<Option<DtlsSocket>>>,
    fd: RawFd,
}

fn lock(m: &Mutex<Option<DtlsSocket>>) -> MutexGuard<'_, Option<DtlsSocket>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    pub(crate) fn new(s: DtlsSocket) -> Conn {
        Conn {
            fd: s.as_raw_fd(),
            inner: Arc::new(Mutex::new(Some(s))),
        }
    }

    /// Runs `f` (one `recv`, `send` or handshake step) until it completes,
    /// with the GIL released, without holding the socket while it waits: a
    /// blocking socket is switched to non-blocking for each attempt, and
    /// between attempts the lock is free while this thread waits for what
    /// the socket says it waits for ([`DtlsSocket::readiness`]: its
    /// descriptor, its memory queue's wake descriptor, the DTLS timer, which
    /// the next attempt acts on). So a `send` from another
    /// thread goes out while this one waits in `recv`, as with Python's
    /// sockets. The socket's timeout bounds the whole call.
    fn wait<T: Send>(
        &self,
        py: Python<'_>,
        op: Op,
        mut f: impl FnMut(&mut DtlsSocket) -> dtls_reactor::Result<T> + Send,
    ) -> PyResult<T> {
        let inner = &self.inner;
        py.allow_threads(|| -> Res<T> {
            let mut deadline: Option<Option<Instant>> = None;
            loop {
                let (ready, rest) = {
                    let mut g = lock(inner);
                    let s = g.as_mut().ok_or_else(closed)?;
                    if s.is_nonblocking() {
                        return f(s).map_err(Failure::from);
                    }
                    let dl = *deadline.get_or_insert_with(|| {
                        let t = match op {
                            Op::Read => s.read_timeout(),
                            Op::Write => s.write_timeout(),
                        };
                        t.map(|t| Instant::now() + t)
                    });
                    s.set_nonblocking(true)?;
                    let r = f(s);
                    s.set_nonblocking(false)?;
                    match r {
                        Err(Error::WouldBlock) => {}
                        Ok(v) if matches!(op, Op::Write) => {
                            // A record the full socket buffer kept: out now,
                            // as a blocking send would have sent it.
                            std::io::Write::flush(s)?;
                            return Ok(v);
                        }
                        other => return other.map_err(Failure::from),
                    }
                    if s.has_pending() {
                        continue;
                    }
                    let now = Instant::now();
                    if dl.is_some_and(|d| now >= d) {
                        return Err(Failure::from(match op {
                            _ if s.is_handshaking() => Error::HandshakeTimeout,
                            Op::Read => Error::ReadTimeout,
                            Op::Write => Error::WriteTimeout,
                        }));
                    }
                    match s.readiness() {
                        Some(r) => (r, dl.map(|d| d - now)),
                        None => continue,
                    }
                };
                // The socket is let go while this thread waits.
                ready.wait(rest)?;
            }
        })
        .map_err(PyErr::from)
    }

    /// Runs `f` on the socket with the GIL released.
    fn net<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut DtlsSocket) -> dtls_reactor::Result<T> + Send,
    ) -> PyResult<T> {
        let inner = &self.inner;
        py.allow_threads(|| match lock(inner).as_mut() {
            Some(s) => f(s).map_err(Failure::from),
            None => Err(closed()),
        })
        .map_err(PyErr::from)
    }

    /// Runs `f` (a call that never waits on the network) on the socket. The
    /// GIL is released while the lock is taken: a thread blocked in `recv`
    /// holds it, and may need the GIL to log.
    fn local<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut DtlsSocket) -> T + Send,
    ) -> PyResult<T> {
        let inner = &self.inner;
        py.allow_threads(|| match lock(inner).as_mut() {
            Some(s) => Ok(f(s)),
            None => Err(closed()),
        })
        .map_err(PyErr::from)
    }
}

#[pymethods]
impl Conn {
    /// Wraps (a duplicate of) a UDP socket's descriptor for the client side.
    #[staticmethod]
    #[pyo3(signature = (fd, config, server_name=None))]
    fn wrap_client(fd: RawFd, config: &PyConfig, server_name: Option<&str>) -> PyResult<Conn> {
        let cfg = config
            .client()
            .ok_or_else(|| PyValueError::new_err("a client configuration is needed"))?;
        let sock = dup_socket(fd)?;
        let s = DtlsSocket::wrap_client(sock, cfg, server_name).map_err(Failure::from)?;
        Ok(Conn::new(s))
    }

    /// Wraps the server side of a session again over an unwrapped transport.
    #[staticmethod]
    fn wrap_server(plain: &Plain, config: &PyConfig) -> PyResult<Conn> {
        let cfg = config
            .server()
            .ok_or_else(|| PyValueError::new_err("a server configuration is needed"))?;
        let t = plain.take()?;
        let s = DtlsSocket::wrap_server(t, cfg).map_err(Failure::from)?;
        Ok(Conn::new(s))
    }

    /// Runs the handshake to its end.
    fn handshake(&self, py: Python<'_>) -> PyResult<()> {
        self.wait(py, Op::Read, |s| s.handshake())
    }

    /// One datagram of plaintext, at most `n` bytes.
    fn recv<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let mut buf = vec![0u8; n];
        let got = self.wait(py, Op::Read, |s| s.recv(&mut buf))?;
        Ok(PyBytes::new(py, &buf[..got]))
    }

    /// Sends one datagram of plaintext; returns its length.
    fn send(&self, py: Python<'_>, data: Vec<u8>) -> PyResult<usize> {
        self.wait(py, Op::Write, |s| s.send(&data))
    }

    /// Sends close_notify and waits for the peer's.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.net(py, |s| s.shutdown())
    }

    /// Closes the session and returns the plain transport; the socket is
    /// unusable afterwards. When the exchange fails the error is raised and
    /// the session stays.
    fn unwrap(&self, py: Python<'_>) -> PyResult<Plain> {
        let inner = &self.inner;
        let r = py.allow_threads(|| -> Res<Transport> {
            let mut g = lock(inner);
            let s = g.take().ok_or_else(closed)?;
            match s.unwrap() {
                Ok(t) => Ok(t),
                Err(e) => {
                    let (err, s) = e.into_parts();
                    *g = Some(s);
                    Err(Failure::from(err))
                }
            }
        })?;
        Ok(Plain::new(r))
    }

    /// Drops the session without any exchange.
    fn close(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.allow_threads(|| drop(lock(inner).take()));
    }

    /// Whether `close` or `unwrap` ended this object.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        let inner = &self.inner;
        py.allow_threads(|| lock(inner).is_none())
    }

    fn fileno(&self, py: Python<'_>) -> RawFd {
        if self.closed(py) {
            -1
        } else {
            self.fd
        }
    }

    /// Read and write timeout of blocking calls (None: none).
    #[pyo3(signature = (secs))]
    fn set_timeout(&self, py: Python<'_>, secs: Option<f64>) -> PyResult<()> {
        let t = timeout_of(secs)?;
        self.local(py, |s| {
            s.set_read_timeout(t)
                .and_then(|_| s.set_write_timeout(t))
                .map_err(Failure::from)
        })?
        .map_err(PyErr::from)
    }

    fn set_nonblocking(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        self.local(py, |s| s.set_nonblocking(on).map_err(Failure::from))?
            .map_err(PyErr::from)
    }

    /// Plaintext bytes readable without new input.
    fn pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.local(py, |s| s.pending())
    }

    /// Whether a call can progress without the descriptor becoming readable.
    fn has_pending(&self, py: Python<'_>) -> PyResult<bool> {
        self.local(py, |s| s.has_pending())
    }

    /// Seconds until the DTLS timer needs `handle_timeout`, or None.
    fn next_timeout(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        self.local(py, |s| s.next_timeout().map(|d| d.as_secs_f64()))
    }

    /// Retransmits when the DTLS timer expired (True) or does nothing.
    fn handle_timeout(&self, py: Python<'_>) -> PyResult<bool> {
        self.net(py, |s| s.handle_timeout())
    }

    fn is_established(&self, py: Python<'_>) -> PyResult<bool> {
        self.local(py, |s| s.is_established())
    }

    /// The peer's certificate in DER, if one was presented.
    fn peer_certificate_der<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let der = self.local(py, |s| s.peer_certificate().map(|c| c.to_der()))?;
        Ok(der.map(|d| PyBytes::new(py, &d)))
    }

    /// The peer's certificate decoded as `ssl.SSLSocket.getpeercert()` does.
    fn peer_certificate_dict<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let c = self.local(py, |s| s.peer_certificate())?;
        c.map(|c| cert_dict(py, c.x509())).transpose()
    }

    /// Whether OpenSSL verified the peer's certificate against the CAs.
    fn peer_verified(&self, py: Python<'_>) -> PyResult<bool> {
        self.local(py, |s| s.connection().is_some_and(|c| c.peer_verified()))
    }

    /// The chain the peer sent, leaf first: DER or dicts.
    #[pyo3(signature = (binary_form=false))]
    fn peer_certificate_chain<'py>(
        &self,
        py: Python<'py>,
        binary_form: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let chain = self.local(py, |s| s.peer_certificate_chain())?;
        let out = PyList::empty(py);
        for c in chain {
            if binary_form {
                out.append(PyBytes::new(py, &c.to_der()))?;
            } else {
                out.append(cert_dict(py, c.x509())?)?;
            }
        }
        Ok(out)
    }

    /// `(name, protocol, secret bits)` once established, else None.
    fn cipher(&self, py: Python<'_>) -> PyResult<Option<(String, String, i32)>> {
        self.local(py, |s| {
            let name = s.cipher()?;
            let version = s.version()?.to_string();
            let bits = s.connection().and_then(|c| c.cipher_bits()).unwrap_or(0);
            Some((name, version, bits))
        })
    }

    /// The negotiated protocol ("DTLSv1.2", "DTLSv1"), once established.
    fn version(&self, py: Python<'_>) -> PyResult<Option<&'static str>> {
        self.local(py, |s| s.version())
    }

    fn getsockname(&self, py: Python<'_>) -> PyResult<PyObject> {
        let a = self.local(py, |s| s.local_addr())?.map_err(Failure::from)?;
        addr_tuple(py, a)
    }

    fn getpeername(&self, py: Python<'_>) -> PyResult<PyObject> {
        let a = self.local(py, |s| s.peer_addr())?.map_err(Failure::from)?;
        addr_tuple(py, a)
    }

    /// Largest plaintext datagram one send can carry.
    fn data_mtu(&self, py: Python<'_>) -> PyResult<usize> {
        self.local(py, |s| s.data_mtu())
    }
}

/// The plain UDP transport of an unwrapped session: a client's connected
/// socket or a server connection's demux link (which, with Router, sends
/// through the listening socket). Sends and receives share the transport (a
/// read lock): one thread can send while another waits in `recv`. The GIL
/// is released in every method that takes the lock.
#[pyclass(module = "dtls._native", frozen)]
pub(crate) struct Plain {
    inner: RwLock<Option<Transport>>,
    fd: RawFd,
}

impl Plain {
    fn new(t: Transport) -> Plain {
        Plain {
            fd: t.as_raw_fd(),
            inner: RwLock::new(Some(t)),
        }
    }

    fn take(&self) -> Res<Transport> {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(closed)
    }

    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Transport) -> std::io::Result<T> + Send,
    ) -> PyResult<T> {
        let inner = &self.inner;
        py.allow_threads(|| {
            let g = inner.read().unwrap_or_else(|p| p.into_inner());
            let t = g.as_ref().ok_or_else(closed)?;
            f(t).map_err(Failure::from)
        })
        .map_err(PyErr::from)
    }
}

#[pymethods]
impl Plain {
    /// True for a server connection's link (else a client's socket).
    #[getter]
    fn is_link(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |t| Ok(matches!(t, Transport::Link(_))))
    }

    fn fileno(&self) -> RawFd {
        self.fd
    }

    fn send(&self, py: Python<'_>, data: Vec<u8>) -> PyResult<usize> {
        self.with(py, |t| t.send(&data))
    }

    fn recv<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyBytes>> {
        let mut buf = vec![0u8; n];
        let got = self.with(py, |t| t.recv(&mut buf))?;
        Ok(PyBytes::new(py, &buf[..got]))
    }

    #[pyo3(signature = (secs))]
    fn set_timeout(&self, py: Python<'_>, secs: Option<f64>) -> PyResult<()> {
        match secs {
            Some(0.0) => self.with(py, |t| t.set_nonblocking(true)),
            _ => {
                let d = timeout_of(secs)?;
                self.with(py, |t| {
                    t.set_nonblocking(false)?;
                    t.set_read_timeout(d)?;
                    t.set_write_timeout(d)
                })
            }
        }
    }

    fn getsockname(&self, py: Python<'_>) -> PyResult<PyObject> {
        let a = self.with(py, |t| t.local_addr())?;
        addr_tuple(py, a)
    }

    fn getpeername(&self, py: Python<'_>) -> PyResult<PyObject> {
        let a = self.with(py, |t| t.peer_addr())?;
        addr_tuple(py, a)
    }

    /// Drops the transport (a link detaches from its listener).
    fn close(&self, py: Python<'_>) {
        let inner = &self.inner;
        py.allow_threads(|| drop(inner.write().unwrap_or_else(|p| p.into_inner()).take()));
    }
}
