//! Series handles by the hash of their encoded remote-write labels, so a
//! sender's known series are appended without decoding a string. An entry
//! keeps the encoded label bytes (a few hundred bytes, compared with one
//! `memcmp`; a decoded label set would cost three times as much) and a handle
//! that holds no label set of its own. A stale handle (a series dropped from
//! the head) is found again by the store.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

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

type Shard = HashMap<u64, (Box<[u8]>, SeriesHandle), BuildHasherDefault<Id>>;

const SHARDS: usize = 32;

/// A bounded, sharded cache; a full shard starts over.
pub struct SeriesCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    pub(crate) hits: std::sync::atomic::AtomicU64,
}

impl SeriesCache {
    pub fn new(max_entries: usize) -> SeriesCache {
        SeriesCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_entries / SHARDS).max(16),
            hits: Default::default(),
        }
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key >> 59) as usize % SHARDS]
    }

    /// The handle of the series whose encoded labels are exactly `raw`.
    pub fn get(&self, key: u64, raw: &[u8]) -> Option<SeriesHandle> {
        let s = self.shard(key).lock();
        let h = s.get(&key).filter(|(b, _)| &b[..] == raw).map(|(_, h)| h.clone());
        if h.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        h
    }

    pub fn insert(&self, key: u64, raw: &[u8], h: SeriesHandle) {
        let mut s = self.shard(key).lock();
        if s.len() >= self.per_shard {
            s.clear();
        }
        s.insert(key, (raw.into(), h));
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
