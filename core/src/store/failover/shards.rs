//! The shared store's parts, each behind a breaker of its own: one for a single node; on a
//! cluster, one per primary, so that a primary that is down sends only the decisions whose
//! keys it holds to the fallback while the others keep deciding on Redis.
//!
//! The cluster's map (which primary serves which slots, from `CLUSTER SLOTS`) is read when the
//! store connects and again on each probe round while a part is failing, so that a replica
//! promoted in a dead primary's place takes its slots back to Redis. Until a map is known
//! (a cluster absent at build) the whole cluster is one part.

use smallvec::SmallVec;

use crate::breaker::{Breaker, BreakerSettings, BreakerState, WindowKind};
use crate::clock::Timestamp;
use crate::store::redis::{ShardMap, StoreFailure};

/// Slots in a Redis Cluster.
const SLOTS: usize = 16_384;

/// One part of the shared store and its breaker.
pub(super) struct Shard {
    /// The primary's address (`host:port`); empty for a single node, or for a whole cluster
    /// whose map is not known.
    pub(super) address: String,
    /// The slot ranges it serves (none for a single node).
    pub(super) ranges: Vec<(u16, u16)>,
    pub(super) breaker: Breaker,
    /// The last failure, until a call succeeds.
    pub(super) failure: Option<StoreFailure>,
}

impl Shard {
    fn new(address: String, ranges: Vec<(u16, u16)>) -> Self {
        Shard {
            address,
            ranges,
            breaker: part_breaker(),
            failure: None,
        }
    }

    /// Whether calls to it are held back (its breaker is not closed).
    pub(super) fn is_open(&self, now: Timestamp) -> bool {
        self.breaker.state(now) != BreakerState::Closed
    }

    /// A slot it serves (what its probe writes to), if it is a cluster node.
    pub(super) fn slot(&self) -> Option<u16> {
        self.ranges.first().map(|&(start, _)| start)
    }

    /// Why it fails, naming the node on a cluster (kind `cluster_down`).
    pub(super) fn reason(&self) -> Option<StoreFailure> {
        let failure = self.failure.clone()?;
        if self.address.is_empty() {
            return Some(failure);
        }
        let ranges: Vec<String> = self
            .ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        Some(StoreFailure::ClusterDown(format!(
            "node {} (slots {}): {failure}",
            self.address,
            ranges.join(",")
        )))
    }
}

/// Every part, and which part serves each slot.
pub(super) struct Shards {
    pub(super) list: Vec<Shard>,
    /// For each slot, its part in `list`; empty while there is one part.
    of_slot: Vec<u16>,
    /// Whether the probe thread runs.
    pub(super) probing: bool,
}

impl Shards {
    /// One part: a single node, or a cluster whose map is not known yet.
    pub(super) fn whole() -> Self {
        Shards {
            list: vec![Shard::new(String::new(), Vec::new())],
            of_slot: Vec::new(),
            probing: false,
        }
    }

    /// The parts serving `slots` (the first part when there is one, or no slot is known),
    /// each once.
    pub(super) fn of(&self, slots: &[u16]) -> SmallVec<[usize; 4]> {
        let mut parts: SmallVec<[usize; 4]> = SmallVec::new();
        if self.of_slot.is_empty() || slots.is_empty() {
            parts.push(0);
            return parts;
        }
        for &slot in slots {
            let part = usize::from(self.of_slot[usize::from(slot) % SLOTS]);
            if !parts.contains(&part) {
                parts.push(part);
            }
        }
        parts
    }

    /// Follows a new cluster map: a primary already known keeps its breaker and failure;
    /// a new one starts closed; one no longer in the map is forgotten. Returns whether the
    /// parts changed.
    pub(super) fn remap(&mut self, map: ShardMap) -> bool {
        if map.is_empty() {
            return false;
        }
        let same = map.len() == self.list.len()
            && map
                .iter()
                .zip(&self.list)
                .all(|((a, r), s)| *a == s.address && *r == s.ranges);
        if same {
            return false;
        }
        let mut old = std::mem::take(&mut self.list);
        let mut of_slot = vec![0u16; SLOTS];
        for (index, (address, ranges)) in map.into_iter().enumerate() {
            for &(start, end) in &ranges {
                for slot in start..=end.min(SLOTS as u16 - 1) {
                    of_slot[usize::from(slot)] = index as u16;
                }
            }
            let shard = match old.iter().position(|s| s.address == address) {
                Some(i) => {
                    let mut s = old.swap_remove(i);
                    s.ranges = ranges;
                    s
                }
                None => Shard::new(address, ranges),
            };
            self.list.push(shard);
        }
        self.of_slot = of_slot;
        true
    }

    /// The open parts' addresses (what the store's health follows).
    pub(super) fn open(&self, now: Timestamp) -> Vec<String> {
        self.list
            .iter()
            .filter(|s| s.is_open(now))
            .map(|s| s.address.clone())
            .collect()
    }
}

/// A part's breaker: open after 3 failures in the last 10 calls (half of them failing), until
/// the probe thread finds it back. Its own half-open state comes only after an hour, as a
/// last resort should the probe thread be unable to run.
fn part_breaker() -> Breaker {
    Breaker::new(BreakerSettings {
        window: WindowKind::Count(10),
        min_calls: 3,
        failure_rate: 0.5,
        slow_call_duration: None,
        slow_call_rate: 1.0,
        open_for: std::time::Duration::from_secs(3600),
        backoff: 1.0,
        max_open_for: std::time::Duration::from_secs(3600),
        half_open_calls: 1,
    })
    .expect("valid breaker settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        vec![
            ("127.0.0.1:7000".into(), vec![(0, 5460)]),
            ("127.0.0.1:7001".into(), vec![(5461, 10922)]),
            ("127.0.0.1:7002".into(), vec![(10923, 16383)]),
        ]
    }

    #[test]
    fn slots_find_their_primary() {
        let mut shards = Shards::whole();
        assert_eq!(shards.of(&[1, 9000]).as_slice(), &[0]);
        assert!(shards.remap(map()));
        assert_eq!(shards.of(&[1, 9000, 16383, 2]).as_slice(), &[0, 1, 2]);
        assert_eq!(shards.of(&[]).as_slice(), &[0]);
        assert!(!shards.remap(map()), "the same map changes nothing");
    }

    #[test]
    fn a_known_primary_keeps_its_breaker_across_a_new_map() {
        let mut shards = Shards::whole();
        shards.remap(map());
        let now = Timestamp::from_micros(1_000_000);
        shards.list[1].breaker.force_open(now);
        shards.list[1].failure = Some(StoreFailure::Timeout);
        // A slot moves from the first primary to the third; the second is still down.
        let mut moved = map();
        moved[0].1 = vec![(1, 5460)];
        moved[2].1 = vec![(0, 0), (10923, 16383)];
        assert!(shards.remap(moved));
        assert_eq!(shards.open(now), vec!["127.0.0.1:7001".to_owned()]);
        assert_eq!(shards.of(&[0]).as_slice(), &[2]);
        let reason = shards.list[1].reason().expect("a reason");
        assert_eq!(reason.kind(), "cluster_down");
        assert!(
            reason
                .to_string()
                .contains("node 127.0.0.1:7001 (slots 5461-10922)"),
            "{reason}"
        );
        // Promoted in its place: the dead primary is gone from the map, and with it its breaker.
        let promoted = vec![
            ("127.0.0.1:7000".into(), vec![(0, 5460)]),
            ("127.0.0.1:7002".into(), vec![(10923, 16383)]),
            ("127.0.0.1:7003".into(), vec![(5461, 10922)]),
        ];
        assert!(shards.remap(promoted));
        assert!(shards.open(now).is_empty());
    }
}
