//! Requests with layers that count locally between syncs (see [`crate::store::synced`]),
//! behind the same breakers as every other call: the read of stale keys before a decision,
//! the sync thread's rounds, and the last round when the store is dropped.

use std::sync::{Arc, Weak};
use std::time::Instant;

use smallvec::SmallVec;

use super::{Inner, Permits};
use crate::clock::Timestamp;
use crate::decision::StoreUsed;
use crate::error::Error;
use crate::limit::Outcome;
use crate::store::redis::{Failed, SyncedCount};
use crate::store::synced::{Batch, Tallies};
use crate::store::{Layer, Verdict};

impl Inner {
    /// A request some of whose layers count locally: those decided here, after reading the
    /// keys whose counts are stale; the others on Redis; all-or-nothing across both. When
    /// Redis cannot be read or cannot decide, the whole request goes to `on_error`.
    pub(super) fn decide_synced(
        self: &Arc<Self>,
        tallies: &Tallies,
        layers: &[Layer<'_>],
        cost: u64,
        now: Timestamp,
        outcomes: &mut [Outcome],
        times: &mut [Timestamp],
    ) -> Result<Verdict, Error> {
        times.fill(now);
        let synced: SmallVec<[bool; 4]> = layers.iter().map(|l| tallies.is_synced(l)).collect();
        let stale = tallies.stale(&self.shared, layers, &synced, now);
        if !stale.is_empty() {
            let started = Instant::now();
            let read = self.acquire(&stale.slots()).and_then(|permits| {
                let (replies, all_read) = self.send(tallies, &stale, permits);
                all_read.then_some(replies)
            });
            match read {
                Some(replies) => tallies.apply(&stale, &replies, started),
                None => {
                    tallies.unpin(layers, &synced);
                    return self.decide_unavailable(layers, cost, now, outcomes);
                }
            }
        }
        let verdict = |allowed| {
            Ok(Verdict {
                allowed,
                store: StoreUsed::Redis,
            })
        };
        if !tallies.acquire(layers, &synced, cost, now, outcomes) {
            for (i, layer) in layers.iter().enumerate() {
                if !synced[i] {
                    // Not asked: the request was denied before Redis was.
                    outcomes[i] = Outcome::new(true, layer.quota.limit(), 0, 0);
                }
            }
            return verdict(false);
        }
        let exact: SmallVec<[usize; 4]> = (0..layers.len()).filter(|&i| !synced[i]).collect();
        if exact.is_empty() {
            return verdict(true);
        }
        let sub: SmallVec<[Layer<'_>; 4]> = exact.iter().map(|&i| layers[i]).collect();
        let mut out: SmallVec<[Outcome; 4]> = SmallVec::from_elem(Outcome::default(), sub.len());
        let mut at: SmallVec<[Timestamp; 4]> = SmallVec::from_elem(now, sub.len());
        let decided = self.through(&sub, |redis| {
            redis.decide(&sub, cost, now, &mut out, &mut at)
        });
        match decided {
            Some(allowed) => {
                for (k, &i) in exact.iter().enumerate() {
                    outcomes[i] = out[k];
                    times[i] = at[k];
                }
                if !allowed {
                    tallies.give_back(layers, &synced, outcomes, cost, now);
                }
                verdict(allowed)
            }
            None => {
                tallies.give_back(layers, &synced, outcomes, cost, now);
                self.decide_unavailable(layers, cost, now, outcomes)
            }
        }
    }

    /// Sends `batch` and reads back the counts, for the parts whose breakers let it: one
    /// round trip, each part's breaker told how its keys went.
    fn sync_round(self: &Arc<Self>, tallies: &Tallies, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        // A permit per part, so that a part that is down holds back only its own keys.
        let slots: Vec<u16> = batch
            .items
            .iter()
            .map(|i| crate::store::redis::RedisStore::synced_slot(&i.key))
            .collect();
        let mut permits = Permits {
            parts: SmallVec::new(),
            started,
        };
        let parts: Vec<usize> = {
            let shards = self.shards.lock();
            slots.iter().map(|&s| shards.of(&[s])[0]).collect()
        };
        let mut granted: Vec<usize> = Vec::new();
        let mut refused: Vec<usize> = Vec::new();
        for (&slot, &part) in slots.iter().zip(&parts) {
            if granted.contains(&part) || refused.contains(&part) {
                continue;
            }
            match self.acquire(&[slot]) {
                Some(p) => {
                    permits.parts.extend(p.parts);
                    granted.push(part);
                }
                None => refused.push(part),
            }
        }
        if permits.parts.is_empty() {
            return;
        }
        let batch = if refused.is_empty() {
            batch
        } else {
            batch.only(|i| granted.contains(&parts[i]))
        };
        let (replies, _) = self.send(tallies, &batch, permits);
        tallies.apply(&batch, &replies, started);
    }

    /// Sends `batch` under `permits`, tells the breakers how it went, and answers each item's
    /// reply and whether every one was read.
    fn send(
        self: &Arc<Self>,
        tallies: &Tallies,
        batch: &Batch,
        permits: Permits,
    ) -> (Vec<Result<SyncedCount, Failed>>, bool) {
        let replies = self.shared.sync(tallies.me(), &batch.items);
        let failed = Failed::merge(replies.iter().filter_map(|r| r.clone().err()));
        self.settle(permits, failed.as_ref());
        (replies, failed.is_none())
    }

    /// Starts the thread that syncs the tallies every interval, for as long as the store
    /// lives.
    pub(super) fn start_sync(self: &Arc<Self>) {
        let Some(tallies) = self.tallies.as_ref() else {
            return;
        };
        let tick = tallies.tick();
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("floodwall-store-sync".into())
            .spawn(move || sync_while_alive(&weak, tick));
        if let Err(e) = spawned {
            log::error!(target: "floodwall::store", "cannot start the thread that syncs local counts: {e}");
        }
    }

    /// The last rounds for the counts not yet sent (the store is being dropped): past the
    /// breakers, up to three attempts for what a failed one left unsent.
    pub(super) fn flush(self: &Arc<Self>) {
        let Some(tallies) = self.tallies.as_ref() else {
            return;
        };
        for _ in 0..3 {
            let started = Instant::now();
            let batch = tallies.round(self.now(), started, true);
            if batch.is_empty() {
                return;
            }
            let replies = self.shared.sync(tallies.me(), &batch.items);
            tallies.apply(&batch, &replies, started);
        }
    }
}

/// The sync thread's loop: every `tick`, the rounds that are due. Ends with the store.
fn sync_while_alive(inner: &Weak<Inner>, tick: std::time::Duration) {
    loop {
        std::thread::sleep(tick);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(tallies) = inner.tallies.as_ref() else {
            return;
        };
        let batch = tallies.round(inner.now(), Instant::now(), false);
        inner.sync_round(tallies, batch);
    }
}
