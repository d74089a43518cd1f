//! The failover store: a shared store (Redis) and a local one (the memory store) behind one
//! failure policy — the breaker that spares callers the shared store's deadline while it is
//! down, the probe that watches for its return, the deny cache, and `store.on_error` when the
//! shared store cannot decide.
//!
//! **Parts.** A single node is one part behind one breaker; a cluster is one part per primary
//! (see the `shards` module), so that a primary that is down sends only the decisions whose
//! keys it holds to the fallback, and the others keep deciding on Redis. A decision whose
//! layers live on several primaries goes to the fallback, whole, if one of them is down (its
//! layers are decided together or not at all). The store is `degraded` (or `failing`) while
//! any part is, and its health names the node.
//!
//! **Recovery.** Three failures in the last ten calls open a part's breaker; from then on callers
//! are answered by `on_error` at once, and no caller's request is spent finding out whether
//! Redis is back. A background thread does that instead: every [`PROBE_INTERVAL`](probe::PROBE_INTERVAL) it asks
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use super::config::{OnStoreError, SharedStoreConfig};
use super::deny_cache::DenyCache;
use super::redis::{Failed, RedisStore, StoreFailure};
use super::synced::Tallies;
use super::{
    Adjustment, Ask, HealthListener, Layer, MemoryStore, Store, StoreHealth, StoreState, Verdict,
};
use crate::breaker::{CallOutcome, Permit};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::StoreUsed;
use crate::error::Error;
use crate::limit::Outcome;

mod probe;
mod shards;
mod synced;
mod unavailable;

use shards::Shards;

use crate::common::retained::Retained;
pub use unavailable::FallbackRules;

/// How long a caller denied because the shared store is unavailable (`on_error = "deny"`) is
/// told to wait, and the `Retry-After` of a 503 `store_unavailable`.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(1);

/// A shared store and a local one behind the breakers, the probe, the deny cache and
/// `on_error` (see the module docs).
#[derive(Debug)]
pub struct FailoverStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: RedisStore,
    local: MemoryStore,
    policy: OnStoreError,
    /// Replaced on a reload; a fallback layer borrows its quota from it.
    rules: Retained<FallbackRules>,
    clock: RwLock<Arc<dyn Clock>>,
    /// The parts, their breakers and failures, and whether a probe thread is running (under
    /// one lock, so that a trip never misses a probe that is just ending).
    shards: Mutex<Shards>,
    /// Where the store stands, since when, and why; and the parts open when it was last
    /// said (a change of those is a transition).
    health: Mutex<(StoreHealth, Vec<String>)>,
    listener: RwLock<Option<HealthListener>>,
    /// Denials remembered until they expire (`store.deny_cache`).
    denials: Option<DenyCache>,
    /// The local counts of rules that sync (`sync`), if any does.
    tallies: Option<Tallies>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverStore")
            .field("shared", &self.shared)
            .field("local", &self.local)
            .field("policy", &self.policy)
            .field("health", &self.health.lock().0)
            .finish_non_exhaustive()
    }
}

impl FailoverStore {
    /// `shared` with `local` as its fallback, deciding `rules` (see [`FallbackRules::new`])
    /// under `config`'s `on_error` and `deny_cache`. Connects and loads the script first,
    /// within `connect_timeout` (on a cluster, reads which primary serves which slots). When
    /// Redis cannot be reached the store starts `degraded` (`on_error = "fallback"`) or
    /// `failing` (any other policy), says why in its health and its log line, and the probe
    /// already watches for Redis: no request pays the deadline to find it absent, and a host
    /// with `on_error = "error"` gets `store_unavailable` from the first request on.
    pub fn new(
        shared: RedisStore,
        local: MemoryStore,
        rules: FallbackRules,
        config: &SharedStoreConfig,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now();
        let connected = shared.connect(config.connect_timeout.0);
        let mut shards = Shards::whole();
        // A cluster's map; without one (no node answered `CLUSTER SLOTS` in time) the cluster
        // is one part until the probe reads it.
        if connected.is_ok()
            && let Ok(Some(map)) = shared.shard_map(config.connect_timeout.0)
        {
            shards.remap(map);
        }
        let store = FailoverStore {
            inner: Arc::new(Inner {
                shared,
                local,
                policy: config.on_error,
                clock: RwLock::new(clock),
                shards: Mutex::new(shards),
                health: Mutex::new((StoreHealth::ok(now), Vec::new())),
                listener: RwLock::new(None),
                denials: config.deny_cache.then(DenyCache::default),
                tallies: Tallies::new(rules.sync.clone(), config.timeout.0),
                rules: Retained::new(rules),
            }),
        };
        store.inner.start_sync();
        if let Err(failure) = connected {
            let inner = &store.inner;
            {
                let mut shards = inner.shards.lock();
                let whole = &mut shards.list[0];
                whole.failure = Some(failure);
                whole.breaker.force_open(now);
            }
            inner.follow(now);
        }
        store
    }
}

/// Leave to call the shared store, from [`Inner::acquire`]: a permit of each part a request
/// involves, handed back to [`Inner::settle`].
struct Permits {
    parts: SmallVec<[(usize, Permit); 2]>,
    started: Instant,
}

impl Inner {
    fn now(&self) -> Timestamp {
        self.clock.read().now()
    }

    /// The hash slots of `layers` on a cluster of several known parts (else none: one part).
    fn slots(&self, layers: &[Layer<'_>]) -> SmallVec<[u16; 4]> {
        if !self.shared.is_cluster() {
            return SmallVec::new();
        }
        layers.iter().map(|l| self.shared.slot(l)).collect()
    }

    /// Leave to ask the shared store about keys in `slots`, unless a part serving one of
    /// them is open.
    fn acquire(self: &Arc<Self>, slots: &[u16]) -> Option<Permits> {
        let now = self.now();
        let mut shards = self.shards.lock();
        let mut permits = Permits {
            parts: SmallVec::new(),
            started: Instant::now(),
        };
        let mut refused = false;
        let mut opened = false;
        for part in shards.of(slots) {
            let (permit, transition) = shards.list[part].breaker.try_acquire(now);
            opened |= transition.is_some();
            match permit {
                Some(p) => permits.parts.push((part, p)),
                None => {
                    refused = true;
                    break;
                }
            }
        }
        if refused {
            for (part, permit) in permits.parts.drain(..) {
                shards.list[part].breaker.release(permit);
            }
        }
        drop(shards);
        if opened {
            self.follow(now);
        }
        (!refused).then_some(permits)
    }

    /// Tells each part's breaker how the call of `permits` went: `failed` names the slots
    /// that failed (none known: every part of the call failed).
    fn settle(self: &Arc<Self>, permits: Permits, failed: Option<&Failed>) {
        let now = self.now();
        let latency = permits.started.elapsed();
        let mut shards = self.shards.lock();
        let failing: SmallVec<[usize; 4]> = match failed {
            Some(f) if !f.slots.is_empty() => {
                let parts = shards.of(&f.slots);
                // A failure the map cannot place (it is stale) is every part's of this call.
                if permits.parts.iter().any(|(p, _)| parts.contains(p)) {
                    parts
                } else {
                    permits.parts.iter().map(|(p, _)| *p).collect()
                }
            }
            Some(_) => permits.parts.iter().map(|(p, _)| *p).collect(),
            None => SmallVec::new(),
        };
        let mut changed = false;
        for (part, permit) in permits.parts {
            let shard = &mut shards.list[part];
            let outcome = if failing.contains(&part) {
                shard.failure = failed.map(|f| f.failure.clone());
                CallOutcome::Failure
            } else {
                if shard.failure.is_some() {
                    shard.failure = None;
                }
                CallOutcome::Success
            };
            changed |= shard
                .breaker
                .record(permit, outcome, latency, now)
                .is_some();
        }
        drop(shards);
        if changed {
            self.follow(now);
        }
    }

    /// Runs `call` on the shared store unless a part it involves is open, and tells the
    /// breakers how it went; `None` when the store was not asked or failed.
    fn through<T>(
        self: &Arc<Self>,
        layers: &[Layer<'_>],
        call: impl FnOnce(&RedisStore) -> Result<T, Failed>,
    ) -> Option<T> {
        let permits = self.acquire(&self.slots(layers))?;
        let result = call(&self.shared);
        self.settle(permits, result.as_ref().err());
        result.ok()
    }

    /// The last failure of an open part (of any part, when none is open).
    fn failure(&self) -> Option<StoreFailure> {
        let now = self.now();
        let shards = self.shards.lock();
        let open = shards.list.iter().find(|s| s.is_open(now));
        open.or_else(|| shards.list.iter().find(|s| s.failure.is_some()))
            .and_then(shards::Shard::reason)
    }

    /// Brings the store's health in line with its parts' breakers: `ok` when none is open,
    /// else `degraded` (`on_error = "fallback"`) or `failing`, the reason an open part's.
    /// A change of which parts are open is a transition: logged once, handed to the listener,
    /// and the probe started while any is open.
    fn follow(self: &Arc<Self>, at: Timestamp) {
        let (open, reason) = {
            let shards = self.shards.lock();
            let open = shards.open(at);
            let reason = shards
                .list
                .iter()
                .find(|s| s.is_open(at))
                .and_then(shards::Shard::reason);
            (open, reason)
        };
        let health = {
            let mut health = self.health.lock();
            if health.1 == open {
                return;
            }
            let state = if open.is_empty() {
                StoreState::Ok
            } else if self.policy == OnStoreError::Fallback {
                StoreState::Degraded
            } else {
                StoreState::Failing
            };
            let since = if state == health.0.state {
                Timestamp::from_micros(health.0.since_ms.saturating_mul(1000))
            } else {
                at
            };
            let new = if state == StoreState::Ok {
                StoreHealth::ok(since)
            } else {
                StoreHealth::new(state, since, reason.as_ref())
            };
            *health = (new.clone(), open);
            new
        };
        if health.state == StoreState::Ok {
            log::info!(target: "floodwall::store", "{}", health.message());
        } else {
            log::warn!(target: "floodwall::store", "{} (on_error = {})", health.message(), self.policy.as_str());
            self.start_probe();
        }
        let listener = self.listener.read().clone();
        if let Some(listener) = listener {
            listener(&health);
        }
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
                    .current()
                    .refunds
                    .get(l.rule_state())
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
        // Layers that block after several denials: Redis must see each denial until the
        // block starts, so only their blocks are remembered.
        let counting = layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.quota.block().is_some_and(|b| b.after() > 1))
            .fold(0u64, |bits, (i, _)| {
                bits | 1u64.checked_shl(i as u32).unwrap_or(0)
            });
        Err(Pending(Some((cache, key, counting))))
    }
}

/// A request the deny cache did not answer, where Redis's denial of it is remembered, and
/// which of its layers (a bit each) count denials towards a block.
struct Pending<'a>(Option<(&'a DenyCache, Vec<u8>, u64)>);

impl Pending<'_> {
    /// Redis's verdict, its denial remembered.
    fn decided(self, allowed: bool, now: Timestamp, outcomes: &[Outcome]) -> Verdict {
        if let (false, Some((cache, key, counting))) = (allowed, self.0) {
            let counts = outcomes.iter().enumerate().any(|(i, o)| {
                !o.allowed
                    && !o.blocked()
                    && counting & 1u64.checked_shl(i as u32).unwrap_or(0) != 0
            });
            if !counts {
                cache.put(key, now, outcomes);
            }
        }
        Verdict {
            allowed,
            store: StoreUsed::Redis,
        }
    }
}

impl FailoverStore {
    /// [`Store::decide_many`] for requests without local layers.
    fn decide_exact(
        &self,
        asks: &[Ask<'_>],
        outcomes: &mut [&mut [Outcome]],
    ) -> Vec<Result<Verdict, Error>> {
        let inner = &self.inner;
        // Requests the deny cache answers go no further, nor those a part that is down holds;
        // the others go to Redis together.
        let mut looked_up: Vec<Result<Verdict, Pending<'_>>> = Vec::with_capacity(asks.len());
        let mut permits: Vec<Option<Permits>> = Vec::with_capacity(asks.len());
        let timeout = inner.shared.timeout();
        for (ask, out) in asks.iter().zip(outcomes.iter_mut()) {
            let found = inner.look_up(ask.layers, ask.cost, ask.now, out);
            // A request that waited out the whole deadline in a queue is answered now, by
            // `on_error`, without asking Redis or counting against it.
            let overdue = ask.queued.is_some_and(|q| q.elapsed() >= timeout);
            permits.push(match found {
                Err(_) if !overdue => inner.acquire(&inner.slots(ask.layers)),
                _ => None,
            });
            looked_up.push(found);
        }
        let queued = asks
            .iter()
            .zip(&permits)
            .filter(|(_, p)| p.is_some())
            .filter_map(|(a, _)| a.queued)
            .min();
        let batch: Vec<(&[Layer<'_>], u64, Timestamp)> = asks
            .iter()
            .zip(&permits)
            .filter(|(_, p)| p.is_some())
            .map(|(a, _)| (a.layers, a.cost, a.now))
            .collect();
        let mut slices: Vec<&mut [Outcome]> = outcomes
            .iter_mut()
            .zip(&permits)
            .filter(|(_, p)| p.is_some())
            .map(|(o, _)| &mut **o)
            .collect();
        let decided = if batch.is_empty() {
            Vec::new()
        } else {
            inner.shared.decide_many(&batch, &mut slices, queued)
        };
        drop(slices);
        let mut decided = decided.into_iter();
        asks.iter()
            .zip(outcomes.iter_mut())
            .zip(looked_up.into_iter().zip(permits))
            .map(|((ask, out), (looked_up, permits))| {
                let pending = match looked_up {
                    Ok(cached) => return Ok(cached),
                    Err(pending) => pending,
                };
                let verdict = permits.and_then(|permits| {
                    let verdict = decided.next().unwrap_or_else(|| {
                        Err(StoreFailure::Redis("no reply to a decision".into()).into())
                    });
                    inner.settle(permits, verdict.as_ref().err());
                    verdict.ok()
                });
                match verdict {
                    Some(allowed) => Ok(pending.decided(allowed, ask.now, out)),
                    None => inner.decide_unavailable(ask.layers, ask.cost, ask.now, out),
                }
            })
            .collect()
    }
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
        if let Some(tallies) = inner.tallies.as_ref()
            && layers.iter().any(|l| tallies.is_synced(l))
        {
            return inner.decide_synced(tallies, layers, cost, now, outcomes, times);
        }
        let pending = match inner.look_up(layers, cost, now, outcomes) {
            Ok(cached) => return Ok(cached),
            Err(pending) => pending,
        };
        match inner.through(layers, |redis| {
            redis.decide(layers, cost, now, outcomes, times)
        }) {
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
        let Some(tallies) = self.inner.tallies.as_ref() else {
            return self.decide_exact(asks, outcomes);
        };
        let synced: Vec<bool> = asks
            .iter()
            .map(|a| a.layers.iter().any(|l| tallies.is_synced(l)))
            .collect();
        if !synced.contains(&true) {
            return self.decide_exact(asks, outcomes);
        }
        // Requests with local layers one by one (most never wait on Redis), the rest together.
        let mut verdicts: Vec<Option<Result<Verdict, Error>>> = Vec::with_capacity(asks.len());
        let mut rest: Vec<Ask<'_>> = Vec::new();
        let mut rest_out: Vec<&mut [Outcome]> = Vec::new();
        for ((ask, out), &local) in asks.iter().zip(outcomes.iter_mut()).zip(&synced) {
            if local {
                let mut times: SmallVec<[Timestamp; 4]> =
                    SmallVec::from_elem(ask.now, ask.layers.len());
                verdicts.push(Some(
                    self.decide(ask.layers, ask.cost, ask.now, out, &mut times),
                ));
            } else {
                verdicts.push(None);
                rest.push(*ask);
                rest_out.push(out);
            }
        }
        let mut decided = self.decide_exact(&rest, &mut rest_out).into_iter();
        verdicts
            .into_iter()
            .map(|v| {
                v.or_else(|| decided.next()).unwrap_or_else(|| {
                    Err(Error::new(
                        crate::error::ErrorKind::StoreUnavailable,
                        "the shared store answered nothing for a decision",
                    ))
                })
            })
            .collect()
    }

    fn adjust(&self, ops: &[(Layer<'_>, Adjustment, StoreUsed)]) {
        let inner = &self.inner;
        let mut remote: Vec<(Layer<'_>, Adjustment)> = Vec::new();
        for &(layer, adjustment, store) in ops {
            match store {
                StoreUsed::Redis => match inner.tallies.as_ref() {
                    Some(tallies) if tallies.is_synced(&layer) => {
                        tallies.adjust(&layer, adjustment);
                    }
                    _ => remote.push((layer, adjustment)),
                },
                StoreUsed::Fallback => {
                    inner.local.apply(&inner.fallback_layer(&layer), adjustment);
                }
                _ => {}
            }
        }
        if !remote.is_empty() {
            let layers: SmallVec<[Layer<'_>; 4]> = remote.iter().map(|(l, _)| *l).collect();
            let _ = inner.through(&layers, |redis| redis.adjust(&remote));
        }
    }

    fn administer(
        &self,
        layer: &Layer<'_>,
        op: crate::store::KeyOp,
        now: Timestamp,
    ) -> Result<(), Error> {
        // A remembered denial of this key may no longer hold.
        if let Some(cache) = &self.inner.denials {
            cache.clear();
        }
        self.on_shared(layer, |redis| redis.administer(layer, op, now))
    }

    fn key_limit(
        &self,
        layer: &Layer<'_>,
        now: Timestamp,
    ) -> Result<Option<(u64, std::time::Duration)>, Error> {
        self.on_shared(layer, |redis| redis.key_limit(layer, now))
    }

    fn used(&self) -> StoreUsed {
        StoreUsed::Redis
    }

    fn health(&self) -> StoreHealth {
        self.inner.health.lock().0.clone()
    }

    fn on_health(&self, listener: HealthListener) {
        *self.inner.listener.write() = Some(listener);
    }

    fn failure(&self) -> Option<String> {
        self.inner.failure().as_ref().map(ToString::to_string)
    }

    fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        *self.inner.clock.write() = clock;
    }

    fn purge_expired(&self, now: Timestamp) -> usize {
        self.inner.local.purge_expired(now)
    }

    fn key_count(&self) -> usize {
        self.inner.local.key_count() + self.inner.tallies.as_ref().map_or(0, Tallies::len)
    }

    fn reload(&self, rules: &[crate::limit::Rule], forget: &[u32]) {
        let inner = &self.inner;
        let share = inner.rules.current().share;
        inner.rules.install(FallbackRules::new(rules, share));
        inner.local.forget_states(forget);
        // A remembered denial may be of a rule that changed.
        if let Some(cache) = &inner.denials {
            cache.clear();
        }
    }
}

impl FailoverStore {
    /// Runs an administrator's `call` on the shared store for `layer`'s key, through the
    /// breaker: a shared store that cannot be reached (or whose breaker is open) is a
    /// `store_unavailable` error, and a rule that counts locally (`sync`) an
    /// `invalid_config` one.
    fn on_shared<T>(
        &self,
        layer: &Layer<'_>,
        call: impl FnOnce(&crate::store::RedisStore) -> Result<T, crate::store::redis::Failed>,
    ) -> Result<T, Error> {
        let inner = &self.inner;
        if inner
            .tallies
            .as_ref()
            .is_some_and(|tallies| tallies.is_synced(layer))
        {
            return Err(Error::new(
                crate::error::ErrorKind::InvalidConfig,
                format!(
                    "rule {:?} counts locally between syncs (sync): its keys cannot be administered",
                    layer.rule.split('@').next().unwrap_or(layer.rule)
                ),
            ));
        }
        let permits = inner.acquire(&inner.slots(std::slice::from_ref(layer)));
        let Some(permits) = permits else {
            return Err(Error::new(
                crate::error::ErrorKind::StoreUnavailable,
                format!(
                    "the shared store is unavailable: {}",
                    inner
                        .failure()
                        .map_or_else(|| "its breaker is open".to_owned(), |f| f.to_string())
                ),
            ));
        };
        let result = call(&inner.shared);
        inner.settle(permits, result.as_ref().err());
        result.map_err(|f| {
            Error::new(
                crate::error::ErrorKind::StoreUnavailable,
                format!("the shared store is unavailable: {}", f.failure),
            )
        })
    }
}

impl Drop for FailoverStore {
    fn drop(&mut self) {
        // What this process counted and has not yet sent reaches Redis.
        self.inner.flush();
    }
}
