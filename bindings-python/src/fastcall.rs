//! `Engine.check` through CPython's "fastcall with keywords" convention.
//!
//! The wheel targets the stable ABI of Python 3.9, where PyO3 defines methods with the
//! classic convention: every call with keyword arguments builds a `dict` for them, and PyO3
//! then walks it. On `check` — the call a server makes on every request — that was a third of
//! the time spent in the binding (≈ 100 ns of ≈ 300, measured with `bench/compare.py` against
//! an `abi3-py310` build, which PyO3 gives the fast convention). CPython has supported
//! `METH_FASTCALL | METH_KEYWORDS` since 3.7 with one signature and flag value, and made them
//! part of the stable ABI in 3.10, so this module defines `check` that way by hand and
//! installs it on the class when the module loads. Arguments arrive as an array and a tuple of
//! keyword names; nothing is allocated to read them.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::null_mut;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi::{Py_ssize_t, PyObject, PyTypeObject};
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::engine::{CheckArgs, Engine, check};
use crate::text::borrow_str;

/// `METH_FASTCALL` and `METH_KEYWORDS` (Include/methodobject.h, unchanged since 3.7).
const METH_FASTCALL: c_int = 0x0080;
const METH_KEYWORDS: c_int = 0x0002;

type FastWithKeywords = unsafe extern "C" fn(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject;

/// `PyMethodDef` with its function-pointer union narrowed to the one variant used here.
#[repr(C)]
struct MethodDef {
    name: *const c_char,
    meth: FastWithKeywords,
    flags: c_int,
    doc: *const c_char,
}

// SAFETY: the definition is immutable static data (C strings and a function pointer).
unsafe impl Sync for MethodDef {}

/// The text before `--` is the signature `inspect.signature` reads.
const CHECK_DOC: &CStr = c"check($self, /, *, subject=None, role=None, method=None, path=None, ip=None, cost=1, headers=None, now_ms=None)
--

Decides whether a request may pass, consuming `cost` from every matching limit when all of
them admit it (all or nothing). `method` defaults to GET and `path` to /; `headers` is a
mapping for rules keyed on a header; `now_ms` (ms since the Unix epoch) replaces the clock.
On Redis the call releases the interpreter while it waits.";

static CHECK_DEF: MethodDef = MethodDef {
    name: c"check".as_ptr(),
    meth: check_fastcall,
    flags: METH_FASTCALL | METH_KEYWORDS,
    doc: CHECK_DOC.as_ptr(),
};

unsafe extern "C" {
    fn PyDescr_NewMethod(ty: *mut PyTypeObject, def: *mut MethodDef) -> *mut PyObject;
}

/// Installs `check` on the native `Engine` class.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let ty = py.get_type::<Engine>();
    // SAFETY: `ty` is a live type object and `CHECK_DEF` lives for the whole process, as a
    // method descriptor requires; the new reference is owned by the `Bound` built from it.
    let descriptor = unsafe {
        let raw = PyDescr_NewMethod(ty.as_type_ptr(), (&raw const CHECK_DEF).cast_mut());
        Bound::from_owned_ptr_or_err(py, raw)?
    };
    ty.setattr("check", descriptor)
}

const NAMES: [&str; 8] = [
    "subject", "role", "method", "path", "ip", "cost", "headers", "now_ms",
];

unsafe extern "C" fn check_fastcall(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: CPython calls a method with the interpreter attached.
    let py = unsafe { Python::assume_attached() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: CPython passes a live `self` (an instance of the class, checked by the
        // method descriptor), `nargs` positional arguments followed by one value per name in
        // `kwnames` (a tuple of str, or NULL), all borrowed for the length of the call.
        unsafe { check_call(py, slf, args, nargs, kwnames) }
    }));
    let result = match outcome {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic in floodwall".to_owned());
            Err(PanicException::new_err(message))
        }
    };
    match result {
        Ok(object) => object.into_ptr(),
        Err(err) => {
            err.restore(py);
            null_mut()
        }
    }
}

/// # Safety
/// As CPython calls a `METH_FASTCALL | METH_KEYWORDS` method (see [`check_fastcall`]).
unsafe fn check_call(
    py: Python<'_>,
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> PyResult<Py<PyAny>> {
    // SAFETY: see the caller.
    let slf = unsafe { Bound::from_borrowed_ptr(py, slf) };
    let slf = slf.cast::<Engine>()?;
    if nargs != 0 {
        return Err(PyTypeError::new_err(
            "Engine.check() takes keyword arguments only (subject=, role=, method=, path=, ip=, cost=, headers=, now_ms=)",
        ));
    }
    let mut values: [Option<Bound<'_, PyAny>>; 8] = Default::default();
    if !kwnames.is_null() {
        // SAFETY: see the caller.
        let names = unsafe { Bound::from_borrowed_ptr(py, kwnames) };
        let names = names.cast::<PyTuple>()?;
        for (i, name) in names.iter().enumerate() {
            let text = borrow_str(&name, "a keyword argument's name")?;
            let Some(slot) = NAMES.iter().position(|n| *n == text) else {
                return Err(PyTypeError::new_err(format!(
                    "Engine.check() got an unexpected keyword argument '{text}'"
                )));
            };
            // SAFETY: the values follow the positional ones, one per name.
            values[slot] = Some(unsafe { Bound::from_borrowed_ptr(py, *args.add(i)) });
        }
    }
    let [subject, role, method, path, ip, cost, headers, now_ms] = &values;
    let decision = check(
        slf,
        &CheckArgs {
            subject: subject.as_ref(),
            role: role.as_ref(),
            method: method.as_ref(),
            path: path.as_ref(),
            ip: ip.as_ref(),
            cost: cost.as_ref(),
            headers: headers.as_ref(),
            now_ms: now_ms.as_ref(),
        },
    )?;
    Ok(Py::new(py, decision)?.into_any())
}
