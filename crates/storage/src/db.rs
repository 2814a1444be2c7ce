//! The embedded store: [`Db`] ties the WAL, the head and the blocks together and
//! runs block cutting, compaction and retention in a background thread.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use sextant_model::{Labels, Matcher, ReadError, Sample, SelectHints, Series, Timestamp};

use crate::block::{new_block_id, Block, BlockMeta, BlockWriter};
use crate::compact;
use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::head::{Head, MemSeries, SampleRejection};
use crate::headchunks::ChunkFile;
use crate::querier::{self, HeadReader, SeriesReader};
use crate::wal::{self, FsyncPolicy, Record, Wal, WalSample};

const HOUR_MS: i64 = 3_600_000;

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Span of the blocks cut from the head (ms). Default 2 h.
    pub block_range_ms: i64,
    /// Blocks whose data is all older than this, relative to the newest sample,
    /// are deleted. `None` keeps everything. Default 15 days.
    pub retention_ms: Option<i64>,
    /// The oldest blocks are deleted while blocks and WAL exceed this many bytes.
    pub retention_bytes: Option<u64>,
    pub fsync: FsyncPolicy,
    /// Samples up to this much older than a series' newest sample are accepted
    /// out of order. 0 disables out-of-order ingestion.
    pub ooo_window_ms: i64,
    /// Run cutting, compaction and retention in a background thread.
    pub background: bool,
    /// How often the background thread wakes.
    pub tick: Duration,
    /// Most series the head may hold; samples of further new series are
    /// rejected. `None`: no limit.
    pub max_series: Option<u64>,
    /// Most series per metric name in the head. `None`: no limit.
    pub max_series_per_metric: Option<u64>,
    /// A commit with a sample older than this (relative to the wall clock), or
    /// a delete, counts as a change to old data in [`Db::old_data_changes`].
    pub late_write_ms: i64,
    /// Keep the head's sealed chunks in segment files under `head_chunks/`,
    /// read through a memory map, instead of on the heap
    /// ([`crate::headchunks`]). Default on.
    pub head_chunks_on_disk: bool,
    /// Bytes of decoded block chunk pages kept in memory for reads, shared by
    /// every store in the process (the last one opened sets it). Default
    /// 256 MiB.
    pub block_cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            block_range_ms: 2 * HOUR_MS,
            retention_ms: Some(15 * 24 * HOUR_MS),
            retention_bytes: None,
            fsync: FsyncPolicy::IntervalMs(1000),
            ooo_window_ms: 0,
            background: true,
            tick: Duration::from_secs(1),
            max_series: None,
            max_series_per_metric: None,
            late_write_ms: 10 * 60_000,
            head_chunks_on_disk: true,
            block_cache_bytes: crate::block::DEFAULT_DECODED_PAGES_BUDGET,
        }
    }
}

/// Counters exposed for self-monitoring.
#[derive(Debug, Default)]
pub struct Metrics {
    pub samples_appended: AtomicU64,
    pub samples_duplicate: AtomicU64,
    pub rejected_out_of_order: AtomicU64,
    pub rejected_too_old: AtomicU64,
    pub rejected_duplicate_timestamp: AtomicU64,
    pub rejected_series_limit: AtomicU64,
    /// Commits that wrote samples older than `late_write_ms`, and deletes.
    pub old_data_changes: AtomicU64,
    pub series_created: AtomicU64,
    pub head_cuts: AtomicU64,
    pub compactions: AtomicU64,
    pub compaction_failures: AtomicU64,
    pub compaction_micros: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    pub blocks_deleted_by_retention: AtomicU64,
    pub commits: AtomicU64,
    pub commit_micros: AtomicU64,
}

/// Why one sample was rejected at commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub labels: Labels,
    pub t: Timestamp,
    pub reason: SampleRejection,
}

/// The outcome of [`Appender::commit`]: accepted samples are durable in the WAL.
#[derive(Debug, Clone, Default)]
pub struct CommitReport {
    pub appended: usize,
    pub duplicates: usize,
    pub new_series: usize,
    pub rejected_count: usize,
    /// The first rejections, with the series and timestamps (at most 64).
    pub rejected: Vec<Rejected>,
}

/// Cardinality and size of the store, for the status page.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub head_series: u64,
    pub head_min_time: i64,
    pub head_max_time: i64,
    pub head_bytes: usize,
    pub num_blocks: usize,
    pub blocks_bytes: u64,
    pub wal_bytes: u64,
    pub series_count_by_metric_name: Vec<(String, u64)>,
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

struct Inner {
    dir: PathBuf,
    blocks_dir: PathBuf,
    opts: Options,
    head: Head,
    /// Where sealed head chunks leave the heap for, when enabled.
    head_chunks: Option<ChunkFile>,
    wal: Wal,
    blocks: RwLock<Vec<Arc<Block>>>,
    /// Appenders hold it shared while they apply samples; the block cutter takes
    /// it exclusively for an instant after raising the head floor, so that no
    /// sample below the floor can slip in after the block's data was read.
    append_gate: RwLock<()>,
    /// A token every read holds for its whole length, taken with its view of
    /// the blocks. A head cut swaps in a new token together with its new blocks
    /// and, before the head drops their range, waits until no read holds the
    /// old one: reads that began before still expect that range in the head.
    /// Reads that begin meanwhile take the new token and are never held up.
    read_epoch: Mutex<Arc<()>>,
    /// The empty label set, shared by appends by handle.
    no_labels: Labels,
    /// Serialises cut, compaction, retention, delete and flush.
    maintenance: Mutex<()>,
    closed: AtomicBool,
    wake: (Mutex<bool>, Condvar),
    metrics: Metrics,
    _lock: File,
}

/// An embedded Sextant store over one directory.
pub struct Db {
    inner: Arc<Inner>,
    bg: Mutex<Option<JoinHandle<()>>>,
}

/// What opening found, for the startup log.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub blocks: usize,
    pub quarantined: Vec<String>,
    pub wal: wal::ReplayReport,
    pub replayed_samples: u64,
    pub replayed_series: u64,
    /// Replayed samples of series whose Series record was lost to damage:
    /// dropped, since their labels are unknown.
    pub orphan_samples: u64,
    pub elapsed: Duration,
}

impl Db {
    /// Opens (or creates) a store in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Db> {
        Self::open_with_report(dir, opts).map(|(db, _)| db)
    }

    /// Opens a store and says what recovery did.
    pub fn open_with_report(dir: impl AsRef<Path>, opts: Options) -> Result<(Db, OpenReport)> {
        let started = Instant::now();
        if opts.block_range_ms <= 0 {
            return Err(Error::Invalid("block range must be positive".into()));
        }
        crate::block::set_decoded_pages_budget(opts.block_cache_bytes);
        let dir = dir.as_ref().to_path_buf();
        let blocks_dir = dir.join("blocks");
        fs::create_dir_all(&blocks_dir)?;
        let lock = File::create(dir.join("LOCK"))?;
        lock.try_lock()
            .map_err(|_| Error::Invalid(format!("data directory {} is in use by another process", dir.display())))?;
        let mut report = OpenReport::default();
        let blocks = open_blocks(&dir, &blocks_dir, &mut report)?;
        let head = Head::new();
        if let Some(maxt) = blocks.iter().map(|b| b.meta().max_time).max() {
            head.set_floor(maxt);
            head.set_read_floor(maxt);
        }
        let floor = head.floor();
        // Before replay, which seals chunks: what an earlier process left
        // there is deleted.
        let head_chunks = if opts.head_chunks_on_disk {
            Some(ChunkFile::open(&dir.join("head_chunks"))?)
        } else {
            None
        };
        let mut series_n = 0u64;
        let mut samples_n = 0u64;
        let mut orphans = 0u64;
        let (wal, wal_report) = Wal::open(&dir.join("wal"), opts.fsync, &mut |rec| match rec {
            Record::Series(ss) => {
                for (r, ls) in ss {
                    if head.by_id(r).is_none() {
                        let (s, _) = head.get_or_create(&ls, Some(r));
                        s.logged.store(true, Ordering::Relaxed);
                        series_n += 1;
                    }
                }
            }
            Record::Samples(ss) => {
                for s in ss {
                    if s.t < floor {
                        continue; // already in a block
                    }
                    if let Some(ser) = head.by_id(s.sref) {
                        let mut d = ser.data.lock();
                        d.append_replayed(s.t, s.v);
                        if let Some(f) = &head_chunks {
                            if d.has_chunks_on_heap() {
                                d.move_chunks_to(f);
                            }
                        }
                        head.note_time(s.t);
                        samples_n += 1;
                    } else {
                        // Never hand this id to a new series: a later replay
                        // would give it these samples.
                        head.reserve_id(s.sref);
                        orphans += 1;
                    }
                }
            }
            Record::Tombstones(ts) => {
                for (r, a, b) in ts {
                    head.reserve_id(r);
                    head.add_tombstone(r, a, b);
                }
            }
        })?;
        report.wal = wal_report;
        report.replayed_samples = samples_n;
        report.replayed_series = series_n;
        report.orphan_samples = orphans;
        if orphans > 0 {
            tracing::warn!(
                target: "sextant::storage",
                "WAL replay dropped {orphans} samples of series whose Series record was damaged"
            );
        }
        report.blocks = blocks.len();
        let inner = Arc::new(Inner {
            blocks_dir,
            dir,
            opts,
            head,
            head_chunks,
            wal,
            blocks: RwLock::new(blocks),
            append_gate: RwLock::new(()),
            read_epoch: Mutex::new(Arc::new(())),
            no_labels: Labels::empty(),
            maintenance: Mutex::new(()),
            closed: AtomicBool::new(false),
            wake: (Mutex::new(false), Condvar::new()),
            metrics: Metrics::default(),
            _lock: lock,
        });
        let bg = if inner.opts.background {
            let i2 = inner.clone();
            Some(
                std::thread::Builder::new()
                    .name("sextant-maint".into())
                    .spawn(move || background(i2))?,
            )
        } else {
            None
        };
        report.elapsed = started.elapsed();
        Ok((
            Db {
                inner,
                bg: Mutex::new(bg),
            },
            report,
        ))
    }

    /// A reference to the series with these labels (created if needed), for
    /// [`Appender::append_ref`].
    pub fn series_ref(&self, labels: &Labels) -> Result<SeriesRef> {
        self.check_open()?;
        if labels.is_empty() {
            return Err(Error::Invalid("a series needs at least one label".into()));
        }
        if let Some(SampleRejection::SeriesLimit { limit, per_metric }) = self.series_limit_hit(labels) {
            let what = if per_metric { "its metric name" } else { "the store" };
            return Err(Error::Invalid(format!(
                "series {labels} is new and {what} is at its limit of {limit} series"
            )));
        }
        let (series, created) = self.inner.head.get_or_create(labels, None);
        if created {
            self.inner.metrics.series_created.fetch_add(1, Ordering::Relaxed);
        }
        Ok(SeriesRef {
            labels: labels.clone(),
            series,
        })
    }

    /// A batch of samples to commit together.
    /// A handle on the series with these labels, created if new (subject to
    /// the series limits).
    pub fn series_handle(&self, labels: &Labels) -> Result<SeriesHandle> {
        let r = self.series_ref(labels)?;
        Ok(SeriesHandle { series: r.series })
    }

    /// Whether the handle's series has exactly these labels, in order.
    pub fn handle_matches<'a>(&self, h: &SeriesHandle, pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
        self.inner.head.labels_eq_bytes(&h.series, pairs)
    }

    /// For a series not in the head: the limit it would exceed, if any.
    /// Limits are soft under concurrency: writers racing to add the last
    /// series may each add one.
    fn series_limit_hit(&self, labels: &Labels) -> Option<SampleRejection> {
        let o = &self.inner.opts;
        if o.max_series.is_none() && o.max_series_per_metric.is_none() {
            return None;
        }
        if self.inner.head.get(labels).is_some() {
            return None;
        }
        if let Some(limit) = o.max_series {
            if self.inner.head.num_series() >= limit {
                return Some(SampleRejection::SeriesLimit {
                    limit,
                    per_metric: false,
                });
            }
        }
        if let Some(limit) = o.max_series_per_metric {
            let name = labels.metric_name();
            let m = [Matcher::equal(sextant_model::METRIC_NAME, name)];
            if self.inner.head.postings(&m).len() >= limit {
                return Some(SampleRejection::SeriesLimit {
                    limit,
                    per_metric: true,
                });
            }
        }
        None
    }

    pub fn appender(&self) -> Appender<'_> {
        Appender {
            db: self,
            series: Vec::new(),
            samples: Vec::new(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The blocks to read and the head floor that goes with them, taken
    /// together; the token keeps the head from dropping that range meanwhile.
    fn read_view(&self) -> (Arc<()>, Vec<Arc<Block>>, i64) {
        let blocks = self.inner.blocks.read();
        let floor = self.inner.head.read_floor();
        let token = self.inner.read_epoch.lock().clone();
        (token, blocks.clone(), floor)
    }

    /// Matching series with their samples in `[mint, maxt]`, merged over head and blocks.
    pub fn select(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>> {
        self.select_limited(ms, mint, maxt, None)
    }

    /// Like [`Db::select`], failing once more than `limit` samples would load.
    pub fn select_limited(&self, ms: &[Matcher], mint: i64, maxt: i64, limit: Option<usize>) -> Result<Vec<Series>> {
        self.select_with(ms, mint, maxt, limit, true)
    }

    /// Like [`Db::select_limited`]; with `sorted` false the series come in
    /// the order the store meets them.
    pub fn select_with(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        limit: Option<usize>,
        sorted: bool,
    ) -> Result<Vec<Series>> {
        self.check_open()?;
        let (_gate, blocks, floor) = self.read_view();
        let head = HeadReader(&self.inner.head, floor);
        let mut readers: Vec<&dyn SeriesReader> = blocks.iter().map(|b| &**b as &dyn SeriesReader).collect();
        readers.push(&head);
        querier::select(&readers, ms, mint, maxt, limit, sorted)
    }

    /// Matching series in any order, each series' samples passed through
    /// `map` as they are read (see [`querier::select_map`]).
    pub fn select_map(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
        map: &sextant_model::SampleMap<'_>,
    ) -> Result<sextant_model::Mapped> {
        self.check_open()?;
        let (_gate, blocks, floor) = self.read_view();
        let head = HeadReader(&self.inner.head, floor);
        let mut readers: Vec<&dyn SeriesReader> = blocks.iter().map(|b| &**b as &dyn SeriesReader).collect();
        readers.push(&head);
        querier::select_map(&readers, ms, mint, maxt, &hints, map)
    }

    /// [`select_map`](Self::select_map) with each part's mapped series
    /// handed to a part made by `part` (see [`querier::select_fold`]).
    pub fn select_fold(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
        map: &sextant_model::SampleMap<'_>,
        part: &sextant_model::NewFoldPart<'_>,
    ) -> Result<sextant_model::Folded> {
        self.check_open()?;
        let (_gate, blocks, floor) = self.read_view();
        let head = HeadReader(&self.inner.head, floor);
        let mut readers: Vec<&dyn SeriesReader> = blocks.iter().map(|b| &**b as &dyn SeriesReader).collect();
        readers.push(&head);
        querier::select_fold(&readers, ms, mint, maxt, &hints, map, part)
    }

    /// Label sets of matching series with data in the range.
    pub fn series(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Labels>> {
        self.check_open()?;
        let (_gate, blocks, floor) = self.read_view();
        let head = HeadReader(&self.inner.head, floor);
        let mut readers: Vec<&dyn SeriesReader> = blocks.iter().map(|b| &**b as &dyn SeriesReader).collect();
        readers.push(&head);
        querier::series_labels(&readers, ms, mint, maxt)
    }

    /// Label names of matching series (all series when `ms` is empty).
    pub fn label_names(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>> {
        self.check_open()?;
        let (_gate, blocks, floor) = self.read_view();
        let head = HeadReader(&self.inner.head, floor);
        let mut readers: Vec<&dyn SeriesReader> = blocks.iter().map(|b| &**b as &dyn SeriesReader).collect();
        readers.push(&head);
        Ok(querier::label_names(&readers, ms, mint, maxt))
    }

    /// Values of label `name` over matching series.
    pub fn label_values(&self, name: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>> {
        self.check_open()?;
        let (_gate, blocks, floor) = self.read_view();
        let head = HeadReader(&self.inner.head, floor);
        let mut readers: Vec<&dyn SeriesReader> = blocks.iter().map(|b| &**b as &dyn SeriesReader).collect();
        readers.push(&head);
        Ok(querier::label_values(&readers, name, ms, mint, maxt))
    }

    /// Deletes samples of matching series in `[mint, maxt]` (tombstones; space is
    /// reclaimed by compaction).
    /// How many times data older than `late_write_ms` may have changed: caches
    /// of query results over old data compare this before reuse.
    pub fn old_data_changes(&self) -> u64 {
        self.inner.metrics.old_data_changes.load(Ordering::Acquire)
    }

    pub fn delete(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<usize> {
        self.inner.metrics.old_data_changes.fetch_add(1, Ordering::AcqRel);
        self.check_open()?;
        let _m = self.inner.maintenance.lock();
        let mut n = 0;
        let ids = self.inner.head.ids_for(ms);
        if !ids.is_empty() {
            let ts: Vec<(u32, i64, i64)> = ids.iter().map(|id| (*id, mint, maxt)).collect();
            let mut body = Vec::new();
            wal::encode_tombstones(&mut body, &ts);
            self.inner.wal.log(&[&body])?;
            for id in &ids {
                self.inner.head.add_tombstone(*id, mint, maxt);
            }
            n += ids.len();
        }
        for b in self.inner.blocks.read().iter() {
            if b.meta().max_time <= mint || b.meta().min_time > maxt {
                continue;
            }
            let ids: Vec<(u32, i64, i64)> = b.postings_for(ms).iter().map(|id| (id, mint, maxt)).collect();
            if !ids.is_empty() {
                n += ids.len();
                b.add_tombstones(&ids)?;
            }
        }
        Ok(n)
    }

    /// Persists the whole head as blocks now.
    pub fn flush(&self) -> Result<Vec<BlockMeta>> {
        self.check_open()?;
        let _m = self.inner.maintenance.lock();
        let h = &self.inner.head;
        let maxt = h.max_time();
        if maxt == i64::MIN {
            return Ok(Vec::new());
        }
        let cut = maxt.saturating_add(1);
        let range = self.inner.opts.block_range_ms;
        let lo = h.min_time().max(h.floor());
        let mut metas = Vec::new();
        // One block per aligned range, so flushed blocks compact like cut ones.
        let mut start = lo.div_euclid(range) * range;
        let new_blocks = self.inner.cut_head(cut, |samples_of| {
            while start < cut {
                let end = (start + range).min(cut);
                if let Some(m) = samples_of(start, end)? {
                    metas.push(m);
                }
                start = end;
            }
            Ok(())
        })?;
        drop(new_blocks);
        Ok(metas)
    }

    /// Runs one round of cutting, compaction and retention now.
    pub fn run_maintenance(&self) -> Result<()> {
        self.check_open()?;
        self.inner.maintain()
    }

    /// Fsyncs the WAL.
    pub fn sync(&self) -> Result<()> {
        self.inner.wal.sync()
    }

    /// Copies the current blocks (after flushing the head) into `dst` with hard
    /// links, giving a consistent, restorable snapshot.
    pub fn snapshot(&self, dst: &Path) -> Result<usize> {
        self.flush()?;
        let _m = self.inner.maintenance.lock();
        let blocks = self.inner.blocks.read().clone();
        let out = dst.join("blocks");
        fs::create_dir_all(&out)?;
        for b in &blocks {
            let bd = out.join(&b.meta().id);
            fs::create_dir_all(&bd)?;
            for e in fs::read_dir(b.dir())? {
                let e = e?;
                let to = bd.join(e.file_name());
                if fs::hard_link(e.path(), &to).is_err() {
                    fs::copy(e.path(), &to)?;
                }
            }
        }
        fsync_dir(&out)?;
        Ok(blocks.len())
    }

    /// Cardinality and size statistics; `limit` bounds each top list.
    pub fn stats(&self, limit: usize) -> Stats {
        let h = &self.inner.head;
        let pairs = h.pair_counts();
        let mut by_metric: Vec<(String, u64)> = pairs
            .iter()
            .filter(|p| p.0 == sextant_model::METRIC_NAME)
            .map(|p| (p.1.clone(), p.2))
            .collect();
        let mut values_by_name: std::collections::HashMap<&str, (u64, u64)> = std::collections::HashMap::new();
        for (n, v, c) in &pairs {
            let e = values_by_name.entry(n.as_str()).or_default();
            e.0 += 1;
            e.1 += v.len() as u64 * c;
        }
        let mut vcount: Vec<(String, u64)> = values_by_name.iter().map(|(n, (c, _))| (n.to_string(), *c)).collect();
        let mut mem: Vec<(String, u64)> = values_by_name.iter().map(|(n, (_, m))| (n.to_string(), *m)).collect();
        let mut by_pair: Vec<(String, u64)> = pairs.iter().map(|(n, v, c)| (format!("{n}={v}"), *c)).collect();
        for v in [&mut by_metric, &mut vcount, &mut mem, &mut by_pair] {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(limit);
        }
        let blocks = self.inner.blocks.read();
        Stats {
            head_series: h.num_series(),
            head_min_time: h.min_time().max(h.floor()),
            head_max_time: h.max_time(),
            head_bytes: h.heap_bytes(),
            num_blocks: blocks.len(),
            blocks_bytes: blocks.iter().map(|b| b.size_bytes()).sum(),
            wal_bytes: self.inner.wal.size_bytes(),
            series_count_by_metric_name: by_metric,
            label_value_count_by_label_name: vcount,
            memory_in_bytes_by_label_name: mem,
            series_count_by_label_value_pair: by_pair,
        }
    }

    /// Metadata of every block, oldest first.
    pub fn blocks(&self) -> Vec<BlockMeta> {
        self.inner.blocks.read().iter().map(|b| b.meta().clone()).collect()
    }

    /// Heap bytes the head holds.
    pub fn head_bytes(&self) -> usize {
        self.inner.head.heap_bytes()
    }

    /// Number of series in the head.
    pub fn head_series(&self) -> u64 {
        self.inner.head.num_series()
    }

    /// Newest sample time in the store.
    pub fn max_time(&self) -> i64 {
        let b = self
            .inner
            .blocks
            .read()
            .iter()
            .map(|b| b.meta().max_time - 1)
            .max()
            .unwrap_or(i64::MIN);
        b.max(self.inner.head.max_time())
    }

    /// Oldest sample time in the store.
    pub fn min_time(&self) -> i64 {
        let b = self
            .inner
            .blocks
            .read()
            .iter()
            .map(|b| b.meta().min_time)
            .min()
            .unwrap_or(i64::MAX);
        b.min(self.inner.head.min_time().max(self.inner.head.floor()))
    }

    /// Stops background work and syncs the WAL. Further calls fail with `Closed`.
    pub fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        {
            let (m, c) = &self.inner.wake;
            *m.lock() = true;
            c.notify_all();
        }
        if let Some(h) = self.bg.lock().take() {
            let _ = h.join();
        }
        self.inner.wal.sync()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl sextant_model::Queryable for Db {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64, hints: SelectHints) -> Result<Vec<Series>, ReadError> {
        self.select_with(ms, mint, maxt, hints.sample_limit, !hints.any_order)
            .map_err(read_err)
    }
    fn select_map(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
        map: &sextant_model::SampleMap<'_>,
    ) -> Result<sextant_model::Mapped, ReadError> {
        Db::select_map(self, ms, mint, maxt, hints, map).map_err(read_err)
    }
    fn select_fold(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
        map: &sextant_model::SampleMap<'_>,
        part: &sextant_model::NewFoldPart<'_>,
    ) -> Result<sextant_model::Folded, ReadError> {
        Db::select_fold(self, ms, mint, maxt, hints, map, part).map_err(read_err)
    }
    fn series(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Labels>, ReadError> {
        Db::series(self, ms, mint, maxt).map_err(read_err)
    }
    fn label_names(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
        Db::label_names(self, ms, mint, maxt).map_err(read_err)
    }
    fn label_values(&self, name: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
        Db::label_values(self, name, ms, mint, maxt).map_err(read_err)
    }
}

fn read_err(e: Error) -> ReadError {
    match e {
        Error::TooManySamples { limit } => ReadError::TooManySamples { limit },
        e => ReadError::Storage(e.to_string()),
    }
}

/// A handle to one head series, for appending without a label lookup.
#[derive(Clone)]
pub struct SeriesRef {
    labels: Labels,
    series: Arc<MemSeries>,
}

impl SeriesRef {
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
}

/// A series in the head, held without its label set (the head has it): a
/// cheaper [`SeriesRef`] for callers that keep one per series, such as a
/// receiver's cache of known senders' series.
#[derive(Clone)]
pub struct SeriesHandle {
    series: Arc<MemSeries>,
}

/// What a commit decided for one of its samples.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// In order: goes into the head after the WAL write.
    Staged,
    /// Rejected, a duplicate, or already in the head.
    Other,
}

/// A batch of samples committed together: one WAL write, one acknowledgement.
pub struct Appender<'a> {
    db: &'a Db,
    /// Each series of the batch (with its head series when the caller holds a
    /// reference) and the range of its samples in `samples`.
    series: Vec<(Labels, Option<Arc<MemSeries>>, usize, usize)>,
    samples: Vec<Sample>,
}

impl Appender<'_> {
    /// Adds one sample.
    pub fn append(&mut self, labels: &Labels, t: Timestamp, v: f64) {
        let end = self.samples.len();
        self.samples.push(Sample { t, v });
        match self.series.last_mut() {
            Some((l, _, _, e)) if *e == end && l == labels => *e = end + 1,
            _ => self.series.push((labels.clone(), None, end, end + 1)),
        }
    }

    /// Adds one sample to a series by reference, skipping the label lookup.
    pub fn append_ref(&mut self, r: &SeriesRef, t: Timestamp, v: f64) {
        let end = self.samples.len();
        self.samples.push(Sample { t, v });
        self.series
            .push((r.labels.clone(), Some(r.series.clone()), end, end + 1));
    }

    /// Adds a sample by handle. Its labels come from the head when needed
    /// (for a rejection message, or to find the series again after the head
    /// dropped it).
    pub fn append_handle(&mut self, h: &SeriesHandle, t: Timestamp, v: f64) {
        self.append_handle_slice(h, &[Sample { t, v }]);
    }

    /// Adds samples of one series by handle.
    pub fn append_handle_slice(&mut self, h: &SeriesHandle, samples: &[Sample]) {
        let start = self.samples.len();
        self.samples.extend_from_slice(samples);
        let none = self.db.inner.no_labels.clone();
        self.series
            .push((none, Some(h.series.clone()), start, self.samples.len()));
    }

    /// Adds, for each `(handle, range)` of `known`, the samples `range` of
    /// `samples` to that series. The first call on an empty batch keeps the
    /// vector itself, so a receiver's decoded samples are not copied; a range
    /// that is empty or lies outside `samples` adds nothing.
    pub fn append_handle_ranges(&mut self, samples: Vec<Sample>, known: &[(SeriesHandle, std::ops::Range<usize>)]) {
        let base = if self.samples.is_empty() {
            self.samples = samples;
            0
        } else {
            let b = self.samples.len();
            self.samples.extend_from_slice(&samples);
            b
        };
        let n = self.samples.len() - base;
        let none = &self.db.inner.no_labels;
        self.series.extend(
            known
                .iter()
                .filter(|(_, r)| r.start < r.end && r.end <= n)
                .map(|(h, r)| (none.clone(), Some(h.series.clone()), base + r.start, base + r.end)),
        );
    }

    /// Adds samples of one series.
    pub fn append_series(&mut self, labels: Labels, samples: Vec<Sample>) {
        self.append_slice(labels, &samples);
    }

    /// Adds samples of one series without handing over a vector.
    pub fn append_slice(&mut self, labels: Labels, samples: &[Sample]) {
        let start = self.samples.len();
        self.samples.extend_from_slice(samples);
        self.series.push((labels, None, start, self.samples.len()));
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Writes the batch to the WAL as one record and then applies it; returns
    /// once it is in the WAL. Invalid samples are reported, not fatal to the
    /// batch.
    ///
    /// Every series of the batch stays locked, in id order, from validation
    /// until its samples are applied, WAL write included. So a sample is
    /// visible only once it is in the WAL (a failed WAL write, such as on a
    /// full disk, leaves the head as it was), and concurrent batches for the
    /// same series reach the WAL in the order they are applied, so a replay
    /// makes the same decisions.
    pub fn commit(self) -> Result<CommitReport> {
        let started = Instant::now();
        self.db.check_open()?;
        let inner = &*self.db.inner;
        let m = &inner.metrics;
        let mut report = CommitReport::default();
        let mut new_series: Vec<(u32, Labels)> = Vec::new();
        let mut logged_now = Vec::new();
        let mut wal_samples = wal::SamplesRecord::with_capacity(self.len());
        let (mut tmin, mut tmax) = (i64::MAX, i64::MIN);
        let reject = |report: &mut CommitReport, labels: &Labels, t: i64, reason: SampleRejection| {
            match reason {
                SampleRejection::OutOfOrder { .. } => &m.rejected_out_of_order,
                SampleRejection::TooOld { .. } => &m.rejected_too_old,
                SampleRejection::DuplicateTimestamp { .. } => &m.rejected_duplicate_timestamp,
                SampleRejection::SeriesLimit { .. } => &m.rejected_series_limit,
            }
            .fetch_add(1, Ordering::Relaxed);
            report.rejected_count += 1;
            if report.rejected.len() < 64 {
                report.rejected.push(Rejected {
                    labels: labels.clone(),
                    t,
                    reason,
                });
            }
        };
        let _gate = inner.append_gate.read();
        let floor = inner.head.floor();
        let window = inner.opts.ooo_window_ms;
        // 1. Each entry's series, created if new, unless a limit refuses it.
        let mut resolved: Vec<Option<Arc<MemSeries>>> = Vec::with_capacity(self.series.len());
        for (labels, held, lo, hi) in &self.series {
            if labels.is_empty() && held.is_none() {
                return Err(Error::Invalid("a series needs at least one label".into()));
            }
            if held.is_none() {
                if let Some(reason) = self.db.series_limit_hit(labels) {
                    for smp in &self.samples[*lo..*hi] {
                        reject(&mut report, labels, smp.t, reason.clone());
                    }
                    resolved.push(None);
                    continue;
                }
            }
            let s = match held {
                Some(s) => s.clone(),
                None => {
                    let (s, created) = inner.head.get_or_create(labels, None);
                    if created {
                        report.new_series += 1;
                        m.series_created.fetch_add(1, Ordering::Relaxed);
                    }
                    s
                }
            };
            resolved.push(Some(s));
        }
        // 2. Lock the distinct series in id order; a series garbage-collected
        // since it was resolved is looked up (and created) again.
        let mut distinct: Vec<Arc<MemSeries>>;
        let mut slot: Vec<usize>;
        loop {
            let mut order: Vec<usize> = (0..resolved.len()).filter(|i| resolved[*i].is_some()).collect();
            let id = |i: &usize| resolved[*i].as_ref().map_or(0, |s| s.id);
            // Senders usually write series in the order they were created.
            if !order.windows(2).all(|w| id(&w[0]) <= id(&w[1])) {
                order.sort_by_key(id);
            }
            distinct = Vec::with_capacity(order.len());
            slot = vec![usize::MAX; resolved.len()];
            for i in order {
                let Some(s) = resolved[i].as_ref() else { continue };
                if distinct.last().is_none_or(|d: &Arc<MemSeries>| d.id != s.id) {
                    distinct.push(s.clone());
                }
                slot[i] = distinct.len() - 1;
            }
            let removed: Vec<u32> = distinct
                .iter()
                .filter(|s| s.data.lock().is_removed())
                .map(|s| s.id)
                .collect();
            if removed.is_empty() {
                break;
            }
            for (i, (labels, _, _, _)) in self.series.iter().enumerate() {
                if let Some(old) = resolved[i].as_ref().filter(|s| removed.contains(&s.id)) {
                    // Entries by handle carry no labels: the head still has them.
                    let labels = if labels.is_empty() {
                        inner.head.labels_of(old)
                    } else {
                        labels.clone()
                    };
                    let (s, created) = inner.head.get_or_create(&labels, None);
                    if created {
                        report.new_series += 1;
                        m.series_created.fetch_add(1, Ordering::Relaxed);
                    }
                    resolved[i] = Some(s);
                }
            }
        }
        let mut guards: Vec<_> = distinct.iter().map(|s| s.data.lock()).collect();
        if guards.iter().any(|g| g.is_removed()) {
            // Collected between the check and the lock: rare enough to retry whole.
            drop(guards);
            drop(_gate);
            return Err(Error::Invalid("series collected during the commit; retry".into()));
        }
        let mut listed = vec![false; distinct.len()];
        for (i, (labels, _, _, _)) in self.series.iter().enumerate() {
            let k = slot[i];
            if k != usize::MAX && !listed[k] && !distinct[k].logged.load(Ordering::Acquire) {
                listed[k] = true;
                let labels = if labels.is_empty() {
                    inner.head.labels_of(&distinct[k])
                } else {
                    labels.clone()
                };
                new_series.push((distinct[k].id, labels));
                logged_now.push(distinct[k].clone());
            }
        }
        // 3. Decide every sample. In-order samples are staged against each
        // series' newest (including what this batch staged before); samples
        // for the out-of-order window are applied now by the full rules.
        let mut staged: Vec<(i64, f64)> = guards.iter().map(|g| (g.max_t(), g.last_v())).collect();
        let mut pending = vec![false; distinct.len()];
        // What became of each entry's samples, in entry order (an entry's
        // samples are numbered from the sum of the earlier entries' counts):
        // staged in order, to be applied after the WAL write, or not. One
        // byte a sample, where a list of the staged samples took 24.
        let mut fate = vec![Fate::Other; self.series.iter().map(|e| e.3 - e.2).sum()];
        let mut base = 0;
        for (i, (labels, _, lo, hi)) in self.series.iter().enumerate() {
            let k = slot[i];
            let at = base;
            base += hi - lo;
            if k == usize::MAX {
                continue;
            }
            for (j, smp) in self.samples[*lo..*hi].iter().enumerate() {
                let (max_t, last_v) = staged[k];
                let decision = if smp.t < floor {
                    Err(SampleRejection::TooOld { min_valid: floor })
                } else if smp.t > max_t {
                    staged[k] = (smp.t, smp.v);
                    pending[k] = true;
                    fate[at + j] = Fate::Staged;
                    Ok(true)
                } else if pending[k] && smp.t == max_t {
                    // A repeat of a sample this batch staged.
                    if last_v.to_bits() == smp.v.to_bits() {
                        Ok(false)
                    } else {
                        Err(SampleRejection::DuplicateTimestamp { existing: last_v })
                    }
                } else if pending[k] && (window == 0 || smp.t < max_t - window) {
                    Err(SampleRejection::OutOfOrder { newest: max_t })
                } else {
                    if pending[k] {
                        // An out-of-order sample behind ones this batch staged:
                        // those go into the head first, as they go first in the WAL.
                        let mut at2 = 0;
                        for (i2, (_, _, lo2, hi2)) in self.series.iter().enumerate().take(i + 1) {
                            if slot[i2] == k {
                                for (j2, s2) in self.samples[*lo2..*hi2].iter().enumerate() {
                                    if fate[at2 + j2] == Fate::Staged {
                                        let _ = guards[k].append(s2.t, s2.v, floor, window);
                                        fate[at2 + j2] = Fate::Other;
                                    }
                                }
                            }
                            at2 += hi2 - lo2;
                        }
                        pending[k] = false;
                    }
                    guards[k].append(smp.t, smp.v, floor, window)
                };
                match decision {
                    Ok(true) => {
                        wal_samples.push(distinct[k].id, smp.t, smp.v);
                        tmin = tmin.min(smp.t);
                        tmax = tmax.max(smp.t);
                    }
                    Ok(false) => report.duplicates += 1,
                    Err(reason) if labels.is_empty() => {
                        let l = inner.head.labels_of(&distinct[k]);
                        reject(&mut report, &l, smp.t, reason)
                    }
                    Err(reason) => reject(&mut report, labels, smp.t, reason),
                }
            }
        }
        let late = tmin != i64::MAX && tmin < wall_ms() - inner.opts.late_write_ms;
        if late {
            m.old_data_changes.fetch_add(1, Ordering::AcqRel);
        }
        // 4. The WAL, then the head.
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        if !new_series.is_empty() {
            let refs: Vec<(u32, &Labels)> = new_series.iter().map(|(r, l)| (*r, l)).collect();
            let mut b = Vec::new();
            wal::encode_series(&mut b, &refs);
            bodies.push(b);
        }
        let appended = wal_samples.len();
        if !wal_samples.is_empty() {
            bodies.push(wal_samples.into_body());
        }
        if !bodies.is_empty() {
            let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
            inner.wal.log(&refs)?;
            if inner.wal.policy() == FsyncPolicy::Always {
                m.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut at = 0;
        for (i, (_, _, lo, hi)) in self.series.iter().enumerate() {
            let k = slot[i];
            let fates = &fate[at..at + (hi - lo)];
            at += hi - lo;
            if k == usize::MAX {
                continue;
            }
            for (smp, _) in self.samples[*lo..*hi]
                .iter()
                .zip(fates)
                .filter(|(_, f)| **f == Fate::Staged)
            {
                // Locked since staging, so the in-order rule still holds.
                let r = guards[k].append(smp.t, smp.v, floor, window);
                debug_assert!(matches!(r, Ok(true)), "a staged sample was refused: {r:?}");
            }
        }
        if let Some(f) = &inner.head_chunks {
            for g in guards.iter_mut().filter(|g| g.has_chunks_on_heap()) {
                g.move_chunks_to(f);
            }
        }
        drop(guards);
        if late {
            // Again once visible, for a reader that looked in between.
            m.old_data_changes.fetch_add(1, Ordering::AcqRel);
        }
        for s in logged_now {
            s.logged.store(true, Ordering::Release);
        }
        if tmax != i64::MIN {
            inner.head.note_time(tmin);
            inner.head.note_time(tmax);
        }
        report.appended = appended;
        m.samples_appended.fetch_add(report.appended as u64, Ordering::Relaxed);
        m.samples_duplicate
            .fetch_add(report.duplicates as u64, Ordering::Relaxed);
        m.commits.fetch_add(1, Ordering::Relaxed);
        m.commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if inner
            .head
            .max_time()
            .saturating_sub(inner.head.min_time().max(inner.head.floor()))
            > inner.opts.block_range_ms * 3 / 2
        {
            let (mu, cv) = &inner.wake;
            let _g = mu.lock();
            cv.notify_all();
        }
        Ok(report)
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn open_blocks(dir: &Path, blocks_dir: &Path, report: &mut OpenReport) -> Result<Vec<Arc<Block>>> {
    let mut blocks = Vec::new();
    for e in fs::read_dir(blocks_dir)? {
        let e = e?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if !p.is_dir() {
            continue;
        }
        if name.ends_with(".tmp") {
            // An interrupted write (its sources are still in place) or an
            // interrupted deletion.
            fs::remove_dir_all(&p)?;
            continue;
        }
        match Block::open(&p) {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(err) => {
                let aside = dir.join("corrupted");
                fs::create_dir_all(&aside)?;
                let dst = aside.join(&name);
                fs::rename(&p, &dst)?;
                let msg = format!("block {name} moved aside to {}: {err}", dst.display());
                tracing::error!(target: "sextant::storage", "{msg}");
                report.quarantined.push(msg);
            }
        }
    }
    // A compaction that crashed after writing its output but before deleting its
    // inputs leaves blocks that another block lists as sources.
    let sources: std::collections::HashSet<String> = blocks.iter().flat_map(|b| b.meta().sources.clone()).collect();
    let (dups, keep): (Vec<_>, Vec<_>) = blocks
        .into_iter()
        .partition(|b| sources.contains(&b.meta().id) && !b.meta().sources.contains(&b.meta().id));
    for b in dups {
        tracing::info!(target: "sextant::storage", "removing block {} already merged into a compacted block", b.meta().id);
        crate::fsutil::remove_block_dir(b.dir())?;
    }
    let mut keep = keep;
    keep.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
    Ok(keep)
}

impl Inner {
    /// Raises the head floor to `cut`, lets `write` persist head data below it
    /// through the `samples_of(start, end)` callback, then truncates head and WAL.
    fn cut_head<F>(&self, cut: i64, write: F) -> Result<Vec<Arc<Block>>>
    where
        F: FnOnce(&mut dyn FnMut(i64, i64) -> Result<Option<BlockMeta>>) -> Result<()>,
    {
        self.head.set_floor(cut);
        drop(self.append_gate.write());
        let series = self.head.all_series_sorted();
        let mut new_blocks = Vec::new();
        let mut buf = Vec::new();
        let mut samples_of = |start: i64, end: i64| -> Result<Option<BlockMeta>> {
            let id = new_block_id();
            let mut w = BlockWriter::new(&self.blocks_dir, &id)?;
            for (labels, s) in &series {
                buf.clear();
                s.data.lock().samples(start, end - 1, i64::MIN, &mut buf);
                w.add_series(labels, &buf)?;
            }
            let meta = w.finish(Some((start, end)), 1, Vec::new())?;
            if let Some(m) = &meta {
                let b = Arc::new(Block::open(&self.blocks_dir.join(&m.id))?);
                new_blocks.push(b);
            }
            Ok(meta)
        };
        write(&mut samples_of)?;
        let old_epoch = {
            let mut blocks = self.blocks.write();
            blocks.extend(new_blocks.iter().cloned());
            blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
            // Under the same lock, so a read sees the new blocks and the new
            // floor, or neither.
            self.head.set_read_floor(cut);
            std::mem::replace(&mut *self.read_epoch.lock(), Arc::new(()))
        };
        // Reads that began before expect the range in the head: let them end.
        while Arc::strong_count(&old_epoch) > 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        crate::fsutil::crash_point("cut-before-truncate");
        self.head.truncate(cut);
        self.metrics.head_cuts.fetch_add(1, Ordering::Relaxed);
        let closed = self.wal.cut_segment()?;
        let head = &self.head;
        self.wal.checkpoint(closed, &mut |r| match r {
            Record::Series(s) => {
                let s: Vec<(u32, Labels)> = s.into_iter().filter(|(id, _)| head.by_id(*id).is_some()).collect();
                (!s.is_empty()).then_some(Record::Series(s))
            }
            Record::Samples(s) => {
                let s: Vec<WalSample> = s.into_iter().filter(|x| x.t >= cut).collect();
                (!s.is_empty()).then_some(Record::Samples(s))
            }
            Record::Tombstones(t) => {
                let t: Vec<(u32, i64, i64)> = t
                    .into_iter()
                    .filter(|(id, _, b)| *b >= cut && head.by_id(*id).is_some())
                    .collect();
                (!t.is_empty()).then_some(Record::Tombstones(t))
            }
        })?;
        Ok(new_blocks)
    }

    fn maintain(&self) -> Result<()> {
        let _m = self.maintenance.lock();
        let range = self.opts.block_range_ms;
        // Cut the oldest range while the head spans more than 1.5 ranges.
        loop {
            let lo = self.head.min_time().max(self.head.floor());
            let hi = self.head.max_time();
            if hi == i64::MIN || lo == i64::MAX || hi - lo <= range * 3 / 2 {
                break;
            }
            let start = lo.div_euclid(range) * range;
            let cut = start + range;
            self.cut_head(cut, |f| f(start, cut).map(|_| ()))?;
        }
        self.compact_all()?;
        self.apply_retention()?;
        Ok(())
    }

    fn compact_all(&self) -> Result<()> {
        loop {
            let blocks = self.blocks.read().clone();
            let max_range = self
                .opts
                .retention_ms
                .map(|r| r / 10)
                .unwrap_or(31 * 24 * HOUR_MS)
                .max(self.opts.block_range_ms);
            let Some(plan) = compact::plan(&blocks, self.opts.block_range_ms, max_range, self.head.floor()) else {
                return Ok(());
            };
            let started = Instant::now();
            match compact::merge_blocks(&self.blocks_dir, &plan.inputs, plan.range) {
                Ok(out) => {
                    let ids: std::collections::HashSet<String> =
                        plan.inputs.iter().map(|b| b.meta().id.clone()).collect();
                    {
                        let mut bl = self.blocks.write();
                        bl.retain(|b| !ids.contains(&b.meta().id));
                        if let Some(b) = out {
                            bl.push(Arc::new(b));
                        }
                        bl.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
                    }
                    crate::fsutil::crash_point("compact-before-delete");
                    for b in &plan.inputs {
                        crate::fsutil::remove_block_dir(b.dir())?;
                        crate::fsutil::crash_point("compact-input-deleted");
                    }
                    fsync_dir(&self.blocks_dir)?;
                    self.metrics.compactions.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .compaction_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    self.metrics.compaction_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    fn apply_retention(&self) -> Result<()> {
        let newest = self
            .blocks
            .read()
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN)
            .max(self.head.max_time());
        let mut drop_ids = Vec::new();
        {
            let blocks = self.blocks.read();
            if let Some(r) = self.opts.retention_ms {
                for b in blocks.iter() {
                    if b.meta().max_time <= newest.saturating_sub(r) {
                        drop_ids.push(b.meta().id.clone());
                    }
                }
            }
            if let Some(limit) = self.opts.retention_bytes {
                let mut total: u64 = blocks.iter().map(|b| b.size_bytes()).sum::<u64>() + self.wal.size_bytes();
                for b in blocks.iter() {
                    if total <= limit {
                        break;
                    }
                    total = total.saturating_sub(b.size_bytes());
                    if !drop_ids.contains(&b.meta().id) {
                        drop_ids.push(b.meta().id.clone());
                    }
                }
            }
        }
        if drop_ids.is_empty() {
            return Ok(());
        }
        let removed: Vec<Arc<Block>> = {
            let mut bl = self.blocks.write();
            let (gone, keep): (Vec<_>, Vec<_>) = bl.drain(..).partition(|b| drop_ids.contains(&b.meta().id));
            *bl = keep;
            gone
        };
        for b in removed {
            tracing::info!(target: "sextant::storage", "retention: deleting block {} [{}, {})", b.meta().id, b.meta().min_time, b.meta().max_time);
            crate::fsutil::remove_block_dir(b.dir())?;
            self.metrics.blocks_deleted_by_retention.fetch_add(1, Ordering::Relaxed);
        }
        fsync_dir(&self.blocks_dir)?;
        Ok(())
    }
}

fn background(inner: Arc<Inner>) {
    let mut last_sync = Instant::now();
    loop {
        {
            let (m, c) = &inner.wake;
            let mut stop = m.lock();
            if !*stop {
                c.wait_for(&mut stop, inner.opts.tick);
            }
            if *stop && inner.closed.load(Ordering::Acquire) {
                return;
            }
            *stop = false;
        }
        if let FsyncPolicy::IntervalMs(ms) = inner.opts.fsync {
            if last_sync.elapsed() >= Duration::from_millis(ms) {
                if inner.wal.sync().is_ok() {
                    inner.metrics.wal_fsyncs.fetch_add(1, Ordering::Relaxed);
                }
                last_sync = Instant::now();
            }
        }
        if let Err(e) = inner.maintain() {
            tracing::error!(target: "sextant::storage", "maintenance failed: {e}");
        }
    }
}
