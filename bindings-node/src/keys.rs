//! `Engine`'s per-key administration: `inspect`, `reset`, `block`, `penalize`, `reward` and
//! a key's own limit (`limit`, `clear_limit`) of one key of one rule, each on a worker thread.

use std::sync::Arc;

use napi::Env;
use napi::bindgen_prelude::Object;
use napi_derive::napi;

use crate::engine::{Engine, count, on_worker};
use crate::error::invalid_arg;

/// What a key of a rule has left (`inspect`).
#[napi(object)]
pub struct KeyStatusFields {
    /// The limit (or bucket capacity) of the key's policy.
    pub limit: f64,
    /// The largest cost it would admit now (0 while blocked).
    pub remaining: f64,
    /// Milliseconds until it is back at its full quota (rounded up).
    pub reset_after_ms: f64,
    /// Milliseconds it stays blocked (rounded up), or none.
    pub blocked_for_ms: Option<f64>,
    /// Milliseconds its own limit stays in force (rounded up), or none: `limit` is that
    /// limit meanwhile.
    pub key_limit_for_ms: Option<f64>,
    /// Who answered (`memory`, `redis`, `fallback`, `unavailable`).
    pub store: String,
}

/// One administration of a key, to run on a worker thread.
type KeyCall = Box<
    dyn FnOnce(&floodwall::Engine, &floodwall::KeyRef<'_>) -> Result<(), floodwall::Error> + Send,
>;

/// The core's name of a key.
fn key_ref<'a>(
    rule: &'a str,
    key: &'a Option<String>,
    role: &'a Option<String>,
    now: Option<floodwall::Timestamp>,
) -> floodwall::KeyRef<'a> {
    floodwall::KeyRef {
        rule,
        key: key.as_deref(),
        role: role.as_deref(),
        now,
    }
}

/// The explicit time of a key operation (`options.nowMs`), or `None` for the engine's clock.
fn now_of(now_ms: Option<f64>) -> napi::Result<Option<floodwall::Timestamp>> {
    Ok(count(now_ms, "nowMs")?.map(floodwall::Timestamp::from_millis))
}

#[napi]
impl Engine {
    /// What `key` of `rule` has left (for `role`'s policy), on a worker thread.
    #[napi(ts_return_type = "Promise<KeyStatusFields>")]
    pub fn inspect_key<'env>(
        &self,
        env: &'env Env,
        rule: String,
        key: Option<String>,
        role: Option<String>,
        now_ms: Option<f64>,
    ) -> napi::Result<Object<'env>> {
        let core = Arc::clone(&self.core);
        let now = now_of(now_ms)?;
        on_worker(env, move || {
            let status = core.inspect(&key_ref(&rule, &key, &role, now))?;
            let ms = |d: std::time::Duration| d.as_micros().div_ceil(1000) as f64;
            Ok(KeyStatusFields {
                limit: status.limit as f64,
                remaining: status.remaining as f64,
                reset_after_ms: ms(status.reset_after),
                blocked_for_ms: status.blocked_for.map(ms),
                key_limit_for_ms: status.key_limit_for.map(ms),
                store: status.store.as_str().to_owned(),
            })
        })
    }

    /// Administers `key` of `rule` on a worker thread: `op` is `reset`, `block` (for
    /// `amount` ms), `penalize` or `reward` (`amount` points), `limit` (its own limit of
    /// `amount` for `lifetime_ms`) or `clear_limit`; at `now_ms`, or the engine's clock.
    #[napi(ts_return_type = "Promise<void>")]
    #[allow(clippy::too_many_arguments)]
    pub fn administer_key<'env>(
        &self,
        env: &'env Env,
        op: String,
        rule: String,
        key: Option<String>,
        role: Option<String>,
        now_ms: Option<f64>,
        amount: Option<f64>,
        lifetime_ms: Option<f64>,
    ) -> napi::Result<Object<'env>> {
        let core = Arc::clone(&self.core);
        let now = now_of(now_ms)?;
        let points = || count(amount, "the amount").map(|a| a.unwrap_or(0));
        let run: KeyCall = match op.as_str() {
            "reset" => Box::new(|e, k| e.reset_key(k)),
            "block" => {
                let ms = points()?;
                Box::new(move |e, k| e.block_key(k, std::time::Duration::from_millis(ms)))
            }
            "penalize" => {
                let points = points()?;
                Box::new(move |e, k| e.penalize(k, points))
            }
            "reward" => {
                let points = points()?;
                Box::new(move |e, k| e.reward(k, points))
            }
            "limit" => {
                let limit = count(amount, "the limit")?
                    .ok_or_else(|| invalid_arg("the limit must be an integer from 1 to 2^53"))?;
                let ms = count(lifetime_ms, "the lifetime")?.ok_or_else(|| {
                    invalid_arg("the lifetime must be an integer number of milliseconds")
                })?;
                Box::new(move |e, k| {
                    e.set_key_limit(k, limit, std::time::Duration::from_millis(ms))
                })
            }
            "clear_limit" => Box::new(|e, k| e.clear_key_limit(k)),
            other => return Err(invalid_arg(format!("no key operation {other:?}"))),
        };
        on_worker(env, move || run(&core, &key_ref(&rule, &key, &role, now)))
    }
}
