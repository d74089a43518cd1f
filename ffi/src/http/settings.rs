//! What a host reads of an engine's HTTP layer — the request and response headers it reads —
//! and the allow and deny lists, read and replaced while the engine serves.

use std::ffi::c_char;

use floodwall_core::http::AccessLists;

use crate::engine::fw_engine;
use crate::error::fw_result;
use crate::ffi::{engine_string, text, try_ref};
use crate::panic::guard;

/// The request headers the HTTP layer reads, lower-case, separated by `\n` (at least
/// `authorization`, `x-forwarded-for` and `forwarded`, then the headers rules are keyed on),
/// in a new string the caller frees with `fw_string_free`; its length (without the NUL) goes
/// to `out_len` unless that is NULL. A host hands `fw_http` only these. The allow and deny
/// lists add the headers they name: ask again after `fw_engine_set_access_lists_json`.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_http_headers(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe { engine_string(engine, out, out_len, |e| e.http_headers().join("\n")) }
}

/// The response headers `fw_http_finish` reads (the rules' `cost_header`s), lower-case, one
/// per line — an empty string when no rule has one — in a new string the caller frees with
/// `fw_string_free`; its length (without the NUL) goes to `out_len` unless that is NULL.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_http_response_headers(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe {
        engine_string(engine, out, out_len, |e| {
            e.http_response_headers().join("\n")
        })
    }
}

/// The allow and deny lists in force, as JSON (`{"allow":{"addresses":[…],"subjects":[…],
/// "roles":[…],"headers":{…}},"deny":{…}}`), in a new string the caller frees with
/// `fw_string_free`; its length (without the NUL) goes to `out_len` unless that is NULL.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_access_lists_json(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe { engine_string(engine, out, out_len, |e| e.access_lists().to_json()) }
}

/// Replaces the allow and deny lists while the engine serves, from JSON of the shape
/// `fw_engine_access_lists_json` gives (a list left out is emptied); requests decided from then
/// on see the new lists. A document that does not fit, or an entry that is not an address, a
/// network or a header name, is `FW_INVALID_CONFIG` naming it (`deny.addresses[2]`), and the
/// lists in force are kept.
///
/// # Safety
/// `engine` is a live handle; `json` is a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_set_access_lists_json(
    engine: *const fw_engine,
    json: *const c_char,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, json) = unsafe { (try_ref(engine, "engine")?, text(json, "json")?) };
        engine.set_access_lists(&AccessLists::from_json(json)?)?;
        Ok(())
    })
}
