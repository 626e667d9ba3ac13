//! PyDTLS's `SSLContext` curve helpers: OpenSSL's built-in elliptic curves,
//! and NIST names (`P-256`) to NIDs and back. rust-openssl binds none of
//! the three functions.

use std::ffi::{c_char, c_int, CStr, CString};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

#[repr(C)]
struct EcBuiltinCurve {
    nid: c_int,
    comment: *const c_char,
}

extern "C" {
    fn EC_get_builtin_curves(r: *mut EcBuiltinCurve, nitems: usize) -> usize;
    fn EC_curve_nid2nist(nid: c_int) -> *const c_char;
    fn EC_curve_nist2nid(name: *const c_char) -> c_int;
}

fn static_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: OpenSSL returns static NUL-terminated strings here.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The NIDs of OpenSSL's built-in curves.
fn builtin_nids() -> Vec<c_int> {
    // SAFETY: a null array with 0 items asks for the count only.
    let n = unsafe { EC_get_builtin_curves(std::ptr::null_mut(), 0) };
    let mut v: Vec<EcBuiltinCurve> = (0..n)
        .map(|_| EcBuiltinCurve {
            nid: 0,
            comment: std::ptr::null(),
        })
        .collect();
    // SAFETY: `v` holds `n` writable entries.
    let got = unsafe { EC_get_builtin_curves(v.as_mut_ptr(), n) };
    v.truncate(got.min(n));
    v.into_iter().map(|c| c.nid).collect()
}

/// The available curves: short names (`prime256v1`, `secp384r1`...) or NIDs.
#[pyfunction]
pub(crate) fn ec_available(py: Python<'_>, as_name: bool) -> PyResult<PyObject> {
    let nids = builtin_nids();
    if !as_name {
        return Ok(nids.into_pyobject(py)?.into_any().unbind());
    }
    let names: Vec<String> = nids
        .into_iter()
        // SAFETY: OBJ_nid2sn takes any NID (null for an unknown one).
        .filter_map(|nid| static_str(unsafe { openssl_sys::OBJ_nid2sn(nid) }))
        .collect();
    Ok(names.into_pyobject(py)?.into_any().unbind())
}

/// The NID of a NIST curve name (`P-256`).
#[pyfunction]
pub(crate) fn ec_nist2nid(name: &str) -> PyResult<i32> {
    let c = CString::new(name).map_err(|_| PyValueError::new_err("NUL in a curve name"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let nid = unsafe { EC_curve_nist2nid(c.as_ptr()) };
    if nid == 0 {
        return Err(PyValueError::new_err(format!(
            "not a NIST curve name: {name}"
        )));
    }
    Ok(nid)
}

/// The NIST name of a curve's NID, if it has one.
#[pyfunction]
pub(crate) fn ec_nid2nist(nid: i32) -> Option<String> {
    // SAFETY: takes any NID; null for one without a NIST name.
    static_str(unsafe { EC_curve_nid2nist(nid) })
}
