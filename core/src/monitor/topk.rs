//! A space-saving heavy-hitters sketch (Metwally, Agrawal, El Abbadi, 2005): at most `k`
//! counters; a key not held replaces the smallest one, inheriting its count as its error.
//! Any key whose true count exceeds `total / k` is held, and a held key's count is at most
//! its error above the truth.
//!
//! Counting a key already held hashes it once and allocates nothing (the table is keyed by a
//! precomputed hash); only a new key allocates, and replacing one scans the `k` counters for
//! the smallest. Sketches kept apart (one per thread shard) are combined by [`merge`], which
//! keeps both guarantees (Agarwal et al., "Mergeable summaries", 2012).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use serde::Serialize;

/// One key of a [`TopK`] with its count and the most that count may overstate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopEntry {
    /// The key.
    pub key: String,
    /// How many times it was counted (an upper bound).
    pub count: u64,
    /// How much of `count` may belong to keys it replaced (0: exact).
    pub error: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    key: Box<str>,
    hash: u64,
    count: u64,
    error: u64,
}

/// The `k` heaviest keys of a stream, in bounded memory.
#[derive(Debug, Clone)]
pub struct TopK {
    capacity: usize,
    slots: Vec<Slot>,
    index: HashTable<u32>,
    hasher: foldhash::fast::FixedState,
}

impl TopK {
    /// A sketch of at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        TopK {
            capacity,
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: foldhash::fast::FixedState::with_seed(0x7f0b_5eed),
        }
    }

    /// Counts `key` `by` more times.
    pub fn add(&mut self, key: &str, by: u64) {
        let hash = self.hasher.hash_one(key);
        let slots = &mut self.slots;
        if let Some(&i) = self.index.find(hash, |&i| &*slots[i as usize].key == key) {
            slots[i as usize].count += by;
            return;
        }
        if slots.len() < self.capacity {
            let i = slots.len() as u32;
            slots.push(Slot {
                key: key.into(),
                hash,
                count: by,
                error: 0,
            });
            self.index
                .insert_unique(hash, i, |&j| slots[j as usize].hash);
            return;
        }
        let Some(smallest) = (0..slots.len()).min_by_key(|&i| slots[i].count) else {
            return;
        };
        let old = &slots[smallest];
        if let Ok(entry) = self.index.find_entry(old.hash, |&j| j as usize == smallest) {
            entry.remove();
        }
        let min = slots[smallest].count;
        slots[smallest] = Slot {
            key: key.into(),
            hash,
            count: min + by,
            error: min,
        };
        self.index
            .insert_unique(hash, smallest as u32, |&j| slots[j as usize].hash);
    }

    /// The keys held, heaviest first (ties by key), at most `n`.
    pub fn top(&self, n: usize) -> Vec<TopEntry> {
        merge(std::slice::from_ref(&self), n)
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no key was counted.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The smallest count a key not held may have reached: the smallest held count once
    /// the sketch is full, else 0.
    fn floor(&self) -> u64 {
        if self.slots.len() < self.capacity {
            0
        } else {
            self.slots.iter().map(|s| s.count).min().unwrap_or(0)
        }
    }

    fn get(&self, key: &str) -> Option<&Slot> {
        let hash = self.hasher.hash_one(key);
        self.index
            .find(hash, |&i| &*self.slots[i as usize].key == key)
            .map(|&i| &self.slots[i as usize])
    }
}

/// The heaviest `n` keys of several sketches taken together, heaviest first (ties by key).
/// A key some full sketch does not hold may have been counted there up to that sketch's
/// smallest count; that much is added to its count and to its error, so every count stays an
/// upper bound and every error the most it may overstate.
pub fn merge(sketches: &[&TopK], n: usize) -> Vec<TopEntry> {
    let floors: Vec<u64> = sketches.iter().map(|s| s.floor()).collect();
    let mut keys: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for sketch in sketches {
        keys.extend(sketch.slots.iter().map(|s| &*s.key));
    }
    let mut all: Vec<TopEntry> = keys
        .into_iter()
        .map(|key| {
            let (mut count, mut error) = (0, 0);
            for (sketch, &floor) in sketches.iter().zip(&floors) {
                match sketch.get(key) {
                    Some(slot) => {
                        count += slot.count;
                        error += slot.error;
                    }
                    None => {
                        count += floor;
                        error += floor;
                    }
                }
            }
            TopEntry {
                key: key.to_owned(),
                count,
                error,
            }
        })
        .collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    all.truncate(n);
    all
}
