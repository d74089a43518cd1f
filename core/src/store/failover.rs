//! The failover store: a shared store (Redis) and a local one (the memory store) behind one
//! failure policy — the breaker that spares callers the shared store's deadline while it is
//! down, the probe that watches for its return, the deny cache, and `store.on_error` when the
//! shared store cannot decide.
//!
//! **Recovery.** Three failures in the last ten calls open the breaker; from then on callers
//! are answered by `on_error` at once, and no caller's request is spent finding out whether
//! Redis is back. A background thread does that instead: every [`PROBE_INTERVAL`] it asks
//! Redis on a connection of its own ([`RedisStore::probe`]: a write, and the script known or
//! loaded), and on the first success closes the breaker and drops the shared connection so
//! that the next decision connects afresh. So decisions use Redis again within about
//! `PROBE_INTERVAL` plus a connect of its return, however long it was away. The thread holds
//! only a weak reference: it ends with the store, or once Redis is back.
//!
//! **Bounded while degraded.** The fallback decides with each limit scaled by
//! `store.fallback_share` (for N processes sharing one Redis, `1/N`): a limit or capacity of
//! `L` becomes `max(1, floor(L × share))` — a token bucket's refill rate is scaled alike — so
//! that N processes on their fallbacks admit together at most about what one Redis would. A
//! request whose cost is over a scaled limit is denied while degraded.
//!
//! **Visibility.** The breaker's opening and closing are the store's transitions between `ok`
//! and `degraded` (decided by the fallback) or `failing` (`on_error` is `allow`, `deny` or
//! `error`: no limit holds). Each is logged once (the `log` crate, target `floodwall::store`)
//! and handed to the listener set with [`Store::on_health`]; [`Store::health`] says where it
//! stands, since when and why — the reason the probe last saw, which names a refused
//! connection, a timeout, an out-of-memory server, a script Redis will not keep, or a cluster
//! that cannot serve.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use super::deny_cache::DenyCache;
use super::redis::{RedisStore, StoreFailure};
use super::{
    Adjustment, Ask, HealthListener, Layer, MemoryStore, Store, StoreHealth, StoreState, Verdict,
};
use crate::breaker::{Breaker, BreakerSettings, BreakerState, CallOutcome, Transition, WindowKind};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::config::{OnStoreError, StoreConfig};
use crate::decision::StoreUsed;
use crate::error::{Error, ErrorKind};
use crate::limit::{CountResponses, Outcome, Quota, Rule};

/// How often the probe asks a failing Redis whether it is back.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a probe waits for Redis (at least the store's own deadline).
const PROBE_DEADLINE: Duration = Duration::from_millis(250);

/// How long a caller denied because the shared store is unavailable (`on_error = "deny"`) is
/// told to wait, and the `Retry-After` of a 503 `store_unavailable`.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

/// What the failover store needs to know of the rules it decides.
#[derive(Debug, Clone, Default)]
pub struct FallbackRules {
    /// Per rule (configuration order), per policy: the quota the fallback decides with.
    quotas: Vec<Vec<Quota>>,
    /// Per rule: whether it gives back what some responses do not count (its denials are
    /// then not cached: a refund can make room before the wait is over).
    refunds: Vec<bool>,
    /// Whether some fallback quota differs from its rule's (`fallback_share < 1`).
    scaled: bool,
}

impl FallbackRules {
    /// For `rules`, the fallback deciding with `share` of each limit (`0 < share <= 1`).
    pub fn new(rules: &[Rule], share: f64) -> Self {
        FallbackRules {
            quotas: rules
                .iter()
                .map(|r| {
                    r.policies()
                        .iter()
                        .map(|p| p.quota().shared_by(share))
                        .collect()
                })
                .collect(),
            refunds: rules
                .iter()
                .map(|r| r.response_counting().count != CountResponses::All)
                .collect(),
            scaled: share < 1.0,
        }
    }
}

/// A shared store and a local one behind the breaker, the probe, the deny cache and
/// `on_error` (see the module docs).
#[derive(Debug)]
pub struct FailoverStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: RedisStore,
    local: MemoryStore,
    policy: OnStoreError,
    rules: FallbackRules,
    clock: RwLock<Arc<dyn Clock>>,
    /// The breaker, and whether a probe thread is running (both under one lock, so that a
    /// trip never misses a probe that is just ending).
    breaker: Mutex<(Breaker, bool)>,
    /// The last failure, until a call succeeds.
    last_failure: Mutex<Option<StoreFailure>>,
    /// Where the store stands, since when, and why.
    health: Mutex<StoreHealth>,
    listener: RwLock<Option<HealthListener>>,
    /// Denials remembered until they expire (`store.deny_cache`).
    denials: Option<DenyCache>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverStore")
            .field("shared", &self.shared)
            .field("local", &self.local)
            .field("policy", &self.policy)
            .field("health", &*self.health.lock())
            .finish_non_exhaustive()
    }
}

impl FailoverStore {
    /// `shared` with `local` as its fallback, deciding `rules` (see [`FallbackRules::new`])
    /// under `config`'s `on_error` and `deny_cache`. Connects and loads the script first,
    /// within `connect_timeout`. When Redis cannot be reached the store starts `degraded`
    /// (`on_error = "fallback"`) or `failing` (any other policy), says why in its health and
    /// its log line, and the probe already watches for Redis: no request pays the deadline to
    /// find it absent, and a host with `on_error = "error"` gets `store_unavailable` from the
    /// first request on.
    pub fn new(
        shared: RedisStore,
        local: MemoryStore,
        rules: FallbackRules,
        config: &StoreConfig,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now();
        let connected = shared.connect(config.connect_timeout.0);
        let store = FailoverStore {
            inner: Arc::new(Inner {
                shared,
                local,
                policy: config.on_error,
                rules,
                clock: RwLock::new(clock),
                breaker: Mutex::new((store_breaker(), false)),
                last_failure: Mutex::new(None),
                health: Mutex::new(StoreHealth::ok(now)),
                listener: RwLock::new(None),
                denials: config.deny_cache.then(DenyCache::default),
            }),
        };
        if let Err(failure) = connected {
            let inner = &store.inner;
            *inner.last_failure.lock() = Some(failure);
            let opened = inner.breaker.lock().0.force_open(now);
            if let Some(t) = opened {
                inner.transition(t);
            }
        }
        store
    }
}

impl Inner {
    fn now(&self) -> Timestamp {
        self.clock.read().now()
    }

    /// Acts on a breaker transition: the store's own, logged and heard once.
    fn transition(self: &Arc<Self>, t: Transition) {
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
                self.start_probe();
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
    fn start_probe(self: &Arc<Self>) {
        {
            let mut breaker = self.breaker.lock();
            if breaker.1 {
                return;
            }
            breaker.1 = true;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("floodwall-store-probe".into())
            .spawn(move || probe_until_back(&weak));
        if let Err(e) = spawned {
            self.breaker.lock().1 = false;
            log::error!(target: "floodwall::store", "cannot start the shared store's probe thread: {e}");
        }
    }

    /// Runs `call` on the shared store unless its breaker is open, and tells the breaker how
    /// it went; `None` when the store was not asked or failed. A failure is kept for
    /// [`Store::failure`] until a call succeeds.
    fn through_breaker<T>(
        self: &Arc<Self>,
        call: impl FnOnce(&RedisStore) -> Result<T, StoreFailure>,
    ) -> Option<T> {
        let (permit, opened) = self.breaker.lock().0.try_acquire(self.now());
        if let Some(t) = opened {
            self.transition(t);
        }
        let permit = permit?;
        let started = std::time::Instant::now();
        let result = call(&self.shared);
        let outcome = if result.is_ok() {
            CallOutcome::Success
        } else {
            CallOutcome::Failure
        };
        match &result {
            Ok(_) => {
                let mut last = self.last_failure.lock();
                if last.is_some() {
                    *last = None;
                }
            }
            Err(failure) => *self.last_failure.lock() = Some(failure.clone()),
        }
        let transition =
            self.breaker
                .lock()
                .0
                .record(permit, outcome, started.elapsed(), self.now());
        if let Some(t) = transition {
            self.transition(t);
        }
        result.ok()
    }

    /// The deny cache's answer to this request (`Ok`, its outcomes written), or what a
    /// denial Redis gives it should be remembered by. Only cost-1 denials of rules that never
    /// refund are remembered (see [`DenyCache`]).
    fn look_up(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<Verdict, Pending<'_>> {
        let cacheable = cost == 1
            && !layers.is_empty()
            && !layers.iter().any(|l| {
                self.rules
                    .refunds
                    .get(l.rule_index())
                    .copied()
                    .unwrap_or(false)
            });
        let Some(cache) = self.denials.as_ref().filter(|_| cacheable) else {
            return Err(Pending(None));
        };
        let key = DenyCache::key(layers);
        if cache.get(&key, now, outcomes) {
            return Ok(Verdict {
                allowed: false,
                store: StoreUsed::DenyCache,
            });
        }
        Err(Pending(Some((cache, key))))
    }

    /// A decision while the shared store is unavailable, by the `on_error` policy.
    fn decide_unavailable(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<Verdict, Error> {
        let verdict = |allowed, store| Ok(Verdict { allowed, store });
        match self.policy {
            OnStoreError::Fallback => {
                let allowed = if self.rules.scaled {
                    self.decide_scaled(layers, cost, now, outcomes)?
                } else {
                    self.local.acquire(layers, cost, now, outcomes)?
                };
                verdict(allowed, StoreUsed::Fallback)
            }
            OnStoreError::Allow => {
                for (outcome, layer) in outcomes.iter_mut().zip(layers) {
                    *outcome = Outcome::new(true, layer.quota.limit(), 0, 0);
                }
                verdict(true, StoreUsed::Unavailable)
            }
            OnStoreError::Deny => {
                let retry = u64::try_from(UNAVAILABLE_RETRY.as_micros()).unwrap_or(u64::MAX);
                for outcome in outcomes.iter_mut() {
                    *outcome = Outcome::new(false, 0, 0, retry);
                }
                verdict(false, StoreUsed::Unavailable)
            }
            OnStoreError::Error => Err(Error::new(
                ErrorKind::StoreUnavailable,
                match self.last_failure.lock().as_ref() {
                    Some(failure) => format!("the shared store is unavailable: {failure}"),
                    None => "the shared store is unavailable".to_owned(),
                },
            )),
        }
    }

    /// The fallback's decision with each layer's quota scaled by `fallback_share`.
    fn decide_scaled(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<bool, Error> {
        let scaled: SmallVec<[Layer<'_>; 4]> =
            layers.iter().map(|l| self.fallback_layer(l)).collect();
        if let Some(over) = scaled
            .iter()
            .position(|l| !l.shadow && cost > l.quota.limit())
        {
            // It could never pass while degraded: denied, nothing consumed.
            for (outcome, layer) in outcomes.iter_mut().zip(&scaled) {
                *outcome = Outcome::new(true, layer.quota.limit(), 0, 0);
            }
            let period = u64::try_from(scaled[over].quota.period().as_micros()).unwrap_or(u64::MAX);
            outcomes[over] = Outcome::new(false, scaled[over].quota.limit(), period, period);
            return Ok(false);
        }
        self.local.acquire(&scaled, cost, now, outcomes)
    }

    /// `layer` as the fallback decides it: with its scaled quota.
    fn fallback_layer<'a>(&'a self, layer: &Layer<'a>) -> Layer<'a> {
        let quota = self
            .rules
            .quotas
            .get(layer.rule_index())
            .and_then(|q| q.get(layer.policy_index()))
            .unwrap_or(layer.quota);
        Layer { quota, ..*layer }
    }
}

/// A request the deny cache did not answer, and where Redis's denial of it is remembered.
struct Pending<'a>(Option<(&'a DenyCache, Vec<u8>)>);

impl Pending<'_> {
    /// Redis's verdict, its denial remembered.
    fn decided(self, allowed: bool, now: Timestamp, outcomes: &[Outcome]) -> Verdict {
        if let (false, Some((cache, key))) = (allowed, self.0) {
            cache.put(key, now, outcomes);
        }
        Verdict {
            allowed,
            store: StoreUsed::Redis,
        }
    }
}

/// The probe thread's loop: ask every [`PROBE_INTERVAL`] until Redis answers, then close the
/// breaker. Ends early when the store is dropped or the breaker closed by other means.
fn probe_until_back(inner: &Weak<Inner>) {
    loop {
        std::thread::sleep(PROBE_INTERVAL);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        {
            let mut breaker = inner.breaker.lock();
            if breaker.0.state(inner.now()) == BreakerState::Closed {
                breaker.1 = false;
                return;
            }
        }
        let deadline = PROBE_DEADLINE.max(inner.shared.timeout());
        match inner.shared.probe(deadline) {
            Ok(()) => {
                let transition = {
                    let mut breaker = inner.breaker.lock();
                    breaker.1 = false;
                    breaker.0.reset(inner.now())
                };
                *inner.last_failure.lock() = None;
                if let Some(t) = transition {
                    inner.transition(t);
                }
                return;
            }
            Err(failure) => {
                let mut health = inner.health.lock();
                if health.state != StoreState::Ok {
                    health.set_reason(&failure);
                }
                drop(health);
                *inner.last_failure.lock() = Some(failure);
            }
        }
    }
}

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

impl Store for FailoverStore {
    fn decide(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
        times: &mut [Timestamp],
    ) -> Result<Verdict, Error> {
        let inner = &self.inner;
        let pending = match inner.look_up(layers, cost, now, outcomes) {
            Ok(cached) => return Ok(cached),
            Err(pending) => pending,
        };
        match inner.through_breaker(|redis| redis.decide(layers, cost, now, outcomes, times)) {
            Some(allowed) => Ok(pending.decided(allowed, now, outcomes)),
            None => {
                times.fill(now);
                inner.decide_unavailable(layers, cost, now, outcomes)
            }
        }
    }

    fn decide_many(
        &self,
        asks: &[Ask<'_>],
        outcomes: &mut [&mut [Outcome]],
    ) -> Vec<Result<Verdict, Error>> {
        let inner = &self.inner;
        // Requests the deny cache answers go no further; the others go to Redis together.
        let looked_up: Vec<Result<Verdict, Pending<'_>>> = asks
            .iter()
            .zip(outcomes.iter_mut())
            .map(|(ask, out)| inner.look_up(ask.layers, ask.cost, ask.now, out))
            .collect();
        let batch: Vec<(&[Layer<'_>], u64, Timestamp)> = asks
            .iter()
            .zip(&looked_up)
            .filter(|(_, l)| l.is_err())
            .map(|(a, _)| (a.layers, a.cost, a.now))
            .collect();
        let mut slices: Vec<&mut [Outcome]> = outcomes
            .iter_mut()
            .zip(&looked_up)
            .filter(|(_, l)| l.is_err())
            .map(|(o, _)| &mut **o)
            .collect();
        let decided = if batch.is_empty() {
            Some(Vec::new())
        } else {
            inner.through_breaker(|redis| redis.decide_many(&batch, &mut slices))
        };
        drop(slices);
        let mut decided = decided.map(Vec::into_iter);
        asks.iter()
            .zip(outcomes.iter_mut())
            .zip(looked_up)
            .map(|((ask, out), looked_up)| {
                let pending = match looked_up {
                    Ok(cached) => return Ok(cached),
                    Err(pending) => pending,
                };
                match decided.as_mut() {
                    Some(d) => Ok(pending.decided(d.next().unwrap_or(false), ask.now, out)),
                    None => inner.decide_unavailable(ask.layers, ask.cost, ask.now, out),
                }
            })
            .collect()
    }

    fn adjust(&self, ops: &[(Layer<'_>, Adjustment, StoreUsed)]) {
        let inner = &self.inner;
        let mut remote: Vec<(Layer<'_>, Adjustment)> = Vec::new();
        for &(layer, adjustment, store) in ops {
            match store {
                StoreUsed::Redis => remote.push((layer, adjustment)),
                StoreUsed::Fallback => {
                    inner.local.apply(&inner.fallback_layer(&layer), adjustment);
                }
                _ => {}
            }
        }
        if !remote.is_empty() {
            let _ = inner.through_breaker(|redis| redis.adjust(&remote));
        }
    }

    fn used(&self) -> StoreUsed {
        StoreUsed::Redis
    }

    fn health(&self) -> StoreHealth {
        self.inner.health.lock().clone()
    }

    fn on_health(&self, listener: HealthListener) {
        *self.inner.listener.write() = Some(listener);
    }

    fn failure(&self) -> Option<String> {
        self.inner
            .last_failure
            .lock()
            .as_ref()
            .map(ToString::to_string)
    }

    fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        *self.inner.clock.write() = clock;
    }

    fn purge_expired(&self, now: Timestamp) -> usize {
        self.inner.local.purge_expired(now)
    }

    fn key_count(&self) -> usize {
        self.inner.local.key_count()
    }
}
