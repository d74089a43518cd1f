//! [`Permit`]: what an admitted request holds of the `concurrency` rules it matched, until it
//! is released.
//!
//! A [`Decision`](crate::Decision) from [`Engine::check`] holds its permit and releases it
//! when it is dropped; [`Decision::take_permit`](crate::Decision::take_permit) takes it out
//! for a holder that outlives the decision (the bindings' decision objects), which gives it
//! back with [`Engine::release`]. The HTTP layer keeps the holds with its exchange and releases
//! them in [`Engine::http_finish`]. Whatever is never released is given back by the store
//! after the rule's `max_hold`.
//!
//! A host that can only hold a number (the C ABI, a Node decision's row of numbers) has the
//! engine keep the permit ([`Engine::keep_permit`], [`Decision::keep_permit`]) and releases
//! it by that number ([`Engine::release_kept`]).
//!
//! [`Decision::keep_permit`]: crate::Decision::keep_permit

use smallvec::SmallVec;

use super::Engine;
use super::live::Live;
use crate::http::Pending;
use crate::store::Adjustment;

/// What an admitted request holds of the `concurrency` rules it matched. Plain data: it can
/// move to another thread; [`Engine::release`] gives it back (once).
#[derive(Debug, Default)]
#[must_use = "a permit holds its place until Engine::release (or the rule's max_hold)"]
pub struct Permit {
    pub(crate) held: SmallVec<[Pending; 1]>,
    /// Which engine's rules it holds, and which generation of them (see [`Engine::reload`]).
    pub(crate) live: u64,
}

impl Permit {
    /// Whether it holds anything (a request that matched no `concurrency` rule holds nothing).
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Permits the engine keeps for hosts that hold them by number.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    last: std::sync::atomic::AtomicU64,
    permits: parking_lot::Mutex<std::collections::HashMap<u64, Permit>>,
}

impl Engine {
    /// Keeps `permit` and answers its number (from 1; 0 for a permit that holds nothing,
    /// which is not kept). The number stays below 2⁵³, so it survives a trip through a
    /// JavaScript number.
    pub fn keep_permit(&self, permit: Permit) -> u64 {
        if permit.held.is_empty() {
            return 0;
        }
        let id = self
            .kept
            .last
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % ((1 << 53) - 1)
            + 1;
        self.kept.permits.lock().insert(id, permit);
        id
    }

    /// Releases the permit kept as `id` ([`keep_permit`](Self::keep_permit)); `false` when
    /// no permit is kept under that number (0, released already, or never kept).
    pub fn release_kept(&self, id: u64) -> bool {
        self.take_kept(id)
            .is_some_and(|permit| self.release(permit))
    }

    /// Takes back the permit kept as `id`, to release it elsewhere (on a thread that may wait
    /// for the store).
    pub fn take_kept(&self, id: u64) -> Option<Permit> {
        self.kept.permits.lock().remove(&id)
    }

    /// How many permits the engine keeps for hosts.
    pub fn kept_permits(&self) -> usize {
        self.kept.permits.lock().len()
    }

    /// Gives back what `permit` holds: one store call (on Redis, one round trip; a store that
    /// cannot be reached loses the release, and the hold ends after `max_hold`). Returns
    /// `false`, releasing nothing, for a permit of another engine. A permit taken before a
    /// reload is given back to the rules it was taken under.
    pub fn release(&self, permit: Permit) -> bool {
        // The rules it was decided by, even when a reload replaced them since.
        let Some(live) = self.gens.find_id(permit.live) else {
            return false;
        };
        if permit.held.is_empty() {
            return true;
        }
        let ops: SmallVec<[_; 2]> = permit
            .held
            .iter()
            .map(|p| {
                (
                    live.pending_layer(p),
                    Adjustment::Refund {
                        cost: p.cost,
                        at: p.at,
                    },
                    p.store,
                )
            })
            .collect();
        self.adjust(&ops);
        self.lines.released();
        true
    }
}

impl Live {
    /// The permit of the `concurrency` layers among `pending` (what an admitted request's
    /// decision kept).
    pub(crate) fn permit_of(&self, pending: Vec<Pending>) -> Permit {
        Permit {
            held: pending
                .into_iter()
                .filter(|p| self.rules[p.rule as usize].holds())
                .collect(),
            live: self.id,
        }
    }
}
