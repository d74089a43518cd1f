//! The verified-token cache: a token seen and verified before is answered from memory.
//!
//! Entries are keyed by a randomly seeded hash of the whole token and confirmed by comparing
//! the whole token, so a hash collision can never pass one token off as another. An entry is
//! used only inside the token's own validity — from its `nbf`/`iat` minus the leeway to its
//! `exp` minus the leeway — and for at most the configured TTL, so a token cached at one time
//! (an explicit `authenticate_at`) is never served at a time it would be refused; a token that
//! is inside its leeway already is not cached. The cache is bounded both in entries and in
//! bytes (the token plus its parsed claims, counted value by value): a full shard first drops
//! its expired entries, then the eighth of its entries nearest to expiry. It belongs to one
//! [`Authenticator`](super::Authenticator); reloading the `auth` section builds a new one, so
//! no entry verified by a removed key (or under an older policy) survives a reload.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::Mutex;

use super::Identity;

/// Fixed overhead counted per entry (the entry, the table slot, the `Arc`).
const ENTRY_OVERHEAD: usize = 128;
const MAX_SHARDS: usize = 16;
const MIN_ENTRIES_PER_SHARD: usize = 64;

struct Entry {
    hash: u64,
    token: Box<[u8]>,
    identity: Arc<Identity>,
    /// µs since the epoch before which the entry is not used.
    valid_from: u64,
    /// µs since the epoch from which the entry is not used.
    valid_until: u64,
    bytes: usize,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Entry>,
    bytes: usize,
}

#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// When a verified token's entry may be used, and its size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheWindow {
    /// The token's `nbf`/`iat` minus the leeway, µs since the epoch (0: no such claim).
    pub(crate) from_us: u64,
    /// The token's `exp` minus the leeway, µs since the epoch.
    pub(crate) until_us: Option<u64>,
    /// The token and its parsed claims, in bytes (approximately).
    pub(crate) bytes: usize,
}

pub(crate) struct TokenCache {
    shards: Box<[Padded]>,
    mask: usize,
    entries_per_shard: usize,
    bytes_per_shard: usize,
    ttl_us: u64,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("shards", &self.shards.len())
            .field("entries_per_shard", &self.entries_per_shard)
            .field("bytes_per_shard", &self.bytes_per_shard)
            .field("ttl_us", &self.ttl_us)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens and about `max_bytes` bytes.
    pub(crate) fn new(max_entries: usize, max_bytes: usize, ttl_us: u64) -> Self {
        let mut shards = 1;
        while shards < MAX_SHARDS && shards * 2 * MIN_ENTRIES_PER_SHARD <= max_entries {
            shards *= 2;
        }
        TokenCache {
            shards: (0..shards)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            mask: shards - 1,
            entries_per_shard: (max_entries / shards).max(1),
            bytes_per_shard: max_bytes / shards,
            ttl_us,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn hash(&self, token: &[u8]) -> u64 {
        self.hasher.hash_one(token)
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[(hash >> 40) as usize & self.mask].0
    }

    /// The identity of `token` if it was verified before and its entry is still valid at `now`.
    pub(crate) fn get(&self, token: &[u8], now_us: u64) -> Option<Arc<Identity>> {
        let hash = self.hash(token);
        let mut shard = self.shard(hash).lock();
        let entry = shard
            .table
            .find_entry(hash, |e| e.hash == hash && *e.token == *token)
            .ok()?;
        let found = entry.get();
        if found.valid_from > now_us {
            // Not valid yet at this (explicit) time: verification says why.
            return None;
        }
        if found.valid_until > now_us {
            return Some(Arc::clone(&found.identity));
        }
        let (gone, _) = entry.remove();
        shard.bytes -= gone.bytes;
        None
    }

    /// Remembers that `token` verified to `identity`, for use inside `window` and no longer
    /// than the TTL from `now`.
    pub(crate) fn insert(
        &self,
        token: &[u8],
        identity: &Arc<Identity>,
        window: CacheWindow,
        now_us: u64,
    ) {
        let valid_until = now_us
            .saturating_add(self.ttl_us)
            .min(window.until_us.unwrap_or(u64::MAX));
        if valid_until <= now_us || window.from_us > now_us {
            return;
        }
        let bytes = ENTRY_OVERHEAD + window.bytes;
        if bytes > self.bytes_per_shard {
            return;
        }
        let hash = self.hash(token);
        let mut shard = self.shard(hash).lock();
        if let Ok(existing) = shard
            .table
            .find_entry(hash, |e| e.hash == hash && *e.token == *token)
        {
            // Two threads verified the same token at once: keep the first entry.
            let _ = existing;
            return;
        }
        if shard.table.len() >= self.entries_per_shard || shard.bytes + bytes > self.bytes_per_shard
        {
            self.make_room(&mut shard, bytes, now_us);
            if shard.table.len() >= self.entries_per_shard
                || shard.bytes + bytes > self.bytes_per_shard
            {
                return;
            }
        }
        shard.bytes += bytes;
        shard.table.insert_unique(
            hash,
            Entry {
                hash,
                token: token.into(),
                identity: Arc::clone(identity),
                valid_from: window.from_us,
                valid_until,
                bytes,
            },
            |e| e.hash,
        );
    }

    /// Drops expired entries, then the entries nearest to expiry, until one more entry of
    /// `bytes` fits with an eighth of the shard free.
    fn make_room(&self, shard: &mut Shard, bytes: usize, now_us: u64) {
        let mut freed = 0;
        shard.table.retain(|e| {
            let keep = e.valid_until > now_us;
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        shard.bytes -= freed;
        let entry_room = self.entries_per_shard - (self.entries_per_shard / 8).max(1);
        let byte_room = self.bytes_per_shard - self.bytes_per_shard / 8;
        if shard.table.len() <= entry_room && shard.bytes + bytes <= byte_room {
            return;
        }
        let mut expiries: Vec<(u64, usize)> = shard
            .table
            .iter()
            .map(|e| (e.valid_until, e.bytes))
            .collect();
        expiries.sort_unstable();
        let (mut count, mut total) = (shard.table.len(), shard.bytes);
        let mut cutoff = 0;
        for &(until, size) in &expiries {
            if count < entry_room.max(1) && total + bytes <= byte_room {
                break;
            }
            cutoff = until;
            count -= 1;
            total -= size;
        }
        // Drop everything expiring before the cutoff, and as many at it as the count needs.
        let below = expiries
            .iter()
            .filter(|&&(until, _)| until < cutoff)
            .count();
        let mut at_cutoff = (shard.table.len() - count).saturating_sub(below);
        let mut freed = 0;
        shard.table.retain(|e| {
            let drop = if e.valid_until < cutoff {
                true
            } else if e.valid_until == cutoff && at_cutoff > 0 {
                at_cutoff -= 1;
                true
            } else {
                false
            };
            if drop {
                freed += e.bytes;
            }
            !drop
        });
        shard.bytes -= freed;
    }

    /// How many tokens are cached.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().table.len()).sum()
    }

    /// About how many bytes the cache holds.
    pub(crate) fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().bytes).sum()
    }

    /// The most tokens the cache holds.
    pub(crate) fn max_entries(&self) -> usize {
        self.entries_per_shard * self.shards.len()
    }
}
