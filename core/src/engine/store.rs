//! What the engine asks of its store beyond decisions: refunds and charges, and the store's
//! health. The store itself — memory, or Redis behind its failover policy — is one
//! [`Store`]; see [`crate::store`].

use std::sync::Arc;

use super::Engine;
use crate::config::StoreConfig;
use crate::decision::StoreUsed;
use crate::error::Error;
use crate::limit::{Algorithm, Rule};
use crate::store::{
    Adjustment, FailoverStore, FallbackRules, Layer, MemoryStore, RedisStore, Store, StoreHealth,
};

/// The store `config` names, for `rules`: the memory store, or Redis with the memory store as
/// its fallback.
pub(super) fn build(config: &StoreConfig, rules: &[Rule]) -> Result<Box<dyn Store>, Error> {
    let local = MemoryStore::new(config.max_keys());
    let Some(shared) = config.shared() else {
        return Ok(Box::new(local));
    };
    check_redis_arithmetic(rules)?;
    Ok(Box::new(FailoverStore::new(
        RedisStore::new(config)?,
        local,
        FallbackRules::new(rules, shared.fallback_share),
        shared,
    )))
}

impl Engine {
    /// Applies refunds and charges to the store that decided each layer (see
    /// [`Store::adjust`]).
    pub(crate) fn adjust(&self, ops: &[(Layer<'_>, Adjustment, StoreUsed)]) {
        self.store.adjust(ops);
    }

    /// Where the store stands: `ok`, or `degraded` / `failing` while Redis is down, since
    /// when, and why (see [`crate::store`]).
    pub fn store_health(&self) -> StoreHealth {
        self.store.health()
    }

    /// Calls `listener` on every transition of the store's health (from another thread, the
    /// probe's, when Redis comes back); replaces the listener set before. Never called for
    /// the memory store.
    pub fn on_store_health(&self, listener: impl Fn(&StoreHealth) + Send + Sync + 'static) {
        self.store.on_health(Arc::new(listener));
    }

    /// Why the shared store is failing: its last failure, until a call to it succeeds again
    /// (`None` when it is healthy, and always for the memory store). For health checks and logs.
    pub fn store_failure(&self) -> Option<String> {
        self.store.failure()
    }
}

/// Refuses, for the Redis store, a `sliding_window_counter` whose `limit × window` (µs) reaches
/// 2^53: the decision script computes in Lua's doubles, exact only below that.
pub(super) fn check_redis_arithmetic(rules: &[Rule]) -> Result<(), Error> {
    const EXACT: u128 = 1 << 53;
    for (i, rule) in rules.iter().enumerate() {
        for policy in rule.policies() {
            let q = policy.quota();
            if q.algorithm() == Algorithm::SlidingWindowCounter
                && u128::from(q.limit()) * q.period().as_micros() >= EXACT
            {
                return Err(Error::config(
                    format!("rules[{i}]"),
                    format!(
                        "with the redis store, a sliding_window_counter's limit × window must stay below 2^53 µs (about 285 years); {} × {:?}{} is over: use a shorter window, a smaller limit, or fixed_window / token_bucket",
                        q.limit(),
                        q.period(),
                        policy
                            .role()
                            .map(|r| format!(" for role {r:?}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}
