//! `fw_headers`: response headers to write, by name and value, in order.

use std::ffi::{CString, c_char};

use crate::error::{failure, fw_result};
use crate::ffi::{Castable, Out, c_string, free_handle, try_ref};
use crate::panic::guard;

/// Response headers: a decision's (`fw_check_with_headers`, which the caller frees), or an HTTP
/// exchange's (`fw_http_exchange_headers`, lent by the exchange). Immutable; readable from any
/// thread.
pub struct fw_headers {
    _private: [u8; 0],
}

/// The value behind an `fw_headers`: (name, value) pairs as NUL-terminated strings.
#[derive(Debug, Default)]
pub(crate) struct HeadersBox(Vec<(CString, CString)>);

impl HeadersBox {
    /// The core's headers, names as the core spells them.
    pub(crate) fn new(headers: Vec<(&'static str, String)>) -> Self {
        HeadersBox(
            headers
                .into_iter()
                .map(|(n, v)| (c_string(n.to_owned()), c_string(v)))
                .collect(),
        )
    }
}

impl Castable for fw_headers {
    type RustType = HeadersBox;
}

/// How many headers there are.
///
/// # Safety
/// `headers` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_headers_len(headers: *const fw_headers, out: *mut usize) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (headers, out) = unsafe { (try_ref(headers, "headers")?, Out::new(out, "out")?) };
        out.write(headers.0.len());
        Ok(())
    })
}

/// Header `index`: its name and value, NUL-terminated, owned by `headers`.
///
/// # Safety
/// `headers` is a live handle; `name` and `value` are valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_headers_get(
    headers: *const fw_headers,
    index: usize,
    name: *mut *const c_char,
    value: *mut *const c_char,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (all, name, value) = unsafe {
            (
                try_ref(headers, "headers")?,
                Out::new(name, "name")?,
                Out::new(value, "value")?,
            )
        };
        let (n, v) = all.0.get(index).ok_or_else(|| {
            failure(
                fw_result::FW_INVALID_ARGUMENT,
                format!("no header {index}: there are {}", all.0.len()),
            )
        })?;
        name.write(n.as_ptr());
        value.write(v.as_ptr());
        Ok(())
    })
}

/// Frees headers from `fw_check_with_headers` (NULL does nothing). An exchange's headers are
/// the exchange's: they go with `fw_http_exchange_free`.
///
/// # Safety
/// `headers` is NULL or a live handle from `fw_check_with_headers`, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_headers_free(headers: *mut fw_headers) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(headers) }
}
