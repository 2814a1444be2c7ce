//! Series handles by the hash of their encoded remote-write labels, so a
//! sender's known series are appended without decoding a string. An entry is
//! 24 bytes: besides the 64-bit label key the map is keyed by, it keeps a
//! second, independent 64-bit hash of the encoded labels under a key drawn at
//! random when the process starts (SipHash-1-3, a keyed pseudo-random
//! function), and a handle that holds no label set of its own. Two different
//! label encodings match only if both hashes agree: by chance about once in
//! 2^128 pairs, and never on purpose, since a sender cannot compute the keyed
//! hash. Keeping the encoded labels themselves to compare would cost about ten
//! times as much memory a series. A stale handle (a series dropped from the
//! head) is found again by the store.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use parking_lot::Mutex;
use sextant_storage::SeriesHandle;

#[derive(Default)]
struct Id(u64);

impl Hasher for Id {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, b: &[u8]) {
        for x in b {
            self.0 = self.0.rotate_left(8) ^ u64::from(*x);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Shard<H> = HashMap<u64, (u64, H), BuildHasherDefault<Id>>;

const SHARDS: usize = 32;

/// A bounded, sharded cache; a full shard starts over.
pub struct SeriesCache<H = SeriesHandle> {
    shards: Vec<Mutex<Shard<H>>>,
    per_shard: usize,
    /// The secret key of the second hash.
    check: RandomState,
    pub(crate) hits: std::sync::atomic::AtomicU64,
}

impl<H: Clone> SeriesCache<H> {
    pub fn new(max_entries: usize) -> SeriesCache<H> {
        SeriesCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_entries / SHARDS).max(16),
            check: RandomState::new(),
            hits: Default::default(),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard<H>> {
        &self.shards[(key >> 59) as usize % SHARDS]
    }

    /// The keyed hash of encoded labels that an entry must match besides
    /// its key.
    pub fn check(&self, raw: &[u8]) -> u64 {
        self.check.hash_one(raw)
    }

    /// The handle of the series whose encoded labels are `raw`: `key` is
    /// their label key, `check` their [`SeriesCache::check`].
    pub fn get(&self, key: u64, check: u64) -> Option<H> {
        let s = self.shard(key).lock();
        let h = s.get(&key).filter(|(c, _)| *c == check).map(|(_, h)| h.clone());
        if h.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        h
    }

    pub fn insert(&self, key: u64, check: u64, h: H) {
        let mut s = self.shard(key).lock();
        if s.len() >= self.per_shard {
            s.clear();
        }
        s.insert(key, (check, h));
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::SeriesCache;

    #[test]
    fn an_entry_answers_only_the_labels_it_was_stored_for() {
        let c: SeriesCache<u32> = SeriesCache::new(1 << 10);
        let (a, b) = (&b"\x0a\x08\x0a\x01a\x12\x01b"[..], &b"\x0a\x08\x0a\x01a\x12\x01c"[..]);
        assert_ne!(c.check(a), c.check(b));
        assert_eq!(c.check(a), c.check(a), "the check is a function of the bytes");
        // The same map key for other labels (a label-key collision) misses.
        c.insert(7, c.check(a), 1);
        assert_eq!(c.get(7, c.check(a)), Some(1));
        assert_eq!(c.get(7, c.check(b)), None);
        assert_eq!(c.get(8, c.check(a)), None);
        assert_eq!(c.len(), 1);
        // Checks are keyed per cache: another process cannot predict them.
        let other: SeriesCache<u32> = SeriesCache::new(16);
        assert_ne!(other.check(a), c.check(a));
    }

    #[test]
    fn a_full_shard_starts_over() {
        let c: SeriesCache<u32> = SeriesCache::new(16 * 32);
        // Keys of one shard (the top five bits pick it).
        for k in 0..17u64 {
            c.insert(k, k, k as u32);
        }
        assert_eq!(c.len(), 1, "the 17th entry found its shard full");
        assert_eq!(c.get(16, 16), Some(16));
    }
}
