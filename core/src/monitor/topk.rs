//! A space-saving heavy-hitters sketch (Metwally, Agrawal, El Abbadi, 2005): at most `k`
//! counters; a key not held replaces the smallest one, inheriting its count as its error.
//! Any key whose true count exceeds `total / k` is held, and a held key's count is at most
//! its error above the truth.

use serde::Serialize;
use std::collections::HashMap;

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

/// The `k` heaviest keys of a stream, in bounded memory.
#[derive(Debug, Clone)]
pub struct TopK {
    capacity: usize,
    counts: HashMap<String, (u64, u64)>,
}

impl TopK {
    /// A sketch of at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        TopK {
            capacity: capacity.max(1),
            counts: HashMap::new(),
        }
    }

    /// Counts `key` `by` more times.
    pub fn add(&mut self, key: &str, by: u64) {
        if let Some((count, _)) = self.counts.get_mut(key) {
            *count += by;
            return;
        }
        if self.counts.len() < self.capacity {
            self.counts.insert(key.to_owned(), (by, 0));
            return;
        }
        let Some((smallest, &(min, _))) = self.counts.iter().min_by_key(|(_, (count, _))| *count)
        else {
            return;
        };
        let smallest = smallest.clone();
        self.counts.remove(&smallest);
        self.counts.insert(key.to_owned(), (min + by, min));
    }

    /// The keys held, heaviest first (ties by key), at most `n`.
    pub fn top(&self, n: usize) -> Vec<TopEntry> {
        let mut all: Vec<TopEntry> = self
            .counts
            .iter()
            .map(|(key, &(count, error))| TopEntry {
                key: key.clone(),
                count,
                error,
            })
            .collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no key was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}
