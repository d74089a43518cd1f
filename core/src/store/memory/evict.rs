//! Inserting a key while keeping a shard bounded: the sweep of expired entries, and, when the
//! shard holds `max_keys`' share, the eviction of the least pressed.

use std::hash::BuildHasher;

use smallvec::SmallVec;

use super::entry::{Entry, PRESSURE_SHIFT, compact, secs};
use super::{MemoryStore, SWEEP_INTERVAL, Shard};
use crate::clock::Timestamp;
use crate::limit::{Quota, State};
use crate::store::Layer;

impl MemoryStore {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert(
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
