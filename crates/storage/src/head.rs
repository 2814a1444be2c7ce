//! The head: active series in memory, with interned label strings, an inverted
//! index and compressed chunks. Appends to different series never contend on a
//! lock other than their shard's read lock and their own series mutex.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use sextant_model::{Label, Labels, Matcher, Sample, METRIC_NAME};

use crate::chunkenc::{ChunkAppender, SealedChunk};
use crate::headchunks::ChunkFile;
use crate::index::{postings_for_matchers, MemPostings};

const SHARDS: usize = 128;

/// The shard maps are keyed by label-set hashes already: hashing them again
/// would be wasted work.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, b: &[u8]) {
        for x in b {
            self.0 = (self.0 << 8) | *x as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type HashKeyed<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The shard of a label-set hash: middle bits, so that the low bits the map
/// uses for buckets and the high bits it uses for tags stay spread.
#[inline]
fn shard_of(h: u64) -> usize {
    ((h >> 32) % SHARDS as u64) as usize
}

/// Why a sample was not appended.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleRejection {
    OutOfOrder {
        newest: i64,
    },
    TooOld {
        min_valid: i64,
    },
    DuplicateTimestamp {
        existing: f64,
    },
    /// The series is new and the store, or its metric name, is at its series
    /// limit.
    SeriesLimit {
        limit: u64,
        per_metric: bool,
    },
}

/// Interned strings.
#[derive(Default)]
struct Symbols {
    map: HashMap<Arc<str>, u32>,
    strs: Vec<Arc<str>>,
}

impl Symbols {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let a: Arc<str> = Arc::from(s);
        let id = self.strs.len() as u32;
        self.strs.push(a.clone());
        self.map.insert(a, id);
        id
    }
}

/// What few series have, kept out of line so the common series stays small.
#[derive(Default)]
struct Extra {
    /// Out-of-order samples, sorted by time, merged at read and at block cut.
    ooo: Vec<Sample>,
    tombstones: Vec<(i64, i64)>,
}

/// Samples and chunks of one series.
pub struct SeriesData {
    /// Exactly as long as it holds: a series has a few, and the spare room
    /// of a `Vec` (four entries at its first push) would cost more than the
    /// chunks' own records.
    sealed: Box<[SealedChunk]>,
    open: ChunkAppender,
    extra: Option<Box<Extra>>,
    last_v: f64,
    /// Set when the series was garbage-collected; appenders must look it up again.
    removed: bool,
}

/// One series in the head.
pub struct MemSeries {
    pub id: u32,
    hash: u64,
    /// Symbol ids, name and value interleaved, sorted by name.
    labels: Box<[u32]>,
    /// Whether its Series record is known to be in the WAL.
    pub logged: AtomicBool,
    pub data: Mutex<SeriesData>,
}

impl SeriesData {
    fn new() -> Self {
        SeriesData {
            sealed: Box::default(),
            open: ChunkAppender::new(),
            extra: None,
            last_v: 0.0,
            removed: false,
        }
    }

    fn ooo(&self) -> &[Sample] {
        self.extra.as_ref().map(|e| e.ooo.as_slice()).unwrap_or(&[])
    }

    fn tombstones(&self) -> &[(i64, i64)] {
        self.extra.as_ref().map(|e| e.tombstones.as_slice()).unwrap_or(&[])
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Newest sample time, `i64::MIN` when empty.
    pub fn max_t(&self) -> i64 {
        // The open chunk always holds the newest in-order sample: a full one
        // is sealed only as the next sample arrives, into a new one. Keeping
        // no copy keeps `MemSeries` within a 256-byte allocation.
        if self.open.is_empty() {
            i64::MIN
        } else {
            self.open.maxt()
        }
    }

    /// Value of the newest sample.
    pub fn last_v(&self) -> f64 {
        self.last_v
    }

    /// Appends with the store's ordering rules: nothing below `floor` (already
    /// persisted), a repeated timestamp only with the identical value, and older
    /// timestamps only within `ooo_window` of the newest.
    pub fn append(&mut self, t: i64, v: f64, floor: i64, ooo_window: i64) -> Result<bool, SampleRejection> {
        let max_t = self.max_t();
        if t < floor {
            return Err(SampleRejection::TooOld { min_valid: floor });
        }
        if t > max_t {
            self.push_in_order(t, v);
            return Ok(true);
        }
        if t == max_t {
            if self.last_v.to_bits() == v.to_bits() {
                return Ok(false);
            }
            return Err(SampleRejection::DuplicateTimestamp { existing: self.last_v });
        }
        if ooo_window > 0 && t >= max_t.saturating_sub(ooo_window) {
            return self.insert_ooo(t, v);
        }
        Err(SampleRejection::OutOfOrder { newest: max_t })
    }

    /// Appends in any order, for WAL replay: every logged sample was accepted once.
    pub fn append_replayed(&mut self, t: i64, v: f64) {
        let max_t = self.max_t();
        if t > max_t {
            self.push_in_order(t, v);
        } else if t < max_t {
            let _ = self.insert_ooo(t, v);
        }
    }

    /// Whether a sealed chunk of it is still on the heap.
    pub fn has_chunks_on_heap(&self) -> bool {
        self.sealed.last().is_some_and(|c| c.on_heap())
    }

    /// Moves its sealed chunks from the heap to segments of `file`, newest
    /// first; stops at the first that stays.
    pub fn move_chunks_to(&mut self, file: &ChunkFile) {
        for c in self.sealed.iter_mut().rev() {
            if !c.on_heap() || !c.move_to(file) {
                break;
            }
        }
    }

    fn push_in_order(&mut self, t: i64, v: f64) {
        if self.open.is_full() {
            let mut v = std::mem::take(&mut self.sealed).into_vec();
            v.reserve_exact(1);
            v.push(self.open.seal());
            self.sealed = v.into_boxed_slice();
            self.open = ChunkAppender::new();
        }
        self.open.append(t, v);
        self.last_v = v;
    }

    fn insert_ooo(&mut self, t: i64, v: f64) -> Result<bool, SampleRejection> {
        let ooo = &mut self.extra_mut().ooo;
        match ooo.binary_search_by_key(&t, |s| s.t) {
            Ok(i) => {
                let existing = ooo[i].v;
                if existing.to_bits() == v.to_bits() {
                    Ok(false)
                } else {
                    Err(SampleRejection::DuplicateTimestamp { existing })
                }
            }
            Err(i) => {
                ooo.insert(i, Sample { t, v });
                Ok(true)
            }
        }
    }

    /// Samples in `[mint, maxt]`; in-order samples below `floor` are already in a block.
    pub fn samples(&self, mint: i64, maxt: i64, floor: i64, out: &mut Vec<Sample>) {
        let lo = mint.max(floor);
        let start = out.len();
        if lo <= maxt {
            // A chunk that fails to decode is left out (head chunks are
            // built in memory by this process, so that means a bug, not
            // damage on disk).
            for c in self.sealed.iter().filter(|c| c.maxt >= lo && c.mint <= maxt) {
                let _ = c.decode_range(lo, maxt, out);
            }
            if !self.open.is_empty() && self.open.maxt() >= lo && self.open.mint() <= maxt {
                let _ = self.open.decode_range(lo, maxt, out);
            }
        }
        let ooo: Vec<Sample> = self
            .ooo()
            .iter()
            .filter(|s| s.t >= mint && s.t <= maxt)
            .copied()
            .collect();
        if !ooo.is_empty() {
            let in_order = out.split_off(start);
            merge_sorted(&in_order, &ooo, out);
        }
        let tomb = self.tombstones();
        if !tomb.is_empty() {
            let tail = out.split_off(start);
            out.extend(
                tail.into_iter()
                    .filter(|s| !tomb.iter().any(|(a, b)| s.t >= *a && s.t <= *b)),
            );
        }
    }

    /// Appends the last sample in `[mint, maxt]` at or after `floor`, without
    /// decoding when it is the newest sample (an instant query at or after
    /// the series' latest write).
    pub fn last_sample(&self, mint: i64, maxt: i64, floor: i64, out: &mut Vec<Sample>) {
        let lo = mint.max(floor);
        // Out-of-order samples are all older than the newest in-order one, so
        // only deletions can hide it.
        let max_t = self.max_t();
        if !self.open.is_empty() && self.tombstones().is_empty() && max_t >= lo && max_t <= maxt {
            out.push(Sample {
                t: max_t,
                v: self.last_v,
            });
            return;
        }
        let start = out.len();
        self.samples(mint, maxt, floor, out);
        keep_last(out, start);
    }

    pub fn min_time(&self) -> Option<i64> {
        let a = self
            .sealed
            .first()
            .map(|c| c.mint)
            .or_else(|| (!self.open.is_empty()).then(|| self.open.mint()));
        let b = self.ooo().first().map(|s| s.t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        // Itself is part of its `MemSeries`, counted there.
        self.sealed
            .iter()
            .map(|c| c.heap_bytes() + std::mem::size_of::<SealedChunk>())
            .sum::<usize>()
            + self.open.heap_bytes()
            + self
                .extra
                .as_ref()
                .map_or(0, |e| 64 + e.ooo.capacity() * 16 + e.tombstones.capacity() * 16)
    }

    /// Drops what lies below `cut` (already persisted). Returns whether the
    /// series still holds samples at or after `cut`.
    fn truncate(&mut self, cut: i64) -> bool {
        if self.sealed.iter().any(|c| c.maxt < cut) {
            let mut v = std::mem::take(&mut self.sealed).into_vec();
            v.retain(|c| c.maxt >= cut);
            self.sealed = v.into_boxed_slice();
        }
        if let Some(e) = &mut self.extra {
            e.ooo.retain(|s| s.t >= cut);
            e.tombstones.retain(|(_, b)| *b >= cut);
            if e.ooo.is_empty() && e.tombstones.is_empty() {
                self.extra = None;
            }
        }
        let open_live = !self.open.is_empty() && self.open.maxt() >= cut;
        !self.sealed.is_empty() || !self.ooo().is_empty() || open_live
    }
}

/// Keeps only the last of the samples from `start` on.
pub fn keep_last(out: &mut Vec<Sample>, start: usize) {
    if out.len() > start + 1 {
        out.drain(start..out.len() - 1);
    }
}

/// Merges two time-sorted runs; on equal timestamps the first run wins.
pub fn merge_sorted(a: &[Sample], b: &[Sample], out: &mut Vec<Sample>) {
    let (mut i, mut j) = (0, 0);
    out.reserve(a.len() + b.len());
    while i < a.len() && j < b.len() {
        match a[i].t.cmp(&b[j].t) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// Series ids with one label-set hash: almost always exactly one.
enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    fn as_slice(&self) -> &[u32] {
        match self {
            Ids::One(x) => std::slice::from_ref(x),
            Ids::Many(v) => v,
        }
    }

    fn push(&mut self, id: u32) {
        match self {
            Ids::One(x) => *self = Ids::Many(vec![*x, id]),
            Ids::Many(v) => v.push(id),
        }
    }

    /// Removes `id`; returns whether none are left.
    fn remove(&mut self, id: u32) -> bool {
        match self {
            Ids::One(x) => *x == id,
            Ids::Many(v) => {
                v.retain(|x| *x != id);
                if v.len() == 1 {
                    let last = v[0];
                    *self = Ids::One(last);
                    return false;
                }
                v.is_empty()
            }
        }
    }
}

/// The in-memory part of the store.
pub struct Head {
    symbols: RwLock<Symbols>,
    index: RwLock<MemPostings>,
    series: RwLock<Vec<Option<Arc<MemSeries>>>>,
    shards: Vec<RwLock<HashKeyed<Ids>>>,
    next_id: AtomicU32,
    /// Appends below this are refused: that range is being or has been
    /// written to a block.
    floor: AtomicI64,
    /// Reads below this go to blocks: raised only once the blocks holding
    /// that range are visible to queries.
    read_floor: AtomicI64,
    min_t: AtomicI64,
    max_t: AtomicI64,
}

impl Default for Head {
    fn default() -> Self {
        Self::new()
    }
}

impl Head {
    pub fn new() -> Self {
        Head {
            symbols: RwLock::new(Symbols::default()),
            index: RwLock::new(MemPostings::default()),
            series: RwLock::new(Vec::new()),
            shards: (0..SHARDS).map(|_| RwLock::new(HashKeyed::default())).collect(),
            next_id: AtomicU32::new(1),
            floor: AtomicI64::new(i64::MIN),
            read_floor: AtomicI64::new(i64::MIN),
            min_t: AtomicI64::new(i64::MAX),
            max_t: AtomicI64::new(i64::MIN),
        }
    }

    pub fn floor(&self) -> i64 {
        self.floor.load(Ordering::Acquire)
    }

    pub fn set_floor(&self, f: i64) {
        self.floor.fetch_max(f, Ordering::AcqRel);
    }

    pub fn read_floor(&self) -> i64 {
        self.read_floor.load(Ordering::Acquire)
    }

    /// Raises the read floor (never above the append floor).
    pub fn set_read_floor(&self, f: i64) {
        self.read_floor.fetch_max(f.min(self.floor()), Ordering::AcqRel);
    }

    pub fn min_time(&self) -> i64 {
        self.min_t.load(Ordering::Acquire)
    }

    pub fn max_time(&self) -> i64 {
        self.max_t.load(Ordering::Acquire)
    }

    pub fn note_time(&self, t: i64) {
        self.min_t.fetch_min(t, Ordering::AcqRel);
        self.max_t.fetch_max(t, Ordering::AcqRel);
    }

    pub fn num_series(&self) -> u64 {
        self.index.read().len()
    }

    fn labels_equal(&self, s: &MemSeries, ls: &Labels) -> bool {
        if s.labels.len() != ls.len() * 2 {
            return false;
        }
        let syms = self.symbols.read();
        s.labels
            .chunks_exact(2)
            .zip(ls.iter())
            .all(|(p, l)| *syms.strs[p[0] as usize] == *l.name && *syms.strs[p[1] as usize] == *l.value)
    }

    /// The series with exactly these labels, if it exists.
    pub fn get(&self, ls: &Labels) -> Option<Arc<MemSeries>> {
        let h = ls.hash64();
        let shard = self.shards[shard_of(h)].read();
        let ids = shard.get(&h)?;
        let series = self.series.read();
        ids.as_slice()
            .iter()
            .filter_map(|id| series.get(*id as usize).and_then(|s| s.clone()))
            .find(|s| self.labels_equal(s, ls))
    }

    /// Makes sure no new series gets `id` (replay saw it referenced).
    pub fn reserve_id(&self, id: u32) {
        self.next_id.fetch_max(id.saturating_add(1), Ordering::AcqRel);
    }

    pub fn by_id(&self, id: u32) -> Option<Arc<MemSeries>> {
        self.series.read().get(id as usize).and_then(|s| s.clone())
    }

    /// Returns the series for `ls`, creating it (with `id` when given, for replay).
    /// The flag says whether it was created by this call.
    pub fn get_or_create(&self, ls: &Labels, id: Option<u32>) -> (Arc<MemSeries>, bool) {
        if let Some(s) = self.get(ls) {
            return (s, false);
        }
        let h = ls.hash64();
        let mut shard = self.shards[shard_of(h)].write();
        // Re-check under the write lock: another writer may have won the race.
        if let Some(ids) = shard.get(&h) {
            let series = self.series.read();
            if let Some(s) = ids
                .as_slice()
                .iter()
                .filter_map(|id| series.get(*id as usize).and_then(|s| s.clone()))
                .find(|s| self.labels_equal(s, ls))
            {
                return (s, false);
            }
        }
        let id = match id {
            Some(id) => {
                self.next_id.fetch_max(id + 1, Ordering::AcqRel);
                id
            }
            None => self.next_id.fetch_add(1, Ordering::AcqRel),
        };
        let (sym_ids, arcs) = {
            let mut syms = self.symbols.write();
            let mut ids = Vec::with_capacity(ls.len() * 2);
            let mut arcs = Vec::with_capacity(ls.len());
            for l in ls.iter() {
                let n = syms.intern(&l.name);
                let v = syms.intern(&l.value);
                ids.push(n);
                ids.push(v);
                arcs.push((syms.strs[n as usize].clone(), syms.strs[v as usize].clone()));
            }
            (ids, arcs)
        };
        let s = Arc::new(MemSeries {
            id,
            hash: h,
            labels: sym_ids.into_boxed_slice(),
            logged: AtomicBool::new(false),
            data: Mutex::new(SeriesData::new()),
        });
        {
            let mut series = self.series.write();
            if series.len() <= id as usize {
                series.resize(id as usize + 1, None);
            }
            series[id as usize] = Some(s.clone());
        }
        self.index.write().add(id, &arcs);
        match shard.get_mut(&h) {
            Some(ids) => ids.push(id),
            None => {
                shard.insert(h, Ids::One(id));
            }
        }
        (s, true)
    }

    /// The labels of a head series.
    /// Whether the series' labels are exactly `pairs` (name, value), in order.
    pub fn labels_eq_bytes<'a>(&self, s: &MemSeries, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        let syms = self.symbols.read();
        let mut ids = s.labels.chunks_exact(2);
        for (n, v) in pairs {
            match ids.next() {
                Some(p) if syms.strs[p[0] as usize].as_bytes() == n && syms.strs[p[1] as usize].as_bytes() == v => {}
                _ => return false,
            }
        }
        ids.next().is_none()
    }

    pub fn labels_of(&self, s: &MemSeries) -> Labels {
        self.labels_where(s, |_| true)
    }

    /// The labels of a head series named in `names`, and its metric name.
    pub fn labels_named(&self, s: &MemSeries, names: &[String]) -> Labels {
        self.labels_where(s, |n| n == METRIC_NAME || names.iter().any(|x| x == n))
    }

    /// The labels of a head series whose names `keep` accepts.
    fn labels_where(&self, s: &MemSeries, keep: impl Fn(&str) -> bool) -> Labels {
        let syms = self.symbols.read();
        Labels::from_sorted_unchecked(
            s.labels
                .chunks_exact(2)
                .filter(|p| keep(&syms.strs[p[0] as usize]))
                .map(|p| Label::new(&syms.strs[p[0] as usize], &syms.strs[p[1] as usize]))
                .collect(),
        )
    }

    /// Ids of series matching all matchers.
    pub fn postings(&self, ms: &[Matcher]) -> RoaringBitmap {
        let idx = self.index.read();
        postings_for_matchers(&*idx, ms)
    }

    pub fn label_names(&self) -> Vec<String> {
        self.index.read().label_names()
    }

    pub fn pair_counts(&self) -> Vec<(String, String, u64)> {
        self.index.read().pair_counts()
    }

    /// Approximate heap bytes of the head (series, chunks, index, symbols).
    pub fn heap_bytes(&self) -> usize {
        let series = self.series.read();
        let mut total = series.capacity() * 8;
        for s in series.iter().flatten() {
            total += std::mem::size_of::<MemSeries>() + 16 + s.labels.len() * 4 + s.data.lock().heap_bytes();
        }
        drop(series);
        let syms = self.symbols.read();
        total += syms.strs.iter().map(|s| s.len() + 16 + 8 + 40).sum::<usize>();
        total += self.index.read().heap_bytes();
        total += self.shards.iter().map(|s| s.read().capacity() * 40).sum::<usize>();
        total
    }

    /// Every live series, sorted by labels (used by block cut and stats).
    pub fn all_series_sorted(&self) -> Vec<(Labels, Arc<MemSeries>)> {
        let series: Vec<Arc<MemSeries>> = self.series.read().iter().flatten().cloned().collect();
        let mut v: Vec<(Labels, Arc<MemSeries>)> = series.into_iter().map(|s| (self.labels_of(&s), s)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Drops everything below `cut` and removes series left without samples.
    /// Returns the number of series removed.
    pub fn truncate(&self, cut: i64) -> usize {
        self.set_floor(cut);
        self.set_read_floor(cut);
        let series: Vec<Arc<MemSeries>> = self.series.read().iter().flatten().cloned().collect();
        let mut removed = 0;
        let mut new_min = i64::MAX;
        for s in series {
            let mut d = s.data.lock();
            if d.truncate(cut) {
                if let Some(t) = d.min_time() {
                    new_min = new_min.min(t.max(cut));
                }
                continue;
            }
            d.removed = true;
            drop(d);
            self.remove_series(&s);
            removed += 1;
        }
        self.min_t.store(new_min, Ordering::Release);
        removed
    }

    fn remove_series(&self, s: &MemSeries) {
        let mut shard = self.shards[shard_of(s.hash)].write();
        if shard.get_mut(&s.hash).is_some_and(|ids| ids.remove(s.id)) {
            shard.remove(&s.hash);
        }
        let arcs: Vec<(Arc<str>, Arc<str>)> = {
            let syms = self.symbols.read();
            s.labels
                .chunks_exact(2)
                .map(|p| (syms.strs[p[0] as usize].clone(), syms.strs[p[1] as usize].clone()))
                .collect()
        };
        self.index.write().remove(s.id, &arcs);
        if let Some(slot) = self.series.write().get_mut(s.id as usize) {
            *slot = None;
        }
    }

    /// Adds a tombstone interval to one series.
    pub fn add_tombstone(&self, id: u32, mint: i64, maxt: i64) {
        if let Some(s) = self.by_id(id) {
            s.data.lock().extra_mut().tombstones.push((mint, maxt));
        }
    }

    pub fn ids_for(&self, ms: &[Matcher]) -> Vec<u32> {
        self.postings(ms).iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_fits_a_256_byte_allocation() {
        // The allocator rounds an `Arc<MemSeries>` (two counters and the
        // series) up to its next size class: 256 bytes, or 320 past it, for
        // each of up to millions of series.
        let arc = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<MemSeries>();
        assert!(arc <= 256, "Arc<MemSeries> takes {arc} bytes");
    }

    #[test]
    fn ordering_rules() {
        let mut d = SeriesData::new();
        assert_eq!(d.append(10, 1.0, i64::MIN, 0), Ok(true));
        assert_eq!(d.append(10, 1.0, i64::MIN, 0), Ok(false));
        assert_eq!(
            d.append(10, 2.0, i64::MIN, 0),
            Err(SampleRejection::DuplicateTimestamp { existing: 1.0 })
        );
        assert_eq!(
            d.append(5, 2.0, i64::MIN, 0),
            Err(SampleRejection::OutOfOrder { newest: 10 })
        );
        assert_eq!(d.append(5, 2.0, i64::MIN, 10), Ok(true));
        assert_eq!(
            d.append(20, 3.0, 100, 0),
            Err(SampleRejection::TooOld { min_valid: 100 })
        );
        let mut out = Vec::new();
        d.samples(0, 100, i64::MIN, &mut out);
        assert_eq!(out, vec![Sample::new(5, 2.0), Sample::new(10, 1.0)]);
    }

    #[test]
    fn series_are_found_by_labels_and_gc_on_truncate() {
        let h = Head::new();
        let a = Labels::from_pairs([("__name__", "a"), ("x", "1")]);
        let (s, created) = h.get_or_create(&a, None);
        assert!(created);
        let (s2, created2) = h.get_or_create(&a, None);
        assert!(!created2);
        assert_eq!(s.id, s2.id);
        s.data.lock().append(100, 1.0, i64::MIN, 0).expect("append");
        assert_eq!(h.labels_of(&s), a);
        assert_eq!(h.truncate(200), 1);
        assert!(h.get(&a).is_none());
        assert!(s.data.lock().is_removed());
    }
}
