//! X.509 certificates decoded into the dict `ssl.SSLSocket.getpeercert()`
//! returns (long attribute names, OpenSSL's date format).

use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

/// A name as a tuple of RDNs, each a tuple of `(long name, value)` pairs
/// (one pair per RDN: multi-valued RDNs are listed as single ones).
fn name_tuple<'py>(py: Python<'py>, name: &X509NameRef) -> PyResult<Bound<'py, PyTuple>> {
    let mut rdns = Vec::new();
    for e in name.entries() {
        let nid = e.object().nid();
        let key = match nid.long_name() {
            Ok(n) if nid != Nid::UNDEF => n.to_string(),
            _ => e.object().to_string(),
        };
        let value = match e.data().to_string() {
            Ok(s) => s,
            Err(_) => String::from_utf8_lossy(e.data().as_slice()).into_owned(),
        };
        rdns.push(PyTuple::new(py, [PyTuple::new(py, [key, value])?])?);
    }
    PyTuple::new(py, rdns)
}

/// An IPv6 address as CPython writes it (`0:0:0:0:0:0:0:1`).
fn ipv6_text(b: &[u8]) -> String {
    b.chunks(2)
        .map(|c| format!("{:X}", u16::from_be_bytes([c[0], c[1]])))
        .collect::<Vec<_>>()
        .join(":")
}

fn alt_names<'py>(py: Python<'py>, x: &X509) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(names) = x.subject_alt_names() else {
        return Ok(None);
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for g in names.iter() {
        if let Some(d) = g.dnsname() {
            out.push(("DNS".into(), d.into()));
        } else if let Some(ip) = g.ipaddress() {
            let text = match ip.len() {
                4 => format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]),
                16 => ipv6_text(ip),
                _ => "<invalid>".into(),
            };
            out.push(("IP Address".into(), text));
        } else if let Some(e) = g.email() {
            out.push(("email".into(), e.into()));
        } else if let Some(u) = g.uri() {
            out.push(("URI".into(), u.into()));
        }
    }
    Ok(Some(PyTuple::new(py, out)?))
}

/// `getpeercert()`'s dict for one certificate.
pub(crate) fn cert_dict<'py>(py: Python<'py>, x: &X509) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("subject", name_tuple(py, x.subject_name())?)?;
    d.set_item("issuer", name_tuple(py, x.issuer_name())?)?;
    d.set_item("version", x.version() + 1)?;
    let serial = x
        .serial_number()
        .to_bn()
        .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_default();
    d.set_item("serialNumber", serial)?;
    d.set_item("notBefore", x.not_before().to_string())?;
    d.set_item("notAfter", x.not_after().to_string())?;
    if let Some(san) = alt_names(py, x)? {
        d.set_item("subjectAltName", san)?;
    }
    Ok(d)
}

/// `dtls.x509.decode_cert`: a DER (or PEM) certificate as `getpeercert()`'s dict.
#[pyfunction]
pub(crate) fn decode_cert<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyDict>> {
    let b = data.as_bytes();
    let x = X509::from_der(b)
        .or_else(|_| X509::from_pem(b))
        .map_err(|e| PyValueError::new_err(format!("not a DER or PEM certificate: {e}")))?;
    cert_dict(py, &x)
}

/// A PEM certificate's DER bytes (`ssl.PEM_cert_to_DER_cert` without the ssl module).
#[pyfunction]
pub(crate) fn pem_to_der<'py>(py: Python<'py>, pem: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let x = X509::from_pem(pem)
        .map_err(|e| PyValueError::new_err(format!("not a PEM certificate: {e}")))?;
    let der = x
        .to_der()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &der))
}
