//! The conversions every entry point makes at the boundary, each in one place: handles to the
//! Rust values behind them (`Castable`), string arguments, out-pointers, and the strings handed
//! to the caller.

use std::ffi::{CStr, CString, c_char};
use std::fmt::Display;
use std::ptr::NonNull;

use crate::error::{Failure, failure, fw_result};
use crate::panic::guard;

/// An opaque C handle and the Rust value it stands for. A handle is a pointer to that value:
/// one the library boxed and handed out (`to_handle`), or one another handle owns and lends.
pub(crate) trait Castable {
    /// The value behind the handle.
    type RustType;
}

/// Boxes `value` and hands it out as a handle, to be released by `free_handle` or
/// `try_take`.
pub(crate) fn to_handle<C: Castable>(value: C::RustType) -> *mut C {
    Box::into_raw(Box::new(value)).cast::<C>()
}

/// The value behind a handle argument; NULL is `FW_NULL_ARGUMENT`, naming `name`.
///
/// # Safety
/// `handle` is NULL or a live handle of type `C` that stays live for `'a`.
pub(crate) unsafe fn try_ref<'a, C: Castable>(
    handle: *const C,
    name: impl Display,
) -> Result<&'a C::RustType, Failure> {
    non_null(handle, name)?;
    // SAFETY: a live handle points to its `RustType`.
    Ok(unsafe { &*handle.cast::<C::RustType>() })
}

/// Takes back the box behind a handle argument (the handle is consumed); NULL is
/// `FW_NULL_ARGUMENT`.
///
/// # Safety
/// `handle` is NULL or a live handle from `to_handle`, not used afterwards.
pub(crate) unsafe fn try_take<C: Castable>(
    handle: *mut C,
    name: impl Display,
) -> Result<Box<C::RustType>, Failure> {
    non_null(handle, name)?;
    // SAFETY: a live handle from `to_handle` is a leaked `Box<RustType>`.
    Ok(unsafe { Box::from_raw(handle.cast::<C::RustType>()) })
}

/// Frees a handle from `to_handle` (NULL does nothing), behind the panic boundary.
///
/// # Safety
/// `handle` is NULL or a live handle from `to_handle`, freed once.
pub(crate) unsafe fn free_handle<C: Castable>(handle: *mut C) {
    let _ = guard(|| {
        if !handle.is_null() {
            // SAFETY: see the function's contract.
            drop(unsafe { try_take(handle, "handle") }?);
        }
        Ok(())
    });
}

/// An out-pointer argument, checked non-null before any work is done and written only once
/// the call has succeeded.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// A required out-pointer; NULL is `FW_NULL_ARGUMENT`, naming `name`.
    ///
    /// # Safety
    /// `p` is NULL or valid for a write of a `T` until the entry point returns; the `Out` is
    /// not kept beyond it.
    pub(crate) unsafe fn new(p: *mut T, name: impl Display) -> Result<Self, Failure> {
        NonNull::new(p).map(Out).ok_or_else(|| null(name))
    }

    /// An optional out-pointer (NULL is `None`).
    ///
    /// # Safety
    /// As [`Out::new`].
    pub(crate) unsafe fn optional(p: *mut T) -> Option<Self> {
        NonNull::new(p).map(Out)
    }

    /// Writes the result (what was there before is the caller's garbage: not dropped).
    pub(crate) fn write(self, value: T) {
        // SAFETY: valid for a write, by `new`'s contract.
        unsafe { self.0.as_ptr().write(value) }
    }
}

fn null(name: impl Display) -> Failure {
    failure(fw_result::FW_NULL_ARGUMENT, format!("{name} is NULL"))
}

/// `FW_NULL_ARGUMENT` when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T, name: impl Display) -> Result<(), Failure> {
    if p.is_null() { Err(null(name)) } else { Ok(()) }
}

/// A required string argument: NULL is `FW_NULL_ARGUMENT`, invalid UTF-8 `FW_INVALID_UTF8`.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn text<'a>(p: *const c_char, name: impl Display) -> Result<&'a str, Failure> {
    non_null(p, &name)?;
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|e| {
        failure(
            fw_result::FW_INVALID_UTF8,
            format!("{name} is not UTF-8: {e}"),
        )
    })
}

/// An optional string argument (NULL is `None`).
///
/// # Safety
/// As [`text`].
pub(crate) unsafe fn optional<'a>(
    p: *const c_char,
    name: impl Display,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { text(p, name) }.map(Some)
    }
}

/// `text` as a C string; a NUL inside (never in what the core writes) becomes a space.
pub(crate) fn c_string(text: String) -> CString {
    CString::new(text.replace('\0', " ")).unwrap_or_default()
}

/// Copies `text` and a NUL into `buf` (`len` bytes), writing the length without the NUL to
/// `out_len` either way; `FW_BUFFER_TOO_SMALL` when it does not fit.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes; `out_len` is NULL or valid.
pub(crate) unsafe fn copy_out(
    text: &[u8],
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> Result<(), Failure> {
    // SAFETY: see the function's contract.
    let out_len = unsafe { Out::new(out_len, "out_len") }?;
    out_len.write(text.len());
    if buf.is_null() || len < text.len() + 1 {
        return Err(failure(
            fw_result::FW_BUFFER_TOO_SMALL,
            format!("{} bytes are needed (with the NUL)", text.len() + 1),
        ));
    }
    // SAFETY: `buf` holds at least `text.len() + 1` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    Ok(())
}

/// Hands a new string to the caller (released with `fw_string_free`), and its length without
/// the NUL when `out_len` is given.
pub(crate) fn give_string(text: String, out: Out<*mut c_char>, out_len: Option<Out<usize>>) {
    let text = c_string(text);
    if let Some(out_len) = out_len {
        out_len.write(text.as_bytes().len());
    }
    out.write(text.into_raw());
}

/// The body of every function that hands the caller a new string made from an engine
/// (`fw_report_json`, `fw_prometheus`, the HTTP layer's header names, the access lists): the
/// arguments checked, `make`'s text written to `out` (and its length to `out_len`).
///
/// # Safety
/// `engine` is NULL or a live handle; `out` is NULL or valid for a write; `out_len` is NULL or
/// valid.
pub(crate) unsafe fn engine_string(
    engine: *const crate::engine::fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
    make: impl FnOnce(&floodwall_core::Engine) -> String,
) -> crate::error::fw_result {
    crate::panic::guard(|| {
        // SAFETY: see the function's contract.
        let (out, out_len, engine) = unsafe {
            (
                Out::new(out, "out")?,
                Out::optional(out_len),
                try_ref(engine, "engine")?,
            )
        };
        give_string(make(engine), out, out_len);
        Ok(())
    })
}
