//! `fw_engine`: building one from a configuration, freeing it, and what it was built with.

use std::ffi::c_char;

use floodwall_core::Engine;

use crate::error::{failure, fw_result};
use crate::ffi::{Castable, Out, copy_out, free_handle, give_string, text, to_handle, try_ref};
use crate::panic::guard;

/// An engine: compiled rules, a store, keys, upstreams. Thread-safe: any number of threads
/// may use one at once; it is freed once, when no call is using it.
pub struct fw_engine {
    _private: [u8; 0],
}

impl Castable for fw_engine {
    type RustType = Engine;
}

/// Builds an engine from the string argument `input` with `build`.
///
/// # Safety
/// `input` is NULL or NUL-terminated; `out` is NULL or valid for a write.
unsafe fn new_engine(
    input: *const c_char,
    name: &str,
    out: *mut *mut fw_engine,
    build: impl FnOnce(&str) -> Result<Engine, floodwall_core::Error>,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (out, input) = unsafe { (Out::new(out, "out")?, text(input, name)?) };
        out.write(to_handle(build(input)?));
        Ok(())
    })
}

/// Builds an engine from a TOML configuration (NUL-terminated).
///
/// # Safety
/// `toml` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_from_toml(
    toml: *const c_char,
    out: *mut *mut fw_engine,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { new_engine(toml, "toml", out, Engine::from_toml) }
}

/// Builds an engine from a JSON configuration of the same structure.
///
/// # Safety
/// As `fw_engine_from_toml`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_from_json(
    json: *const c_char,
    out: *mut *mut fw_engine,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { new_engine(json, "json", out, Engine::from_json) }
}

/// Builds an engine from a configuration file (JSON if it ends in `.json`, TOML otherwise).
///
/// # Safety
/// As `fw_engine_from_toml`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_from_file(
    path: *const c_char,
    out: *mut *mut fw_engine,
) -> fw_result {
    // SAFETY: forwarded contract.
    unsafe { new_engine(path, "path", out, |p| Engine::from_file(p)) }
}

/// Frees an engine (NULL does nothing). No other call may be using it.
///
/// # Safety
/// `engine` is NULL or a live handle from this library, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_free(engine: *mut fw_engine) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(engine) }
}

/// Copies the name of rule `index` into `buf`; `out_len` receives its length.
///
/// # Safety
/// `engine` is a live handle; `buf` is NULL or valid for `len` bytes; `out_len` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_rule_name(
    engine: *const fw_engine,
    index: usize,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let engine = unsafe { try_ref(engine, "engine") }?;
        let rule = engine.rules().get(index).ok_or_else(|| {
            failure(
                fw_result::FW_INVALID_ARGUMENT,
                format!("no rule {index}: the engine has {}", engine.rules().len()),
            )
        })?;
        // SAFETY: see the function's contract.
        unsafe { copy_out(rule.name().as_bytes(), buf, len, out_len) }
    })
}

/// Whether the engine has an `[auth]` section, i.e. can verify bearer tokens: a host's
/// middleware uses `FW_HTTP_GUARD` then, and `FW_HTTP_RATE_LIMIT` otherwise.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_has_auth(engine: *const fw_engine, out: *mut bool) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, out) = unsafe { (try_ref(engine, "engine")?, Out::new(out, "out")?) };
        out.write(engine.authenticator().is_some());
        Ok(())
    })
}

/// Reloads the engine's whole configuration while other threads keep deciding: `source` is a
/// TOML text (`format` "toml"), a JSON text ("json") or a file's path ("file": JSON if it ends
/// in `.json`, TOML otherwise). Rules, `[http]`, `[headers]`, `[auth]`, services and the
/// monitor's stream change at once; an unchanged rule keeps its counters, a changed one
/// starts afresh; unchanged upstreams keep their breakers and in-flight counts. On success
/// the summary of what changed goes to `out` as JSON (`{"rules":[{"name","change"}],
/// "upstreams":{"kept","started","removed"},"auth_changed","generations"}`), a new string the
/// caller frees with `fw_string_free`, its length to `out_len` unless that is NULL. An
/// invalid configuration changes nothing and its error names the field. Rule indexes and
/// names (`fw_engine_rule_name`) follow the new rules from the next call on.
///
/// # Safety
/// `engine` is a live handle; `source` and `format` are NUL-terminated strings; `out` is
/// valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_reload(
    engine: *const fw_engine,
    source: *const c_char,
    format: *const c_char,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, source, format, out, out_len) = unsafe {
            (
                try_ref(engine, "engine")?,
                text(source, "source")?,
                text(format, "format")?,
                Out::new(out, "out")?,
                Out::optional(out_len),
            )
        };
        let summary = match format {
            "toml" => engine.reload_toml(source)?,
            "json" => engine.reload_json(source)?,
            "file" => engine.reload_file(source)?,
            other => {
                return Err(failure(
                    fw_result::FW_INVALID_ARGUMENT,
                    format!("format {other:?} is not one of \"toml\", \"json\", \"file\""),
                ));
            }
        };
        give_string(summary.to_json(), out, out_len);
        Ok(())
    })
}
