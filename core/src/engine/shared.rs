//! The shared store (Redis) with its failure policy: the breaker that spares callers its
//! deadline while it is down, the probe that watches for its return, the deny cache, and
//! `store.on_error` when it cannot decide.
//!
//! **Recovery.** Three failures in the last ten calls open the breaker; from then on callers
//! are answered by `on_error` at once, and no caller's request is spent finding out whether
//! Redis is back. A background thread does that instead: every [`PROBE_INTERVAL`] it asks
//! Redis on a connection of its own ([`RedisStore::probe`]: a write, and the script known or
//! loaded), and on the first success closes the breaker and drops the shared connection so
//! that the next decision connects afresh. So decisions use Redis again within about
//! `PROBE_INTERVAL` plus a connect of its return, however long it was away. The thread holds
//! only a weak reference: it ends with the engine, or once Redis is back.
//!
//! **Visibility.** The breaker's opening and closing are the store's transitions between `ok`
//! and `degraded` (decided by the fallback) or `failing` (`on_error` is `allow`, `deny` or
//! `error`: no limit holds). Each is logged once (the `log` crate, target `floodwall::store`)
//! and handed to the listener set with [`Engine::on_store_health`]; [`Engine::store_health`]
//! says where it stands, since when and why — the reason the probe last saw, which names a
//! refused connection, a timeout, an out-of-memory server, a script Redis will not keep, or a
//! cluster that cannot serve.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use super::Engine;
use crate::breaker::{Breaker, BreakerSettings, BreakerState, CallOutcome, Transition, WindowKind};
use crate::clock::{Clock, Timestamp};
use crate::config::OnStoreError;
use crate::decision::StoreUsed;
use crate::error::{Error, ErrorKind};
use crate::limit::{Algorithm, CountResponses, Outcome, Rule};
use crate::store::redis::{RedisStore, StoreFailure};
use crate::store::{Adjustment, Layer, Store, StoreHealth, StoreState};

/// How often the probe asks a failing Redis whether it is back.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a probe waits for Redis (at least the store's own deadline).
const PROBE_DEADLINE: Duration = Duration::from_millis(250);

/// Who hears of the store's transitions.
pub(crate) type HealthListener = Arc<dyn Fn(&StoreHealth) + Send + Sync>;

/// A shared store with its failure policy and the breaker that spares callers its deadline
/// while it is down.
pub(crate) struct Shared {
    pub(super) redis: RedisStore,
    pub(super) policy: OnStoreError,
    /// The breaker, and whether a probe thread is running (both under one lock, so that a
    /// trip never misses a probe that is just ending).
    pub(super) breaker: Mutex<(Breaker, bool)>,
    /// The last failure, until a call succeeds.
    pub(super) last_failure: Mutex<Option<StoreFailure>>,
    /// Where the store stands, since when, and why.
    pub(super) health: Mutex<StoreHealth>,
    pub(super) listener: RwLock<Option<HealthListener>>,
    /// Denials remembered until they expire (`store.deny_cache`).
    pub(super) denials: Option<DenyCache>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("redis", &self.redis)
            .field("policy", &self.policy)
            .field("health", &*self.health.lock())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new(
        redis: RedisStore,
        policy: OnStoreError,
        deny_cache: bool,
        now: Timestamp,
    ) -> Arc<Self> {
        Arc::new(Shared {
            redis,
            policy,
            breaker: Mutex::new((store_breaker(), false)),
            last_failure: Mutex::new(None),
            health: Mutex::new(StoreHealth::ok(now)),
            listener: RwLock::new(None),
            denials: deny_cache.then(DenyCache::default),
        })
    }

    /// Acts on a breaker transition: the store's own, logged and heard once.
    fn transition(self: &Arc<Self>, t: Transition, clock: &Arc<dyn Clock>) {
        let health = match t.to {
            BreakerState::Open { .. } if !matches!(t.from, BreakerState::HalfOpen) => {
                let state = if self.policy == OnStoreError::Fallback {
                    StoreState::Degraded
                } else {
                    StoreState::Failing
                };
                let reason = self.last_failure.lock().clone();
                let health = StoreHealth::new(state, t.at, reason.as_ref());
                log::warn!(target: "floodwall::store", "{} (on_error = {})", health.message(), self.policy.as_str());
                self.start_probe(clock);
                health
            }
            BreakerState::Closed => {
                let health = StoreHealth::ok(t.at);
                log::info!(target: "floodwall::store", "{}", health.message());
                health
            }
            _ => return,
        };
        *self.health.lock() = health.clone();
        let listener = self.listener.read().clone();
        if let Some(listener) = listener {
            listener(&health);
        }
    }

    /// Starts the probe thread unless one is running.
    fn start_probe(self: &Arc<Self>, clock: &Arc<dyn Clock>) {
        {
            let mut breaker = self.breaker.lock();
            if breaker.1 {
                return;
            }
            breaker.1 = true;
        }
        let weak = Arc::downgrade(self);
        let clock = Arc::clone(clock);
        let spawned = std::thread::Builder::new()
            .name("floodwall-store-probe".into())
            .spawn(move || probe_until_back(&weak, &clock));
        if let Err(e) = spawned {
            self.breaker.lock().1 = false;
            log::error!(target: "floodwall::store", "cannot start the shared store's probe thread: {e}");
        }
    }
}

/// The probe thread's loop: ask every [`PROBE_INTERVAL`] until Redis answers, then close the
/// breaker. Ends early when the engine is dropped or the breaker closed by other means.
fn probe_until_back(shared: &Weak<Shared>, clock: &Arc<dyn Clock>) {
    loop {
        std::thread::sleep(PROBE_INTERVAL);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        {
            let mut breaker = shared.breaker.lock();
            if breaker.0.state(clock.now()) == BreakerState::Closed {
                breaker.1 = false;
                return;
            }
        }
        let deadline = PROBE_DEADLINE.max(shared.redis.timeout());
        match shared.redis.probe(deadline) {
            Ok(()) => {
                let transition = {
                    let mut breaker = shared.breaker.lock();
                    breaker.1 = false;
                    breaker.0.reset(clock.now())
                };
                *shared.last_failure.lock() = None;
                if let Some(t) = transition {
                    shared.transition(t, clock);
                }
                return;
            }
            Err(failure) => {
                let mut health = shared.health.lock();
                if health.state != StoreState::Ok {
                    health.set_reason(&failure);
                }
                drop(health);
                *shared.last_failure.lock() = Some(failure);
            }
        }
    }
}

/// The most denials remembered; past it, expired ones are dropped, then the whole map.
const DENY_CACHE_CAPACITY: usize = 100_000;

/// Recent denials by the shared store of requests of cost 1, keyed by the request's layers and
/// keys.
///
/// A denial whose longest `retry_after` is R holds for R at least: limits only fill up when
/// others consume, so until then the same request is denied again. It is answered here with
/// `allowed = false`, the exact remaining wait, and the denying layer's `remaining` (0 until
/// then, for a cost of 1) and `reset_after` (which only runs down). Only the figures of the
/// layers that admitted — shared counters others keep consuming — may be staler than a round
/// trip would give. A larger cost is not cached: what remains can grow below it before it
/// fits. Nor is a request one of whose rules gives back what responses do not count
/// (`count_responses`): a refund can make room before the wait is over.
#[derive(Debug, Default)]
pub(super) struct DenyCache {
    entries: parking_lot::Mutex<std::collections::HashMap<Vec<u8>, Denial>>,
}

#[derive(Debug, Clone)]
struct Denial {
    at: u64,
    until: u64,
    outcomes: SmallVec<[Outcome; 4]>,
}

impl DenyCache {
    fn key(layers: &[Layer<'_>]) -> Vec<u8> {
        let mut key = Vec::with_capacity(layers.iter().map(|l| l.key.len() + 12).sum::<usize>());
        for layer in layers {
            key.extend_from_slice(&layer.slot.to_le_bytes());
            key.extend_from_slice(&(layer.key.len() as u32).to_le_bytes());
            key.extend_from_slice(layer.key);
        }
        key
    }

    /// The remembered denial of this request at `now`, aged, if it still holds.
    pub(super) fn get(&self, key: &[u8], now: Timestamp, outcomes: &mut [Outcome]) -> bool {
        let now = now.as_micros();
        let entries = self.entries.lock();
        let Some(d) = entries.get(key) else {
            return false;
        };
        if now >= d.until || now < d.at || d.outcomes.len() != outcomes.len() {
            return false;
        }
        let aged = now - d.at;
        for (out, o) in outcomes.iter_mut().zip(&d.outcomes) {
            *out = Outcome::new(
                o.allowed,
                o.remaining,
                o.reset_after_us().saturating_sub(aged),
                o.retry_after_us().saturating_sub(aged),
            );
        }
        true
    }

    pub(super) fn put(&self, key: Vec<u8>, now: Timestamp, outcomes: &[Outcome]) {
        let wait = outcomes
            .iter()
            .filter(|o| !o.allowed)
            .map(Outcome::retry_after_us)
            .max()
            .unwrap_or(0);
        if wait == 0 {
            return;
        }
        let now = now.as_micros();
        let mut entries = self.entries.lock();
        if entries.len() >= DENY_CACHE_CAPACITY {
            entries.retain(|_, d| d.until > now);
            if entries.len() >= DENY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Denial {
                at: now,
                until: now.saturating_add(wait),
                outcomes: outcomes.iter().copied().collect(),
            },
        );
    }
}

/// How long a caller denied because the shared store is unavailable (`on_error = "deny"`) is
/// told to wait, and the `Retry-After` of a 503 `store_unavailable`.
pub(crate) const UNAVAILABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The breaker around the shared store: open after 3 failures in the last 10 calls (half of
/// them failing), until the probe thread finds Redis back. Its own half-open state comes only
/// after an hour, as a last resort should the probe thread be unable to run.
fn store_breaker() -> Breaker {
    Breaker::new(BreakerSettings {
        window: WindowKind::Count(10),
        min_calls: 3,
        failure_rate: 0.5,
        slow_call_duration: None,
        slow_call_rate: 1.0,
        open_for: Duration::from_secs(3600),
        backoff: 1.0,
        max_open_for: Duration::from_secs(3600),
        half_open_calls: 1,
    })
    .expect("valid breaker settings")
}

/// The rule a layer belongs to (its slot's rule index).
pub(super) fn rule_index(layer: &Layer<'_>) -> usize {
    ((layer.slot >> 32) & 0x7fff_ffff) as usize
}

impl Engine {
    /// A decision on the shared store, or — when it fails, is slow, or its breaker is open —
    /// by the `on_error` policy. `times` gets, per layer, the time the store decided at (the
    /// Redis server's, unless `store.clock = "local"`), which a refund must name.
    pub(super) fn decide_shared(
        &self,
        shared: &Arc<Shared>,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
        times: &mut [Timestamp],
    ) -> Result<(bool, StoreUsed), Error> {
        let cached = self.deny_cache_key(shared, layers, cost);
        if let Some((cache, key)) = &cached
            && cache.get(key, now, outcomes)
        {
            return Ok((false, StoreUsed::DenyCache));
        }
        if let Some(allowed) = self.through_breaker(shared, || {
            shared.redis.decide(layers, cost, now, outcomes, times)
        }) {
            if let (false, Some((cache, key))) = (allowed, cached) {
                cache.put(key, now, outcomes);
            }
            return Ok((allowed, StoreUsed::Redis));
        }
        times.fill(now);
        self.decide_unavailable(shared, layers, cost, now, outcomes)
    }

    /// The deny cache and this request's key in it, when its denials may be remembered: only
    /// cost-1 denials of rules that never refund are (see `DenyCache`).
    pub(super) fn deny_cache_key<'s>(
        &self,
        shared: &'s Shared,
        layers: &[Layer<'_>],
        cost: u64,
    ) -> Option<(&'s DenyCache, Vec<u8>)> {
        shared
            .denials
            .as_ref()
            .filter(|_| cost == 1 && !self.refunds_any(layers))
            .map(|cache| (cache, DenyCache::key(layers)))
    }

    /// Whether a rule of `layers` gives back what some responses do not count.
    fn refunds_any(&self, layers: &[Layer<'_>]) -> bool {
        self.responses
            && layers
                .iter()
                .any(|l| self.rules[rule_index(l)].response_counting().count != CountResponses::All)
    }

    /// Runs `call` on the shared store unless its breaker is open, and tells the breaker how
    /// it went; `None` when the store was not asked or failed. A failure is kept for
    /// [`store_failure`](Self::store_failure) until a call succeeds.
    pub(super) fn through_breaker<T>(
        &self,
        shared: &Arc<Shared>,
        call: impl FnOnce() -> Result<T, StoreFailure>,
    ) -> Option<T> {
        let (permit, opened) = shared.breaker.lock().0.try_acquire(self.clock.now());
        if let Some(t) = opened {
            shared.transition(t, &self.clock);
        }
        let permit = permit?;
        let started = std::time::Instant::now();
        let result = call();
        let outcome = if result.is_ok() {
            CallOutcome::Success
        } else {
            CallOutcome::Failure
        };
        match &result {
            Ok(_) => {
                let mut last = shared.last_failure.lock();
                if last.is_some() {
                    *last = None;
                }
            }
            Err(failure) => *shared.last_failure.lock() = Some(failure.clone()),
        }
        let transition =
            shared
                .breaker
                .lock()
                .0
                .record(permit, outcome, started.elapsed(), self.clock.now());
        if let Some(t) = transition {
            shared.transition(t, &self.clock);
        }
        result.ok()
    }

    /// A decision while the shared store is unavailable, by the `on_error` policy.
    pub(super) fn decide_unavailable(
        &self,
        shared: &Shared,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<(bool, StoreUsed), Error> {
        match shared.policy {
            OnStoreError::Fallback => Ok((
                self.store.acquire(layers, cost, now, outcomes)?,
                StoreUsed::Fallback,
            )),
            OnStoreError::Allow => {
                for (outcome, layer) in outcomes.iter_mut().zip(layers) {
                    *outcome = Outcome::new(true, layer.quota.limit(), 0, 0);
                }
                Ok((true, StoreUsed::Unavailable))
            }
            OnStoreError::Deny => {
                let retry = u64::try_from(UNAVAILABLE_RETRY.as_micros()).unwrap_or(u64::MAX);
                for outcome in outcomes.iter_mut() {
                    *outcome = Outcome::new(false, 0, 0, retry);
                }
                Ok((false, StoreUsed::Unavailable))
            }
            OnStoreError::Error => Err(Error::new(
                ErrorKind::StoreUnavailable,
                match shared.last_failure.lock().as_ref() {
                    Some(failure) => format!("the shared store is unavailable: {failure}"),
                    None => "the shared store is unavailable".to_owned(),
                },
            )),
        }
    }

    /// Applies refunds and charges to the store that decided each layer: the memory store
    /// (itself, or as the fallback) at once, the shared store in one round trip through its
    /// breaker. A shared store that fails loses them: an outage errs on the side of counting.
    pub(crate) fn adjust(&self, ops: &[(Layer<'_>, Adjustment, StoreUsed)]) {
        let mut remote: Vec<(Layer<'_>, Adjustment)> = Vec::new();
        for &(layer, adjustment, store) in ops {
            match (store, &self.shared) {
                (StoreUsed::Redis, Some(_)) => remote.push((layer, adjustment)),
                (StoreUsed::Unavailable, _) => {}
                _ => match adjustment {
                    Adjustment::Refund { cost, at } => self.store.refund(&layer, cost, at),
                    Adjustment::Charge { cost, at } => self.store.charge(&layer, cost, at),
                },
            }
        }
        if let (false, Some(shared)) = (remote.is_empty(), &self.shared) {
            let _ = self.through_breaker(shared, || shared.redis.adjust(&remote));
        }
    }

    /// Where the store stands (see the module docs of `engine::shared`): `ok`, or `degraded`
    /// / `failing` while Redis is down, since when, and why.
    pub fn store_health(&self) -> StoreHealth {
        match &self.shared {
            Some(shared) => shared.health.lock().clone(),
            None => StoreHealth::ok(self.built_at),
        }
    }

    /// Calls `listener` on every transition of the store's health (from another thread, the
    /// probe's, when Redis comes back); replaces the listener set before. Never called for
    /// the memory store.
    pub fn on_store_health(&self, listener: impl Fn(&StoreHealth) + Send + Sync + 'static) {
        if let Some(shared) = &self.shared {
            *shared.listener.write() = Some(Arc::new(listener));
        }
    }

    /// Why the shared store is failing: its last failure, until a call to it succeeds again
    /// (`None` when it is healthy, and always for the memory store). For health checks and logs.
    pub fn store_failure(&self) -> Option<String> {
        self.shared
            .as_ref()
            .and_then(|s| s.last_failure.lock().as_ref().map(ToString::to_string))
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

/// For [`decide_shared`](Engine::decide_shared) callers that need no times.
pub(super) fn no_times(n: usize) -> SmallVec<[Timestamp; 4]> {
    SmallVec::from_elem(Timestamp::EPOCH, n)
}
