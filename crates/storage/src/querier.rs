//! One reader interface over the head and persisted blocks, and the merge that
//! makes a series spanning several of them read as one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use roaring::RoaringBitmap;
use sextant_model::{FoldPart, Folded, Labels, Mapped, Matcher, NewFoldPart, Sample, SampleMap, SelectHints, Series};

use crate::block::Block;
use crate::error::{Error, Result};
use crate::head::{keep_last, merge_sorted, Head};

/// What a query needs from any part of the store.
pub trait SeriesReader: Sync {
    /// Inclusive time bounds of the data this reader may hold.
    fn bounds(&self) -> (i64, i64);
    fn select_ids(&self, ms: &[Matcher]) -> RoaringBitmap;
    fn labels(&self, id: u32) -> Option<Labels>;
    fn samples(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()>;
    /// Only the last of [`samples`](Self::samples).
    fn last_sample(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()> {
        let start = out.len();
        self.samples(id, mint, maxt, out)?;
        keep_last(out, start);
        Ok(())
    }
    /// The labels of `id`, of which the caller reads only those named in
    /// `names` and the metric name: a reader may leave the others out
    /// (see [`SelectHints::only_labels`]).
    fn labels_for(&self, id: u32, names: &[String]) -> Option<Labels> {
        let _ = names;
        self.labels(id)
    }
    /// The samples of `id` in `[mint, maxt]` (only the last with
    /// `last_only`) appended to `out` and, when there are any, its labels:
    /// [`labels_for`](Self::labels_for) `names` when given, else all.
    fn read(
        &self,
        id: u32,
        mint: i64,
        maxt: i64,
        last_only: bool,
        names: Option<&[String]>,
        out: &mut Vec<Sample>,
    ) -> Result<Option<Labels>> {
        let start = out.len();
        if last_only {
            self.last_sample(id, mint, maxt, out)?;
        } else {
            self.samples(id, mint, maxt, out)?;
        }
        if out.len() == start {
            return Ok(None);
        }
        Ok(match names {
            Some(names) => self.labels_for(id, names),
            None => self.labels(id),
        })
    }
    fn label_names(&self, ids: Option<&RoaringBitmap>) -> Vec<String>;
    fn label_values(&self, name: &str, ids: Option<&RoaringBitmap>) -> Vec<String>;
}

impl SeriesReader for Block {
    fn bounds(&self) -> (i64, i64) {
        (self.meta().min_time, self.meta().max_time - 1)
    }
    fn select_ids(&self, ms: &[Matcher]) -> RoaringBitmap {
        self.postings_for(ms)
    }
    fn labels(&self, id: u32) -> Option<Labels> {
        Block::labels(self, id)
    }
    fn labels_for(&self, id: u32, names: &[String]) -> Option<Labels> {
        Block::labels_named(self, id, names)
    }
    fn samples(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()> {
        Block::samples(self, id, mint, maxt, out)
    }
    fn read(
        &self,
        id: u32,
        mint: i64,
        maxt: i64,
        last_only: bool,
        names: Option<&[String]>,
        out: &mut Vec<Sample>,
    ) -> Result<Option<Labels>> {
        let start = out.len();
        let labels = Block::read(self, id, mint, maxt, last_only, names, out)?;
        if last_only {
            keep_last(out, start);
        }
        Ok(labels)
    }
    fn label_names(&self, ids: Option<&RoaringBitmap>) -> Vec<String> {
        Block::label_names(self, ids)
    }
    fn label_values(&self, name: &str, ids: Option<&RoaringBitmap>) -> Vec<String> {
        Block::label_values(self, name, ids)
    }
}

/// The head seen through [`SeriesReader`], from `floor` on (the head's read
/// floor taken together with the list of blocks the query reads, so that
/// every range is read from exactly one place).
pub struct HeadReader<'a>(pub &'a Head, pub i64);

impl SeriesReader for HeadReader<'_> {
    fn bounds(&self) -> (i64, i64) {
        (self.0.min_time().max(self.1), self.0.max_time())
    }
    fn select_ids(&self, ms: &[Matcher]) -> RoaringBitmap {
        self.0.postings(ms)
    }
    fn labels(&self, id: u32) -> Option<Labels> {
        self.0.by_id(id).map(|s| self.0.labels_of(&s))
    }
    fn labels_for(&self, id: u32, names: &[String]) -> Option<Labels> {
        self.0.by_id(id).map(|s| self.0.labels_named(&s, names))
    }
    fn samples(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()> {
        if let Some(s) = self.0.by_id(id) {
            s.data.lock().samples(mint, maxt, self.1, out);
        }
        Ok(())
    }
    fn last_sample(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()> {
        if let Some(s) = self.0.by_id(id) {
            s.data.lock().last_sample(mint, maxt, self.1, out);
        }
        Ok(())
    }
    fn label_names(&self, ids: Option<&RoaringBitmap>) -> Vec<String> {
        match ids {
            None => self.0.label_names(),
            Some(ids) => {
                let mut names = std::collections::BTreeSet::new();
                for id in ids {
                    if let Some(l) = self.labels(id) {
                        names.extend(l.iter().map(|l| l.name.to_string()));
                    }
                }
                names.into_iter().collect()
            }
        }
    }
    fn label_values(&self, name: &str, ids: Option<&RoaringBitmap>) -> Vec<String> {
        let ids = match ids {
            Some(ids) => ids.clone(),
            None => self.0.postings(&[]),
        };
        let mut vals = std::collections::BTreeSet::new();
        for id in &ids {
            if let Some(l) = self.labels(id) {
                let v = l.get(name);
                if !v.is_empty() {
                    vals.insert(v.to_string());
                }
            }
        }
        vals.into_iter().collect()
    }
}

/// Series ids of one reader at or above which `select` reads them on several
/// threads whatever the range (below it, handing parts to the worker pool can
/// cost more than it saves). An instant read of 657 block series gained
/// nothing on two threads while each series built its label set from shared
/// symbols; since label sets are shared or kept, it takes 10-25 % less time
/// there, for about 15 % more CPU.
const PARALLEL_SELECT_MIN: usize = 512;
/// Fewer series are read on several threads when the range is at least
/// `PARALLEL_LONG_RANGE_MS`: at a 15 s scrape interval, 128 series over 30
/// minutes are about 15,000 samples, hundreds of microseconds of decoding
/// against tens for handing parts to the worker pool and waking it.
const PARALLEL_LONG_MIN: usize = 128;
const PARALLEL_LONG_RANGE_MS: i64 = 30 * 60_000;

/// Whether reading `n` series over `[mint, maxt]` is worth several threads.
fn worth_threads(n: usize, mint: i64, maxt: i64) -> bool {
    n >= PARALLEL_SELECT_MIN || (n >= PARALLEL_LONG_MIN && maxt.saturating_sub(mint) >= PARALLEL_LONG_RANGE_MS)
}

/// The readers whose bounds overlap `[mint, maxt]`, in order.
fn overlapping<'a>(readers: &[&'a dyn SeriesReader], mint: i64, maxt: i64) -> Vec<&'a dyn SeriesReader> {
    readers
        .iter()
        .copied()
        .filter(|r| {
            let (lo, hi) = r.bounds();
            hi >= mint && lo <= maxt
        })
        .collect()
}

/// Reads the samples and labels of `ids` from `r`, in order; `total` counts
/// samples across every thread so the limit holds for the whole query.
fn read_series(
    r: &dyn SeriesReader,
    ids: &[u32],
    mint: i64,
    maxt: i64,
    limit: Option<usize>,
    total: &AtomicUsize,
) -> Result<Vec<Series>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut buf: Vec<Sample> = Vec::new();
    let mut count = ReadCount::new(total, limit);
    for &id in ids {
        buf.clear();
        r.samples(id, mint, maxt, &mut buf)?;
        if buf.is_empty() {
            continue;
        }
        let Some(labels) = r.labels(id) else { continue };
        count.add(buf.len())?;
        // Whole chunks are decoded into `buf` and cut to the range, so it
        // can be far larger than what is kept (an instant query keeps
        // minutes of an hour-long chunk): then the series gets an exact
        // copy and `buf` is reused; otherwise it takes `buf` itself, and the
        // next buffer starts as large, so it rarely grows.
        let samples = if buf.len() * 2 < buf.capacity() {
            buf.as_slice().to_vec()
        } else {
            let next = Vec::with_capacity(buf.capacity());
            std::mem::replace(&mut buf, next)
        };
        out.push(Series { labels, samples });
    }
    count.flush()?;
    Ok(out)
}

/// Runs `work` over `0..n` split into one contiguous part per core (a
/// single part unless `parallel`), and concatenates the results in order.
fn in_parallel<T: Send>(
    n: usize,
    parallel: bool,
    large_parts: bool,
    work: impl Fn(std::ops::Range<usize>) -> Result<Vec<T>> + Sync,
) -> Result<Vec<T>> {
    let threads = sextant_model::parallel::workers();
    if threads < 2 || !parallel || n < 2 {
        return work(0..n);
    }
    let part = if large_parts {
        n.div_ceil(threads)
    } else {
        sextant_model::parallel::part_len(n, 16)
    };
    let parts = n.div_ceil(part);
    let results = sextant_model::parallel::map_parts(parts, |k| work(k * part..((k + 1) * part).min(n)));
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    for r in results {
        match r {
            Ok(v) => out.extend(v),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Samples a part of a read counts on its own before adding them to the
/// read's shared count.
const COUNT_BATCH: usize = 1 << 14;

/// One part's count of the samples it reads, against the query's `limit`.
/// Parts add to the shared total every [`COUNT_BATCH`] samples and when they
/// end, not at every series: the threads of a parallel read each writing the
/// one counter sent its cache line from core to core at every series (perf:
/// 5 % of an instant `topk` of 657 series). A read over the limit is
/// therefore told so up to a batch a thread late, never not at all: the part
/// that finishes counts the rest.
struct ReadCount<'a> {
    total: &'a AtomicUsize,
    limit: Option<usize>,
    local: usize,
}

impl<'a> ReadCount<'a> {
    fn new(total: &'a AtomicUsize, limit: Option<usize>) -> Self {
        ReadCount { total, limit, local: 0 }
    }

    fn add(&mut self, n: usize) -> Result<()> {
        self.local += n;
        match self.limit {
            _ if self.local >= COUNT_BATCH => self.flush(),
            Some(l) if self.local > l => Err(Error::TooManySamples { limit: l }),
            _ => Ok(()),
        }
    }

    /// Adds this part's samples to the total; called when the part ends.
    fn flush(&mut self) -> Result<()> {
        let n = std::mem::take(&mut self.local);
        let seen = self.total.fetch_add(n, Ordering::Relaxed) + n;
        match self.limit {
            Some(l) if seen > l => Err(Error::TooManySamples { limit: l }),
            _ => Ok(()),
        }
    }
}

/// Where the mapped series of one part of a read go: collected as series,
/// or handed to a caller's fold.
trait PartSink: Send {
    /// One series' labels and mapped output (`kept`, not empty).
    fn put(&mut self, labels: Labels, kept: &mut Vec<Sample>);
}

/// Collects the mapped series of a part.
#[derive(Default)]
struct Collect(Vec<Series>);

impl PartSink for Collect {
    fn put(&mut self, labels: Labels, kept: &mut Vec<Sample>) {
        self.0.push(Series {
            labels,
            samples: std::mem::take(kept),
        });
    }
}

/// Hands the mapped series of a part to a caller's [`FoldPart`]; the output
/// buffer is reused from series to series.
struct Fold<'a> {
    part: Box<dyn FoldPart + 'a>,
    series: usize,
}

impl PartSink for Fold<'_> {
    fn put(&mut self, labels: Labels, kept: &mut Vec<Sample>) {
        self.part.add(&labels, kept);
        self.series += 1;
        kept.clear();
    }
}

/// Reads the matching series of every overlapping reader, each through
/// `map`, its output going to the sink of its part (`sink(first)` makes the
/// sink of the part that starts at position `first`). Returns the sinks in
/// order, the samples read, and whether `map` stopped the read.
fn read_mapped<S: PartSink>(
    readers: &[&dyn SeriesReader],
    ms: &[Matcher],
    mint: i64,
    maxt: i64,
    hints: &SelectHints,
    map: &SampleMap<'_>,
    sink: &(dyn Fn(usize) -> S + Sync),
) -> Result<(Vec<S>, usize, bool)> {
    let (limit, last_only) = (hints.sample_limit, hints.last_only);
    let overlapping = overlapping(readers, mint, maxt);
    let total = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Maps one series' samples into `kept` and passes them on.
    let map_one = |buf: &[Sample],
                   labels: Labels,
                   kept: &mut Vec<Sample>,
                   out: &mut S,
                   count: &mut ReadCount<'_>|
     -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        count.add(buf.len())?;
        kept.clear();
        if !map(buf, kept) {
            stop.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if !kept.is_empty() {
            out.put(labels, kept);
        }
        Ok(())
    };
    let sinks = match overlapping.as_slice() {
        [] => Vec::new(),
        [r] => {
            let ids: Vec<u32> = r.select_ids(ms).iter().collect();
            in_parallel(
                ids.len(),
                worth_threads(ids.len(), mint, maxt),
                hints.large_parts,
                |part| {
                    let (mut buf, mut kept) = (Vec::new(), Vec::new());
                    let mut out = sink(part.start);
                    let mut count = ReadCount::new(&total, limit);
                    for &id in &ids[part] {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        buf.clear();
                        let Some(labels) = r.read(id, mint, maxt, last_only, hints.only_labels.as_deref(), &mut buf)?
                        else {
                            continue;
                        };
                        map_one(&buf, labels, &mut kept, &mut out, &mut count)?;
                    }
                    count.flush()?;
                    Ok(vec![out])
                },
            )?
        }
        _ => {
            // Each distinct label set and where its parts are, in first-seen
            // order; then every series is read whole and mapped.
            let mut groups: Vec<(Labels, Vec<(usize, u32)>)> = Vec::new();
            let mut index: HashMap<Labels, usize> = HashMap::new();
            for (k, r) in overlapping.iter().enumerate() {
                for id in &r.select_ids(ms) {
                    let Some(labels) = r.labels(id) else { continue };
                    match index.get(&labels) {
                        Some(&i) => groups[i].1.push((k, id)),
                        None => {
                            index.insert(labels.clone(), groups.len());
                            groups.push((labels, vec![(k, id)]));
                        }
                    }
                }
            }
            drop(index);
            in_parallel(
                groups.len(),
                worth_threads(groups.len(), mint, maxt),
                hints.large_parts,
                |part| {
                    let (mut buf, mut piece, mut merged, mut kept) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    let mut out = sink(part.start);
                    let mut count = ReadCount::new(&total, limit);
                    for (labels, parts) in &groups[part] {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        buf.clear();
                        for &(k, id) in parts {
                            piece.clear();
                            overlapping[k].samples(id, mint, maxt, &mut piece)?;
                            if piece.is_empty() {
                                continue;
                            }
                            if buf.last().is_none_or(|last: &Sample| last.t < piece[0].t) {
                                buf.extend_from_slice(&piece);
                            } else {
                                merged.clear();
                                merge_sorted(&buf, &piece, &mut merged);
                                std::mem::swap(&mut buf, &mut merged);
                            }
                        }
                        if last_only {
                            keep_last(&mut buf, 0);
                        }
                        map_one(&buf, labels.clone(), &mut kept, &mut out, &mut count)?;
                    }
                    count.flush()?;
                    Ok(vec![out])
                },
            )?
        }
    };
    Ok((sinks, total.into_inner(), stop.into_inner()))
}

/// Like [`select`] in any order, with each series' samples passed through
/// `map` as soon as they are read and only its output kept: a series is
/// decoded into a buffer that is reused for the next, so the samples of all
/// series are never in memory at once. A series spanning several readers is
/// merged before it is mapped. With `last_only`, the map is given each
/// series' last sample in the range alone.
pub fn select_map(
    readers: &[&dyn SeriesReader],
    ms: &[Matcher],
    mint: i64,
    maxt: i64,
    hints: &SelectHints,
    map: &SampleMap<'_>,
) -> Result<Mapped> {
    let (parts, samples_read, stopped) = read_mapped(readers, ms, mint, maxt, hints, map, &|_| Collect::default())?;
    Ok(Mapped {
        series: parts.into_iter().flat_map(|c| c.0).collect(),
        samples_read,
        stopped,
    })
}

/// [`select_map`] with each part's mapped series handed to a part made by
/// `part` (see [`sextant_model::Queryable::select_fold`]); each part is
/// finished, in order, once the whole read has succeeded.
pub fn select_fold(
    readers: &[&dyn SeriesReader],
    ms: &[Matcher],
    mint: i64,
    maxt: i64,
    hints: &SelectHints,
    map: &SampleMap<'_>,
    part: &NewFoldPart<'_>,
) -> Result<Folded> {
    let (parts, samples_read, stopped) = read_mapped(readers, ms, mint, maxt, hints, map, &|first| Fold {
        part: part(first),
        series: 0,
    })?;
    let mut series = 0;
    for p in parts {
        series += p.series;
        p.part.finish();
    }
    Ok(Folded {
        series,
        samples_read,
        stopped,
    })
}

/// Selects and merges matching series from every reader whose bounds
/// overlap; sorted by labels when `sorted`, else in first-seen order. A
/// reader with many matching series is read on several threads; the order
/// of its series is then still its id order.
pub fn select(
    readers: &[&dyn SeriesReader],
    ms: &[Matcher],
    mint: i64,
    maxt: i64,
    limit: Option<usize>,
    sorted: bool,
) -> Result<Vec<Series>> {
    // Series in first-seen order, indexed by labels (whose hash is cached);
    // sorted by labels once at the end if asked.
    let mut out: Vec<Series> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let total = AtomicUsize::new(0);
    let overlapping = overlapping(readers, mint, maxt);
    let single = overlapping.len() == 1;
    for (k, r) in overlapping.iter().enumerate() {
        let ids: Vec<u32> = r.select_ids(ms).iter().collect();
        let parallel = worth_threads(ids.len(), mint, maxt);
        let read = in_parallel(ids.len(), parallel, false, |part| {
            read_series(*r, &ids[part], mint, maxt, limit, &total)
        })?;
        if single {
            out = read;
            break;
        }
        for s in read {
            if k == 0 {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
                continue;
            }
            match index.get(&s.labels) {
                None => {
                    index.insert(s.labels.clone(), out.len());
                    out.push(s);
                }
                Some(&i) => {
                    let e = &mut out[i].samples;
                    if e.last().is_some_and(|last| last.t < s.samples[0].t) {
                        e.extend_from_slice(&s.samples);
                    } else {
                        let old = std::mem::take(e);
                        merge_sorted(&old, &s.samples, e);
                    }
                }
            }
        }
    }
    if sorted {
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
    }
    Ok(out)
}

/// Series label sets with data overlapping `[mint, maxt]`, without loading samples
/// where a reader's bounds already prove overlap.
pub fn series_labels(readers: &[&dyn SeriesReader], ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Labels>> {
    let mut set = std::collections::BTreeSet::new();
    let mut buf = Vec::new();
    for r in readers {
        let (lo, hi) = r.bounds();
        if hi < mint || lo > maxt {
            continue;
        }
        let inside = lo >= mint && hi <= maxt;
        for id in &r.select_ids(ms) {
            if !inside {
                buf.clear();
                r.samples(id, mint, maxt, &mut buf)?;
                if buf.is_empty() {
                    continue;
                }
            }
            if let Some(l) = r.labels(id) {
                set.insert(l);
            }
        }
    }
    Ok(set.into_iter().collect())
}

/// Label names over readers overlapping the range.
pub fn label_names(readers: &[&dyn SeriesReader], ms: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
    let mut set = std::collections::BTreeSet::new();
    for r in readers {
        let (lo, hi) = r.bounds();
        if hi < mint || lo > maxt {
            continue;
        }
        let ids = (!ms.is_empty()).then(|| r.select_ids(ms));
        set.extend(r.label_names(ids.as_ref()));
    }
    set.into_iter().collect()
}

/// Label values over readers overlapping the range.
pub fn label_values(readers: &[&dyn SeriesReader], name: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
    let mut set = std::collections::BTreeSet::new();
    for r in readers {
        let (lo, hi) = r.bounds();
        if hi < mint || lo > maxt {
            continue;
        }
        let ids = (!ms.is_empty()).then(|| r.select_ids(ms));
        set.extend(r.label_values(name, ids.as_ref()));
    }
    set.into_iter().collect()
}

/// Keeps block handles alive while a query reads them.
pub type BlockSet = Vec<Arc<Block>>;
