//! Where limiter state lives.
//!
//! A [`Store`] applies the layers of one decision — every rule that matched a request, each
//! with its key — all-or-nothing: either every layer admits and every layer consumes, or
//! nothing is consumed anywhere. The algorithms themselves are in [`crate::limit`]; a store
//! only keeps their states and makes the multi-key step atomic.
//!
//! [`MemoryStore`] is the in-process default; [`redis::RedisStore`] shares limits between
//! processes through one Redis.

mod memory;
pub mod redis;

use std::fmt;

pub use memory::{MemoryStore, SWEEP_INTERVAL};

use crate::clock::Timestamp;
use crate::error::Error;
use crate::limit::{Outcome, Quota};

/// One layer of a decision as a store sees it.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// The rule's name (for stores that build readable keys).
    pub rule: &'a str,
    /// Identifies the counter namespace: the rule and the policy (role variant) within it, with
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
    pub(crate) fn ok(since: Timestamp) -> Self {
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

/// Keeps limiter state and applies multi-layer decisions atomically.
pub trait Store: Send + Sync + fmt::Debug {
    /// Applies `layers` at `now` for a request of `cost`: writes each layer's outcome into
    /// `outcomes` (same length and order) and returns whether the request is admitted — every
    /// layer but the [shadow](Layer::shadow) ones admits. Then every admitting layer has
    /// consumed and its outcome is the state after; otherwise nothing was consumed and each
    /// outcome is the unchanged state (denying layers carry `retry_after`).
    ///
    /// Every layer's `cost <= quota.limit()` has been checked by the caller.
    fn acquire(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<bool, Error>;

    /// Forgets every key whose state has expired by `now`; returns how many were dropped.
    fn purge_expired(&self, now: Timestamp) -> usize;

    /// How many keys the store holds now.
    fn key_count(&self) -> usize;
}
