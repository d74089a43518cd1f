//! The in-process store: sharded, exact under any number of threads, bounded in memory.
//!
//! Keys are spread over a power-of-two number of shards, each a `parking_lot::Mutex` around a
//! `hashbrown::HashTable` keyed by a randomly seeded hash of (slot, key bytes). A one-layer
//! decision locks one shard; a multi-layer one locks the shards of its layers in ascending
//! order (so two decisions never deadlock), evaluates every layer, and consumes only if all
//! admit. There is no global lock. Looking up an existing key allocates nothing; a new key's
//! bytes are copied once when it is first admitted — inline in the entry when short — and a
//! denied request for an unknown key stores nothing.
//!
//! Memory is bounded two ways. Every entry records when its state becomes indistinguishable
//! from a fresh one ([`Quota::expires_at`]); a shard drops such entries whenever it inserts and
//! its last sweep is more than [`SWEEP_INTERVAL`] old, and [`MemoryStore::purge_expired`] drops
//! them on demand. And the store never holds more than `max_keys`: a full shard first drops its
//! expired entries, then evicts an eighth of its entries before inserting — those whose state
//! is nearest to fresh, so that eviction loses the least. Each entry carries its *pressure*,
//! set at every decision on it: how much of its limit the last one left used, in quarters,
//! and the top level for a key that is denying (its last decision denied, or left nothing).
//! The least pressed go first, the nearest to expiry among equals, and a denying key only when
//! every other is gone: a caller cannot have its own exhausted counter forgotten by filling
//! the store with fresh keys (junk paths, made-up subjects).
//!
//! [`Quota::expires_at`]: crate::limit::Quota::expires_at

mod acquire;
mod block;
mod entry;
mod evict;
mod own;

use std::hash::BuildHasher;
use std::time::Duration;

use hashbrown::HashTable;
use parking_lot::Mutex;

use super::{Adjustment, Layer, Store, StoreHealth, Verdict};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::StoreUsed;
use crate::error::Error;
use crate::limit::Outcome;
use entry::{Entry, compact, secs};

/// How often a shard that is inserting sweeps out expired entries.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The most shards a store has.
const MAX_SHARDS: usize = 64;
/// Shards are only made when each can hold at least this many keys.
const MIN_KEYS_PER_SHARD: u64 = 16;

struct Shard {
    table: HashTable<Entry>,
    next_sweep: u64,
}

#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// The in-process store: sharded, exact under any number of threads, bounded in memory (see
/// [`crate::store`] for the contract).
pub struct MemoryStore {
    shards: Box<[Padded]>,
    /// When it was made: its health is `ok` since then.
    since: Timestamp,
    /// `shards.len() - 1`.
    mask: usize,
    capacity_per_shard: usize,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("max_keys", &self.max_keys())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store holding at most `max_keys` keys (at least 1).
    pub fn new(max_keys: u64) -> Self {
        let max_keys = max_keys.max(1);
        let mut shards = 1usize;
        while shards < MAX_SHARDS && (shards as u64 * 2) * MIN_KEYS_PER_SHARD <= max_keys {
            shards *= 2;
        }
        let capacity_per_shard = usize::try_from(max_keys / shards as u64).unwrap_or(usize::MAX);
        MemoryStore {
            shards: (0..shards)
                .map(|_| {
                    Padded(Mutex::new(Shard {
                        table: HashTable::new(),
                        next_sweep: 0,
                    }))
                })
                .collect(),
            mask: shards - 1,
            capacity_per_shard,
            hasher: foldhash::fast::RandomState::default(),
            since: SystemClock.now(),
        }
    }

    /// The most keys this store holds (`max_keys` rounded down to a multiple of the shards).
    pub fn max_keys(&self) -> usize {
        self.capacity_per_shard * self.shards.len()
    }

    #[inline]
    fn hash(&self, slot: u64, key: &[u8]) -> u64 {
        self.hasher.hash_one((compact(slot), key))
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        // Not the top bits (hashbrown's control tag) nor the lowest (its bucket index).
        (hash >> 40) as usize & self.mask
    }
}

impl MemoryStore {
    /// Gives back `cost` that a decision at `at` consumed on `layer` ([`Quota::refund`]); a key
    /// that is gone has nothing to give back.
    ///
    /// [`Quota::refund`]: crate::limit::Quota::refund
    pub(crate) fn refund(&self, layer: &Layer<'_>, cost: u64, at: Timestamp) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let (quota, _) = self.quota_in(&shard, layer, at);
        let slot = compact(layer.slot);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            quota.refund(&mut entry.state, at, cost);
            entry.expires_s = secs(quota.expires_at(&entry.state).as_micros());
        }
    }

    /// Takes `cost` from `layer` at `now` without asking ([`Quota::charge`]).
    ///
    /// [`Quota::charge`]: crate::limit::Quota::charge
    pub(crate) fn charge(&self, layer: &Layer<'_>, cost: u64, now: Timestamp) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let (quota, _) = self.quota_in(&shard, layer, now);
        let slot = compact(layer.slot);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            quota.charge(&mut entry.state, now, cost);
            entry.expires_s = secs(quota.expires_at(&entry.state).as_micros());
            return;
        }
        let mut state = quota.new_state(now);
        quota.charge(&mut state, now, cost);
        self.insert(&mut shard, hash, layer, &quota, state, now, 0);
    }

    /// Gives back `cost` from `layer` at `now` ([`Quota::reward`]).
    ///
    /// [`Quota::reward`]: crate::limit::Quota::reward
    pub(crate) fn reward(&self, layer: &Layer<'_>, cost: u64, now: Timestamp) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let (quota, _) = self.quota_in(&shard, layer, now);
        let slot = compact(layer.slot);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            quota.reward(&mut entry.state, now, cost);
            entry.expires_s = secs(quota.expires_at(&entry.state).as_micros());
        }
    }

    /// Applies one refund or charge.
    pub(crate) fn apply(&self, layer: &Layer<'_>, adjustment: Adjustment) {
        match adjustment {
            Adjustment::Refund { cost, at } => self.refund(layer, cost, at),
            Adjustment::Charge { cost, at } => self.charge(layer, cost, at),
        }
    }
}

impl Store for MemoryStore {
    #[inline]
    fn decide(
        &self,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
        _times: &mut [Timestamp],
    ) -> Result<Verdict, Error> {
        Ok(Verdict {
            allowed: self.acquire(layers, cost, now, outcomes)?,
            store: StoreUsed::Memory,
        })
    }

    #[inline]
    fn decide_one(
        &self,
        layer: &Layer<'_>,
        cost: u64,
        now: Timestamp,
    ) -> Result<(Outcome, Verdict, Timestamp), Error> {
        let outcome = self.acquire_one(layer, cost, now);
        let verdict = Verdict {
            allowed: outcome.allowed || layer.shadow,
            store: StoreUsed::Memory,
        };
        Ok((outcome, verdict, now))
    }

    fn adjust(&self, ops: &[(Layer<'_>, Adjustment, StoreUsed)]) {
        for (layer, adjustment, _) in ops {
            self.apply(layer, *adjustment);
        }
    }

    fn administer(
        &self,
        layer: &Layer<'_>,
        op: crate::store::KeyOp,
        now: Timestamp,
    ) -> Result<(), Error> {
        use crate::store::KeyOp;
        match op {
            KeyOp::Charge { cost } => self.charge(layer, cost, now),
            KeyOp::Reward { cost } => self.reward(layer, cost, now),
            KeyOp::Forget => self.forget(layer),
            KeyOp::Block { length } => self.block_for(layer, now, length),
            KeyOp::SetLimit {
                limit,
                period,
                lifetime,
            } => {
                let until = now
                    .as_micros()
                    .saturating_add(crate::clock::duration_micros(lifetime));
                self.set_own(layer, (limit, period), Timestamp::from_micros(until), now);
            }
            KeyOp::ClearLimit => self.clear_own(layer),
        }
        Ok(())
    }

    fn key_limit(
        &self,
        layer: &Layer<'_>,
        now: Timestamp,
    ) -> Result<Option<(u64, Duration)>, Error> {
        Ok(self.own_limit(layer, now).map(|(limit, until)| {
            (
                limit,
                Duration::from_micros(until.as_micros().saturating_sub(now.as_micros())),
            )
        }))
    }

    fn used(&self) -> StoreUsed {
        StoreUsed::Memory
    }

    fn health(&self) -> StoreHealth {
        StoreHealth::ok(self.since)
    }

    fn purge_expired(&self, now: Timestamp) -> usize {
        let now = now.as_micros();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.0.lock();
                let before = shard.table.len();
                shard.table.retain(|e| e.expires_at() > now);
                before - shard.table.len()
            })
            .sum()
    }

    fn key_count(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().table.len()).sum()
    }

    fn reload(&self, _rules: &[crate::limit::Rule], forget: &[u32]) {
        self.forget_states(forget);
    }
}

impl MemoryStore {
    /// Drops every entry (counts and blocks) of the rule states in `forget`; returns how
    /// many.
    pub(crate) fn forget_states(&self, forget: &[u32]) -> usize {
        if forget.is_empty() {
            return 0;
        }
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.0.lock();
                let before = shard.table.len();
                shard
                    .table
                    .retain(|e| !forget.contains(&entry::state_of(e.slot)));
                before - shard.table.len()
            })
            .sum()
    }
}
