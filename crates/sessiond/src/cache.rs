//! Bounded in-process caches (docs/DESIGN.md §15.1).
//!
//! [`BoundedCache`] maps a 32-byte digest (never a secret itself) to a value, within a limit on
//! entries and one on bytes, with hit, miss and eviction counters. It is sharded (a `Mutex` per
//! shard, held for a map operation only) and evicts by generations: each shard fills a young
//! map; when the young map reaches its half of the shard's budget, the old map is dropped
//! (every entry in it counts as an eviction) and the young one becomes the old. A hit in the old
//! map moves the entry back to the young one, so what is used stays and what is not ages out
//! within two generations: the cost of LRU without its bookkeeping, and never more than the
//! limits, whatever is inserted.
//!
//! A cache holds only what is a pure function of its key (a verified signature is a property of
//! the token's bytes and the key's material): it never decides alone. Its users re-check what can
//! change (the key's status, the clock) on every hit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The size limits of one cache. Either limit at zero (or below two entries) turns the cache
/// off: every lookup misses and nothing is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheLimits {
    /// The most entries kept.
    pub entries: usize,
    /// The most bytes kept (the values' own estimate of their size, with the key and the map's
    /// per-entry overhead).
    pub bytes: usize,
}

impl CacheLimits {
    /// Limits of `entries` entries and `bytes` bytes.
    pub const fn new(entries: usize, bytes: usize) -> Self {
        CacheLimits { entries, bytes }
    }

    /// A cache that keeps nothing.
    pub const fn off() -> Self {
        CacheLimits {
            entries: 0,
            bytes: 0,
        }
    }
}

/// A cache's counters and size, as the metrics report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Entries dropped to stay within the limits (not those removed or cleared on purpose).
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (estimate).
    pub bytes: u64,
}

/// What an entry costs beyond its value's own estimate: the key and the map's slot.
const ENTRY_OVERHEAD: usize = 32 + 3 * std::mem::size_of::<usize>();
const MAX_SHARDS: usize = 16;

struct Generation<V> {
    map: HashMap<[u8; 32], (V, usize)>,
    bytes: usize,
}

impl<V> Default for Generation<V> {
    fn default() -> Self {
        Generation {
            map: HashMap::new(),
            bytes: 0,
        }
    }
}

impl<V> Generation<V> {
    fn remove(&mut self, key: &[u8; 32]) -> Option<(V, usize)> {
        let removed = self.map.remove(key)?;
        self.bytes -= removed.1;
        Some(removed)
    }
}

struct Shard<V> {
    young: Generation<V>,
    old: Generation<V>,
}

/// A bounded map from digests to values (see the module docs).
pub struct BoundedCache<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Per shard and generation.
    generation_entries: usize,
    generation_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl<V> std::fmt::Debug for BoundedCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedCache")
            .field("shards", &self.shards.len())
            .field("generation_entries", &self.generation_entries)
            .field("generation_bytes", &self.generation_bytes)
            .finish_non_exhaustive()
    }
}

impl<V: Clone> BoundedCache<V> {
    /// A cache within `limits`: the shards' two generations together never exceed them.
    #[must_use]
    pub fn new(limits: CacheLimits) -> Self {
        // Enough entries per shard for the generations to mean something; one shard for small
        // caches.
        let shards = (limits.entries / 512).clamp(1, MAX_SHARDS);
        let generation_entries = limits.entries / (2 * shards);
        let generation_bytes = limits.bytes / (2 * shards);
        let (shards, generation_entries, generation_bytes) =
            if generation_entries == 0 || generation_bytes == 0 {
                (0, 0, 0)
            } else {
                (shards, generation_entries, generation_bytes)
            };
        BoundedCache {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        young: Generation::default(),
                        old: Generation::default(),
                    })
                })
                .collect(),
            generation_entries,
            generation_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Whether the cache keeps anything.
    pub fn is_on(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, key: &[u8; 32]) -> Option<MutexGuard<'_, Shard<V>>> {
        // The key is a digest: its first byte is uniform. No shards: the cache is off.
        let shard = self
            .shards
            .get(usize::from(key[0]) % self.shards.len().max(1))?;
        // A panic while holding a shard leaves at worst a map missing an entry or holding one
        // being replaced by an equal value: still a valid cache.
        Some(
            shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The value for `key`, if held (an old-generation hit moves back to the young one).
    pub fn get(&self, key: &[u8; 32]) -> Option<V> {
        let found = self.peek(key);
        self.count(found.is_some());
        found
    }

    /// [`BoundedCache::get`] without counting a hit or a miss, for a user that decides after
    /// the lookup whether the value answers ([`BoundedCache::count`]).
    pub fn peek(&self, key: &[u8; 32]) -> Option<V> {
        let mut shard = self.shard(key)?;
        if let Some((value, _)) = shard.young.map.get(key) {
            return Some(value.clone());
        }
        let (value, size) = shard.old.remove(key)?;
        let found = value.clone();
        self.put(&mut shard, *key, value, size);
        Some(found)
    }

    /// Counts a lookup made with [`BoundedCache::peek`]: a hit when its value answered.
    pub fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `value` for `key`; `size` is the value's estimate of its own bytes. A value larger
    /// than a generation's byte budget is not kept.
    pub fn insert(&self, key: [u8; 32], value: V, size: usize) {
        let size = size.saturating_add(ENTRY_OVERHEAD);
        if size > self.generation_bytes {
            return;
        }
        let Some(mut shard) = self.shard(&key) else {
            return;
        };
        shard.old.remove(&key);
        self.put(&mut shard, key, value, size);
    }

    fn put(&self, shard: &mut Shard<V>, key: [u8; 32], value: V, size: usize) {
        if let Some(previous) = shard.young.remove(&key) {
            drop(previous);
        }
        if shard.young.map.len() >= self.generation_entries
            || shard.young.bytes + size > self.generation_bytes
        {
            let young = std::mem::take(&mut shard.young);
            let dropped = std::mem::replace(&mut shard.old, young);
            self.evictions
                .fetch_add(dropped.map.len() as u64, Ordering::Relaxed);
        }
        shard.young.bytes += size;
        shard.young.map.insert(key, (value, size));
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &[u8; 32]) {
        if let Some(mut shard) = self.shard(key) {
            shard.young.remove(key);
            shard.old.remove(key);
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            shard.young = Generation::default();
            shard.old = Generation::default();
        }
    }

    /// The counters and the size now.
    pub fn stats(&self) -> CacheStats {
        let (mut entries, mut bytes) = (0usize, 0usize);
        for shard in self.shards.iter() {
            let shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            entries += shard.young.map.len() + shard.old.map.len();
            bytes += shard.young.bytes + shard.old.bytes;
        }
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: entries as u64,
            bytes: bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(i.to_be_bytes()).into()
    }

    #[test]
    fn holds_what_was_put_and_counts_lookups() {
        let cache = BoundedCache::new(CacheLimits::new(100, 1 << 20));
        assert!(cache.get(&key(1)).is_none());
        cache.insert(key(1), 11u32, 8);
        assert_eq!(cache.get(&key(1)), Some(11));
        cache.insert(key(1), 12u32, 8);
        assert_eq!(cache.get(&key(1)), Some(12));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (2, 1, 1));
        cache.remove(&key(1));
        assert!(cache.get(&key(1)).is_none());
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.stats().bytes, 0);
    }

    #[test]
    fn never_holds_more_than_its_limits() {
        for limits in [
            CacheLimits::new(10, 1 << 20),
            CacheLimits::new(5_000, 1 << 20),
            CacheLimits::new(100_000, 64 * 1024),
        ] {
            let cache = BoundedCache::new(limits);
            for i in 0..50_000u32 {
                cache.insert(key(i), i, 100);
                let stats = cache.stats();
                assert!(
                    stats.entries as usize <= limits.entries,
                    "{limits:?}: {stats:?}"
                );
                assert!(
                    stats.bytes as usize <= limits.bytes,
                    "{limits:?}: {stats:?}"
                );
            }
            let stats = cache.stats();
            assert_eq!(
                stats.evictions + stats.entries,
                50_000,
                "{limits:?}: {stats:?}"
            );
        }
    }

    #[test]
    fn what_is_used_stays_what_is_not_ages_out() {
        let cache = BoundedCache::new(CacheLimits::new(100, 1 << 20));
        cache.insert(key(0), 0u32, 8);
        for i in 1..10_000u32 {
            cache.insert(key(i), i, 8);
            assert_eq!(cache.get(&key(0)), Some(0), "the hot entry went at {i}");
        }
        assert!(cache.get(&key(1)).is_none());
    }

    #[test]
    fn off_keeps_nothing() {
        for limits in [
            CacheLimits::off(),
            CacheLimits::new(1, 1 << 20),
            CacheLimits::new(100, 0),
        ] {
            let cache = BoundedCache::new(limits);
            assert!(!cache.is_on());
            cache.insert(key(1), 1u32, 8);
            assert!(cache.get(&key(1)).is_none());
            assert_eq!(cache.stats().entries, 0);
            assert_eq!(cache.stats().misses, 1);
        }
    }

    #[test]
    fn a_value_larger_than_the_budget_is_not_kept() {
        let cache = BoundedCache::new(CacheLimits::new(100, 1000));
        cache.insert(key(1), 1u32, 10_000);
        assert!(cache.get(&key(1)).is_none());
        cache.clear();
        cache.insert(key(2), 2u32, 10);
        cache.clear();
        assert!(cache.get(&key(2)).is_none());
    }
}
