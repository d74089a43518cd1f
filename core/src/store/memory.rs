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

use std::hash::BuildHasher;
use std::time::Duration;

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use super::{Adjustment, Layer, Store, StoreHealth, Verdict};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::decision::StoreUsed;
use crate::error::{Error, ErrorKind};
use crate::limit::{Outcome, Quota, State};

/// How often a shard that is inserting sweeps out expired entries.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The most shards a store has.
const MAX_SHARDS: usize = 64;
/// Multi-layer decisions of at most this many layers use the smallest stack frame.
const FEW: usize = 4;
/// The most layers one decision may have: the engine refuses configurations with more rules.
const MAX_LAYERS: usize = crate::common::MAX_RULES;
/// Shards are only made when each can hold at least this many keys.
const MIN_KEYS_PER_SHARD: u64 = 16;

/// One key's state: exactly one cache line, aligned to one, so that a decision on a key that
/// is not in the CPU's caches waits for one memory access, not two or three (with 100,000
/// keys that was a fifth of a `check` from Python). Hence the narrow fields: the slot packed
/// in 32 bits, the expiry in whole seconds, keys of up to 16 bytes inline (an IPv4 address, a
/// short user id, `GET /api/orders`); a longer key lives on the heap. The hash is not kept:
/// a table that grows hashes its keys again.
#[repr(align(64))]
struct Entry {
    /// The layer's [`Layer::slot`], [`compact`]ed.
    slot: u32,
    /// Seconds since the epoch, rounded up, from which `state` equals a fresh state: the entry
    /// may be forgotten from then on (it is kept up to a second longer than it must be).
    expires_s: u32,
    key: SmallVec<[u8; 16]>,
    state: State,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// A [`Layer::slot`] in 32 bits: its `ABSENT` flag in bit 31, the rule's index (below
/// [`MAX_RULES`](crate::common::MAX_RULES) = 256) in bits 23–30, and the role variant (at
/// most [`MAX_ROLE_OVERRIDES`](crate::common::MAX_ROLE_OVERRIDES) + 1 < 2¹⁷) in bits 0–16.
/// An entry keeps its [pressure](pressure) in bits 17–19 of the same word.
#[inline(always)]
fn compact(slot: u64) -> u32 {
    debug_assert!((slot >> 32) & 0x7fff_ffff < 256 && slot & 0xffff_ffff < 1 << 17);
    (((slot >> 63) as u32) << 31) | (((slot >> 32) as u32 & 0xff) << 23) | (slot as u32 & 0x1_ffff)
}

const _: () = assert!(crate::common::MAX_ROLE_OVERRIDES < 1 << 17);

/// Where an entry's pressure sits in its `slot` word.
const PRESSURE_SHIFT: u32 = 17;
const PRESSURE_BITS: u32 = 0b111 << PRESSURE_SHIFT;
/// The pressure of a key that is denying.
const DENYING: u32 = 4;

/// How much an outcome leaves of a limit used: 0 (less than a quarter) to 3 (three quarters or
/// more), or [`DENYING`] when it denied or left nothing for the next request. No division on
/// the hot path: comparisons of multiples.
#[inline(always)]
fn pressure(outcome: &Outcome, limit: u64) -> u32 {
    if !outcome.allowed || outcome.remaining == 0 {
        return DENYING;
    }
    let used = u128::from(limit.saturating_sub(outcome.remaining)) * 4;
    let limit = u128::from(limit);
    u32::from(used >= limit) + u32::from(used >= 2 * limit) + u32::from(used >= 3 * limit)
}

/// µs since the epoch → whole seconds, rounded up (saturating in 2106).
#[inline(always)]
fn secs(us: u64) -> u32 {
    u32::try_from(us.div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

impl Entry {
    /// [`expires_s`](Self::expires_s) in µs.
    #[inline(always)]
    fn expires_at(&self) -> u64 {
        u64::from(self.expires_s) * 1_000_000
    }

    /// The [`compact`]ed slot, without the pressure.
    #[inline(always)]
    fn slot(&self) -> u32 {
        self.slot & !PRESSURE_BITS
    }

    #[inline(always)]
    fn is(&self, slot: u32, key: &[u8]) -> bool {
        self.slot() == slot && key_eq(&self.key, key)
    }

    /// Records what the decision just taken on this entry left.
    #[inline(always)]
    fn press(&mut self, outcome: &Outcome, limit: u64) {
        self.slot = self.slot() | pressure(outcome, limit) << PRESSURE_SHIFT;
    }

    /// The order of eviction: the least pressed first, then the nearest to expiry.
    fn eviction_rank(&self) -> u64 {
        u64::from((self.slot & PRESSURE_BITS) >> PRESSURE_SHIFT) << 32 | u64::from(self.expires_s)
    }
}

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

    /// One layer's whole decision: the store's fast path.
    #[inline]
    pub(crate) fn acquire_one(&self, layer: &Layer<'_>, cost: u64, now: Timestamp) -> Outcome {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let quota = layer.quota;
        let slot = compact(layer.slot);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            let mut expires = entry.expires_at();
            let outcome = quota.acquire_expiring(&mut entry.state, now, cost, &mut expires);
            entry.expires_s = secs(expires);
            entry.press(&outcome, quota.limit());
            return outcome;
        }
        self.acquire_new(&mut shard, hash, layer, cost, now)
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

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        shard: &mut Shard,
        hash: u64,
        layer: &Layer<'_>,
        quota: &Quota,
        state: State,
        now: Timestamp,
        pressure: u32,
    ) {
        let expires_at = quota.expires_at(&state).as_micros();
        let now = now.as_micros();
        if expires_at <= now {
            // A cost-0 request on a fresh key: nothing worth remembering.
            return;
        }
        if now >= shard.next_sweep || shard.table.len() >= self.capacity_per_shard {
            shard.table.retain(|e| e.expires_at() > now);
            shard.next_sweep = now.saturating_add(SWEEP_INTERVAL.as_micros() as u64);
        }
        if shard.table.len() >= self.capacity_per_shard {
            Self::evict_least_pressed(shard, self.capacity_per_shard);
        }
        shard.table.insert_unique(
            hash,
            Entry {
                slot: compact(layer.slot) | pressure << PRESSURE_SHIFT,
                key: SmallVec::from_slice(layer.key),
                state,
                expires_s: secs(expires_at),
            },
            |e| self.hasher.hash_one((e.slot(), &e.key[..])),
        );
    }

    /// Leaves at most `capacity - max(1, capacity / 8)` entries, dropping the least pressed
    /// first and, among equals, those nearest to expiry ([`Entry::eviction_rank`]).
    fn evict_least_pressed(shard: &mut Shard, capacity: usize) {
        let keep = capacity - (capacity / 8).max(1);
        let len = shard.table.len();
        if len <= keep {
            return;
        }
        let drop = len - keep;
        let mut ranks: Vec<u64> = shard.table.iter().map(Entry::eviction_rank).collect();
        let (_, &mut cutoff, _) = ranks.select_nth_unstable(drop - 1);
        // Drop everything strictly below the cutoff, then as many at the cutoff as needed.
        let mut at_cutoff = drop - ranks[..drop].iter().filter(|&&x| x < cutoff).count();
        shard.table.retain(|e| {
            let rank = e.eviction_rank();
            if rank < cutoff {
                false
            } else if rank == cutoff && at_cutoff > 0 {
                at_cutoff -= 1;
                false
            } else {
                true
            }
        });
    }
}

impl MemoryStore {
    /// Gives back `cost` that a decision at `at` consumed on `layer` ([`Quota::refund`]); a key
    /// that is gone has nothing to give back.
    pub(crate) fn refund(&self, layer: &Layer<'_>, cost: u64, at: Timestamp) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let slot = compact(layer.slot);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            layer.quota.refund(&mut entry.state, at, cost);
            entry.expires_s = secs(layer.quota.expires_at(&entry.state).as_micros());
        }
    }

    /// Takes `cost` from `layer` at `now` without asking ([`Quota::charge`]).
    pub(crate) fn charge(&self, layer: &Layer<'_>, cost: u64, now: Timestamp) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let quota = layer.quota;
        let slot = compact(layer.slot);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            quota.charge(&mut entry.state, now, cost);
            entry.expires_s = secs(quota.expires_at(&entry.state).as_micros());
            return;
        }
        let mut state = quota.new_state(now);
        quota.charge(&mut state, now, cost);
        self.insert(&mut shard, hash, layer, quota, state, now, 0);
    }
}

impl MemoryStore {
    /// Applies `layers` at `now` for a request of `cost`, all-or-nothing: writes each layer's
    /// outcome into `outcomes` and says whether the request is admitted ([`Store::decide`],
    /// without times: this store decides at `now`).
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
}

impl MemoryStore {
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
        let find = |shard: &Shard, hash: u64, layer: &Layer<'_>| {
            let slot = compact(layer.slot);
            shard
                .table
                .find_bucket_index(hash, |e| e.is(slot, layer.key))
        };

        // Phase 1: evaluate every layer without consuming, remembering where each entry is.
        let mut buckets = [None::<usize>; N];
        let mut all = true;
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
            all &= outcome.allowed || layer.shadow;
        }
        if !all {
            return false;
        }

        // Phase 2: every layer admits, so every layer consumes. An insert may move a shard's
        // entries, so after one the shard's later layers are looked up again. (At most
        // MAX_SHARDS = 64 guards, so a u64 holds one bit per guard.)
        let mut moved: u64 = 0;
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

/// Whether two keys are equal, without a call to `memcmp` for the short keys that are usual.
#[inline(always)]
fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n > 32 {
        return a == b;
    }
    if n >= 16 {
        let lo = |s: &[u8]| u128::from_ne_bytes(s[..16].try_into().expect("16 bytes"));
        let hi = |s: &[u8]| u128::from_ne_bytes(s[n - 16..].try_into().expect("16 bytes"));
        return lo(a) == lo(b) && hi(a) == hi(b);
    }
    if n >= 8 {
        let lo = |s: &[u8]| u64::from_ne_bytes(s[..8].try_into().expect("8 bytes"));
        let hi = |s: &[u8]| u64::from_ne_bytes(s[n - 8..].try_into().expect("8 bytes"));
        return lo(a) == lo(b) && hi(a) == hi(b);
    }
    if n >= 4 {
        let lo = |s: &[u8]| u32::from_ne_bytes(s[..4].try_into().expect("4 bytes"));
        let hi = |s: &[u8]| u32::from_ne_bytes(s[n - 4..].try_into().expect("4 bytes"));
        return lo(a) == lo(b) && hi(a) == hi(b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}
