//! The probe: a background thread that, while a part of the shared store is open, asks it
//! whether it is back — so that no caller's request is spent finding out.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Inner;
use crate::store::StoreState;

/// How often the probe asks a failing Redis whether it is back.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a probe waits for Redis (at least the store's own deadline).
const PROBE_DEADLINE: Duration = Duration::from_millis(250);

impl Inner {
    /// Starts the probe thread unless one is running.
    pub(super) fn start_probe(self: &Arc<Self>) {
        {
            let mut shards = self.shards.lock();
            if shards.probing {
                return;
            }
            shards.probing = true;
        }
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("floodwall-store-probe".into())
            .spawn(move || probe_until_back(&weak));
        if let Err(e) = spawned {
            self.shards.lock().probing = false;
            log::error!(target: "floodwall::store", "cannot start the shared store's probe thread: {e}");
        }
    }
}

/// The probe thread's loop: every [`PROBE_INTERVAL`], while a part is open, read the cluster's
/// map again (a replica may have taken a dead primary's place) and ask each open part; close
/// the breaker of each that answers. Ends when no part is open, or with the store.
fn probe_until_back(inner: &Weak<Inner>) {
    loop {
        std::thread::sleep(PROBE_INTERVAL);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let deadline = PROBE_DEADLINE.max(inner.shared.timeout());
        let now = inner.now();
        if let Ok(Some(map)) = inner.shared.shard_map(deadline)
            && inner.shards.lock().remap(map)
        {
            inner.follow(now);
        }
        let open: Vec<(usize, Option<u16>)> = {
            let mut shards = inner.shards.lock();
            let open: Vec<_> = (0..shards.list.len())
                .filter(|&i| shards.list[i].is_open(now))
                .map(|i| (i, shards.list[i].slot()))
                .collect();
            if open.is_empty() {
                shards.probing = false;
                return;
            }
            open
        };
        let mut back = false;
        for (part, slot) in open {
            let result = inner.shared.probe(deadline, slot);
            let mut shards = inner.shards.lock();
            let Some(shard) = shards.list.get_mut(part).filter(|s| s.slot() == slot) else {
                continue; // the map changed meanwhile
            };
            match result {
                Ok(()) => {
                    shard.failure = None;
                    shard.breaker.reset(inner.now());
                    back = true;
                }
                Err(failure) => {
                    shard.failure = Some(failure);
                    let reason = shard.reason();
                    drop(shards);
                    let mut health = inner.health.lock();
                    if health.0.state != StoreState::Ok
                        && let Some(reason) = reason
                    {
                        health.0.set_reason(&reason);
                    }
                }
            }
        }
        if back {
            inner.follow(inner.now());
        }
    }
}
