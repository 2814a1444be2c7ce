//! Series references by the hash of their encoded remote-write labels, so a
//! sender's known series are appended without decoding a string. Entries are
//! checked against the series' labels before use; a stale reference (a series
//! dropped from the head) falls back to the store's label lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::Mutex;
use sextant_storage::SeriesRef;

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

type Shard = HashMap<u64, SeriesRef, BuildHasherDefault<Id>>;

const SHARDS: usize = 32;

/// A bounded, sharded cache; a full shard starts over.
pub struct SeriesCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl SeriesCache {
    pub fn new(max_entries: usize) -> SeriesCache {
        SeriesCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_entries / SHARDS).max(16),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key >> 59) as usize % SHARDS]
    }

    pub fn get(&self, key: u64) -> Option<SeriesRef> {
        self.shard(key).lock().get(&key).cloned()
    }

    pub fn insert(&self, key: u64, r: SeriesRef) {
        let mut s = self.shard(key).lock();
        if s.len() >= self.per_shard {
            s.clear();
        }
        s.insert(key, r);
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
