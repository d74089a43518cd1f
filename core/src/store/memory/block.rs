//! A key's blocking (`block_for`): an entry of its own beside the key's, in the same shard
//! (so a decision that holds the key's lock holds the blocking's), made at the key's first
//! denial and kept like any denying key.

use super::entry::{BLOCK_MARK, DENYING, compact, secs};
use super::{MemoryStore, Shard};
use crate::clock::Timestamp;
use crate::limit::Quota;
use crate::store::Layer;

impl MemoryStore {
    /// The hash of `layer`'s blocking entry.
    #[inline]
    fn block_hash(&self, layer: &Layer<'_>) -> u64 {
        self.hash(layer.slot | BLOCK_MARK, layer.key)
    }

    /// The time left at `now` of the block on `layer`'s key, if it is blocked.
    pub(super) fn blocked(&self, shard: &Shard, layer: &Layer<'_>, now: Timestamp) -> Option<u64> {
        let slot = compact(layer.slot | BLOCK_MARK);
        shard
            .table
            .find(self.block_hash(layer), |e| e.is(slot, layer.key))
            .and_then(|e| layer.quota.blocked_for(&e.state, now))
    }

    /// Forgets `layer`'s key: its state and its blocking.
    pub(crate) fn forget(&self, layer: &Layer<'_>) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let (slot, marked) = (compact(layer.slot), compact(layer.slot | BLOCK_MARK));
        if let Ok(entry) = shard.table.find_entry(hash, |e| e.is(slot, layer.key)) {
            entry.remove();
        }
        if let Ok(entry) = shard
            .table
            .find_entry(self.block_hash(layer), |e| e.is(marked, layer.key))
        {
            entry.remove();
        }
    }

    /// Blocks `layer`'s key for `length` from `now`.
    pub(crate) fn block_for(&self, layer: &Layer<'_>, now: Timestamp, length: std::time::Duration) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let until = Timestamp::from_micros(
            now.as_micros()
                .saturating_add(crate::clock::duration_micros(length)),
        );
        let (quota, marked) = (layer.quota, compact(layer.slot | BLOCK_MARK));
        let block_hash = self.block_hash(layer);
        if let Some(entry) = shard
            .table
            .find_mut(block_hash, |e| e.is(marked, layer.key))
        {
            quota.block_until(&mut entry.state, until);
            entry.expires_s = secs(quota.expires_at(&entry.state).as_micros());
            return;
        }
        let mut state = Quota::unblocked();
        quota.block_until(&mut state, until);
        let marked = Layer {
            slot: layer.slot | BLOCK_MARK,
            ..*layer
        };
        self.insert(&mut shard, block_hash, &marked, quota, state, now, DENYING);
    }

    /// Counts a denial of `layer`'s key at `now`; answers the length of the block it starts,
    /// if it starts one. May move the shard's entries (it can insert).
    pub(super) fn deny(&self, shard: &mut Shard, layer: &Layer<'_>, now: Timestamp) -> Option<u64> {
        let hash = self.block_hash(layer);
        let quota = layer.quota;
        let slot = compact(layer.slot | BLOCK_MARK);
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(slot, layer.key)) {
            let started = quota.deny(&mut entry.state, now);
            entry.expires_s = secs(quota.expires_at(&entry.state).as_micros());
            return started;
        }
        let mut state = Quota::unblocked();
        let started = quota.deny(&mut state, now);
        let marked = Layer {
            slot: layer.slot | BLOCK_MARK,
            ..*layer
        };
        self.insert(shard, hash, &marked, quota, state, now, DENYING);
        started
    }
}
