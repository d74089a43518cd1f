//! Rules that count locally between syncs (`sync = "100ms"` on a shared store): decided in
//! process on what this process has admitted plus what the others had, as last read from
//! Redis, and reconciled with Redis in one batched call per interval.
//!
//! **What Redis holds.** Per key and window, a hash: one field per process — what it has
//! admitted in that window — and their sum (see `redis/sync.rs`). A process sends its own
//! count, never a change, numbered: a sync repeated after a timeout or a reconnect counts
//! nothing twice, one that crossed a later sync on its way changes nothing, and a count can go
//! down (what a request denied by an exact layer took locally; a refund). Each engine is one
//! process here (its own field, drawn at random when it is built); its count stays on Redis
//! until the window ends.
//!
//! **Deciding.** A synced layer is admitted when this process's count plus the others' (both
//! for the current window and, for `sliding_window_counter`, the previous one) leaves room
//! for the cost, with the algorithm's own arithmetic ([`Quota::counted`]). The others' count
//! is *fresh* for `sync + store.timeout` after the sync that read it started; a key this
//! process has not decided in that time (or ever) is read first, in a call of its own, so a
//! key's first request after a quiet spell waits one round trip and the rest are decided in
//! microseconds. Other layers of the same request are decided on Redis as usual, and the
//! request is all-or-nothing across both: what the local layers took is given back when Redis
//! denies.
//!
//! **Syncing.** A background thread, every `sync` of each rule, sends the count of every key
//! decided or changed since its last round and reads back the others' — one script call per
//! slot, all in one round trip — and forgets keys that were neither decided nor changed since
//! the round before (their counts are on Redis; a new request reads them back). The engine's
//! last act, when it is dropped, is one more round for what is still unsent.
//!
//! **What it admits.** A process decides on the others' counts as they were at most
//! `sync + timeout` ago, and the others' admissions reach Redis at most `sync + timeout` after
//! they are made; so in any window, N processes admit at most
//! `limit + (N − 1) × r × (2 × sync + 2 × timeout)` on a key, `r` being the fastest rate at
//! which one process admits on it — and never more than `N × limit`. Exact rules
//! (no `sync`) in the same configuration keep their exact limits.
//!
//! **Redis unavailable.** A sync that fails counts against the store's breaker like a
//! decision; once a key's count is no longer fresh its requests go to the fallback with the
//! rest (`store.on_error`, `fallback_share`), and come back to local counting at the first
//! read that succeeds.
//!
//! **Windows** follow the engine's clock (each process's own, whatever `store.clock` says).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

use super::redis::{RedisStore, SyncItem, SyncedCount};
use super::{Adjustment, Layer, state_of};
use crate::clock::Timestamp;
use crate::limit::{Algorithm, Outcome, Quota};

/// Shards of the table of tallies.
const SHARDS: usize = 16;

/// What Redis must keep of a window past its end (the processes' clocks differ a little).
const MARGIN_MS: u64 = 1000;

/// One key's counts in this process.
struct Tally {
    slot: u64,
    key: Box<[u8]>,
    /// The window hashes' name up to the window's index.
    base: Box<[u8]>,
    quota: Quota,
    /// The window of `own[1]` and `others[1]`.
    index: u64,
    /// What this process has admitted: in the previous window, in the current one.
    own: [u64; 2],
    /// What Redis holds of `own`.
    held: [u64; 2],
    /// The other processes' counts, as last read.
    others: [u64; 2],
    /// When the sync whose reply was last taken in began.
    read: Option<Instant>,
    /// Decided since the last round.
    used: bool,
    /// The number of the newest count whose reply was taken in.
    applied: u64,
    /// Made afresh and not yet read: what Redis holds of this process's count is its own
    /// (another tally of the key, forgotten, counted it).
    made: bool,
    /// Callers between reading it and deciding on it: a round does not forget it meanwhile.
    pins: u32,
}

impl Tally {
    /// Moves to window `index` (a clock that stepped back stays where it is).
    fn roll(&mut self, index: u64) {
        if index <= self.index {
            return;
        }
        if index == self.index + 1 {
            self.own = [self.own[1], 0];
            self.held = [self.held[1], 0];
            self.others = [self.others[1], 0];
        } else {
            self.own = [0; 2];
            self.held = [0; 2];
            self.others = [0; 2];
        }
        self.index = index;
    }

    fn dirty(&self) -> bool {
        self.own != self.held
    }

    /// Whether it is the tally of `key` in `slot`.
    fn is(&self, slot: u64, key: &[u8]) -> bool {
        self.slot == slot && *self.key == *key
    }

    /// Where window `index`'s counts are in `own`, `held` and `others`: 1 for the current
    /// window, 0 for the one before; `None` for any other.
    fn window_of(&self, index: u64) -> Option<usize> {
        if index == self.index {
            Some(1)
        } else if index + 1 == self.index {
            Some(0)
        } else {
            None
        }
    }

    fn state(&self) -> crate::limit::State {
        let counts = |w: usize| self.own[w].saturating_add(self.others[w]);
        self.quota
            .counted(self.index, counts(0), counts(1))
            .unwrap_or_else(|| self.quota.new_state(Timestamp::EPOCH))
    }

    /// What to send and read for it at `now`: the current window, and the previous one when
    /// it still counts (a window counter) or holds what was never sent.
    fn items(&self, now: Timestamp, marks: &mut Batch, hash: u64, seq: &AtomicU64) {
        let window_us = self.quota.period().as_micros() as u64;
        let ends = |index: u64, windows: u64| {
            let end = (index + windows).saturating_mul(window_us);
            end.saturating_sub(now.as_micros()).div_ceil(1000) + MARGIN_MS
        };
        let counter = self.quota.algorithm() == Algorithm::SlidingWindowCounter;
        let lives = if counter { 2 } else { 1 };
        // The previous window first: a tally made afresh takes back its counts in both before
        // the current window's reply marks it read.
        if self.index > 0 && (counter || self.own[0] != self.held[0]) {
            let ttl = ends(self.index - 1, lives);
            marks.push(self, hash, self.index - 1, self.own[0], ttl, seq);
        }
        marks.push(
            self,
            hash,
            self.index,
            self.own[1],
            ends(self.index, lives),
            seq,
        );
    }
}

/// The keys and windows of one sync call, and which tally each is for.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) items: Vec<SyncItem>,
    marks: Vec<Mark>,
}

struct Mark {
    seq: u64,
    hash: u64,
    slot: u64,
    key: Box<[u8]>,
    index: u64,
}

impl Batch {
    /// Adds `tally`'s count `own` in window `index`, numbered from `seq` (under the lock of
    /// the tally's shard, so that a later count of the key has a higher number) — or, for a
    /// tally made afresh and not yet read, numbered 0: only read, since this process may
    /// have counted more on Redis than the tally knows (a tally of the key it forgot).
    fn push(
        &mut self,
        tally: &Tally,
        hash: u64,
        index: u64,
        own: u64,
        ttl_ms: u64,
        seq: &AtomicU64,
    ) {
        let seq = if tally.made {
            0
        } else {
            seq.fetch_add(1, Ordering::Relaxed) + 1
        };
        let mut key = tally.base.to_vec();
        key.extend_from_slice(index.to_string().as_bytes());
        self.items.push(SyncItem {
            key,
            own,
            seq,
            ttl_ms,
        });
        self.marks.push(Mark {
            seq,
            hash,
            slot: tally.slot,
            key: tally.key.clone(),
            index,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items for which `keep(index)` holds.
    pub(crate) fn only(self, keep: impl Fn(usize) -> bool) -> Batch {
        let mut kept = Batch::default();
        for (i, (item, mark)) in self.items.into_iter().zip(self.marks).enumerate() {
            if keep(i) {
                kept.items.push(item);
                kept.marks.push(mark);
            }
        }
        kept
    }

    /// The hash slots its keys live in.
    pub(crate) fn slots(&self) -> SmallVec<[u16; 4]> {
        let mut slots: SmallVec<[u16; 4]> = self
            .items
            .iter()
            .map(|i| RedisStore::synced_slot(&i.key))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

/// The local counts of every synced rule's keys (see the module docs).
pub(crate) struct Tallies {
    shards: Box<[Mutex<HashTable<Tally>>]>,
    hasher: foldhash::fast::RandomState,
    /// This process's field in the window hashes.
    me: String,
    /// Per rule state ([`Rule::state`](crate::limit::Rule::state)): how often it syncs, if it
    /// does.
    intervals: Vec<Option<Duration>>,
    /// The store's deadline: what is read stays fresh for a rule's interval plus this.
    timeout: Duration,
    /// Per rule state: when its last round began.
    rounds: Mutex<Vec<Option<Instant>>>,
    /// The number of the last count this process took for a sync.
    seq: AtomicU64,
}

impl std::fmt::Debug for Tallies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tallies")
            .field("me", &self.me)
            .field("intervals", &self.intervals)
            .finish_non_exhaustive()
    }
}

impl Tallies {
    /// The tallies of the rules with a sync interval (`intervals`, per rule state); `None` when no rule syncs.
    pub(crate) fn new(intervals: Vec<Option<Duration>>, timeout: Duration) -> Option<Self> {
        if intervals.iter().all(Option::is_none) {
            return None;
        }
        Some(Tallies {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            me: process_id(),
            rounds: Mutex::new(vec![None; intervals.len()]),
            intervals,
            timeout,
            seq: AtomicU64::new(0),
        })
    }

    /// This process's field in the window hashes.
    pub(crate) fn me(&self) -> &str {
        &self.me
    }

    /// Whether `layer`'s rule counts locally.
    #[inline]
    pub(crate) fn is_synced(&self, layer: &Layer<'_>) -> bool {
        self.interval(layer).is_some()
    }

    fn interval(&self, layer: &Layer<'_>) -> Option<Duration> {
        self.intervals.get(layer.rule_state()).copied().flatten()
    }

    /// How often the sync thread wakes: the shortest interval.
    pub(crate) fn tick(&self) -> Duration {
        self.intervals
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }

    fn hash(&self, slot: u64, key: &[u8]) -> u64 {
        self.hasher.hash_one((slot, key))
    }

    fn shard(&self, hash: u64) -> usize {
        (hash >> 40) as usize % SHARDS
    }

    /// What must be read before `layers` (those `synced` marks) can be decided at `now`: the
    /// keys this process holds no fresh count of. Keys never seen are added. Every synced
    /// layer's tally is pinned until [`acquire`](Self::acquire) or [`unpin`](Self::unpin).
    pub(crate) fn stale(
        &self,
        redis: &RedisStore,
        layers: &[Layer<'_>],
        synced: &[bool],
        now: Timestamp,
    ) -> Batch {
        let mut batch = Batch::default();
        for (layer, _) in layers.iter().zip(synced).filter(|(_, s)| **s) {
            let fresh_for = self.interval(layer).unwrap_or_default() + self.timeout;
            let hash = self.hash(layer.slot, layer.key);
            let mut shard = self.shards[self.shard(hash)].lock();
            let index = layer.quota.window_index(now);
            let found = shard.find_mut(hash, |t| t.is(layer.slot, layer.key));
            let tally = match found {
                Some(tally) => {
                    tally.roll(index);
                    tally.quota = *layer.quota;
                    tally.pins += 1;
                    if tally.read.is_some_and(|r| r.elapsed() <= fresh_for) {
                        continue;
                    }
                    tally
                }
                None => shard
                    .insert_unique(
                        hash,
                        Tally {
                            slot: layer.slot,
                            key: layer.key.into(),
                            base: redis.synced_key(layer).into(),
                            quota: *layer.quota,
                            index,
                            own: [0; 2],
                            held: [0; 2],
                            others: [0; 2],
                            read: None,
                            used: false,
                            applied: 0,
                            made: true,
                            pins: 1,
                        },
                        |t| self.hash(t.slot, &t.key),
                    )
                    .into_mut(),
            };
            tally.items(now, &mut batch, hash, &self.seq);
        }
        batch
    }

    /// Takes in what a sync that began at `started` read back: what Redis holds of this
    /// process's counts, and the others'.
    pub(crate) fn apply(
        &self,
        batch: &Batch,
        replies: &[Result<SyncedCount, super::redis::Failed>],
        started: Instant,
    ) {
        for (mark, reply) in batch.marks.iter().zip(replies) {
            let Ok(count) = reply else {
                continue;
            };
            let mut shard = self.shards[self.shard(mark.hash)].lock();
            let Some(tally) = shard.find_mut(mark.hash, |t| t.is(mark.slot, &mark.key)) else {
                continue;
            };
            let Some(w) = tally.window_of(mark.index) else {
                continue;
            };
            if mark.seq < tally.applied {
                continue; // a later count's reply is in already
            }
            tally.applied = mark.seq;
            if tally.made && tally.own[w] < count.held {
                tally.own[w] = count.held;
            }
            tally.held[w] = count.held;
            tally.others[w] = count.total.saturating_sub(count.held);
            tally.read = Some(tally.read.map_or(started, |r| r.max(started)));
            if w == 1 {
                tally.made = false;
            }
        }
    }

    /// Decides the `synced` layers of a request locally, all-or-nothing among them: writes
    /// their outcomes and says whether every one that is not a shadow admits; if so, each
    /// that admits has consumed. The caller has read them first and pinned their tallies
    /// ([`stale`](Self::stale)); each is unpinned here.
    pub(crate) fn acquire(
        &self,
        layers: &[Layer<'_>],
        synced: &[bool],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
    ) -> bool {
        let mut at: SmallVec<[(usize, u64); 4]> = SmallVec::new();
        for (i, layer) in layers.iter().enumerate() {
            if synced[i] {
                at.push((i, self.hash(layer.slot, layer.key)));
            }
        }
        let mut order: SmallVec<[usize; 4]> = at.iter().map(|&(_, h)| self.shard(h)).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: SmallVec<[(usize, MutexGuard<'_, HashTable<Tally>>); 4]> =
            order.iter().map(|&s| (s, self.shards[s].lock())).collect();
        let mut admitted = true;
        for &(i, hash) in &at {
            let layer = &layers[i];
            let Some(tally) = locked(&mut guards, self.shard(hash), hash, layer) else {
                // Not reached: the caller read it, and it is pinned until now.
                outcomes[i] = Outcome::new(false, 0, 0, 0);
                admitted &= layer.shadow;
                continue;
            };
            tally.roll(layer.quota.window_index(now));
            tally.used = true;
            tally.pins = tally.pins.saturating_sub(1);
            let outcome = layer.quota.evaluate(&mut tally.state(), now, cost);
            admitted &= outcome.allowed || layer.shadow;
            outcomes[i] = outcome;
        }
        if !admitted {
            return false;
        }
        for &(i, hash) in &at {
            let layer = &layers[i];
            if !outcomes[i].allowed {
                continue; // a shadow layer that would deny consumes nothing
            }
            if let Some(tally) = locked(&mut guards, self.shard(hash), hash, layer) {
                outcomes[i] = layer.quota.consume(&mut tally.state(), now, cost);
                tally.own[1] = tally.own[1].saturating_add(cost);
            }
        }
        true
    }

    /// Unpins the `synced` layers' tallies that [`stale`](Self::stale) pinned, for a request
    /// decided elsewhere after all.
    pub(crate) fn unpin(&self, layers: &[Layer<'_>], synced: &[bool]) {
        for (layer, _) in layers.iter().zip(synced).filter(|(_, s)| **s) {
            let hash = self.hash(layer.slot, layer.key);
            let mut shard = self.shards[self.shard(hash)].lock();
            if let Some(tally) = shard.find_mut(hash, |t| t.is(layer.slot, layer.key)) {
                tally.pins = tally.pins.saturating_sub(1);
            }
        }
    }

    /// Gives back what [`acquire`](Self::acquire) at `now` took for the `synced` layers whose
    /// outcome admitted: the request was denied elsewhere.
    pub(crate) fn give_back(
        &self,
        layers: &[Layer<'_>],
        synced: &[bool],
        outcomes: &[Outcome],
        cost: u64,
        now: Timestamp,
    ) {
        for ((layer, _), _) in layers
            .iter()
            .zip(synced)
            .zip(outcomes)
            .filter(|((_, s), o)| **s && o.allowed)
        {
            self.adjust(layer, Adjustment::Refund { cost, at: now });
        }
    }

    /// A refund or a charge of a synced layer, once its response is known.
    pub(crate) fn adjust(&self, layer: &Layer<'_>, adjustment: Adjustment) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard(hash)].lock();
        let Some(tally) = shard.find_mut(hash, |t| t.is(layer.slot, layer.key)) else {
            return; // forgotten: its count is on Redis, and stays counted
        };
        match adjustment {
            Adjustment::Refund { cost, at } => {
                if let Some(w) = tally.window_of(layer.quota.window_index(at)) {
                    tally.own[w] = tally.own[w].saturating_sub(cost);
                }
            }
            Adjustment::Charge { cost, at } => {
                tally.roll(layer.quota.window_index(at));
                tally.own[1] = tally.own[1].saturating_add(cost);
                tally.used = true;
            }
        }
    }

    /// The round due at `now` (`Instant` `at`): for every rule whose interval has passed since
    /// its last round (every rule when `all`), the keys decided or changed since, to send and
    /// read; keys neither decided nor changed, whose counts are stale, are forgotten. With
    /// `all`, only what is unsent.
    pub(crate) fn round(&self, now: Timestamp, at: Instant, all: bool) -> Batch {
        let due: Vec<bool> = {
            let mut rounds = self.rounds.lock();
            self.intervals
                .iter()
                .zip(rounds.iter_mut())
                .map(|(interval, last)| {
                    let Some(interval) = interval else {
                        return false;
                    };
                    let is_due = all || last.is_none_or(|l| at.duration_since(l) >= *interval);
                    if is_due {
                        *last = Some(at);
                    }
                    is_due
                })
                .collect()
        };
        let mut batch = Batch::default();
        for shard in self.shards.iter() {
            shard.lock().retain(|tally| {
                let rule = state_of(tally.slot);
                if !due.get(rule).copied().unwrap_or(false) {
                    return true;
                }
                tally.roll(tally.quota.window_index(now));
                let send = tally.dirty() || (tally.used && !all);
                if !send && !all {
                    if tally.pins > 0 {
                        return true; // read and about to be decided on
                    }
                    let fresh_for = self.intervals[rule].unwrap_or_default() + self.timeout;
                    return tally
                        .read
                        .is_some_and(|r| at.saturating_duration_since(r) <= fresh_for);
                }
                tally.used = false;
                if send {
                    tally.items(
                        now,
                        &mut batch,
                        self.hash(tally.slot, &tally.key),
                        &self.seq,
                    );
                }
                true
            });
        }
        batch
    }

    /// How many keys are counted here now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// `layer`'s tally in `shard`, one of the shards `guards` holds locked.
fn locked<'g>(
    guards: &'g mut [(usize, MutexGuard<'_, HashTable<Tally>>)],
    shard: usize,
    hash: u64,
    layer: &Layer<'_>,
) -> Option<&'g mut Tally> {
    let (_, table) = guards.iter_mut().find(|(s, _)| *s == shard)?;
    table.find_mut(hash, |t| t.is(layer.slot, layer.key))
}

/// A field name no other engine draws: 16 hex digits from the process, the time and a
/// randomly seeded hasher.
fn process_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    Instant::now().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;
    use std::time::Duration;

    use super::{Batch, Tally};
    use crate::clock::Timestamp;
    use crate::limit::Quota;

    const W: u64 = 1_000_000; // a 1 s window, in µs

    fn tally(quota: Quota, index: u64) -> Tally {
        Tally {
            slot: 0,
            key: Box::from(&b"k"[..]),
            base: Box::from(&b"p{r/0/=k}f#"[..]),
            quota,
            index,
            own: [0; 2],
            held: [0; 2],
            others: [0; 2],
            read: None,
            used: false,
            applied: 0,
            made: false,
            pins: 0,
        }
    }

    fn fixed(limit: u64) -> Quota {
        Quota::fixed_window(NonZeroU64::new(limit).unwrap(), Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn a_window_rolls_over_once_and_a_clock_stepping_back_rolls_nothing() {
        let mut t = tally(fixed(10), 5);
        t.own = [1, 4];
        t.held = [1, 3];
        t.others = [2, 6];
        t.roll(4);
        assert_eq!((t.index, t.own, t.others), (5, [1, 4], [2, 6]));
        t.roll(6);
        assert_eq!(
            (t.index, t.own, t.held, t.others),
            (6, [4, 0], [3, 0], [6, 0])
        );
        assert!(t.dirty(), "the previous window's count was never all sent");
        t.roll(9);
        assert_eq!((t.own, t.held, t.others), ([0; 2], [0; 2], [0; 2]));
        assert!(!t.dirty());
    }

    #[test]
    fn a_count_over_the_limit_by_other_processes_denies_without_overflowing() {
        let quota = fixed(10);
        let mut t = tally(quota, 7);
        t.own[1] = 4;
        t.others[1] = 9; // the others admitted within the bound, past the limit
        let now = Timestamp::from_micros(7 * W + 10);
        let outcome = quota.evaluate(&mut t.state(), now, 1);
        assert!(!outcome.allowed);
        assert_eq!(outcome.remaining, 0);
        assert_eq!(outcome.retry_after(), Duration::from_micros(W - 10));
    }

    #[test]
    fn a_window_counter_weighs_the_previous_window_of_every_process() {
        let quota =
            Quota::sliding_window_counter(NonZeroU64::new(10).unwrap(), Duration::from_secs(1))
                .unwrap();
        let mut t = tally(quota, 3);
        t.own = [4, 0];
        t.others = [6, 0];
        // A quarter into window 3: 10 × 3/4 of the previous window weighs 7.5, room for 2.
        let now = Timestamp::from_micros(3 * W + W / 4);
        assert_eq!(quota.evaluate(&mut t.state(), now, 1).remaining, 2);
        assert!(quota.evaluate(&mut t.state(), now, 2).allowed);
        assert!(!quota.evaluate(&mut t.state(), now, 3).allowed);
    }

    #[test]
    fn a_round_sends_the_previous_window_first_and_numbers_every_count() {
        let seq = std::sync::atomic::AtomicU64::new(0);
        let mut t = tally(fixed(10), 8);
        t.own = [3, 2];
        t.held = [1, 0];
        let mut batch = Batch::default();
        t.items(Timestamp::from_micros(8 * W + W / 2), &mut batch, 1, &seq);
        let sent: Vec<(String, u64, u64, u64)> = batch
            .items
            .iter()
            .map(|i| {
                (
                    String::from_utf8_lossy(&i.key).into_owned(),
                    i.own,
                    i.seq,
                    i.ttl_ms,
                )
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                ("p{r/0/=k}f#7".to_owned(), 3, 1, 1000),
                ("p{r/0/=k}f#8".to_owned(), 2, 2, 1500),
            ]
        );
        let kept = batch.only(|i| i == 1);
        assert_eq!(kept.items.len(), 1);
        assert_eq!(kept.marks[0].index, 8);
        // A tally made afresh only reads: what Redis holds of this process is not taken back.
        let mut fresh = tally(fixed(10), 8);
        fresh.made = true;
        let mut batch = Batch::default();
        fresh.items(Timestamp::from_micros(8 * W), &mut batch, 1, &seq);
        assert_eq!(
            batch.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![0]
        );
    }
}
