//! Per-key administration: what a key of a rule has left (`fw_inspect`), starting it afresh
//! (`fw_reset_key`), blocking it (`fw_block_key`), taking or giving back points
//! (`fw_penalize`, `fw_reward`), and a limit of its own for a while (`fw_set_key_limit`,
//! `fw_clear_key_limit`; rules with `key_limits = true`). On Redis each is one round trip,
//! seen by every process.

use std::time::Duration;

use floodwall_core::{KeyRef, Timestamp};

use crate::check::{fw_store, store_of};
use crate::engine::fw_engine;
use crate::error::{Failure, fw_result};
use crate::ffi::{Out, non_null, optional, text, try_ref};
use crate::panic::guard;

/// One key of one rule: the rule's name, the key as the rule counts it (a subject, an
/// address, a header's value, `"GET /path"`; NULL for the requests lacking the keyed part),
/// and the role whose policy counts it (NULL: the rule's default).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fw_key {
    /// The rule's name.
    pub rule: *const std::ffi::c_char,
    /// The key, or NULL.
    pub key: *const std::ffi::c_char,
    /// The role, or NULL.
    pub role: *const std::ffi::c_char,
    /// When the operation happens, in ms since the Unix epoch (tests, replays); 0 — what an
    /// initializer that leaves it out gives — or below: the engine's clock.
    pub now_ms: i64,
}

/// What a key of a rule has left (`fw_inspect`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fw_key_status {
    /// The limit (or bucket capacity) of the key's policy, or its own while it has one.
    pub limit: u64,
    /// The largest cost it would admit now (0 while blocked).
    pub remaining: u64,
    /// Milliseconds until it is back at its full quota (rounded up).
    pub reset_after_ms: u64,
    /// Whether it is blocked.
    pub blocked: bool,
    /// Milliseconds it stays blocked (rounded up; 0 when not blocked).
    pub blocked_for_ms: u64,
    /// Who answered.
    pub store: fw_store,
    /// Whether the key has a limit of its own now (`fw_set_key_limit`): `limit` is that.
    pub has_key_limit: bool,
    /// Milliseconds its own limit stays in force (rounded up; 0 without one).
    pub key_limit_for_ms: u64,
}

/// # Safety
/// `key` is NULL or points to a valid `fw_key` whose strings live for `'a`.
unsafe fn key_of<'a>(key: *const fw_key) -> Result<KeyRef<'a>, Failure> {
    non_null(key, "key")?;
    // SAFETY: checked non-null; the caller keeps it valid for the call.
    let k = unsafe { &*key };
    // SAFETY: the strings of a valid key are NUL-terminated or NULL.
    unsafe {
        Ok(KeyRef {
            rule: text(k.rule, "key.rule")?,
            key: optional(k.key, "key.key")?,
            role: optional(k.role, "key.role")?,
            now: (k.now_ms > 0).then(|| Timestamp::from_millis(k.now_ms as u64)),
        })
    }
}

fn ceil_ms(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Runs `f` on the engine and the key, under the panic boundary.
///
/// # Safety
/// `engine` is a live handle; `key` is valid (see `key_of`).
unsafe fn administer(
    engine: *const fw_engine,
    key: *const fw_key,
    f: impl FnOnce(&floodwall_core::Engine, &KeyRef<'_>) -> Result<(), floodwall_core::Error>,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (engine, key) = unsafe { (try_ref(engine, "engine")?, key_of(key)?) };
        Ok(f(engine, &key)?)
    })
}

/// What `key` has left now; consumes nothing. `FW_UNKNOWN_RULE` for a rule not configured.
///
/// # Safety
/// `engine` is a live handle; `key` points to a valid `fw_key`; `out` is valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_inspect(
    engine: *const fw_engine,
    key: *const fw_key,
    out: *mut fw_key_status,
) -> fw_result {
    guard(|| {
        // SAFETY: see the function's contract.
        let (out, engine, key) = unsafe {
            (
                Out::new(out, "out")?,
                try_ref(engine, "engine")?,
                key_of(key)?,
            )
        };
        let status = engine.inspect(&key)?;
        out.write(fw_key_status {
            limit: status.limit,
            remaining: status.remaining,
            reset_after_ms: ceil_ms(status.reset_after),
            blocked: status.blocked_for.is_some(),
            blocked_for_ms: status.blocked_for.map_or(0, ceil_ms),
            store: store_of(status.store),
            has_key_limit: status.key_limit_for.is_some(),
            key_limit_for_ms: status.key_limit_for.map_or(0, ceil_ms),
        });
        Ok(())
    })
}

/// Starts `key` afresh: what it counted and its block are forgotten.
///
/// # Safety
/// `engine` is a live handle; `key` points to a valid `fw_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_reset_key(engine: *const fw_engine, key: *const fw_key) -> fw_result {
    // SAFETY: the caller's contract is this function's.
    unsafe { administer(engine, key, |e, k| e.reset_key(k)) }
}

/// Blocks `key` for `duration_ms` (a rule with `block_for`; others answer
/// `FW_INVALID_CONFIG`).
///
/// # Safety
/// `engine` is a live handle; `key` points to a valid `fw_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_block_key(
    engine: *const fw_engine,
    key: *const fw_key,
    duration_ms: u64,
) -> fw_result {
    let length = Duration::from_millis(duration_ms);
    // SAFETY: the caller's contract is this function's.
    unsafe { administer(engine, key, |e, k| e.block_key(k, length)) }
}

/// Takes `points` from `key` now, as requests would (never beyond exhausted).
///
/// # Safety
/// `engine` is a live handle; `key` points to a valid `fw_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_penalize(
    engine: *const fw_engine,
    key: *const fw_key,
    points: u64,
) -> fw_result {
    // SAFETY: the caller's contract is this function's.
    unsafe { administer(engine, key, |e, k| e.penalize(k, points)) }
}

/// Gives `points` back to `key` now (never beyond a fresh state).
///
/// # Safety
/// `engine` is a live handle; `key` points to a valid `fw_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_reward(
    engine: *const fw_engine,
    key: *const fw_key,
    points: u64,
) -> fw_result {
    // SAFETY: the caller's contract is this function's.
    unsafe { administer(engine, key, |e, k| e.reward(k, points)) }
}

/// Judges `key` by its own `limit` (a token bucket's capacity, its refill rate scaled with
/// it) for `lifetime_ms` from now, replacing any it had. The rule must have `key_limits =
/// true`; others, a `limit` of 0 and a lifetime outside 1 ms to 366 days answer
/// `FW_INVALID_CONFIG`.
///
/// # Safety
/// `engine` is a live handle; `key` points to a valid `fw_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_set_key_limit(
    engine: *const fw_engine,
    key: *const fw_key,
    limit: u64,
    lifetime_ms: u64,
) -> fw_result {
    let lifetime = Duration::from_millis(lifetime_ms);
    // SAFETY: the caller's contract is this function's.
    unsafe { administer(engine, key, |e, k| e.set_key_limit(k, limit, lifetime)) }
}

/// Takes `key`'s own limit away: its policy's applies again (a rule with `key_limits = true`).
///
/// # Safety
/// `engine` is a live handle; `key` points to a valid `fw_key`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fw_clear_key_limit(
    engine: *const fw_engine,
    key: *const fw_key,
) -> fw_result {
    // SAFETY: the caller's contract is this function's.
    unsafe { administer(engine, key, |e, k| e.clear_key_limit(k)) }
}
