//! Per-key administration (`Engine.inspect`, `reset_key`, `block_key`, `penalize`,
//! `reward`, `set_key_limit`, `clear_key_limit`): the core's `engine::keys`, with the
//! interpreter released during the store call.

use std::time::Duration;

use floodwall::{KeyRef, Timestamp};
use pyo3::prelude::*;

use crate::engine::Engine;
use crate::error::IntoPyResult;
use crate::text::{borrow_opt, borrow_str};

/// What a key of a rule has left (`Engine.inspect`).
#[pyclass(module = "floodwall._floodwall", frozen, get_all)]
pub(crate) struct KeyStatus {
    /// The limit (or bucket capacity) of the key's policy.
    limit: u64,
    /// The largest cost it would admit now (0 while blocked).
    remaining: u64,
    /// Milliseconds until it is back at its full quota (rounded up).
    reset_after_ms: u64,
    /// Milliseconds it stays blocked (rounded up), or `None`.
    blocked_for_ms: Option<u64>,
    /// Milliseconds the key's own limit (`set_key_limit`) stays in force (rounded up), or
    /// `None` when the rule's limit applies.
    key_limit_for_ms: Option<u64>,
    /// Who answered: `memory`, `redis`, or while Redis fails `fallback` / `unavailable`.
    store: &'static str,
}

#[pymethods]
impl KeyStatus {
    fn __repr__(&self) -> String {
        format!(
            "KeyStatus(limit={}, remaining={}, reset_after_ms={}, blocked_for_ms={}, \
             key_limit_for_ms={}, store='{}')",
            self.limit,
            self.remaining,
            self.reset_after_ms,
            optional(self.blocked_for_ms),
            optional(self.key_limit_for_ms),
            self.store
        )
    }
}

fn optional(ms: Option<u64>) -> String {
    ms.map_or_else(|| "None".to_owned(), |ms| ms.to_string())
}

fn ceil_ms(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// A count argument (`points`, `duration_ms`): an integer from 0.
fn count(value: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    value.extract::<u64>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} must be a non-negative integer, not {}",
            value
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string())
        ))
    })
}

/// Runs `f` on the key `rule`/`key`/`role` names at `now_ms` (`None`: the engine's clock),
/// with the interpreter released.
fn with_key<T: Send>(
    slf: &Bound<'_, Engine>,
    rule: &Bound<'_, PyAny>,
    key: Option<&Bound<'_, PyAny>>,
    role: Option<&Bound<'_, PyAny>>,
    now_ms: Option<&Bound<'_, PyAny>>,
    f: impl FnOnce(&floodwall::Engine, &KeyRef<'_>) -> Result<T, floodwall::Error> + Send,
) -> PyResult<T> {
    let key_ref = KeyRef {
        rule: borrow_str(rule, "rule")?,
        key: borrow_opt(key, "key")?,
        role: borrow_opt(role, "role")?,
        now: match now_ms {
            Some(ms) if !ms.is_none() => Some(Timestamp::from_millis(count(ms, "now_ms")?)),
            _ => None,
        },
    };
    let engine = slf.get();
    slf.py().detach(|| f(engine.core(), &key_ref)).py_err()
}

#[pymethods]
impl Engine {
    /// What `key` of `rule` has left now (for `role`'s policy); consumes nothing. `key` is
    /// the key as the rule counts it (a subject, an address, a header's value, `"GET /path"`);
    /// `None` names the requests lacking the keyed part.
    #[pyo3(signature = (rule, key=None, *, role=None, now_ms=None))]
    fn inspect(
        slf: &Bound<'_, Self>,
        rule: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        role: Option<&Bound<'_, PyAny>>,
        now_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<KeyStatus> {
        let status = with_key(slf, rule, key, role, now_ms, |e, k| e.inspect(k))?;
        Ok(KeyStatus {
            limit: status.limit,
            remaining: status.remaining,
            reset_after_ms: ceil_ms(status.reset_after),
            blocked_for_ms: status.blocked_for.map(ceil_ms),
            key_limit_for_ms: status.key_limit_for.map(ceil_ms),
            store: status.store.as_str(),
        })
    }

    /// Starts `key` of `rule` afresh: what it counted and its block are forgotten.
    #[pyo3(signature = (rule, key=None, *, role=None, now_ms=None))]
    fn reset_key(
        slf: &Bound<'_, Self>,
        rule: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        role: Option<&Bound<'_, PyAny>>,
        now_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        with_key(slf, rule, key, role, now_ms, |e, k| e.reset_key(k))
    }

    /// Blocks `key` of `rule` for `duration_ms` (a rule with `block_for`).
    #[pyo3(signature = (rule, key, *, duration_ms, role=None, now_ms=None))]
    fn block_key(
        slf: &Bound<'_, Self>,
        rule: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        duration_ms: &Bound<'_, PyAny>,
        role: Option<&Bound<'_, PyAny>>,
        now_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let length = Duration::from_millis(count(duration_ms, "duration_ms")?);
        with_key(slf, rule, key, role, now_ms, |e, k| e.block_key(k, length))
    }

    /// Takes `points` from `key` of `rule` now, as requests would.
    #[pyo3(signature = (rule, key, points, *, role=None, now_ms=None))]
    fn penalize(
        slf: &Bound<'_, Self>,
        rule: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        points: &Bound<'_, PyAny>,
        role: Option<&Bound<'_, PyAny>>,
        now_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let points = count(points, "points")?;
        with_key(slf, rule, key, role, now_ms, |e, k| e.penalize(k, points))
    }

    /// Gives `points` back to `key` of `rule` now.
    #[pyo3(signature = (rule, key, points, *, role=None, now_ms=None))]
    fn reward(
        slf: &Bound<'_, Self>,
        rule: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        points: &Bound<'_, PyAny>,
        role: Option<&Bound<'_, PyAny>>,
        now_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let points = count(points, "points")?;
        with_key(slf, rule, key, role, now_ms, |e, k| e.reward(k, points))
    }

    /// Gives `key` of `rule` its own `limit` for `lifetime_ms` (a rule with `key_limits`):
    /// its decisions, headers and `inspect` use it until it ends or `clear_key_limit`.
    #[pyo3(signature = (rule, key, limit, *, lifetime_ms, role=None, now_ms=None))]
    fn set_key_limit(
        slf: &Bound<'_, Self>,
        rule: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        limit: &Bound<'_, PyAny>,
        lifetime_ms: &Bound<'_, PyAny>,
        role: Option<&Bound<'_, PyAny>>,
        now_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let limit = count(limit, "limit")?;
        let lifetime = Duration::from_millis(count(lifetime_ms, "lifetime_ms")?);
        with_key(slf, rule, key, role, now_ms, |e, k| {
            e.set_key_limit(k, limit, lifetime)
        })
    }

    /// Ends `key`'s own limit: the rule's limit applies again (what it counted stays).
    #[pyo3(signature = (rule, key=None, *, role=None, now_ms=None))]
    fn clear_key_limit(
        slf: &Bound<'_, Self>,
        rule: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
        role: Option<&Bound<'_, PyAny>>,
        now_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        with_key(slf, rule, key, role, now_ms, |e, k| e.clear_key_limit(k))
    }
}
