//! Immutable blocks: a directory with `meta.json`, `index`, `chunks` and an
//! optional `tombstones` file, written under a temporary name and renamed into
//! place, read back through memory maps. Formats: `docs/format/index.md`,
//! `docs/format/chunks.md`, `docs/format/tombstones.md`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use sextant_model::{IntHashMap, Label, Labels, Matcher, Sample, Str, METRIC_NAME};

use crate::bits::{put_len_prefixed, put_uvarint, put_varint, ByteReader};
use crate::chunkenc::{self, ValueKind};
use crate::error::{Error, Result};
use crate::fsutil::{dir_size, fsync_dir, write_atomic};
use crate::index::{postings_for_matchers, PostingsSource};

pub const INDEX_MAGIC: u32 = 0x5358_4958; // "SXIX"
pub const CHUNKS_MAGIC: u32 = 0x5358_4348; // "SXCH"
pub const TOMBSTONES_MAGIC: u32 = 0x5358_5442; // "SXTB"
pub const FORMAT_VERSION: u8 = 1;
const PAGE_TARGET: usize = 64 << 10;
const PAGE_HEADER: usize = 12;
/// Largest decoded page: references address bytes inside a page with 24 bits.
const MAX_PAGE_RAW: usize = 1 << 24;
const TOC_SECTIONS: usize = 5;
const TOC_LEN: usize = TOC_SECTIONS * 20 + 8;
/// Samples per chunk inside a block.
pub const BLOCK_CHUNK_SAMPLES: usize = 480;

/// Set in a chunk meta's kind byte when the chunk's columns begin with
/// restart tables.
const INDEXED_KIND_BIT: u8 = 0x80;
/// With [`INDEXED_KIND_BIT`]: the restart tables end with a tail restart point
/// ([`chunkenc::Restarts::EveryAndTail`]).
const TAIL_KIND_BIT: u8 = 0x40;
const ZSTD_LEVEL: i32 = 15;
/// Distinct timestamp columns remembered for de-duplication while writing.
const TS_DEDUP_MAX: usize = 200_000;

/// `meta.json` of a block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockMeta {
    pub id: String,
    /// Inclusive lower bound of the samples' timestamps (ms).
    pub min_time: i64,
    /// Exclusive upper bound (ms).
    pub max_time: i64,
    pub stats: BlockStats,
    pub level: u32,
    pub sources: Vec<String>,
    pub version: u32,
    /// Sizes of the `index` and `chunks` files, so that a file cut short at a
    /// page boundary is caught at open.
    pub index_bytes: u64,
    pub chunks_bytes: u64,
    /// CRC-32 (IEEE, 8 hex digits) of the compact JSON of this metadata with
    /// `checksum` set to the empty string.
    pub checksum: String,
}

impl BlockMeta {
    /// The checksum these values should carry.
    pub fn expected_checksum(&self) -> String {
        let mut m = self.clone();
        m.checksum.clear();
        format!("{:08x}", crc32fast::hash(&serde_json::to_vec(&m).unwrap_or_default()))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BlockStats {
    pub num_series: u64,
    pub num_samples: u64,
    pub num_chunks: u64,
    pub num_ts_columns: u64,
    pub num_shared_ts_columns: u64,
}

/// A new, sortable, unique block id: milliseconds and a counter, in hex.
pub fn new_block_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let pid = std::process::id() as u64;
    format!(
        "{ms:013x}{:04x}{:06x}",
        pid & 0xffff,
        SEQ.fetch_add(1, Ordering::Relaxed) & 0xff_ffff
    )
}

/// Decoded pages by offset, at most about `capacity` of them: a shard that
/// fills is emptied. Sharded so that the threads of one query, which read
/// neighbouring series at once, do not wait on one lock.
struct PageCache {
    shards: [Mutex<HashMap<u64, Arc<Vec<u8>>>>; PAGE_CACHE_SHARDS],
    per_shard: usize,
}

const PAGE_CACHE_SHARDS: usize = 8;

impl PageCache {
    fn new(capacity: usize) -> PageCache {
        PageCache {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            per_shard: capacity.div_ceil(PAGE_CACHE_SHARDS).max(1),
        }
    }

    fn shard(&self, off: u64) -> &Mutex<HashMap<u64, Arc<Vec<u8>>>> {
        // Offsets of neighbouring pages differ in their low bits by varying
        // amounts: a multiplicative hash spreads them.
        &self.shards[(off.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61) as usize % PAGE_CACHE_SHARDS]
    }

    fn get(&self, off: u64) -> Option<Arc<Vec<u8>>> {
        self.shard(off).lock().get(&off).cloned()
    }

    fn insert(&self, off: u64, page: Arc<Vec<u8>>) {
        let mut m = self.shard(off).lock();
        if m.len() >= self.per_shard {
            m.clear();
        }
        m.insert(off, page);
    }
}

/// Decoded chunk pages of every open block, within one byte budget for the
/// process ([`set_decoded_pages_budget`], 256 MiB unless told): a dashboard
/// reads the same few hundred pages at every refresh, and decompressing a
/// page costs far more than finding it. Eviction is CLOCK: a page read since
/// the hand last passed it gets another round, so a page read once (a long
/// scan) leaves before the pages read again and again. Sharded so that the
/// threads of one query, which read neighbouring series at once, do not wait
/// on one lock.
pub(crate) struct DecodedPages {
    shards: [Mutex<ClockShard>; PAGE_CACHE_SHARDS],
    budget: std::sync::atomic::AtomicUsize,
}

/// A page's key: the block's serial number and the page's file offset.
type PageKey = (u64, u64);

#[derive(Default)]
struct ClockShard {
    pages: IntHashMap<PageKey, (Arc<Vec<u8>>, bool)>,
    /// Keys in the order the hand visits them.
    ring: Vec<PageKey>,
    hand: usize,
    bytes: usize,
}

/// The process's decoded chunk pages.
static DECODED_PAGES: std::sync::LazyLock<DecodedPages> =
    std::sync::LazyLock::new(|| DecodedPages::new(DEFAULT_DECODED_PAGES_BUDGET));

/// The decoded chunk pages kept when not told otherwise.
pub const DEFAULT_DECODED_PAGES_BUDGET: usize = 256 << 20;

/// Sets the bytes of decoded chunk pages the process keeps, for all blocks
/// of all stores in it together.
pub fn set_decoded_pages_budget(bytes: usize) {
    DECODED_PAGES.budget.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// Serial numbers of opened blocks: a key of [`DecodedPages`] never outlives
/// the block whose pages it names, even when another block is later opened
/// at the same address or from the same directory.
static BLOCK_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl DecodedPages {
    fn new(budget: usize) -> DecodedPages {
        DecodedPages {
            shards: std::array::from_fn(|_| Mutex::new(ClockShard::default())),
            budget: std::sync::atomic::AtomicUsize::new(budget),
        }
    }

    fn shard(&self, key: PageKey) -> &Mutex<ClockShard> {
        let h = (key.1 ^ key.0.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.shards[(h >> 61) as usize % PAGE_CACHE_SHARDS]
    }

    fn get(&self, key: PageKey) -> Option<Arc<Vec<u8>>> {
        let mut s = self.shard(key).lock();
        let (page, referenced) = s.pages.get_mut(&key)?;
        // Written only when it changes: the threads of a query read the same
        // pages, and a store to the entry would bounce its line between them.
        if !*referenced {
            *referenced = true;
        }
        Some(page.clone())
    }

    fn insert(&self, key: PageKey, page: Arc<Vec<u8>>) {
        let per_shard = self.budget.load(std::sync::atomic::Ordering::Relaxed) / PAGE_CACHE_SHARDS;
        let mut s = self.shard(key).lock();
        if s.pages.contains_key(&key) {
            return;
        }
        s.bytes += page.len();
        s.pages.insert(key, (page, false));
        s.ring.push(key);
        while s.bytes > per_shard && !s.ring.is_empty() {
            if s.hand >= s.ring.len() {
                s.hand = 0;
            }
            let k = s.ring[s.hand];
            let referenced = s.pages.get_mut(&k).map(|e| std::mem::replace(&mut e.1, false));
            if referenced == Some(true) {
                s.hand += 1;
                continue;
            }
            let hand = s.hand;
            s.ring.swap_remove(hand);
            if let Some((p, _)) = s.pages.remove(&k) {
                s.bytes -= p.len();
            }
        }
    }

    /// Drops the pages of block `serial`.
    fn forget(&self, serial: u64) {
        for shard in &self.shards {
            let mut s = shard.lock();
            let s = &mut *s;
            s.ring.retain(|k| k.0 != serial);
            s.pages.retain(|k, _| k.0 != serial);
            s.bytes = s.pages.values().map(|(p, _)| p.len()).sum();
            s.hand = 0;
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

/// The pages a reading thread used last, by block serial and place: the
/// series a thread reads one after another mostly sit in the same few
/// pages, and a hit here costs neither the shared caches' locks nor their
/// hashing. A closed block's pages stay until read past (a few pages a
/// thread); serials are never reused, so they are never taken for another's.
struct RecentPages {
    keys: [(u64, u64); RECENT_PAGES],
    pages: [Option<Page>; RECENT_PAGES],
    next: usize,
}

/// A decoded page as a reading thread holds it: the shared page's count is
/// taken once, when the page joins the thread's recent pages, and each use
/// after that counts on the thread's own handle. The threads of a parallel
/// read take neighbouring series, whose columns share pages: had each use
/// counted on the shared page, the count's cache line would go from core to
/// core at every series (perf: a page's count decrement was the read's
/// costliest instruction, 6 % of an instant `topk` of 657 series).
type Page = std::rc::Rc<Arc<Vec<u8>>>;

const RECENT_PAGES: usize = 4;

/// Where a page of the index's section `sec` (1 or 3) is, in a
/// [`RecentPages`] key: chunk pages' offsets are below 2^40.
fn index_page_place(sec: usize, frame: u64) -> u64 {
    (sec as u64) << 56 | frame
}

thread_local! {
    static RECENT: std::cell::RefCell<RecentPages> = const {
        std::cell::RefCell::new(RecentPages { keys: [(u64::MAX, 0); RECENT_PAGES], pages: [const { None }; RECENT_PAGES], next: 0 })
    };
}

/// The page at `place` of block `serial`, from this thread's recent pages or
/// else from `load`, which then joins them.
fn recent_page<E>(serial: u64, place: u64, load: impl FnOnce() -> Result<Arc<Vec<u8>>, E>) -> Result<Page, E> {
    let key = (serial, place);
    let hit = RECENT.with_borrow(|r| r.keys.iter().position(|k| *k == key).and_then(|i| r.pages[i].clone()));
    if let Some(p) = hit {
        return Ok(p);
    }
    let p = std::rc::Rc::new(load()?);
    RECENT.with_borrow_mut(|r| {
        let i = r.next;
        r.keys[i] = key;
        r.pages[i] = Some(p.clone());
        r.next = (i + 1) % RECENT_PAGES;
    });
    Ok(p)
}

/// Full label sets of block series that queries read lately, by block
/// serial and series id: a panel that reads a metric's series at every
/// refresh (a `topk` of a gauge) finds their sets instead of building each
/// from symbol ids, and the threads of a parallel read clone no symbol that
/// all those series share. At most [`SERIES_LABELS_PER_SHARD`] sets a shard
/// (65,536 in all, a few tens of MiB at most); a shard that fills is
/// emptied, and a dropped block's sets go with it.
struct SeriesLabels {
    shards: [Mutex<LabelSetsShard>; SERIES_LABELS_SHARDS],
}

/// What a read of a range takes from a timestamp column, by block serial,
/// the column's reference, the chunk's sample count and restart bits, the
/// range, and whether the read keeps only its last sample.
type TimesKey = (u64, u64, usize, u8, i64, i64, bool);

thread_local! {
    /// The last [`chunkenc::RangeTimes`] this thread worked out: the series
    /// of a metric, read one after another, share one timestamp column in
    /// a block (the writer stores identical columns once), so it serves
    /// them all. Serials are never reused, so a key is never another's.
    static LAST_TIMES: std::cell::RefCell<Option<(TimesKey, Arc<chunkenc::RangeTimes>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The [`chunkenc::RangeTimes`] of `key`, this thread's last one or made by
/// `make`.
fn shared_range_times<E>(
    key: TimesKey,
    make: impl FnOnce() -> std::result::Result<chunkenc::RangeTimes, E>,
) -> std::result::Result<Arc<chunkenc::RangeTimes>, E> {
    if let Some(t) = LAST_TIMES.with_borrow(|last| last.as_ref().filter(|(k, _)| *k == key).map(|(_, t)| t.clone())) {
        return Ok(t);
    }
    let t = Arc::new(make()?);
    LAST_TIMES.set(Some((key, t.clone())));
    Ok(t)
}

/// Label sets by block serial and series id.
type LabelSetsShard = IntHashMap<(u64, u32), Labels>;

const SERIES_LABELS_SHARDS: usize = 16;
const SERIES_LABELS_PER_SHARD: usize = 4096;

impl SeriesLabels {
    fn shard(&self, key: (u64, u32)) -> &Mutex<LabelSetsShard> {
        let h = (key.0 ^ (key.1 as u64) << 20).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &self.shards[(h >> 60) as usize % SERIES_LABELS_SHARDS]
    }

    fn get(&self, key: (u64, u32)) -> Option<Labels> {
        self.shard(key).lock().get(&key).cloned()
    }

    fn insert(&self, key: (u64, u32), labels: Labels) {
        let mut m = self.shard(key).lock();
        if m.len() >= SERIES_LABELS_PER_SHARD {
            m.clear();
        }
        m.insert(key, labels);
    }

    fn forget(&self, serial: u64) {
        for shard in &self.shards {
            shard.lock().retain(|k, _| k.0 != serial);
        }
        LABEL_SETS_FORGOTTEN.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

/// Times a block's kept label sets were forgotten: a reading thread that
/// sees it change empties its own [`NearLabels`].
static LABEL_SETS_FORGOTTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A reading thread's own copies of the kept label sets it used lately, in
/// front of [`SERIES_LABELS`], whose shard locks the threads of a parallel
/// read would otherwise each take for every series, sending the locks'
/// cache lines from core to core (perf: half the block read's own time in an
/// instant `topk` of 657 series). Holds the same sets (the same shared
/// storage), at most [`NEAR_LABEL_SETS`], emptied when full and when any
/// block's sets are forgotten.
struct NearLabels {
    forgotten: u64,
    sets: LabelSetsShard,
}

const NEAR_LABEL_SETS: usize = 8192;

thread_local! {
    static NEAR_LABELS: std::cell::RefCell<NearLabels> = std::cell::RefCell::new(NearLabels {
        forgotten: 0,
        sets: HashMap::default(),
    });
}

/// The set kept for `key` in this thread's near copies, if any.
fn near_label_set(key: (u64, u32)) -> Option<Labels> {
    let forgotten = LABEL_SETS_FORGOTTEN.load(std::sync::atomic::Ordering::Acquire);
    NEAR_LABELS.with_borrow_mut(|n| {
        if n.forgotten != forgotten {
            n.sets.clear();
            n.forgotten = forgotten;
        }
        n.sets.get(&key).cloned()
    })
}

fn keep_near_label_set(key: (u64, u32), labels: &Labels) {
    NEAR_LABELS.with_borrow_mut(|n| {
        if n.sets.len() >= NEAR_LABEL_SETS {
            n.sets.clear();
        }
        n.sets.insert(key, labels.clone());
    })
}

static SERIES_LABELS: std::sync::LazyLock<SeriesLabels> = std::sync::LazyLock::new(|| SeriesLabels {
    shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
});

/// The label names a reading thread projected series of a block onto last,
/// as that block's symbol ids ([`Block::entry_labels`]).
struct Projection {
    serial: u64,
    names: Vec<String>,
    ids: Vec<u32>,
    /// The label sets projected so far, by their labels' (name, value)
    /// symbol ids in order: series that project onto one set share one
    /// [`Labels`], built once, which a fold finds its group of by pointer.
    /// Emptied when it reaches [`MAX_PROJECTED_SETS`].
    sets: IntHashMap<Vec<u32>, Labels>,
    /// The ids of the series being projected.
    key: Vec<u32>,
}

/// Distinct projected label sets a reading thread keeps for one block and
/// projection: a grouping by a label of many values (`by (pod)`) is not
/// worth keeping.
const MAX_PROJECTED_SETS: usize = 4096;

thread_local! {
    static PROJECTION: std::cell::RefCell<Projection> = std::cell::RefCell::new(Projection {
        serial: u64::MAX,
        names: Vec::new(),
        ids: Vec::new(),
        sets: HashMap::default(),
        key: Vec::new(),
    });
}

struct ChunkMeta {
    mint: i64,
    maxt: i64,
    n: u32,
    kind: ValueKind,
    /// Whether and where the columns have restart points
    /// ([`chunkenc::encode_block`]).
    restarts: chunkenc::Restarts,
    ts_ref: u64,
    val_ref: u64,
}

/// Writes the pages of a chunks file.
struct PageWriter {
    out: BufWriter<File>,
    file_off: u64,
    page: Vec<u8>,
}

impl PageWriter {
    fn new(path: &Path) -> Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(&CHUNKS_MAGIC.to_be_bytes())?;
        out.write_all(&[FORMAT_VERSION, 0, 0, 0])?;
        Ok(PageWriter {
            out,
            file_off: 8,
            page: Vec::with_capacity(PAGE_TARGET * 2),
        })
    }

    /// Adds a column to the current page and returns its reference.
    fn add(&mut self, col: &[u8]) -> Result<u64> {
        if !self.page.is_empty() && self.page.len() + col.len() > PAGE_TARGET {
            self.flush_page()?;
        }
        let r = (self.file_off << 24) | self.page.len() as u64;
        put_len_prefixed(&mut self.page, col);
        if self.page.len() >= 1 << 24 {
            return Err(Error::Invalid(
                "BUG: chunk column larger than a page can address".into(),
            ));
        }
        Ok(r)
    }

    fn flush_page(&mut self) -> Result<()> {
        if self.page.is_empty() {
            return Ok(());
        }
        let comp = zstd::bulk::compress(&self.page, ZSTD_LEVEL)?;
        self.out.write_all(&(self.page.len() as u32).to_le_bytes())?;
        self.out.write_all(&(comp.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&page_crc(self.page.len() as u32, comp.len() as u32, &comp).to_le_bytes())?;
        self.out.write_all(&comp)?;
        self.file_off += (PAGE_HEADER + comp.len()) as u64;
        self.page.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush_page()?;
        let f = self.out.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        f.sync_all()?;
        Ok(())
    }
}

/// Raw size at which an index page of series entries is cut.
const SERIES_PAGE_TARGET: usize = 64 << 10;

/// Writes `page` as a frame (`u32 raw_len`, `u32 comp_len`, zstd bytes) and clears it.
fn flush_page_frame(out: &mut Vec<u8>, page: &mut Vec<u8>) -> Result<()> {
    if page.is_empty() {
        return Ok(());
    }
    let comp = zstd::bulk::compress(page, ZSTD_LEVEL)?;
    out.extend_from_slice(&(page.len() as u32).to_le_bytes());
    out.extend_from_slice(&(comp.len() as u32).to_le_bytes());
    out.extend_from_slice(&comp);
    page.clear();
    Ok(())
}

/// Series entries being gathered into index pages.
#[derive(Default)]
struct SeriesPages {
    first: u32,
    offsets: Vec<u32>,
    entries: Vec<u8>,
    /// `(first series id, frame offset)` of every page written.
    table: Vec<(u32, u64)>,
}

impl SeriesPages {
    fn add(&mut self, sid: u32, entry: &[u8]) {
        if self.offsets.is_empty() {
            self.first = sid;
        }
        self.offsets.push(self.entries.len() as u32);
        self.entries.extend_from_slice(entry);
    }

    /// Writes the page as a frame (`u32 raw_len`, `u32 comp_len`, zstd bytes).
    fn flush(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        let mut raw = Vec::with_capacity(4 + self.offsets.len() * 4 + self.entries.len());
        put_uvarint(&mut raw, self.offsets.len() as u64);
        for o in &self.offsets {
            raw.extend_from_slice(&o.to_le_bytes());
        }
        raw.extend_from_slice(&self.entries);
        self.table.push((self.first, out.len() as u64));
        flush_page_frame(out, &mut raw)?;
        self.offsets.clear();
        self.entries.clear();
        Ok(())
    }
}

/// Streams series (in label order) into a new block directory.
pub struct BlockWriter {
    tmp: PathBuf,
    final_dir: PathBuf,
    pages: PageWriter,
    sym_ids: HashMap<String, u32>,
    syms: Vec<String>,
    series: Vec<(Vec<u32>, Vec<ChunkMeta>)>,
    ts_dedup: HashMap<Box<[u8]>, u64>,
    stats: BlockStats,
    mint: i64,
    maxt: i64,
    last_labels: Option<Labels>,
}

impl BlockWriter {
    /// Starts a block that will live at `blocks_dir/<id>`.
    pub fn new(blocks_dir: &Path, id: &str) -> Result<Self> {
        let tmp = blocks_dir.join(format!("{id}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let pages = PageWriter::new(&tmp.join("chunks"))?;
        Ok(BlockWriter {
            final_dir: blocks_dir.join(id),
            tmp,
            pages,
            sym_ids: HashMap::new(),
            syms: Vec::new(),
            series: Vec::new(),
            ts_dedup: HashMap::new(),
            stats: BlockStats::default(),
            mint: i64::MAX,
            maxt: i64::MIN,
            last_labels: None,
        })
    }

    fn sym(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.sym_ids.get(s) {
            return id;
        }
        let id = self.syms.len() as u32;
        self.syms.push(s.to_string());
        self.sym_ids.insert(s.to_string(), id);
        id
    }

    /// Adds one series; calls must come in strictly increasing label order and
    /// `samples` must be sorted by time. Empty series are skipped.
    pub fn add_series(&mut self, labels: &Labels, samples: &[Sample]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        if let Some(last) = &self.last_labels {
            if last >= labels {
                return Err(Error::Invalid(format!(
                    "BUG: block series out of order: {labels} after {last}"
                )));
            }
        }
        self.last_labels = Some(labels.clone());
        let mut ids = Vec::with_capacity(labels.len() * 2);
        for l in labels.iter() {
            ids.push(self.sym(&l.name));
            ids.push(self.sym(&l.value));
        }
        let mut metas = Vec::new();
        for run in samples.chunks(BLOCK_CHUNK_SAMPLES) {
            let c = chunkenc::encode_block(run);
            let ts_ref = match self.ts_dedup.get(&c.ts[..]) {
                Some(r) => {
                    self.stats.num_shared_ts_columns += 1;
                    *r
                }
                None => {
                    let r = self.pages.add(&c.ts)?;
                    self.stats.num_ts_columns += 1;
                    if self.ts_dedup.len() >= TS_DEDUP_MAX {
                        self.ts_dedup.clear();
                    }
                    self.ts_dedup.insert(c.ts.as_slice().into(), r);
                    r
                }
            };
            let val_ref = self.pages.add(&c.vals)?;
            metas.push(ChunkMeta {
                mint: c.mint,
                maxt: c.maxt,
                n: run.len() as u32,
                kind: c.kind,
                restarts: c.restarts,
                ts_ref,
                val_ref,
            });
            self.stats.num_chunks += 1;
        }
        self.stats.num_samples += samples.len() as u64;
        self.stats.num_series += 1;
        self.mint = self.mint.min(samples[0].t);
        self.maxt = self.maxt.max(samples[samples.len() - 1].t);
        self.series.push((ids, metas));
        Ok(())
    }

    pub fn num_series(&self) -> usize {
        self.series.len()
    }

    /// Writes index and meta, fsyncs and renames the block into place. `range`
    /// is the block's nominal `[min, max)`; `None` uses the data's extent.
    pub fn finish(self, range: Option<(i64, i64)>, level: u32, sources: Vec<String>) -> Result<Option<BlockMeta>> {
        let BlockWriter {
            tmp,
            final_dir,
            pages,
            syms,
            series,
            stats,
            mint,
            maxt,
            ..
        } = self;
        pages.finish()?;
        let chunks_bytes = fs::metadata(tmp.join("chunks"))?.len();
        if series.is_empty() {
            fs::remove_dir_all(&tmp)?;
            return Ok(None);
        }
        // Symbols sorted, so symbol order is string order.
        let mut order: Vec<u32> = (0..syms.len() as u32).collect();
        order.sort_by(|a, b| syms[*a as usize].cmp(&syms[*b as usize]));
        let mut remap = vec![0u32; syms.len()];
        for (new, old) in order.iter().enumerate() {
            remap[*old as usize] = new as u32;
        }
        let mut sec_symbols = Vec::new();
        sec_symbols.extend_from_slice(&(syms.len() as u32).to_le_bytes());
        for old in &order {
            put_len_prefixed(&mut sec_symbols, syms[*old as usize].as_bytes());
        }
        // Series entries go into zstd pages of about 64 KiB, each page starting
        // with the offsets of its entries; a small page table maps series ids
        // to pages.
        let mut sec_series = Vec::new();
        let mut pages = SeriesPages::default();
        let mut entry = Vec::new();
        let mut postings: HashMap<(u32, u32), RoaringBitmap> = HashMap::new();
        for (sid, (ids, metas)) in series.iter().enumerate() {
            entry.clear();
            put_uvarint(&mut entry, (ids.len() / 2) as u64);
            for p in ids.chunks_exact(2) {
                let (n, v) = (remap[p[0] as usize], remap[p[1] as usize]);
                put_uvarint(&mut entry, n as u64);
                put_uvarint(&mut entry, v as u64);
                postings.entry((n, v)).or_default().insert(sid as u32);
            }
            put_uvarint(&mut entry, metas.len() as u64);
            for m in metas {
                put_varint(&mut entry, m.mint);
                put_uvarint(&mut entry, m.maxt.wrapping_sub(m.mint) as u64);
                put_uvarint(&mut entry, m.n as u64);
                entry.push(
                    m.kind.to_byte()
                        | match m.restarts {
                            chunkenc::Restarts::None => 0,
                            chunkenc::Restarts::Every => INDEXED_KIND_BIT,
                            chunkenc::Restarts::EveryAndTail => INDEXED_KIND_BIT | TAIL_KIND_BIT,
                        },
                );
                put_uvarint(&mut entry, m.ts_ref);
                put_uvarint(&mut entry, m.val_ref);
            }
            if !pages.entries.is_empty() && pages.entries.len() + entry.len() > SERIES_PAGE_TARGET {
                pages.flush(&mut sec_series)?;
            }
            pages.add(sid as u32, &entry);
        }
        pages.flush(&mut sec_series)?;
        let mut sec_offsets = Vec::with_capacity(4 + pages.table.len() * 12);
        sec_offsets.extend_from_slice(&(series.len() as u32).to_le_bytes());
        for (first, frame) in &pages.table {
            sec_offsets.extend_from_slice(&first.to_le_bytes());
            sec_offsets.extend_from_slice(&frame.to_le_bytes());
        }
        let mut keys: Vec<(u32, u32)> = postings.keys().copied().collect();
        keys.sort_unstable();
        // Postings go into zstd pages too; a bitmap's reference is
        // (frame offset << 24) | offset inside the decoded page.
        let mut sec_postings = Vec::new();
        let mut sec_ptable = Vec::new();
        let mut page: Vec<u8> = Vec::with_capacity(SERIES_PAGE_TARGET * 2);
        put_uvarint(&mut sec_ptable, keys.len() as u64);
        for k in &keys {
            if !page.is_empty() && page.len() > SERIES_PAGE_TARGET {
                flush_page_frame(&mut sec_postings, &mut page)?;
            }
            let off = page.len();
            postings[k].serialize_into(&mut page)?;
            let r = ((sec_postings.len() as u64) << 24) | off as u64;
            put_uvarint(&mut sec_ptable, k.0 as u64);
            put_uvarint(&mut sec_ptable, k.1 as u64);
            put_uvarint(&mut sec_ptable, r);
            put_uvarint(&mut sec_ptable, (page.len() - off) as u64);
        }
        flush_page_frame(&mut sec_postings, &mut page)?;
        let mut idx = Vec::new();
        idx.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
        idx.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0]);
        let mut toc = Vec::new();
        for sec in [&sec_symbols, &sec_series, &sec_offsets, &sec_postings, &sec_ptable] {
            toc.extend_from_slice(&(idx.len() as u64).to_le_bytes());
            toc.extend_from_slice(&(sec.len() as u64).to_le_bytes());
            toc.extend_from_slice(&crc32fast::hash(sec).to_le_bytes());
            idx.extend_from_slice(sec);
        }
        let toc_crc = crc32fast::hash(&toc);
        idx.extend_from_slice(&toc);
        idx.extend_from_slice(&toc_crc.to_le_bytes());
        idx.extend_from_slice(&INDEX_MAGIC.to_be_bytes());
        {
            let mut f = File::create(tmp.join("index"))?;
            f.write_all(&idx)?;
            f.sync_all()?;
        }
        let idx_len = idx.len() as u64;
        let (min_time, max_time) = range.unwrap_or((mint, maxt.saturating_add(1)));
        let id = final_dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let mut meta = BlockMeta {
            id,
            min_time,
            max_time,
            stats,
            level,
            sources,
            version: FORMAT_VERSION as u32,
            index_bytes: idx_len,
            chunks_bytes,
            checksum: String::new(),
        };
        meta.checksum = meta.expected_checksum();
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Invalid(format!("BUG: meta encode: {e}")))?;
        {
            let mut f = File::create(tmp.join("meta.json"))?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        fsync_dir(&tmp)?;
        crate::fsutil::crash_point("block-before-rename");
        fs::rename(&tmp, &final_dir)?;
        if let Some(parent) = final_dir.parent() {
            fsync_dir(parent)?;
        }
        crate::fsutil::crash_point("block-after-rename");
        Ok(Some(meta))
    }
}

/// A persisted, immutable block, memory-mapped.
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: Mmap,
    chunks: Mmap,
    sections: [(usize, usize); TOC_SECTIONS],
    /// Byte offset of each symbol in the symbols section.
    sym_offsets: Vec<u32>,
    /// Each symbol as a shared string, made the first time a label set
    /// needs it, so label sets read from the block share their strings.
    sym_strs: Vec<std::sync::OnceLock<Str>>,
    /// name symbol → sorted `(value symbol, postings offset, postings length)`.
    ptable: HashMap<u32, Vec<(u32, u64, u32)>>,
    /// This block's key in [`DecodedPages`].
    serial: u64,
    /// Decoded index pages of series entries, by frame offset.
    series_pages: PageCache,
    /// Decoded postings pages, by frame offset.
    postings_pages: PageCache,
    /// `(first series id, frame offset)` of each series page.
    series_table: Vec<(u32, u64)>,
    n_series: u32,
    tombstones: RwLock<HashMap<u32, Vec<(i64, i64)>>>,
    /// Whether `tombstones` has any, set with it under its write lock: a
    /// read of a block without any (nearly every block) looks at this
    /// alone, which the reading threads share without writing, instead of
    /// taking the lock for every series, which writes its cache line.
    any_tombstones: std::sync::atomic::AtomicBool,
    size: u64,
}

fn corrupt(what: &'static str, path: &Path, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        what,
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

impl Block {
    /// Opens and fully verifies a block directory.
    pub fn open(dir: &Path) -> Result<Block> {
        let meta_path = dir.join("meta.json");
        let meta: BlockMeta = serde_json::from_slice(&fs::read(&meta_path)?)
            .map_err(|e| corrupt("block meta", &meta_path, e.to_string()))?;
        if meta.version != FORMAT_VERSION as u32 {
            return Err(corrupt(
                "block meta",
                &meta_path,
                format!("unsupported format version {}", meta.version),
            ));
        }
        let want = meta.expected_checksum();
        if meta.checksum != want {
            return Err(corrupt(
                "block meta",
                &meta_path,
                format!(
                    "checksum mismatch (file says {:?}, contents give {want:?})",
                    meta.checksum
                ),
            ));
        }
        let ipath = dir.join("index");
        let cpath = dir.join("chunks");
        // SAFETY: block files are immutable once renamed into place; nothing in
        // this process writes them, and they are replaced only by new directories.
        let index = unsafe { Mmap::map(&File::open(&ipath)?)? };
        // SAFETY: as above.
        let chunks = unsafe { Mmap::map(&File::open(&cpath)?)? };
        for (what, path, have, want) in [
            ("index", &ipath, index.len() as u64, meta.index_bytes),
            ("chunks", &cpath, chunks.len() as u64, meta.chunks_bytes),
        ] {
            if have != want {
                return Err(corrupt(
                    what,
                    path,
                    format!("the file has {have} bytes, the block's meta.json says {want}"),
                ));
            }
        }
        let sections = verify_index(&index, &ipath)?;
        verify_chunks(&chunks, &cpath)?;
        // Verifying touched every page of the chunks file; they are page cache,
        // not memory this process needs, so they leave its mapping now and
        // queries fault in only what they read.
        // SAFETY: a read-only shared file mapping: MADV_DONTNEED only drops
        // the pages from the mapping, which then reads them from the file again.
        let _ = unsafe { chunks.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        let mut b = Block {
            dir: dir.to_path_buf(),
            meta,
            index,
            chunks,
            sections,
            sym_offsets: Vec::new(),
            sym_strs: Vec::new(),
            ptable: HashMap::new(),
            serial: BLOCK_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            series_pages: PageCache::new(1024),
            postings_pages: PageCache::new(1024),
            series_table: Vec::new(),
            n_series: 0,
            tombstones: RwLock::new(HashMap::new()),
            any_tombstones: std::sync::atomic::AtomicBool::new(false),
            size: dir_size(dir),
        };
        b.load_tables()
            .map_err(|_| corrupt("index", &ipath, "undecodable symbols or postings table"))?;
        b.load_tombstones()?;
        Ok(b)
    }

    fn section(&self, i: usize) -> &[u8] {
        let (off, len) = self.sections[i];
        &self.index[off..off + len]
    }

    fn load_tables(&mut self) -> std::result::Result<(), crate::bits::Truncated> {
        let syms = self.section(0);
        let mut r = ByteReader::new(syms);
        let n = r.u32_le()? as usize;
        let mut offs = Vec::with_capacity(n.min(syms.len()));
        for _ in 0..n {
            offs.push(r.pos() as u32);
            r.len_prefixed()?;
        }
        let mut pt: HashMap<u32, Vec<(u32, u64, u32)>> = HashMap::new();
        let mut r = ByteReader::new(self.section(4));
        let count = r.uvarint()?;
        for _ in 0..count {
            let name = r.uvarint()? as u32;
            let val = r.uvarint()? as u32;
            let off = r.uvarint()?;
            let len = r.uvarint()? as u32;
            if name as usize >= n || val as usize >= n {
                return Err(crate::bits::Truncated);
            }
            pt.entry(name).or_default().push((val, off, len));
        }
        let mut r = ByteReader::new(self.section(2));
        let n_series = r.u32_le()?;
        let mut table = Vec::with_capacity(r.remaining() / 12);
        while !r.is_empty() {
            let first = r.u32_le()?;
            let frame = r.u64_le()?;
            if table.last().is_some_and(|(f, _): &(u32, u64)| *f >= first) || first >= n_series {
                return Err(crate::bits::Truncated);
            }
            table.push((first, frame));
        }
        if n_series > 0 && table.first().map(|t| t.0) != Some(0) {
            return Err(crate::bits::Truncated);
        }
        self.sym_strs = (0..offs.len()).map(|_| std::sync::OnceLock::new()).collect();
        self.sym_offsets = offs;
        self.ptable = pt;
        self.series_table = table;
        self.n_series = n_series;
        Ok(())
    }

    fn tombstones_path(&self) -> PathBuf {
        self.dir.join("tombstones")
    }

    fn load_tombstones(&mut self) -> Result<()> {
        let p = self.tombstones_path();
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let bad = || corrupt("tombstones", &p, "checksum mismatch or truncated");
        if data.len() < 12 || data[..4] != TOMBSTONES_MAGIC.to_be_bytes() {
            return Err(bad());
        }
        let (body, crc) = data.split_at(data.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(bad());
        }
        let mut r = ByteReader::new(&body[8..]);
        let mut map: HashMap<u32, Vec<(i64, i64)>> = HashMap::new();
        let n = r.uvarint().map_err(|_| bad())?;
        for _ in 0..n {
            let id = r.uvarint().map_err(|_| bad())? as u32;
            let a = r.varint().map_err(|_| bad())?;
            let b = r.varint().map_err(|_| bad())?;
            map.entry(id).or_default().push((a, b));
        }
        let mut t = self.tombstones.write();
        self.any_tombstones
            .store(!map.is_empty(), std::sync::atomic::Ordering::Release);
        *t = map;
        Ok(())
    }

    /// Adds tombstones and persists the whole set atomically.
    pub fn add_tombstones(&self, add: &[(u32, i64, i64)]) -> Result<()> {
        let mut t = self.tombstones.write();
        let mut next = t.clone();
        for (id, a, b) in add {
            next.entry(*id).or_default().push((*a, *b));
        }
        let mut body = Vec::new();
        body.extend_from_slice(&TOMBSTONES_MAGIC.to_be_bytes());
        body.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0]);
        let n: usize = next.values().map(|v| v.len()).sum();
        put_uvarint(&mut body, n as u64);
        let mut ids: Vec<&u32> = next.keys().collect();
        ids.sort();
        for id in ids {
            for (a, b) in &next[id] {
                put_uvarint(&mut body, *id as u64);
                put_varint(&mut body, *a);
                put_varint(&mut body, *b);
            }
        }
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        write_atomic(&self.tombstones_path(), &body)?;
        self.any_tombstones
            .store(!next.is_empty(), std::sync::atomic::Ordering::Release);
        *t = next;
        Ok(())
    }

    pub fn has_tombstones(&self) -> bool {
        self.any_tombstones.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// Sizes of the index's sections, for size analysis.
    pub fn index_sections(&self) -> [(&'static str, usize); TOC_SECTIONS] {
        let names = ["symbols", "series", "series page table", "postings", "postings table"];
        let mut out = [("", 0usize); TOC_SECTIONS];
        for (i, n) in names.iter().enumerate() {
            out[i] = (n, self.sections[i].1);
        }
        out
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    fn symbol(&self, id: u32) -> Option<&str> {
        let off = *self.sym_offsets.get(id as usize)? as usize;
        let mut r = ByteReader::new(self.section(0).get(off..)?);
        r.str().ok()
    }

    /// Symbol `id` as a shared string, made the first time it is needed.
    fn symbol_cell(&self, id: u32) -> Option<&Str> {
        let cell = self.sym_strs.get(id as usize)?;
        if let Some(s) = cell.get() {
            return Some(s);
        }
        let s = Str::from(self.symbol(id)?);
        Some(cell.get_or_init(|| s))
    }

    fn shared_symbol(&self, id: u32) -> Option<Str> {
        self.symbol_cell(id).cloned()
    }

    fn symbol_id(&self, s: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.sym_offsets.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.symbol(mid as u32)?.cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    pub fn num_series(&self) -> u32 {
        self.n_series
    }

    /// The decoded page holding series `id` and the entry's offset in it.
    fn series_entry(&self, id: u32) -> Option<(Page, usize)> {
        if id >= self.n_series {
            return None;
        }
        let idx = self
            .series_table
            .partition_point(|(first, _)| *first <= id)
            .checked_sub(1)?;
        let (first, frame) = self.series_table[idx];
        let page = self.decoded_frame(1, frame, &self.series_pages)?;
        let mut r = ByteReader::new(&page);
        let count = r.uvarint().ok()? as usize;
        let k = (id - first) as usize;
        if k >= count {
            return None;
        }
        let table = r.pos();
        let o = table.checked_add(k.checked_mul(4)?)?;
        let off = u32::from_le_bytes(page.get(o..o.checked_add(4)?)?.try_into().ok()?) as usize;
        let entries = table.checked_add(count.checked_mul(4)?)?;
        // The page itself is handed on, not another count of it.
        let at = entries.checked_add(off)?;
        Some((page, at))
    }

    /// Labels of series `id`.
    pub fn labels(&self, id: u32) -> Option<Labels> {
        let (page, off) = self.series_entry(id)?;
        self.entry_labels(&mut ByteReader::new(page.get(off..)?), None)
    }

    /// The labels of series `id` named in `names`, and its metric name: what
    /// an aggregation that groups by `names` needs of it, without resolving
    /// the other labels' values.
    pub fn labels_named(&self, id: u32, names: &[String]) -> Option<Labels> {
        let (page, off) = self.series_entry(id)?;
        self.entry_labels(&mut ByteReader::new(page.get(off..)?), Some(names))
    }

    /// The whole label set at the start of series `id`'s entry, from the
    /// sets queries read lately ([`SeriesLabels`]) or built and added to
    /// them; leaves `r` after it.
    fn entry_labels_recent(&self, id: u32, r: &mut ByteReader<'_>) -> Option<Labels> {
        let key = (self.serial, id);
        let kept = near_label_set(key).or_else(|| {
            let l = SERIES_LABELS.get(key)?;
            keep_near_label_set(key, &l);
            Some(l)
        });
        if let Some(l) = kept {
            let n = r.uvarint().ok()?;
            for _ in 0..n.saturating_mul(2) {
                r.uvarint().ok()?;
            }
            return Some(l);
        }
        let l = self.entry_labels(r, None)?;
        SERIES_LABELS.insert(key, l.clone());
        keep_near_label_set(key, &l);
        Some(l)
    }

    /// The label set at the start of a series entry, all of it or only the
    /// labels in `names` and the metric name; leaves `r` after it.
    fn entry_labels(&self, r: &mut ByteReader<'_>, names: Option<&[String]>) -> Option<Labels> {
        let n = r.uvarint().ok()? as usize;
        let Some(names) = names else {
            return self.all_labels(r, n);
        };
        // The wanted names as this block's symbol ids, worked out once for
        // a run of series of one block read with one projection: a label is
        // then kept or passed over by comparing integers.
        PROJECTION.with_borrow_mut(|p| {
            if p.serial != self.serial || p.names != names {
                p.serial = self.serial;
                p.names = names.to_vec();
                p.ids = names
                    .iter()
                    .map(String::as_str)
                    .chain([METRIC_NAME])
                    .filter_map(|x| self.symbol_id(x))
                    .collect();
                p.sets.clear();
            }
            p.key.clear();
            for _ in 0..n {
                let name = r.uvarint().ok()? as u32;
                let value = r.uvarint().ok()? as u32;
                if p.ids.contains(&name) {
                    p.key.extend([name, value]);
                }
            }
            if let Some(l) = p.sets.get(&p.key) {
                return Some(l.clone());
            }
            let mut v = Vec::with_capacity(p.key.len() / 2);
            for pair in p.key.chunks_exact(2) {
                v.push(Label {
                    name: self.shared_symbol(pair[0])?,
                    value: self.shared_symbol(pair[1])?,
                });
            }
            let l = sorted_labels(v)?;
            if p.sets.len() >= MAX_PROJECTED_SETS {
                p.sets.clear();
            }
            p.sets.insert(p.key.clone(), l.clone());
            Some(l)
        })
    }

    /// The `n` labels at `r`.
    fn all_labels(&self, r: &mut ByteReader<'_>, n: usize) -> Option<Labels> {
        // Each label takes at least two bytes.
        let mut v = Vec::with_capacity(n.min(r.remaining() / 2));
        for _ in 0..n {
            let name = r.uvarint().ok()? as u32;
            let value = r.uvarint().ok()? as u32;
            v.push(Label {
                name: self.shared_symbol(name)?,
                value: self.shared_symbol(value)?,
            });
        }
        sorted_labels(v)
    }

    fn page(&self, file_off: u64) -> Result<Page> {
        recent_page(self.serial, file_off, || self.shared_page(file_off))
    }

    /// [`Block::page`] from the process's cache of decoded pages, or
    /// decompressed into it.
    fn shared_page(&self, file_off: u64) -> Result<Arc<Vec<u8>>> {
        if let Some(p) = DECODED_PAGES.get((self.serial, file_off)) {
            return Ok(p);
        }
        let bad = |d: &str| {
            corrupt(
                "chunk page",
                &self.dir.join("chunks"),
                format!("{d} at byte {file_off}"),
            )
        };
        let o = file_off as usize;
        let hdr = self
            .chunks
            .get(o..o + PAGE_HEADER)
            .ok_or_else(|| bad("page header out of range"))?;
        let raw_len = u32::from_le_bytes(hdr[0..4].try_into().unwrap_or_default()) as usize;
        let comp_len = u32::from_le_bytes(hdr[4..8].try_into().unwrap_or_default()) as usize;
        let comp = self
            .chunks
            .get(o + PAGE_HEADER..o + PAGE_HEADER + comp_len)
            .ok_or_else(|| bad("page out of range"))?;
        if raw_len > MAX_PAGE_RAW {
            return Err(bad("page larger than 16 MiB"));
        }
        let page = zstd::bulk::decompress(comp, raw_len).map_err(|_| bad("undecodable page"))?;
        let page = Arc::new(page);
        DECODED_PAGES.insert((self.serial, file_off), page.clone());
        Ok(page)
    }

    /// The bytes of the column at reference `r`, in its decoded `page`.
    fn column_in<'p>(&self, page: &'p [u8], r: u64) -> Result<&'p [u8]> {
        let off = (r & 0xff_ffff) as usize;
        let mut br = ByteReader::new(page.get(off..).unwrap_or_default());
        let len = br
            .uvarint()
            .map_err(|_| corrupt("chunk column", &self.dir, "bad length"))? as usize;
        let start = off + br.pos();
        page.get(start..start.saturating_add(len))
            .ok_or_else(|| corrupt("chunk column", &self.dir, "column exceeds its page"))
    }

    /// Samples of series `id` in `[mint, maxt]`, tombstones applied.
    pub fn samples(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()> {
        let bad = || corrupt("index series entry", &self.dir.join("index"), format!("series {id}"));
        let (page, off) = self.series_entry(id).ok_or_else(bad)?;
        let mut r = ByteReader::new(page.get(off..).ok_or_else(bad)?);
        let n = r.uvarint().map_err(|_| bad())?;
        for _ in 0..n.saturating_mul(2) {
            r.uvarint().map_err(|_| bad())?;
        }
        self.entry_samples(id, &mut r, mint, maxt, false, out)
    }

    /// The samples of series `id` in `[mint, maxt]` appended to `out` and,
    /// when there are any, its labels (those in `names` and the metric name
    /// when given, else all): one lookup of the series entry for both. With
    /// `last_only`, the last of those samples is last in `out`, and the
    /// chunks' earlier samples may be left out.
    pub fn read(
        &self,
        id: u32,
        mint: i64,
        maxt: i64,
        last_only: bool,
        names: Option<&[String]>,
        out: &mut Vec<Sample>,
    ) -> Result<Option<Labels>> {
        let bad = || corrupt("index series entry", &self.dir.join("index"), format!("series {id}"));
        let (page, off) = self.series_entry(id).ok_or_else(bad)?;
        let mut r = ByteReader::new(page.get(off..).ok_or_else(bad)?);
        let labels = match names {
            // A query's read of whole label sets: from the recent ones.
            None => self.entry_labels_recent(id, &mut r),
            Some(_) => self.entry_labels(&mut r, names),
        }
        .ok_or_else(bad)?;
        let start = out.len();
        self.entry_samples(id, &mut r, mint, maxt, last_only, out)?;
        Ok((out.len() > start).then_some(labels))
    }

    /// The chunks of a series entry, `r` positioned after its labels: those
    /// overlapping `[mint, maxt]` decoded and cut to it, tombstones applied.
    /// With `last_only`, a packed chunk's values before the last in the
    /// range are not decoded, and the chunks before one that has samples in
    /// the range are dropped from `out`: the last sample is the same.
    fn entry_samples(
        &self,
        id: u32,
        r: &mut ByteReader<'_>,
        mint: i64,
        maxt: i64,
        last_only: bool,
        out: &mut Vec<Sample>,
    ) -> Result<()> {
        let bad = || corrupt("index series entry", &self.dir.join("index"), format!("series {id}"));
        let nchunks = r.uvarint().map_err(|_| bad())?;
        let start = out.len();
        // A tombstone may cover the last sample, and the one before it is
        // then the answer.
        let last_only = last_only && !self.has_tombstones();
        for _ in 0..nchunks {
            let cmin = r.varint().map_err(|_| bad())?;
            let cmax = cmin.wrapping_add(r.uvarint().map_err(|_| bad())? as i64);
            let cn = r.uvarint().map_err(|_| bad())? as usize;
            let kb = r.u8().map_err(|_| bad())?;
            let restarts = match (kb & INDEXED_KIND_BIT != 0, kb & TAIL_KIND_BIT != 0) {
                (false, false) => chunkenc::Restarts::None,
                (true, false) => chunkenc::Restarts::Every,
                (true, true) => chunkenc::Restarts::EveryAndTail,
                (false, true) => return Err(bad()),
            };
            let kind = ValueKind::from_byte(kb & !(INDEXED_KIND_BIT | TAIL_KIND_BIT)).ok_or_else(bad)?;
            let ts_ref = r.uvarint().map_err(|_| bad())?;
            let val_ref = r.uvarint().map_err(|_| bad())?;
            if cmax < mint || cmin > maxt {
                continue;
            }
            let tp = self.page(ts_ref >> 24)?;
            // The two columns of a chunk are mostly in one page, which is
            // then not counted twice.
            let other;
            let vp: &[u8] = if val_ref >> 24 == ts_ref >> 24 {
                &tp
            } else {
                other = self.page(val_ref >> 24)?;
                &other
            };
            let tcol = self.column_in(&tp, ts_ref)?;
            let vcol = self.column_in(vp, val_ref)?;
            let cc = |_| corrupt("chunk", &self.dir.join("chunks"), format!("series {id}"));
            if kind.is_packed() {
                let key = (
                    self.serial,
                    ts_ref,
                    cn,
                    kb & (INDEXED_KIND_BIT | TAIL_KIND_BIT),
                    mint,
                    maxt,
                    last_only,
                );
                let times = shared_range_times(key, || {
                    let t = chunkenc::range_times(tcol, cn, restarts, (mint, maxt))?;
                    Ok(if last_only { t.last_alone() } else { t })
                })
                .map_err(cc)?;
                if last_only && !times.times().is_empty() {
                    out.truncate(start);
                }
                chunkenc::decode_packed_values(&times, kind, vcol, cn, restarts, out).map_err(cc)?;
            } else {
                chunkenc::decode_block_range(tcol, kind, vcol, cn, restarts, (mint, maxt), out).map_err(cc)?;
            }
        }
        if !self.has_tombstones() {
            return Ok(());
        }
        if let Some(tomb) = self.tombstones.read().get(&id) {
            let tail = out.split_off(start);
            out.extend(
                tail.into_iter()
                    .filter(|s| !tomb.iter().any(|(a, b)| s.t >= *a && s.t <= *b)),
            );
        }
        Ok(())
    }

    pub fn postings_for(&self, ms: &[Matcher]) -> RoaringBitmap {
        postings_for_matchers(self, ms)
    }

    fn postings_at(&self, r: u64, len: u32) -> RoaringBitmap {
        let (frame, off) = (r >> 24, (r & 0xff_ffff) as usize);
        let Some(page) = self.decoded_frame(3, frame, &self.postings_pages) else {
            return RoaringBitmap::new();
        };
        page.get(off..off + len as usize)
            .and_then(|b| RoaringBitmap::deserialize_from(b).ok())
            .unwrap_or_default()
    }

    /// Decodes (through `cache`) the page frame at `frame` in index section `sec`.
    fn decoded_frame(&self, sec: usize, frame: u64, cache: &PageCache) -> Option<Page> {
        recent_page(self.serial, index_page_place(sec, frame), || {
            self.shared_frame(sec, frame, cache).ok_or(())
        })
        .ok()
    }

    /// [`Block::decoded_frame`] from the block's cache, or decompressed into it.
    fn shared_frame(&self, sec: usize, frame: u64, cache: &PageCache) -> Option<Arc<Vec<u8>>> {
        if let Some(p) = cache.get(frame) {
            return Some(p);
        }
        let b = self.section(sec);
        let f = frame as usize;
        let raw_len = u32::from_le_bytes(b.get(f..f + 4)?.try_into().ok()?) as usize;
        let comp_len = u32::from_le_bytes(b.get(f + 4..f + 8)?.try_into().ok()?) as usize;
        if raw_len > MAX_PAGE_RAW {
            return None;
        }
        let page = Arc::new(zstd::bulk::decompress(b.get(f + 8..f + 8 + comp_len)?, raw_len).ok()?);
        cache.insert(frame, page.clone());
        Some(page)
    }

    /// Label names, restricted to series in `ids` when given.
    pub fn label_names(&self, ids: Option<&RoaringBitmap>) -> Vec<String> {
        let mut out: Vec<String> = self
            .ptable
            .iter()
            .filter(|(_, vals)| {
                ids.is_none_or(|ids| vals.iter().any(|(_, o, l)| !self.postings_at(*o, *l).is_disjoint(ids)))
            })
            .filter_map(|(n, _)| self.symbol(*n).map(str::to_string))
            .collect();
        out.sort();
        out
    }

    /// Values of `name`, restricted to series in `ids` when given.
    pub fn label_values(&self, name: &str, ids: Option<&RoaringBitmap>) -> Vec<String> {
        let Some(nid) = self.symbol_id(name) else {
            return Vec::new();
        };
        let Some(vals) = self.ptable.get(&nid) else {
            return Vec::new();
        };
        vals.iter()
            .filter(|(_, o, l)| ids.is_none_or(|ids| !self.postings_at(*o, *l).is_disjoint(ids)))
            .filter_map(|(v, _, _)| self.symbol(*v).map(str::to_string))
            .collect()
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        DECODED_PAGES.forget(self.serial);
        SERIES_LABELS.forget(self.serial);
    }
}

impl PostingsSource for Block {
    fn all_postings(&self) -> RoaringBitmap {
        let mut b = RoaringBitmap::new();
        b.insert_range(0..self.num_series());
        b
    }

    fn postings(&self, name: &str, value: &str) -> RoaringBitmap {
        let (Some(n), Some(v)) = (self.symbol_id(name), self.symbol_id(value)) else {
            return RoaringBitmap::new();
        };
        let Some(vals) = self.ptable.get(&n) else {
            return RoaringBitmap::new();
        };
        match vals.binary_search_by_key(&v, |x| x.0) {
            Ok(i) => self.postings_at(vals[i].1, vals[i].2),
            Err(_) => RoaringBitmap::new(),
        }
    }

    fn values_of(&self, name: &str) -> Vec<String> {
        self.label_values(name, None)
    }
}

fn verify_index(b: &[u8], path: &Path) -> Result<[(usize, usize); TOC_SECTIONS]> {
    if b.len() < 8 + TOC_LEN
        || b[..4] != INDEX_MAGIC.to_be_bytes()
        || b[5..8] != [0, 0, 0]
        || b[b.len() - 4..] != INDEX_MAGIC.to_be_bytes()
    {
        return Err(corrupt("index", path, "bad magic or truncated"));
    }
    if b[4] != FORMAT_VERSION {
        return Err(corrupt("index", path, format!("unsupported version {}", b[4])));
    }
    let toc_start = b.len() - TOC_LEN;
    let toc = &b[toc_start..toc_start + TOC_SECTIONS * 20];
    let crc = u32::from_le_bytes(b[b.len() - 8..b.len() - 4].try_into().unwrap_or_default());
    if crc32fast::hash(toc) != crc {
        return Err(corrupt("index", path, "table of contents checksum mismatch"));
    }
    let names = ["symbols", "series", "series page table", "postings", "postings table"];
    let mut out = [(0usize, 0usize); TOC_SECTIONS];
    let mut expect = 8usize;
    for (i, e) in toc.chunks_exact(20).enumerate() {
        let off = u64::from_le_bytes(e[0..8].try_into().unwrap_or_default()) as usize;
        let len = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default()) as usize;
        let c = u32::from_le_bytes(e[16..20].try_into().unwrap_or_default());
        // Sections are contiguous, so every byte of the file is under some checksum.
        let sec = off
            .checked_add(len)
            .and_then(|end| b.get(off..end).filter(|_| end <= toc_start && off == expect));
        let Some(sec) = sec else {
            return Err(corrupt("index", path, format!("section {} out of range", names[i])));
        };
        if crc32fast::hash(sec) != c {
            return Err(corrupt(
                "index",
                path,
                format!("section {} checksum mismatch", names[i]),
            ));
        }
        out[i] = (off, len);
        expect = off + len;
    }
    if expect != toc_start {
        return Err(corrupt("index", path, "sections do not reach the table of contents"));
    }
    Ok(out)
}

/// A series entry's labels as a label set, or `None` (a damaged entry) when
/// their names are not in strictly ascending order or a value is empty: the
/// writer never stores such a set, and a reader that took one would answer
/// matchers wrongly.
fn sorted_labels(v: Vec<Label>) -> Option<Labels> {
    let ok = v.windows(2).all(|w| w[0].name < w[1].name) && v.iter().all(|l| !l.value.is_empty());
    ok.then(|| Labels::from_sorted_unchecked(v))
}

/// A page's checksum covers its two length fields and its compressed bytes.
fn page_crc(raw_len: u32, comp_len: u32, comp: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&raw_len.to_le_bytes());
    h.update(&comp_len.to_le_bytes());
    h.update(comp);
    h.finalize()
}

fn verify_chunks(b: &[u8], path: &Path) -> Result<()> {
    if b.len() < 8 || b[..4] != CHUNKS_MAGIC.to_be_bytes() || b[5..8] != [0, 0, 0] {
        return Err(corrupt("chunks", path, "bad magic or truncated"));
    }
    if b[4] != FORMAT_VERSION {
        return Err(corrupt("chunks", path, format!("unsupported version {}", b[4])));
    }
    let mut off = 8usize;
    while off < b.len() {
        let Some(h) = b.get(off..off + PAGE_HEADER) else {
            return Err(corrupt("chunks", path, format!("torn page header at byte {off}")));
        };
        let raw_len = u32::from_le_bytes(h[0..4].try_into().unwrap_or_default());
        let comp_len = u32::from_le_bytes(h[4..8].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
        let Some(comp) = b.get(off + PAGE_HEADER..off + PAGE_HEADER + comp_len) else {
            return Err(corrupt("chunks", path, format!("torn page at byte {off}")));
        };
        if page_crc(raw_len, comp_len as u32, comp) != crc {
            return Err(corrupt("chunks", path, format!("page checksum mismatch at byte {off}")));
        }
        if raw_len as usize > MAX_PAGE_RAW {
            return Err(corrupt(
                "chunks",
                path,
                format!("page at byte {off} claims {raw_len} bytes decoded"),
            ));
        }
        off += PAGE_HEADER + comp_len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_cache_gives_back_what_it_holds_and_stays_bounded() {
        let c = PageCache::new(64);
        for off in 0..10_000u64 {
            let page = Arc::new(vec![off as u8; 3]);
            c.insert(off * 4096, page.clone());
            assert_eq!(c.get(off * 4096).as_deref(), Some(&*page));
            let held: usize = c.shards.iter().map(|s| s.lock().len()).sum();
            assert!(held <= 64, "{held} pages held");
        }
        assert_eq!(c.get(1), None);
        // Every shard is used for page-aligned offsets.
        assert!(c.shards.iter().all(|s| !s.lock().is_empty()));
    }

    #[test]
    fn decoded_pages_stay_within_their_budget_and_keep_pages_read_again() {
        let c = DecodedPages::new(8 * 40 * 1000);
        let hot: Vec<PageKey> = (0..8).map(|i| (7, i * 4096)).collect();
        for &k in &hot {
            c.insert(k, Arc::new(vec![1u8; 1000]));
        }
        for off in 0..20_000u64 {
            let key = (1, (off + 100) * 4096);
            let page = Arc::new(vec![off as u8; 1000]);
            c.insert(key, page.clone());
            assert!(c.bytes() <= 8 * 40 * 1000, "{} bytes held", c.bytes());
            // The hot pages are read between the inserts; pages read once
            // go first.
            for &k in &hot {
                assert!(c.get(k).is_some(), "hot page {k:?} evicted after {off} inserts");
            }
            if off > 10 {
                let recent = (1, (off + 90) * 4096);
                let _ = c.get(recent);
            }
        }
        assert!(
            c.get((1, 100 * 4096)).is_none(),
            "a page read once outlived 20,000 others"
        );
        // Inserting a page already held changes nothing.
        let before = c.bytes();
        c.insert(hot[0], Arc::new(vec![9u8; 5000]));
        assert_eq!(c.bytes(), before);
        assert_eq!(c.get(hot[0]).map(|p| p[0]), Some(1));
        // A block's pages leave with it.
        c.forget(7);
        assert!(hot.iter().all(|&k| c.get(k).is_none()));
        assert_eq!(
            c.bytes(),
            c.shards
                .iter()
                .map(|s| s.lock().pages.values().map(|(p, _)| p.len()).sum::<usize>())
                .sum::<usize>()
        );
        // A budget smaller than a page keeps nothing, and nothing breaks.
        let tiny = DecodedPages::new(10);
        tiny.insert((1, 0), Arc::new(vec![0u8; 100]));
        assert_eq!(tiny.bytes(), 0);
        assert!(tiny.get((1, 0)).is_none());
    }

    fn write_block(dir: &Path, n: usize) -> BlockMeta {
        let mut w = BlockWriter::new(dir, "b1").expect("writer");
        let mut all: Vec<Labels> = (0..n)
            .map(|i| {
                Labels::from_pairs([
                    ("__name__", "m"),
                    ("i", &format!("{i:04}")),
                    ("even", if i % 2 == 0 { "y" } else { "n" }),
                ])
            })
            .collect();
        all.sort();
        for l in &all {
            let samples: Vec<Sample> = (0..600)
                .map(|k| {
                    Sample::new(
                        k * 15_000,
                        (k * 2) as f64 + if l.get("even") == "y" { 0.5 } else { 0.0 },
                    )
                })
                .collect();
            w.add_series(l, &samples).expect("add");
        }
        w.finish(None, 1, vec![]).expect("finish").expect("non-empty")
    }

    #[test]
    fn block_round_trips_and_shares_timestamp_columns() {
        let d = tempfile::tempdir().expect("tempdir");
        let meta = write_block(d.path(), 50);
        assert_eq!(meta.stats.num_series, 50);
        assert_eq!(meta.stats.num_samples, 50 * 600);
        // Two chunks a series, but only two distinct timestamp columns in all.
        assert_eq!(meta.stats.num_ts_columns, 2);
        let b = Block::open(&d.path().join("b1")).expect("open");
        let ids = b.postings_for(&[Matcher::equal("even", "y")]);
        assert_eq!(ids.len(), 25);
        let id = ids.min().expect("some");
        let mut out = Vec::new();
        b.samples(id, 15_000, 30_000, &mut out).expect("samples");
        assert_eq!(out, vec![Sample::new(15_000, 2.5), Sample::new(30_000, 4.5)]);
        assert_eq!(b.label_values("even", None), vec!["n", "y"]);
        assert_eq!(b.label_names(Some(&ids)), vec!["__name__", "even", "i"]);
    }

    /// `series` series of `n` samples scraped together every 15 s, sorted
    /// by labels, and their timestamps: packed gauges and counters, float
    /// runs, and flat runs with rare jumps, which stay fitted.
    fn mixed_runs(n: usize, series: usize, seed: u64) -> (Vec<i64>, Vec<(Labels, Vec<Sample>)>) {
        let times: Vec<i64> = (0..n as i64).map(|k| 1_000 + k * 15_000).collect();
        let mut next = crate::chunkenc::tests::xorshift(seed);
        let mut runs: Vec<(Labels, Vec<Sample>)> = (0..series)
            .map(|i| {
                let mut counter = 0.0;
                let samples = times
                    .iter()
                    .enumerate()
                    .map(|(k, &t)| {
                        let x = next();
                        counter += (1_000 + x % 40) as f64;
                        let v = match i % 4 {
                            0 => (4_700 + x % 300) as f64 / 1e4,
                            1 => counter,
                            2 => (x as f64).sqrt(),
                            _ => ((k % 97 == 0) as u64 * (1u64 << 40)) as f64,
                        };
                        Sample::new(t, v)
                    })
                    .collect();
                (
                    Labels::from_pairs([("__name__", "m"), ("i", &format!("{i:02}"))]),
                    samples,
                )
            })
            .collect();
        runs.sort_by(|a, b| a.0.cmp(&b.0));
        (times, runs)
    }

    #[test]
    fn series_sharing_a_timestamp_column_read_every_range_in_any_order() {
        // Packed gauges and counters, decimals, fitted and float runs, all
        // scraped together: one timestamp column, whose range reads a
        // thread keeps for the next series.
        let d = tempfile::tempdir().expect("tempdir");
        let (times, runs) = mixed_runs(480, 12, 0x9e37_79b9_7f4a_7c15);
        let mut w = BlockWriter::new(d.path(), "b1").expect("writer");
        for (l, samples) in &runs {
            w.add_series(l, samples).expect("add");
        }
        let meta = w.finish(None, 1, vec![]).expect("finish").expect("non-empty");
        assert_eq!(meta.stats.num_ts_columns, 1);
        let b = Block::open(&d.path().join("b1")).expect("open");
        let cuts = [
            0usize, 1, 159, 160, 161, 220, 319, 320, 439, 440, 455, 456, 457, 470, 479,
        ];
        let mut ranges = vec![(i64::MIN, i64::MAX), (0, 999)];
        for &a in &cuts {
            for &z in &cuts {
                ranges.extend([(times[a], times[z]), (times[a] + 1, times[z]), (times[a], i64::MAX)]);
            }
        }
        for (lo, hi) in ranges {
            // Each range read series after series, then twice over in turn.
            for id in (0..12u32).chain([3, 3, 0, 11, 5]) {
                let mut out = vec![Sample::new(-1, 0.0)];
                b.samples(id, lo, hi, &mut out).expect("samples");
                let want: Vec<Sample> = std::iter::once(Sample::new(-1, 0.0))
                    .chain(runs[id as usize].1.iter().copied().filter(|s| s.t >= lo && s.t <= hi))
                    .collect();
                assert_eq!(out, want, "series {id}, range {lo}..={hi}");
            }
        }
    }

    #[test]
    fn a_read_of_the_last_sample_alone_finds_the_last_of_the_whole_read() {
        // Series of several chunks (packed gauges and counters, fitted and
        // float runs), read whole and for their last sample alone in turn,
        // over ranges that end inside, between and past the chunks; then
        // with a tombstone over the last samples, which leaves the sample
        // before them the last.
        let d = tempfile::tempdir().expect("tempdir");
        let n = BLOCK_CHUNK_SAMPLES * 2 + 77;
        let (times, runs) = mixed_runs(n, 8, 0x2545_f491_4f6c_dd1d);
        let mut w = BlockWriter::new(d.path(), "b1").expect("writer");
        for (l, samples) in &runs {
            w.add_series(l, samples).expect("add");
        }
        w.finish(None, 1, vec![]).expect("finish").expect("non-empty");
        let b = Block::open(&d.path().join("b1")).expect("open");
        let ends = [
            0usize,
            1,
            19,
            20,
            200,
            BLOCK_CHUNK_SAMPLES - 1,
            BLOCK_CHUNK_SAMPLES,
            BLOCK_CHUNK_SAMPLES + 1,
            n - 2,
            n - 1,
        ];
        let check = |tombs: &[(i64, i64)]| {
            for &z in &ends {
                for span in [0, 1, 20, 300, n as i64] {
                    let hi = times[z];
                    let lo = hi - span * 15_000 + 1;
                    for id in (0..8u32).chain([0, 0, 5]) {
                        let whole: Vec<Sample> = runs[id as usize]
                            .1
                            .iter()
                            .copied()
                            .filter(|s| s.t >= lo && s.t <= hi && !tombs.iter().any(|&(a, z)| s.t >= a && s.t <= z))
                            .collect();
                        let want = whole.last().copied();
                        for last_only in [true, false, true] {
                            let mut out = vec![Sample::new(-1, 0.0)];
                            let got = b.read(id, lo, hi, last_only, None, &mut out).expect("read");
                            assert_eq!(got.is_some(), want.is_some(), "series {id}, {lo}..={hi}");
                            assert_eq!(out[0], Sample::new(-1, 0.0), "the caller's samples stay");
                            let last = (out.len() > 1).then(|| out[out.len() - 1]);
                            assert_eq!(last, want, "series {id}, {lo}..={hi}, last only {last_only}");
                            if !last_only {
                                assert_eq!(out[1..], whole[..], "series {id}, {lo}..={hi}");
                            }
                        }
                    }
                }
            }
        };
        check(&[]);
        let tomb = (times[n - 5], times[n - 1]);
        b.add_tombstones(&(0..8).map(|id| (id, tomb.0, tomb.1)).collect::<Vec<_>>())
            .expect("tombstones");
        check(&[tomb]);
    }

    /// Held by the tests that fill or look into the process-wide kept label
    /// sets, so that one's filling (which empties every shard) cannot drop
    /// the sets another expects to find.
    static KEPT_LABEL_SETS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn whole_label_sets_read_again_are_the_kept_ones_until_the_block_goes() {
        let _only = KEPT_LABEL_SETS.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempfile::tempdir().expect("tempdir");
        write_block(d.path(), 50);
        let b = Block::open(&d.path().join("b1")).expect("open");
        let read = |id: u32, names: Option<&[String]>| {
            let mut out = Vec::new();
            b.read(id, 0, 30_000, false, names, &mut out)
                .expect("read")
                .expect("has samples")
        };
        let first: Vec<Labels> = (0..50).map(|id| read(id, None)).collect();
        for (id, l) in first.iter().enumerate() {
            // The set read again is the one kept, equal to the entry's labels.
            let again = read(id as u32, None);
            assert!(again.is_same_set(l), "series {id}");
            assert_eq!(Some(again), b.labels(id as u32));
            // A projected read builds its own sets.
            let only = read(id as u32, Some(&["even".to_string()]));
            assert!(!only.is_same_set(l));
            assert_eq!(
                only.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
                ["__name__", "even"]
            );
        }
        let serial = b.serial;
        assert!(SERIES_LABELS.get((serial, 7)).is_some());
        // This thread's near copy is the kept set itself.
        let near = near_label_set((serial, 7)).expect("near");
        assert!(near.is_same_set(&first[7]));
        drop(b);
        assert!((0..50).all(|id| SERIES_LABELS.get((serial, id)).is_none()));
        // Forgetting the block empties the near copies at the next look.
        assert!((0..50).all(|id| near_label_set((serial, id)).is_none()));
        assert_eq!(NEAR_LABELS.with_borrow(|n| n.sets.len()), 0);
    }

    #[test]
    fn the_kept_label_sets_stay_bounded() {
        let _only = KEPT_LABEL_SETS.lock().unwrap_or_else(|e| e.into_inner());
        // A serial no block has.
        let serial = u64::MAX - 1;
        let l = Labels::from_pairs([("__name__", "x")]);
        for id in 0..(SERIES_LABELS_SHARDS * SERIES_LABELS_PER_SHARD * 2) as u32 {
            SERIES_LABELS.insert((serial, id), l.clone());
        }
        assert!(SERIES_LABELS.len() <= SERIES_LABELS_SHARDS * SERIES_LABELS_PER_SHARD);
        SERIES_LABELS.forget(serial);
        for id in 0..(NEAR_LABEL_SETS * 2 + 1) as u32 {
            keep_near_label_set((serial, id), &l);
            assert!(NEAR_LABELS.with_borrow(|n| n.sets.len()) <= NEAR_LABEL_SETS);
        }
        let last = (serial, (NEAR_LABEL_SETS * 2) as u32);
        assert!(NEAR_LABELS.with_borrow(|n| n.sets.contains_key(&last)));
    }

    #[test]
    fn tombstones_hide_samples_and_persist() {
        let d = tempfile::tempdir().expect("tempdir");
        write_block(d.path(), 2);
        let b = Block::open(&d.path().join("b1")).expect("open");
        b.add_tombstones(&[(0, 0, 15_000)]).expect("tombstones");
        let b = Block::open(&d.path().join("b1")).expect("reopen");
        let mut out = Vec::new();
        b.samples(0, 0, 30_000, &mut out).expect("samples");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_label_set_out_of_order_is_a_damaged_entry() {
        let d = tempfile::tempdir().expect("tempdir");
        write_block(d.path(), 10);
        let dir = d.path().join("b1");
        let mut b = fs::read(dir.join("index")).expect("read");
        // The symbol "even" becomes "zzzz", checksums made right again: every
        // series' names are then "__name__", "zzzz", "i", out of order.
        let at = b.windows(4).position(|w| w == b"even").expect("the symbol");
        b[at..at + 4].copy_from_slice(b"zzzz");
        let toc = b.len() - TOC_LEN;
        let off = u64::from_le_bytes(b[toc..toc + 8].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(b[toc + 8..toc + 16].try_into().unwrap()) as usize;
        assert!((off..off + len).contains(&at), "the symbols section holds the symbol");
        let crc = crc32fast::hash(&b[off..off + len]);
        b[toc + 16..toc + 20].copy_from_slice(&crc.to_le_bytes());
        let crc = crc32fast::hash(&b[toc..toc + TOC_SECTIONS * 20]);
        let n = b.len();
        b[n - 8..n - 4].copy_from_slice(&crc.to_le_bytes());
        fs::write(dir.join("index"), &b).expect("write");
        let blk = Block::open(&dir).expect("checksums right again");
        assert_eq!(blk.num_series(), 10);
        for id in 0..10 {
            assert_eq!(blk.labels(id), None, "series {id}");
            // A projection that keeps names still in order is a set of its own.
            assert!(blk.labels_named(id, &["i".to_string()]).is_some(), "series {id}");
        }
    }

    #[test]
    fn any_flipped_byte_is_detected_at_open() {
        let d = tempfile::tempdir().expect("tempdir");
        write_block(d.path(), 10);
        let dir = d.path().join("b1");
        for file in ["index", "chunks"] {
            let orig = fs::read(dir.join(file)).expect("read");
            for pos in (0..orig.len()).step_by(orig.len() / 37 + 1) {
                let mut bad = orig.clone();
                bad[pos] ^= 0x01;
                fs::write(dir.join(file), &bad).expect("write");
                assert!(
                    matches!(Block::open(&dir), Err(Error::Corrupt { .. })),
                    "{file} byte {pos} not detected"
                );
            }
            fs::write(dir.join(file), &orig).expect("restore");
        }
        assert!(Block::open(&dir).is_ok());
    }
}
