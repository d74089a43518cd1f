//! What happened: the monitoring report, the Prometheus text, responses a host records
//! itself, and `fw_string_free` for the strings this library hands over.

use std::ffi::{CString, c_char};
use std::time::Duration;

use floodwall_core::Timestamp;

use crate::engine::fw_engine;
use crate::error::{failure, fw_result};
use crate::ffi::{engine_string, text, try_ref};
use crate::panic::guard;

/// The engine's monitoring report as JSON, in a new string the caller frees with
/// `fw_string_free`; its length (without the NUL) goes to `out_len` unless that is NULL.
///
/// The report (the same document in every binding, keys in snake_case): `generated_at_ms`,
/// `horizon_minutes`, `source` (`memory`), `store_kind`, `store_failure` (null when healthy),
/// `per_minute` (each minute of the horizon that saw traffic, oldest first) and `peaks` (the
/// busiest minutes) — each minute `start_ms`, `requests`, `admitted`, `rate_limited`,
/// `auth_rejected`, `failed`, `denied` (a deny list's 403s), `shadow_limited` (admitted
/// requests a rule in shadow mode would have denied), `allowlisted`, `blocked` (rate-limited
/// requests of a blocked key), `upstream_calls`,
/// `upstream_failures`, `breaker_trips`, `responses`, `client_errors`, `server_errors`,
/// `latency_p50_us`, `latency_p99_us`, `mean_latency_us`, `max_latency_us` —, `totals` (the
/// same counters since the engine started), the top lists `top_endpoints`, `top_subjects`,
/// `breaches_by_subject`, `breaches_by_role`, `breaches_by_endpoint`, `breaches_by_rule`,
/// `shadow_breaches_by_rule`, `upstream_failures`, `breaker_trips` (each entry `key`, `count`,
/// `error`), the counts by name `auth_rejections`, `errors`, `stores`, `status_classes`, the
/// histogram `response_latency` (`bounds_us`, `counts`, `sum_us`, `count`), `sink` (null
/// without a Redis Streams sink) and `warnings` (what looks wrong with the setup, each
/// `code`, `message`, `count`, `first_seen_ms`).
///
/// `now_ms` (ms since the Unix epoch) is when the per-minute series ends; a negative value
/// means the engine's clock. Computing a report merges the aggregate's shards: call it for a
/// dashboard or a scrape, not per request.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_report_json(
    engine: *const fw_engine,
    now_ms: i64,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe {
        engine_string(engine, out, out_len, |e| {
            let report = if now_ms >= 0 {
                e.report_at(Timestamp::from_millis(now_ms as u64))
            } else {
                e.report()
            };
            report.to_json()
        })
    }
}

/// The engine's counters and its upstreams' state in the Prometheus text format (version
/// 0.0.4: serve it with `Content-Type: text/plain; version=0.0.4; charset=utf-8`), in a new
/// string the caller frees with `fw_string_free`; its length (without the NUL) goes to
/// `out_len` unless that is NULL.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `out_len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_prometheus(
    engine: *const fw_engine,
    out: *mut *mut c_char,
    out_len: *mut usize,
) -> fw_result {
    // SAFETY: forwarded (see the function's contract).
    unsafe { engine_string(engine, out, out_len, |e| e.prometheus()) }
}

/// Frees a string this library handed over — from `fw_report_json`, `fw_prometheus`,
/// `fw_engine_http_headers`, `fw_engine_http_response_headers`,
/// `fw_engine_access_lists_json`, `fw_engine_reload` or `fw_engine_store_health`'s reason
/// (NULL does nothing). The caller may read the string and write within it, but must not
/// change its length.
///
/// # Safety
/// `text` is NULL or such a string, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_string_free(text: *mut c_char) {
    let _ = guard(|| {
        if !text.is_null() {
            // SAFETY: such a string is a `CString` given away by `give_string`.
            drop(unsafe { CString::from_raw(text) });
        }
        Ok(())
    });
}

/// Records how the host answered a request, for the report's response counts, status
/// classes and latency percentiles: `status` (100 to 999) and `latency_us`, the time from the
/// request's arrival to its answer in microseconds. `path`'s query string is ignored; the
/// time of the answer is the engine's clock. Cheap enough for every request (one short lock).
/// A request that went through `fw_http` is recorded by `fw_http_finish`: do not record it
/// again here.
///
/// # Safety
/// `engine` is a live handle; `method` and `path` are NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_record_response(
    engine: *const fw_engine,
    method: *const c_char,
    path: *const c_char,
    status: u32,
    latency_us: u64,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, method, path) = unsafe {
            (
                try_ref(engine, "engine")?,
                text(method, "method")?,
                text(path, "path")?,
            )
        };
        let status = u16::try_from(status)
            .ok()
            .filter(|s| floodwall_core::monitor::HTTP_STATUSES.contains(s))
            .ok_or_else(|| {
                failure(
                    fw_result::FW_INVALID_ARGUMENT,
                    format!("status {status} is not an HTTP status (100 to 999)"),
                )
            })?;
        engine.record_response(method, path, status, Duration::from_micros(latency_us));
        Ok(())
    })
}
