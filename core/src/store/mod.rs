//! Where limiter state lives.
//!
//! A [`Store`] applies the layers of one decision — every rule that matched a request, each
//! with its key — all-or-nothing: either every layer admits and every layer consumes, or
//! nothing is consumed anywhere. The algorithms themselves are in [`crate::limit`]; a store
//! only keeps their states and makes the multi-key step atomic.
//!
//! [`MemoryStore`] is the in-process default; [`RedisStore`] shares limits between processes
//! through one Redis (or a cluster); [`FailoverStore`] puts a shared store and a local one
//! behind one failure policy (the breaker, the probe, the deny cache and `on_error`), and is
//! what an engine on Redis holds. Rules with `sync` are counted in process by the failover
//! store and reconciled with Redis every interval (the `synced` module).

mod config;
mod deny_cache;
mod failover;
mod memory;
pub mod redis;
mod synced;

use std::fmt;
use std::sync::Arc;

pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_KEYS, DEFAULT_PREFIX, DEFAULT_STORE_TIMEOUT,
    MemoryStoreConfig, OnStoreError, RedisClusterConfig, RedisStoreConfig, SharedStoreConfig,
    StoreClock, StoreConfig, StoreKind,
};
pub use failover::{FailoverStore, FallbackRules, UNAVAILABLE_RETRY};
pub use memory::{MemoryStore, SWEEP_INTERVAL};
pub use redis::RedisStore;

use crate::clock::{Clock, Timestamp};
use crate::decision::StoreUsed;
use crate::error::Error;
use crate::limit::{Outcome, Quota};

/// One layer of a decision as a store sees it.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// The rule's name as stores know it, [`Rule::stored_name`](crate::limit::Rule::stored_name) (for stores that build
    /// readable keys).
    pub rule: &'a str,
    /// Identifies the counter namespace: the rule's state ([`Rule::state`](crate::limit::Rule::state)) in bits 32–62
    /// and the policy (role variant) within the rule in the low bits, with
    /// [`ABSENT`] set when the request lacked the keyed part. Two layers of one decision never
    /// share a slot.
    pub slot: u64,
    /// The algorithm and parameters to apply.
    pub quota: &'a Quota,
    /// The key within the slot: the keyed part's bytes (empty for `global` and absent parts).
    pub key: &'a [u8],
    /// A shadow layer decides and consumes like any other when the request is admitted, but
    /// its denial denies nothing: the request is admitted if every other layer admits, and the
    /// shadow layer that would deny consumes nothing.
    pub shadow: bool,
}

impl Layer<'_> {
    /// The layer's rule state ([`Rule::state`](crate::limit::Rule::state)).
    #[inline]
    pub const fn rule_state(&self) -> usize {
        state_of(self.slot)
    }

    /// The index of the layer's policy (role variant) within its rule.
    #[inline]
    pub const fn policy_index(&self) -> usize {
        (self.slot & 0xffff_ffff) as usize
    }
}

/// The rule state ([`Rule::state`](crate::limit::Rule::state)) a [`Layer::slot`] belongs to.
#[inline]
pub(crate) const fn state_of(slot: u64) -> usize {
    ((slot >> 32) & 0x7fff_ffff) as usize
}

/// A change to one layer's state after its decision, once the response is known (see
/// [`crate::http`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjustment {
    /// Give back `cost` that the decision at `at` consumed ([`Quota::refund`]).
    Refund {
        /// What the request consumed.
        cost: u64,
        /// When the store decided it.
        at: Timestamp,
    },
    /// Take `cost` without asking ([`Quota::charge`]), at `at` — or, on Redis with its own
    /// clock, at the server's time.
    Charge {
        /// What the response says the request cost.
        cost: u64,
        /// Now.
        at: Timestamp,
    },
}

/// What an administrator does to one key of one rule ([`Store::administer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    /// Forget what the key counted, and its block: it starts afresh.
    Forget,
    /// Block the key for `length` from now (a rule that blocks keys, `block_for`).
    Block {
        /// How long.
        length: std::time::Duration,
    },
    /// Take `cost` now, as if requests had consumed it ([`Quota::charge`]).
    Charge {
        /// Points to take.
        cost: u64,
    },
    /// Give back `cost` now ([`Quota::reward`]).
    Reward {
        /// Points to give back.
        cost: u64,
    },
    /// Judge the key by its own `limit` and `period` ([`Quota::own`]) for `lifetime` from
    /// now (a rule with `key_limits`), replacing any it had.
    SetLimit {
        /// The key's limit (or bucket capacity).
        limit: u64,
        /// Its period in the units of [`Quota::with_own`].
        period: u64,
        /// How long it is in force.
        lifetime: std::time::Duration,
    },
    /// Take the key's own limit away: its policy's applies again.
    ClearLimit,
}

/// Where a store stands ([`StoreHealth::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreState {
    /// Deciding as configured: the memory store, or Redis answering.
    Ok,
    /// Redis is failing and the in-process fallback decides (`on_error = "fallback"`): limits
    /// hold per process rather than across them.
    Degraded,
    /// Redis is failing and `on_error` (`allow`, `deny` or `error`) answers alone: no limit
    /// holds.
    Failing,
}

impl StoreState {
    /// `ok`, `degraded` or `failing`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreState::Ok => "ok",
            StoreState::Degraded => "degraded",
            StoreState::Failing => "failing",
        }
    }

    /// The number of the state (`0`, `1`, `2`): the `floodwall_store_state` gauge's value.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// A store's state, since when, and why ([`Engine::store_health`](crate::Engine::store_health)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// Where it stands.
    pub state: StoreState,
    /// Since when (the engine's clock, in milliseconds since the Unix epoch).
    pub since_ms: u64,
    /// Why it is not `ok`: the last failure seen, in words.
    pub reason: Option<String>,
    /// The kind of that failure: `timeout`, `refused`, `out_of_memory`, `noscript`,
    /// `cluster_down` or `error`.
    pub reason_kind: Option<&'static str>,
}

impl StoreHealth {
    /// `ok` since `since`.
    pub fn ok(since: Timestamp) -> Self {
        StoreHealth {
            state: StoreState::Ok,
            since_ms: since.as_micros() / 1000,
            reason: None,
            reason_kind: None,
        }
    }

    pub(crate) fn new(
        state: StoreState,
        since: Timestamp,
        failure: Option<&redis::StoreFailure>,
    ) -> Self {
        let mut health = StoreHealth {
            state,
            since_ms: since.as_micros() / 1000,
            reason: None,
            reason_kind: None,
        };
        if let Some(failure) = failure {
            health.set_reason(failure);
        }
        health
    }

    /// The transition to this health in one sentence, as logged: every binding's log line
    /// (Rust's `log`, Python's `logging`, Node's event) says the same.
    pub fn message(&self) -> String {
        let reason = self.reason.as_deref().unwrap_or("failing");
        match self.state {
            StoreState::Ok => "the shared store is back: deciding on Redis again".to_owned(),
            StoreState::Degraded => format!(
                "the shared store is degraded: {reason}; the in-process fallback decides until it is back"
            ),
            StoreState::Failing => format!(
                "the shared store is failing: {reason}; on_error answers alone until it is back"
            ),
        }
    }

    pub(crate) fn set_reason(&mut self, failure: &redis::StoreFailure) {
        self.reason = Some(failure.to_string());
        self.reason_kind = Some(failure.kind());
    }
}

/// The bit of [`Layer::slot`] that marks a request lacking the keyed part (no subject, no
/// address, no such header): all such requests share one counter of the rule, apart from a
/// caller whose part is present but empty.
pub const ABSENT: u64 = 1 << 63;

/// What a store answered for one decision: admitted or not, and who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Every layer but the [shadow](Layer::shadow) ones admits.
    pub allowed: bool,
    /// Who decided: the store itself, or (a [`FailoverStore`]) its fallback, its `on_error`
    /// policy or its deny cache.
    pub store: StoreUsed,
}

/// One request of a batch ([`Store::decide_many`]).
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Its layers, in configuration order.
    pub layers: &'a [Layer<'a>],
    /// What it costs.
    pub cost: u64,
    /// When it is decided.
    pub now: Timestamp,
    /// When it began waiting, if it queued before it was asked (the shared store's deadline
    /// counts from then, so that a wait in a queue does not add to it); `None`: from the call.
    pub queued: Option<std::time::Instant>,
}

/// Who hears of a store's health transitions ([`Store::on_health`]).
pub type HealthListener = Arc<dyn Fn(&StoreHealth) + Send + Sync>;

/// Keeps limiter state and applies multi-layer decisions atomically: the [`MemoryStore`], the
/// [`RedisStore`] (one node or a cluster), and the [`FailoverStore`] that puts a shared store
/// and a local one behind one policy. The engine holds one `Store` and knows no more of it.
pub trait Store: Send + Sync + fmt::Debug {
    /// Applies `layers` at `now` for a request of `cost`: writes each layer's outcome into
    /// `outcomes` and the time it was decided at into `times` (both of `layers`' length and
    /// order; `times` holds `now` on the way in) and says whether the request is admitted.
    /// Then every admitting layer has consumed and its outcome is the state after; otherwise
    /// nothing was consumed and each outcome is the unchanged state (denying layers carry
    /// `retry_after`). A refund names the layer's time ([`Adjustment::Refund`]): a store with
    /// its own clock (Redis) decides at its time, not `now`.
    ///
    /// Every layer's `cost <= quota.limit()` has been checked by the caller.
    fn decide(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
        times: &mut [Timestamp],
    ) -> Result<Verdict, Error>;

    /// [`decide`](Self::decide) for a single layer — most requests — answering its outcome and
    /// the time it was decided at.
    fn decide_one(
        &self,
        layer: &Layer<'_>,
        cost: u64,
        now: Timestamp,
    ) -> Result<(Outcome, Verdict, Timestamp), Error> {
        let mut outcomes = [Outcome::default()];
        let mut times = [now];
        let verdict = self.decide(
            std::slice::from_ref(layer),
            cost,
            now,
            &mut outcomes,
            &mut times,
        )?;
        Ok((outcomes[0], verdict, times[0]))
    }

    /// Decides each of `asks` on its own, all-or-nothing each, in order — in one round trip
    /// where the store can — writing each one's outcomes into the slice of `outcomes` at its
    /// index.
    fn decide_many(
        &self,
        asks: &[Ask<'_>],
        outcomes: &mut [&mut [Outcome]],
    ) -> Vec<Result<Verdict, Error>> {
        asks.iter()
            .zip(outcomes.iter_mut())
            .map(|(ask, out)| {
                let mut times: smallvec::SmallVec<[Timestamp; 4]> =
                    smallvec::SmallVec::from_elem(ask.now, ask.layers.len());
                self.decide(ask.layers, ask.cost, ask.now, out, &mut times)
            })
            .collect()
    }

    /// Applies refunds and charges once responses are known, each to the store that decided
    /// its layer (`StoreUsed`). Best effort: a store that cannot be reached loses them, erring
    /// on the side of counting.
    fn adjust(&self, ops: &[(Layer<'_>, Adjustment, StoreUsed)]);

    /// Applies an administrator's `op` to `layer`'s key at `now`. Unlike [`adjust`](Self::adjust)
    /// it answers whether it took effect: a shared store that cannot be reached is an error.
    fn administer(&self, layer: &Layer<'_>, op: KeyOp, now: Timestamp) -> Result<(), Error>;

    /// The own limit of `layer`'s key in force at `now` ([`KeyOp::SetLimit`]) and how long it
    /// stays in force; `None` when it has none. A shared store that cannot be reached is an
    /// error.
    fn key_limit(
        &self,
        layer: &Layer<'_>,
        now: Timestamp,
    ) -> Result<Option<(u64, std::time::Duration)>, Error>;

    /// What a decision says it was decided by while the store is well (`memory`, `redis`).
    fn used(&self) -> StoreUsed;

    /// Where the store stands, since when, and why.
    fn health(&self) -> StoreHealth;

    /// Calls `listener` on every transition of the store's health, replacing the listener set
    /// before; a store that never changes never calls it.
    fn on_health(&self, listener: HealthListener) {
        let _ = listener;
    }

    /// Why the store is failing: its last failure, until a call to it succeeds again.
    fn failure(&self) -> Option<String> {
        None
    }

    /// Uses `clock` for the store's own bookkeeping (its breaker) from now on.
    fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        let _ = clock;
    }

    /// Forgets every key whose state has expired by `now`; returns how many were dropped.
    fn purge_expired(&self, now: Timestamp) -> usize;

    /// How many keys the store holds in this process now.
    fn key_count(&self) -> usize;

    /// Takes the engine's reloaded `rules` (each in its [`Rule::state`]) and forgets what
    /// this process holds for the rule states in `forget` (rules removed or restarted): a
    /// state number may be given to another rule later, which must start empty. Keys in a
    /// shared store are not deleted: a restarted rule's are named anew
    /// ([`Rule::stored_name`]) and the old ones expire.
    ///
    /// [`Rule::state`]: crate::limit::Rule::state
    /// [`Rule::stored_name`]: crate::limit::Rule::stored_name
    fn reload(&self, rules: &[crate::limit::Rule], forget: &[u32]);
}
