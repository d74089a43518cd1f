//! A key's own limit (`key_limits`, [`Engine::set_key_limit`]): an entry of its own beside the
//! key's, in the same shard (so a decision that holds the key's lock holds its limit's),
//! expiring with the limit's lifetime and kept like a denying key, so that eviction takes it
//! last. A decision on a layer whose quota takes key limits looks for it first and, while it
//! is in force, decides with the quota's limit (and a bucket's rate) replaced
//! ([`Quota::with_own`]); the key's counts are the same either way, so a limit that ends
//! leaves what was counted under it.
//!
//! [`Engine::set_key_limit`]: crate::Engine::set_key_limit

use super::entry::{DENYING, OWN_MARK, compact, secs};
use super::{MemoryStore, Shard};
use crate::clock::Timestamp;
use crate::limit::Quota;
use crate::store::Layer;

impl MemoryStore {
    /// The hash of `layer`'s own-limit entry.
    #[inline]
    fn own_hash(&self, layer: &Layer<'_>) -> u64 {
        self.hash(layer.slot | OWN_MARK, layer.key)
    }

    /// The own limit of `layer`'s key in force at `now`: `(limit, period, until)`.
    pub(super) fn own_in(
        &self,
        shard: &Shard,
        layer: &Layer<'_>,
        now: Timestamp,
    ) -> Option<(u64, u64, Timestamp)> {
        let slot = compact(layer.slot | OWN_MARK);
        shard
            .table
            .find(self.own_hash(layer), |e| e.is(slot, layer.key))
            .and_then(|e| Quota::own_in_force(&e.state, now))
    }

    /// `layer`'s quota as it applies to its key at `now`, in the locked `shard`: with the
    /// key's own limit if one is in force (and the limit, for [`Outcome::under_own`]).
    ///
    /// [`Outcome::under_own`]: crate::limit::Outcome::under_own
    #[inline]
    pub(super) fn quota_in(
        &self,
        shard: &Shard,
        layer: &Layer<'_>,
        now: Timestamp,
    ) -> (Quota, Option<u64>) {
        if layer.quota.key_limits()
            && let Some((limit, period, _)) = self.own_in(shard, layer, now)
        {
            return (layer.quota.with_own(limit, period), Some(limit));
        }
        (*layer.quota, None)
    }

    /// The own limit of `layer`'s key in force at `now` and when it ends.
    pub(crate) fn own_limit(&self, layer: &Layer<'_>, now: Timestamp) -> Option<(u64, Timestamp)> {
        let hash = self.hash(layer.slot, layer.key);
        let shard = self.shards[self.shard_of(hash)].0.lock();
        self.own_in(&shard, layer, now)
            .map(|(limit, _, until)| (limit, until))
    }

    /// Gives `layer`'s key its own `limit` and `period` ([`Quota::own`]) until `until`,
    /// replacing any it had.
    pub(crate) fn set_own(
        &self,
        layer: &Layer<'_>,
        (limit, period): (u64, u64),
        until: Timestamp,
        now: Timestamp,
    ) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let own_hash = self.own_hash(layer);
        let marked = compact(layer.slot | OWN_MARK);
        let state = Quota::own_state(limit, period, until);
        if let Some(entry) = shard.table.find_mut(own_hash, |e| e.is(marked, layer.key)) {
            entry.state = state;
            entry.expires_s = secs(until.as_micros());
            return;
        }
        let marked = Layer {
            slot: layer.slot | OWN_MARK,
            ..*layer
        };
        self.insert(
            &mut shard,
            own_hash,
            &marked,
            layer.quota,
            state,
            now,
            DENYING,
        );
    }

    /// Takes `layer`'s key's own limit away: its policy's applies again.
    pub(crate) fn clear_own(&self, layer: &Layer<'_>) {
        let hash = self.hash(layer.slot, layer.key);
        let mut shard = self.shards[self.shard_of(hash)].0.lock();
        let marked = compact(layer.slot | OWN_MARK);
        if let Ok(entry) = shard
            .table
            .find_entry(self.own_hash(layer), |e| e.is(marked, layer.key))
        {
            entry.remove();
        }
    }
}
