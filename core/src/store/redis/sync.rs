//! The Redis side of rules that count locally between syncs (see [`crate::store::synced`]):
//! `sync.lua`, one call per slot (per [`PER_CALL`] keys) and all in one round trip.
//!
//! A synced layer's count lives in a hash per key and window, named like the layer's own key
//! with its algorithm code, `#` and the window's index (`PREFIX{RULE/VARIANT/=KEY}f#29410`):
//! the same hash tag, so the same node, and apart from the exact key, so that a rule switching
//! `sync` on or off starts afresh. Its fields: one per process (its id), what that process has
//! admitted in the window; one per process (`ID#`), the number of the sync that set it; and
//! `=`, the sum of the counts. A process sends its count, not a change, so a sync repeated
//! after a lost reply counts nothing twice; and a count can go down (what a denied request's
//! local layer took, a refund) without a sync that crossed a later one undoing the later.

use super::slots::hash_slot;
use super::{Failed, RedisStore, no_reply};
use crate::store::Layer;

/// The sync script.
pub const SYNC_LUA: &str = include_str!("sync.lua");

/// The most keys one sync call takes.
const PER_CALL: usize = 512;

/// One key and window's part of a sync call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncItem {
    /// The window's hash.
    pub(crate) key: Vec<u8>,
    /// What this process has admitted in the window (0: only read).
    pub(crate) own: u64,
    /// The number of that count: higher for every later count of the key by this process.
    pub(crate) seq: u64,
    /// How long the hash must live, in ms.
    pub(crate) ttl_ms: u64,
}

/// What Redis holds for a key and window after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncedCount {
    /// This process's count, as the hash holds it.
    pub(crate) held: u64,
    /// Every process's.
    pub(crate) total: u64,
}

impl RedisStore {
    /// The name of `layer`'s window hashes up to the window's index.
    pub(crate) fn synced_key(&self, layer: &Layer<'_>) -> Vec<u8> {
        let mut key = self.key(layer);
        key.push(super::code_of(layer.quota.algorithm()));
        key.push(b'#');
        key
    }

    /// The hash slot of a window hash.
    pub(crate) fn synced_slot(key: &[u8]) -> u16 {
        hash_slot(key)
    }

    /// Sends `items` for process `me` and reads back what Redis holds: one call of the sync script per slot (at most
    /// [`PER_CALL`] keys each), all in one round trip within the store's deadline; each item
    /// with its own result (on a cluster a node down fails only its keys).
    pub(crate) fn sync(&self, me: &str, items: &[SyncItem]) -> Vec<Result<SyncedCount, Failed>> {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let slot = if self.is_cluster() {
                hash_slot(&item.key)
            } else {
                0
            };
            match groups
                .iter_mut()
                .find(|(s, g)| *s == slot && g.len() < PER_CALL)
            {
                Some((_, g)) => g.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        let commands: Vec<redis::Cmd> = groups
            .iter()
            .map(|(_, group)| {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(self.sync_script.get_hash()).arg(group.len());
                for &i in group {
                    cmd.arg(&items[i].key);
                }
                cmd.arg(me);
                for &i in group {
                    let item = &items[i];
                    cmd.arg(item.own).arg(item.seq).arg(item.ttl_ms.max(1));
                }
                cmd
            })
            .collect();
        let replies = self.run_script(&self.sync_script, SYNC_LUA, &commands, self.timeout);
        let mut out: Vec<Result<SyncedCount, Failed>> = vec![Err(no_reply()); items.len()];
        for ((_, group), reply) in groups.iter().zip(replies) {
            match reply {
                Ok(values) if values.len() == 2 * group.len() => {
                    for (&i, pair) in group.iter().zip(values.chunks(2)) {
                        let u = |v: i64| u64::try_from(v).unwrap_or(0);
                        out[i] = Ok(SyncedCount {
                            held: u(pair[0]),
                            total: u(pair[1]),
                        });
                    }
                }
                Ok(values) => {
                    let failed: Failed = super::StoreFailure::Redis(format!(
                        "the sync script answered {} values for {} keys",
                        values.len(),
                        group.len()
                    ))
                    .into();
                    for &i in group {
                        out[i] = Err(failed.clone());
                    }
                }
                Err(failed) => {
                    for &i in group {
                        out[i] = Err(failed.clone());
                    }
                }
            }
        }
        out
    }
}
