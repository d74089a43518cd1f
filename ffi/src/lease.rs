//! Upstreams: `fw_pick` hands out an `fw_lease` on one, finished with the call's outcome;
//! `fw_upstreams_json` is their state.

use std::ffi::{CString, c_char};
use std::time::Duration;

use floodwall_core::{CallOutcome, Lease, UpstreamStatus};

use crate::engine::fw_engine;
use crate::error::{failure, fw_result};
use crate::ffi::{
    Castable, Out, c_string, copy_out, free_handle, text, to_handle, try_ref, try_take,
};
use crate::panic::guard;

/// How a call through an upstream ended.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fw_outcome {
    /// The upstream answered well.
    FW_OUTCOME_SUCCESS = 0,
    /// The upstream failed.
    FW_OUTCOME_FAILURE = 1,
    /// The call timed out (counted as a failure).
    FW_OUTCOME_TIMEOUT = 2,
}

/// A call in progress on one upstream. Finish it (`fw_lease_finish`) or free it
/// (`fw_lease_free`, counted as a failure) exactly once, from any one thread.
pub struct fw_lease {
    _private: [u8; 0],
}

/// The value behind an `fw_lease`.
#[derive(Debug)]
pub(crate) struct LeaseBox {
    lease: Lease,
    upstream: CString,
    url: CString,
}

impl Castable for fw_lease {
    type RustType = LeaseBox;
}

/// Picks an upstream of `service` for one call.
///
/// # Safety
/// `engine` is a live handle; `service` NUL-terminated; `out` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_pick(
    engine: *const fw_engine,
    service: *const c_char,
    out: *mut *mut fw_lease,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (out, engine, service) = unsafe {
            (
                Out::new(out, "out")?,
                try_ref(engine, "engine")?,
                text(service, "service")?,
            )
        };
        let lease = engine.pick(service)?;
        out.write(to_handle(LeaseBox {
            upstream: c_string(lease.upstream().to_owned()),
            url: c_string(lease.url().to_owned()),
            lease,
        }));
        Ok(())
    })
}

/// The lease's upstream name (NUL-terminated, owned by `lease`).
///
/// # Safety
/// `lease` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_upstream(
    lease: *const fw_lease,
    out: *mut *const c_char,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (lease, out) = unsafe { (try_ref(lease, "lease")?, Out::new(out, "out")?) };
        out.write(lease.upstream.as_ptr());
        Ok(())
    })
}

/// The lease's upstream URL (NUL-terminated, owned by `lease`).
///
/// # Safety
/// `lease` is a live handle; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_url(
    lease: *const fw_lease,
    out: *mut *const c_char,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (lease, out) = unsafe { (try_ref(lease, "lease")?, Out::new(out, "out")?) };
        out.write(lease.url.as_ptr());
        Ok(())
    })
}

/// Records how the call ended and how long it took (µs), and frees the lease. The lease is
/// consumed even when the outcome is invalid (then counted as a failure).
///
/// # Safety
/// `lease` is NULL or a live handle, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_finish(
    lease: *mut fw_lease,
    outcome: u32,
    latency_us: u64,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract; the lease is consumed here.
        let boxed = unsafe { try_take(lease, "lease") }?;
        let outcome = match outcome {
            0 => CallOutcome::Success,
            1 => CallOutcome::Failure,
            2 => CallOutcome::Timeout,
            other => {
                drop(boxed);
                return Err(failure(
                    fw_result::FW_INVALID_ARGUMENT,
                    format!("outcome {other} is not an fw_outcome; counted as a failure"),
                ));
            }
        };
        boxed
            .lease
            .finish(outcome, Duration::from_micros(latency_us));
        Ok(())
    })
}

/// Frees a lease without finishing it: the call counts as a failure (NULL does nothing).
///
/// # Safety
/// `lease` is NULL or a live handle, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_lease_free(lease: *mut fw_lease) {
    // SAFETY: forwarded contract.
    unsafe { free_handle(lease) }
}

/// Copies the state of `service`'s upstreams into `buf` as a JSON array: per upstream its
/// `name`, `url`, `weight`, `down`, breaker `state` (`closed`, `open`, `half_open`) and
/// `open_until_ms` (when open), `in_flight`, the breaker window's `failure_rate` and
/// `slow_call_rate`, and `calls`, `successes`, `failures`, `timeouts`, `mean_latency_us`,
/// `max_latency_us`.
///
/// # Safety
/// `engine` is a live handle; `service` NUL-terminated; `buf` NULL or valid for `len` bytes;
/// `out_len` valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_upstreams_json(
    engine: *const fw_engine,
    service: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, service) = unsafe { (try_ref(engine, "engine")?, text(service, "service")?) };
        let upstreams: Vec<serde_json::Value> = engine
            .upstreams(service)?
            .iter()
            .map(UpstreamStatus::to_json)
            .collect();
        let json = serde_json::Value::Array(upstreams).to_string();
        // SAFETY: see the function's contract.
        unsafe { copy_out(json.as_bytes(), buf, len, out_len) }
    })
}
