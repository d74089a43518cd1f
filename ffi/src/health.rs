//! Where the store stands: `fw_engine_store_health` — ok, degraded (Redis failing, the in-process
//! fallback deciding) or failing (Redis failing, `on_error` answering alone), since when, and
//! why.

use std::ffi::{CStr, c_char};

use floodwall_core::StoreState;

use crate::engine::fw_engine;
use crate::error::fw_result;
use crate::ffi::{Out, give_string, try_ref};
use crate::panic::guard;

/// Where the store stands.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fw_store_state {
    /// Deciding as configured: the memory store, or Redis answering.
    FW_STORE_OK = 0,
    /// Redis is failing and the in-process fallback decides (`on_error = "fallback"`): limits
    /// hold per process rather than across them.
    FW_STORE_DEGRADED = 1,
    /// Redis is failing and `on_error` (`allow`, `deny` or `error`) answers alone: no limit
    /// holds.
    FW_STORE_FAILING = 2,
}

/// The store's health, from `fw_engine_store_health`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fw_store_health {
    /// Where it stands (the `floodwall_store_state` gauge's value).
    pub state: fw_store_state,
    /// Since when, in milliseconds since the Unix epoch (the engine's clock).
    pub since_ms: u64,
    /// The kind of the last failure while not ok — `timeout`, `refused`, `out_of_memory`,
    /// `noscript`, `cluster_down` or `error` — a static string; NULL when ok.
    pub reason_kind: *const c_char,
}

/// `kind` (one of [`floodwall_core::StoreHealth::reason_kind`]'s) as a static C string.
fn static_kind(kind: &str) -> &'static CStr {
    match kind {
        "timeout" => c"timeout",
        "refused" => c"refused",
        "out_of_memory" => c"out_of_memory",
        "noscript" => c"noscript",
        "cluster_down" => c"cluster_down",
        _ => c"error",
    }
}

/// Where the engine's store stands, into `out`. When `reason` is not NULL, it receives the
/// last failure in words — a new string the caller frees with `fw_string_free` — or NULL when
/// the store is ok. Cheap (one short lock): a health check may call it on every probe.
///
/// # Safety
/// `engine` is a live handle; `out` is valid for a write; `reason` is NULL or valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_engine_store_health(
    engine: *const fw_engine,
    out: *mut fw_store_health,
    reason: *mut *mut c_char,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, out, reason) = unsafe {
            (
                try_ref(engine, "engine")?,
                Out::new(out, "out")?,
                Out::optional(reason),
            )
        };
        let health = engine.store_health();
        out.write(fw_store_health {
            state: match health.state {
                StoreState::Ok => fw_store_state::FW_STORE_OK,
                StoreState::Degraded => fw_store_state::FW_STORE_DEGRADED,
                StoreState::Failing => fw_store_state::FW_STORE_FAILING,
            },
            since_ms: health.since_ms,
            reason_kind: health
                .reason_kind
                .map_or(std::ptr::null(), |k| static_kind(k).as_ptr()),
        });
        if let Some(reason) = reason {
            match health.reason {
                Some(text) => give_string(text, reason, None),
                None => reason.write(std::ptr::null_mut()),
            }
        }
        Ok(())
    })
}
