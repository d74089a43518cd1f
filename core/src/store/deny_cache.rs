//! The deny cache: denials a shared store gave, answered again without asking it while their
//! wait runs (`store.deny_cache`).

use smallvec::SmallVec;

use super::Layer;
use crate::clock::Timestamp;
use crate::limit::Outcome;

/// The most denials remembered; past it, expired ones are dropped, then the whole map.
const DENY_CACHE_CAPACITY: usize = 100_000;

/// The longest a denial is remembered, however long its wait: a key another process resets,
/// rewards or unblocks is asked about again within this.
pub(crate) const DENY_CACHE_MAX_HOLD_US: u64 = 1_000_000;

/// Recent denials by the shared store of requests of cost 1, keyed by the request's layers and
/// keys.
///
/// A denial whose longest `retry_after` is R holds for R at least: limits only fill up when
/// others consume, so until then the same request is denied again. It is remembered for R,
/// but never longer than a second, so that what an administrator does to a key in another
/// process (a reset, a reward) is seen within a second. It is answered here with
/// `allowed = false`, the exact remaining wait, and the denying layer's `remaining` (0 until
/// then, for a cost of 1) and `reset_after` (which only runs down). Only the figures of the
/// layers that admitted — shared counters others keep consuming — may be staler than a round
/// trip would give. A larger cost is not cached: what remains can grow below it before it
/// fits. Nor is a request one of whose rules gives back what responses do not count
/// (`count_responses`): a refund can make room before the wait is over.
#[derive(Debug, Default)]
pub(crate) struct DenyCache {
    entries: parking_lot::Mutex<std::collections::HashMap<Vec<u8>, Denial>>,
}

#[derive(Debug, Clone)]
struct Denial {
    at: u64,
    until: u64,
    outcomes: SmallVec<[Outcome; 4]>,
}

impl DenyCache {
    pub(crate) fn key(layers: &[Layer<'_>]) -> Vec<u8> {
        let mut key = Vec::with_capacity(layers.iter().map(|l| l.key.len() + 12).sum::<usize>());
        for layer in layers {
            key.extend_from_slice(&layer.slot.to_le_bytes());
            key.extend_from_slice(&(layer.key.len() as u32).to_le_bytes());
            key.extend_from_slice(layer.key);
        }
        key
    }

    /// The remembered denial of this request at `now`, aged, if it still holds.
    pub(crate) fn get(&self, key: &[u8], now: Timestamp, outcomes: &mut [Outcome]) -> bool {
        let now = now.as_micros();
        let entries = self.entries.lock();
        let Some(d) = entries.get(key) else {
            return false;
        };
        if now >= d.until || now < d.at || d.outcomes.len() != outcomes.len() {
            return false;
        }
        let aged = now - d.at;
        for (out, o) in outcomes.iter_mut().zip(&d.outcomes) {
            *out = o.aged(aged);
        }
        true
    }

    /// Forgets every remembered denial.
    pub(crate) fn clear(&self) {
        self.entries.lock().clear();
    }

    pub(crate) fn put(&self, key: Vec<u8>, now: Timestamp, outcomes: &[Outcome]) {
        let wait = outcomes
            .iter()
            .filter(|o| !o.allowed)
            .map(Outcome::retry_after_us)
            .max()
            .unwrap_or(0);
        if wait == 0 {
            return;
        }
        let now = now.as_micros();
        let mut entries = self.entries.lock();
        if entries.len() >= DENY_CACHE_CAPACITY {
            entries.retain(|_, d| d.until > now);
            if entries.len() >= DENY_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Denial {
                at: now,
                until: now.saturating_add(wait.min(DENY_CACHE_MAX_HOLD_US)),
                outcomes: outcomes.iter().copied().collect(),
            },
        );
    }
}
