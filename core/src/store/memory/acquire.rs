//! The acquire paths: one layer (a key the shard holds, or a new one), and several layers
//! locked in ascending shard order, evaluated, then consumed only if all admit.

use parking_lot::MutexGuard;

use super::entry::{compact, pressure, secs};
use super::{MemoryStore, Shard};
use crate::clock::Timestamp;
use crate::error::{Error, ErrorKind};
use crate::limit::{Outcome, Quota};
use crate::store::Layer;

/// Multi-layer decisions of at most this many layers use the smallest stack frame.
const FEW: usize = 4;
/// The most layers one decision may have: the engine refuses configurations with more rules.
const MAX_LAYERS: usize = crate::common::MAX_RULES;

impl MemoryStore {
    /// One layer's whole decision: the store's fast path.
    #[inline]
    pub(crate) fn acquire_one(&self, layer: &Layer<'_>, cost: u64, now: Timestamp) -> Outcome {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        if layer.quota.key_limits() {
            return self.acquire_own(&mut shard, hash, layer, cost, now);
        }
        if layer.quota.block().is_some() {
            return self.acquire_blocking(&mut shard, hash, layer, cost, now);
        }
        self.acquire_in(&mut shard, hash, layer, cost, now)
    }

    /// [`acquire_one`](Self::acquire_one) for a rule whose keys may have limits of their own:
    /// decided under the key's limit while one is in force.
    #[cold]
    #[inline(never)]
    fn acquire_own(
        &self,
        shard: &mut Shard,
        hash: u64,
        layer: &Layer<'_>,
        cost: u64,
        now: Timestamp,
    ) -> Outcome {
        let (quota, own) = self.quota_in(shard, layer, now);
        let layer = Layer {
            quota: &quota,
            ..*layer
        };
        let outcome = if quota.block().is_some() {
            self.acquire_blocking(shard, hash, &layer, cost, now)
        } else {
            self.acquire_in(shard, hash, &layer, cost, now)
        };
        own.map_or(outcome, |limit| outcome.under_own(limit))
    }

    /// [`acquire_one`](Self::acquire_one) in the locked `shard`.
    #[inline(always)]
    fn acquire_in(
        &self,
        shard: &mut Shard,
        hash: u64,
        layer: &Layer<'_>,
        cost: u64,
        now: Timestamp,
    ) -> Outcome {
        let quota = layer.quota;
        let slot = compact(layer.slot);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            let mut expires = entry.expires_at();
            let outcome = quota.acquire_expiring(&mut entry.state, now, cost, &mut expires);
            entry.expires_s = secs(expires);
            entry.press(&outcome, quota.limit());
            return outcome;
        }
        self.acquire_new(shard, hash, layer, cost, now)
    }

    /// [`acquire_one`](Self::acquire_one) for a rule that blocks keys after denials: a
    /// blocked key is denied until the block ends, and a denial may start a block.
    #[cold]
    #[inline(never)]
    fn acquire_blocking(
        &self,
        shard: &mut Shard,
        hash: u64,
        layer: &Layer<'_>,
        cost: u64,
        now: Timestamp,
    ) -> Outcome {
        if let Some(left) = self.blocked(shard, layer, now) {
            let slot = compact(layer.slot);
            let quota = layer.quota;
            let outcome = match shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
                Some(entry) => quota.evaluate(&mut entry.state, now, cost),
                None => quota.evaluate(&mut quota.new_state(now), now, cost),
            };
            return outcome.block(left);
        }
        let outcome = self.acquire_in(shard, hash, layer, cost, now);
        if outcome.allowed {
            return outcome;
        }
        match self.deny(shard, layer, now) {
            Some(length) => outcome.block(length),
            None => outcome,
        }
    }

    /// [`acquire_one`](Self::acquire_one) for a key the shard does not hold.
    #[cold]
    #[inline(never)]
    fn acquire_new(
        &self,
        shard: &mut Shard,
        hash: u64,
        layer: &Layer<'_>,
        cost: u64,
        now: Timestamp,
    ) -> Outcome {
        let quota = layer.quota;
        let mut state = quota.new_state(now);
        let outcome = quota.evaluate(&mut state, now, cost);
        if !outcome.allowed {
            return outcome;
        }
        let outcome = quota.consume(&mut state, now, cost);
        self.insert(
            shard,
            hash,
            layer,
            quota,
            state,
            now,
            pressure(&outcome, quota.limit()),
        );
        outcome
    }

    /// Applies `layers` at `now` for a request of `cost`, all-or-nothing: writes each layer's
    /// outcome into `outcomes` and says whether the request is admitted ([`Store::decide`],
    /// without times: this store decides at `now`).
    ///
    /// [`Store::decide`]: crate::store::Store::decide
    pub fn acquire(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<bool, Error> {
        debug_assert_eq!(layers.len(), outcomes.len());
        if let ([layer], [outcome]) = (layers, &mut *outcomes) {
            *outcome = self.acquire_one(layer, cost, now);
            return Ok(outcome.allowed || layer.shadow);
        }
        self.acquire_many(layers, cost, now, outcomes)
    }

    /// [`acquire`](Self::acquire) for two layers or more.
    #[inline(never)]
    fn acquire_many(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> Result<bool, Error> {
        match layers.len() {
            n if n <= FEW => Ok(self.acquire_layers::<FEW>(layers, cost, now, outcomes)),
            n if n <= MAX_LAYERS => {
                Ok(self.acquire_layers::<MAX_LAYERS>(layers, cost, now, outcomes))
            }
            n => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("{n} rules match one request; at most {MAX_LAYERS} can"),
            )),
        }
    }

    /// Locks every layer's shard in ascending order, evaluates every layer, and consumes only
    /// if all admit. The bookkeeping lives in fixed arrays of `N >= layers.len()` entries on the
    /// stack (growable vectors cost a quarter of a three-layer decision).
    #[inline(always)]
    fn acquire_layers<const N: usize>(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> bool {
        let n = layers.len();
        debug_assert!(n <= N);
        // Each layer's hash and guard; the distinct shards, sorted, are the locking order.
        let mut hashes = [0u64; N];
        let mut guard_of = [0usize; N];
        let mut order = [0usize; N];
        let mut unique = 0;
        for (i, layer) in layers.iter().enumerate() {
            hashes[i] = self.hash(layer.slot, layer.key);
            let shard = self.shard_of(hashes[i]);
            guard_of[i] = shard;
            if let Err(at) = order[..unique].binary_search(&shard) {
                order.copy_within(at..unique, at + 1);
                order[at] = shard;
                unique += 1;
            }
        }
        for g in &mut guard_of[..n] {
            *g = order[..unique].binary_search(g).unwrap_or(0);
        }
        let mut guards: [Option<MutexGuard<'_, Shard>>; N] = std::array::from_fn(|_| None);
        for (guard, &shard) in guards.iter_mut().zip(&order[..unique]) {
            *guard = Some(self.shards[shard].0.lock());
        }
        // Layers whose keys may have limits of their own are decided under them: with the
        // shards locked, each such layer's quota is replaced by its key's, if it has one.
        let mut owns = [None::<(Quota, u64)>; N];
        let mut any_own = false;
        for (i, layer) in layers.iter().enumerate() {
            if !layer.quota.key_limits() {
                continue;
            }
            let Some(shard) = guards[guard_of[i]].as_ref() else {
                unreachable!("every layer's shard is locked")
            };
            if let (quota, Some(limit)) = self.quota_in(shard, layer, now) {
                owns[i] = Some((quota, limit));
                any_own = true;
            }
        }
        let own_layers: [Layer<'_>; N];
        let layers: &[Layer<'_>] = if any_own {
            own_layers = std::array::from_fn(|i| match (&owns[i], layers.get(i)) {
                (Some((quota, _)), Some(layer)) => Layer { quota, ..*layer },
                (None, Some(layer)) => *layer,
                (_, None) => layers[0],
            });
            &own_layers[..n]
        } else {
            layers
        };
        let admitted =
            self.decide_locked(&mut guards, &guard_of, &hashes, layers, cost, now, outcomes);
        if any_own {
            for (outcome, own) in outcomes.iter_mut().zip(&owns) {
                if let Some((_, limit)) = own {
                    *outcome = outcome.under_own(*limit);
                }
            }
        }
        admitted
    }

    /// [`acquire_layers`](Self::acquire_layers) once every layer's shard is locked (`guards`,
    /// layer `i`'s at `guard_of[i]`, its hash `hashes[i]`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn decide_locked<const N: usize>(
        &self,
        guards: &mut [Option<MutexGuard<'_, Shard>>; N],
        guard_of: &[usize; N],
        hashes: &[u64; N],
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> bool {
        let find = |shard: &Shard, hash: u64, layer: &Layer<'_>| {
            let slot = compact(layer.slot);
            shard
                .table
                .find_bucket_index(hash, |e| e.is(slot, layer.key))
        };

        // Phase 1: evaluate every layer without consuming, remembering where each entry is.
        let mut buckets = [None::<usize>; N];
        let mut all = true;
        let mut blocking = false;
        for (i, (layer, outcome)) in layers.iter().zip(outcomes.iter_mut()).enumerate() {
            let Some(shard) = guards[guard_of[i]].as_mut() else {
                unreachable!("every layer's shard is locked")
            };
            buckets[i] = find(shard, hashes[i], layer);
            *outcome = match buckets[i].and_then(|b| shard.table.get_bucket_mut(b)) {
                Some(entry) => {
                    let outcome = layer.quota.evaluate(&mut entry.state, now, cost);
                    if !outcome.allowed {
                        // Denying now: the consuming phase below will not touch it.
                        entry.press(&outcome, layer.quota.limit());
                    }
                    outcome
                }
                None => layer
                    .quota
                    .evaluate(&mut layer.quota.new_state(now), now, cost),
            };
            if layer.quota.block().is_some()
                && let Some(left) = self.blocked(shard, layer, now)
            {
                *outcome = outcome.block(left);
            }
            all &= outcome.allowed || layer.shadow;
            blocking |= layer.quota.block().is_some();
        }
        // An insert may move a shard's entries, so after one the shard's later layers are
        // looked up again. (At most MAX_SHARDS = 64 guards, so a u64 holds one bit per guard.)
        let mut moved: u64 = 0;
        if blocking {
            // Each layer that denied of itself counts a denial, which may start a block.
            for (i, (layer, outcome)) in layers.iter().zip(outcomes.iter_mut()).enumerate() {
                if layer.quota.block().is_none() || outcome.allowed || outcome.blocked() {
                    continue;
                }
                let Some(shard) = guards[guard_of[i]].as_mut() else {
                    unreachable!("every layer's shard is locked")
                };
                if let Some(length) = self.deny(shard, layer, now) {
                    *outcome = outcome.block(length);
                }
                moved |= 1 << guard_of[i];
            }
        }
        if !all {
            return false;
        }

        // Phase 2: every layer admits, so every layer consumes.
        for (i, (layer, outcome)) in layers.iter().zip(outcomes.iter_mut()).enumerate() {
            if !outcome.allowed {
                // A shadow layer that would deny: it consumes nothing.
                continue;
            }
            let (g, hash) = (guard_of[i], hashes[i]);
            let Some(shard) = guards[g].as_mut() else {
                unreachable!("every layer's shard is locked")
            };
            let bucket = if moved & (1 << g) != 0 {
                find(shard, hash, layer)
            } else {
                buckets[i]
            };
            let quota = layer.quota;
            if let Some(entry) = bucket.and_then(|b| shard.table.get_bucket_mut(b)) {
                *outcome = quota.consume(&mut entry.state, now, cost);
                entry.expires_s = secs(quota.expires_at(&entry.state).as_micros());
                entry.press(outcome, quota.limit());
            } else {
                let mut state = quota.new_state(now);
                *outcome = quota.consume(&mut state, now, cost);
                let pressure = pressure(outcome, quota.limit());
                self.insert(shard, hash, layer, quota, state, now, pressure);
                moved |= 1 << g;
            }
        }
        true
    }
}
