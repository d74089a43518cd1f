//! Borrowing a Python `str` as `&str` without copying it.
//!
//! The wheel targets the stable ABI of Python 3.9 (`abi3-py39`), where PyO3 reads a `str`
//! through a temporary `bytes` copy: on a `check` with three string arguments that copy was
//! most of the call (≈ 100 ns per argument, measured with `bench/compare.py`). CPython has
//! exported `PyUnicode_AsUTF8AndSize` with the same signature since 3.3 and made it part of the
//! stable ABI in 3.10; calling it on 3.9 is what every non-abi3 extension does. It returns the
//! string's UTF-8 form, cached inside the `str` object and immutable for the object's life.

#![allow(unsafe_code)]

use std::os::raw::c_char;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi::{Py_ssize_t, PyObject};
use pyo3::prelude::*;
use pyo3::types::PyString;

unsafe extern "C" {
    fn PyUnicode_AsUTF8AndSize(unicode: *mut PyObject, size: *mut Py_ssize_t) -> *const c_char;
}

/// The UTF-8 text of `value`, borrowed for as long as `value` is; `what` names the argument in
/// the error raised for anything that is not a `str` (or for a `str` with lone surrogates,
/// which has no UTF-8 form).
pub(crate) fn borrow_str<'a>(value: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    let string = value.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a str, not {}",
            value
                .get_type()
                .name()
                .map_or_else(|_| "an object".to_owned(), |n| n.to_string())
        ))
    })?;
    let mut size: Py_ssize_t = 0;
    // SAFETY: `string` is a live `str` (checked above) and the interpreter is attached (we
    // hold a `Bound`). On success the returned buffer is owned by the `str` object, holds
    // `size` bytes of valid UTF-8 and is never changed or freed while the object lives; the
    // returned slice borrows `value`, which keeps the object alive.
    unsafe {
        let data = PyUnicode_AsUTF8AndSize(string.as_ptr(), &mut size);
        if data.is_null() {
            let cause = PyErr::fetch(string.py());
            let err = PyTypeError::new_err(format!("{what} is not valid UTF-8 text"));
            err.set_cause(string.py(), Some(cause));
            return Err(err);
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        Ok(std::str::from_utf8_unchecked(bytes))
    }
}

/// [`borrow_str`] for an optional argument: `None` (absent or Python's `None`) stays `None`.
pub(crate) fn borrow_opt<'a>(
    value: Option<&'a Bound<'_, PyAny>>,
    what: &str,
) -> PyResult<Option<&'a str>> {
    match value {
        Some(v) if !v.is_none() => borrow_str(v, what).map(Some),
        _ => Ok(None),
    }
}
