//! Per-thread lanes: how a busy thread counts most of its decisions without taking a lock.
//!
//! Every thread that records is given a small index for as long as it lives (the lowest free
//! one; an exiting thread gives its index back). The first [`LANES`] indices each have a
//! [`Lane`] in every aggregator: counters only that thread writes, with plain (relaxed) loads
//! and stores, no read-modify-write. A lane knows the minute its thread is recording, how
//! many decisions the thread has recorded in it, and the admitted decisions it has not yet
//! handed to a shard, by store.
//!
//! A decision goes through the lane alone when its thread's minute is past
//! [`EXACT_PER_MINUTE`] decisions, the sampling draw leaves it out of the top lists, and it is
//! a plain admission (no shadow rule, no allow list). Everything else takes its shard's lock as
//! before. The lane's counts move into the shard, under the shard's lock, when the thread moves
//! on to a later minute. A report holds every shard's lock and adds each lane's counts: since
//! counts only leave a lane under a shard's lock, none is counted twice or missed, and every
//! count stays exact.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::shard::{EXACT_PER_MINUTE, SAMPLE, Shard};
use super::{MINUTE_MS, STORES};
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::monitor::event::{DecisionEvent, EventOutcome};

/// Threads with a lane in each aggregator; a thread with a higher index records under its
/// shard's lock alone.
pub(super) const LANES: usize = 256;

/// Pending admissions by store, and one slot for those that consulted no store.
const PENDING: usize = STORES.len() + 1;
const NO_MINUTE: u64 = u64::MAX;

/// The indices in use: the next never given, and those given back.
static INDICES: Mutex<(usize, BinaryHeap<Reverse<usize>>)> = Mutex::new((0, BinaryHeap::new()));

/// A thread's index, given back when the thread exits.
struct ThreadIndex(usize);

impl ThreadIndex {
    fn take() -> Self {
        let mut indices = INDICES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Reverse(index)) = indices.1.pop() {
            return ThreadIndex(index);
        }
        indices.0 += 1;
        ThreadIndex(indices.0 - 1)
    }
}

impl Drop for ThreadIndex {
    fn drop(&mut self) {
        let mut indices = INDICES.lock().unwrap_or_else(|e| e.into_inner());
        indices.1.push(Reverse(self.0));
    }
}

thread_local! {
    static INDEX: ThreadIndex = ThreadIndex::take();
}

/// The calling thread's index; `None` while the thread is exiting.
#[inline]
pub(super) fn thread_index() -> Option<usize> {
    INDEX.try_with(|i| i.0).ok()
}

/// What a lane says to do with one decision.
pub(super) enum Route {
    /// Counted in the lane: nothing else to do.
    Counted,
    /// Count it in the shard, feeding the top lists this much (0: not at all).
    Shard(u64),
    /// The thread moved on to a later minute: hand the lane's counts to the shard
    /// ([`Lane::hand_over`]), then count it there, exactly.
    NewMinute,
}

/// One thread's counters in one aggregator; only that thread writes them.
#[derive(Debug)]
#[repr(align(128))]
pub(super) struct Lane {
    /// The minute (ms since the epoch / 60,000) the thread is recording, or [`NO_MINUTE`].
    minute: AtomicU64,
    /// Decisions the thread recorded in `minute`.
    seen: AtomicU64,
    /// The sampling draws' state (xorshift64).
    rng: AtomicU64,
    /// Admitted decisions of `minute` not yet in a shard, by [`store_slot`].
    pending: [AtomicU64; PENDING],
}

fn store_slot(store: Option<StoreUsed>) -> usize {
    store.map_or(STORES.len(), |s| s as usize)
}

impl Lane {
    pub(super) fn new(index: usize) -> Self {
        Lane {
            minute: AtomicU64::new(NO_MINUTE),
            seen: AtomicU64::new(0),
            rng: AtomicU64::new(0x2545_f491_4f6c_dd1d ^ (index as u64).wrapping_mul(0x9e37)),
            pending: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Routes one decision of the lane's thread, counting it here when it can.
    #[inline]
    pub(super) fn route(&self, e: &DecisionEvent<'_>) -> Route {
        let minute = e.at.as_millis() / MINUTE_MS;
        let current = self.minute.load(Relaxed);
        if minute != current {
            return if current == NO_MINUTE || minute > current {
                Route::NewMinute
            } else {
                // A decision timed in an earlier minute: counted there, exactly.
                Route::Shard(1)
            };
        }
        let seen = self.seen.load(Relaxed) + 1;
        self.seen.store(seen, Relaxed);
        if seen <= EXACT_PER_MINUTE {
            return Route::Shard(1);
        }
        let mut rng = self.rng.load(Relaxed);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        self.rng.store(rng, Relaxed);
        if rng & (SAMPLE - 1) == 0 {
            return Route::Shard(SAMPLE);
        }
        if e.outcome != EventOutcome::Admitted || e.shadow_rule.is_some() || e.allowlisted {
            return Route::Shard(0);
        }
        let slot = &self.pending[store_slot(e.store)];
        slot.store(slot.load(Relaxed) + 1, Relaxed);
        Route::Counted
    }

    /// Moves the lane's counts into `shard` (whose lock the caller holds) and starts the
    /// minute of `at`, with one decision seen.
    pub(super) fn hand_over(&self, shard: &mut Shard, horizon: u64, at: Timestamp) {
        self.each_pending(|minute, store, n| {
            shard.minute(horizon, Timestamp::from_millis(minute * MINUTE_MS), |m| {
                m.count_admitted(n);
            });
            shard.totals.count_admitted(n);
            if let Some(count) = shard.stores.get_mut(store) {
                *count += n;
            }
        });
        for slot in &self.pending {
            slot.store(0, Relaxed);
        }
        self.minute.store(at.as_millis() / MINUTE_MS, Relaxed);
        self.seen.store(1, Relaxed);
    }

    /// Calls `f(minute, store slot, count)` for each store with admissions pending. A caller
    /// other than the lane's thread must hold a shard's lock (every shard's, for a report).
    pub(super) fn each_pending(&self, mut f: impl FnMut(u64, usize, u64)) {
        let minute = self.minute.load(Relaxed);
        if minute == NO_MINUTE {
            return;
        }
        for (store, slot) in self.pending.iter().enumerate() {
            let n = slot.load(Relaxed);
            if n > 0 {
                f(minute, store, n);
            }
        }
    }
}
