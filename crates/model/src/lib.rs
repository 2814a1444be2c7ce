//! Types shared by every Sextant crate: labels, samples, matchers, time, and the
//! read trait ([`Queryable`]) that the storage engine implements and the PromQL
//! engine consumes.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of HTTP,
//! PromQL syntax or on-disk formats.

mod int_hash;
mod labels;
mod matcher;
pub mod parallel;
mod sample;

pub use int_hash::{IntHashMap, IntHasher};
pub use labels::{Grouper, Label, Labels, LabelsBuilder, Str, METRIC_NAME};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use sample::{is_stale_nan, Sample, STALE_NAN, STALE_NAN_BITS};

/// Milliseconds since the Unix epoch, the unit of every timestamp in Sextant.
pub type Timestamp = i64;

/// One series as read from storage: its labels and its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// Takes, on one thread, the mapped output of a run of consecutive series of
/// a folded read ([`Queryable::select_fold`]): an aggregation keeps per-group
/// sums instead of a vector per series.
pub trait FoldPart: Send {
    /// One series' labels (no more than `hints.only_labels` asks for) and
    /// its mapped output, never empty.
    fn add(&mut self, labels: &Labels, mapped: &[Sample]);
    /// The part's series are done; it hands over what it gathered.
    fn finish(self: Box<Self>);
}

/// Makes the part that takes the series from position `first` of the read
/// on (positions count the matching series in the order the store reads
/// them), so that the caller can combine the parts in that order.
pub type NewFoldPart<'a> = dyn Fn(usize) -> Box<dyn FoldPart + 'a> + Sync + 'a;

/// What [`Queryable::select_fold`] gives back besides what its parts gathered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Folded {
    /// Series whose mapped output went to a part.
    pub series: usize,
    /// Samples read from the store (before mapping), for the caller's limits.
    pub samples_read: usize,
    /// The map asked to stop, so the parts may have missed series.
    pub stopped: bool,
}

/// Errors a [`Queryable`] can return.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The read would load more samples than the caller allows.
    #[error("query processing would load too many samples into memory (limit {limit})")]
    TooManySamples { limit: usize },
    /// The store could not be read.
    #[error("storage read failed: {0}")]
    Storage(String),
}

/// Hints that let a store skip work; a store may ignore them.
#[derive(Debug, Clone, Default)]
pub struct SelectHints {
    /// At most this many samples in total may be returned; exceeding it is an error.
    pub sample_limit: Option<usize>,
    /// The caller does not need the series sorted by labels (the query
    /// engine, which groups by hash and sorts its own output), so the store
    /// may skip that sort.
    pub any_order: bool,
    /// `select_map` only: the map reads just each series' last sample in the
    /// range (an instant selector at one time), so the store may hand it that
    /// sample alone.
    pub last_only: bool,
    /// `select_map` only: the caller reads no labels of a series but these
    /// and the metric name (an aggregation groups by them), so the store may
    /// leave the others out of the label sets it returns. It still returns
    /// one series per stored series, even where two then look the same.
    pub only_labels: Option<std::sync::Arc<[String]>>,
    /// `select_fold` only: a part costs more the fewer series it takes (a
    /// `topk` part keeps a first `k` of its own at every step, and a small
    /// part keeps most of what it sees), so the store may hand each thread
    /// one part instead of several small ones.
    pub large_parts: bool,
}

/// Turns one series' samples (in time order, stale markers included) into
/// what the caller keeps, appended to the second argument; returns `false` to
/// stop the read (the caller knows why, for example its deadline passed).
/// Called from several threads at once.
pub type SampleMap<'a> = dyn Fn(&[Sample], &mut Vec<Sample>) -> bool + Sync + 'a;

/// What [`Queryable::select_map`] gives back.
#[derive(Debug, Default)]
pub struct Mapped {
    /// Each matching series whose mapped output is not empty, with that
    /// output as its samples.
    pub series: Vec<Series>,
    /// Samples read from the store (before mapping), for the caller's limits.
    pub samples_read: usize,
    /// The map asked to stop, so `series` may be incomplete.
    pub stopped: bool,
}

/// The read interface the query engine needs. Time ranges are inclusive
/// milliseconds `[mint, maxt]`.
pub trait Queryable: Send + Sync {
    /// Every series matching all `matchers` that has at least one sample in
    /// `[mint, maxt]`, with exactly its samples in that range, sorted by labels
    /// unless `hints.any_order`.
    fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        hints: SelectHints,
    ) -> Result<Vec<Series>, ReadError>;

    /// Like [`select`](Self::select) in any order, but each series' samples
    /// go through `map` as they are read and only its output is kept, so a
    /// caller that reduces samples (a window function) never holds them all.
    /// `hints.sample_limit` bounds the samples read.
    fn select_map(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        hints: SelectHints,
        map: &SampleMap<'_>,
    ) -> Result<Mapped, ReadError> {
        let last_only = hints.last_only;
        let hints = SelectHints {
            any_order: true,
            ..hints
        };
        let mut out = Mapped::default();
        for s in self.select(matchers, mint, maxt, hints)? {
            let samples = match (last_only, s.samples.last()) {
                (true, Some(last)) => std::slice::from_ref(last),
                _ => &s.samples[..],
            };
            out.samples_read += samples.len();
            let mut kept = Vec::new();
            if !map(samples, &mut kept) {
                out.stopped = true;
                break;
            }
            if !kept.is_empty() {
                out.series.push(Series {
                    labels: s.labels,
                    samples: kept,
                });
            }
        }
        Ok(out)
    }

    /// Like [`select_map`](Self::select_map), but each series' output goes
    /// with its labels to a [`FoldPart`] made by `part` instead of being
    /// returned: a store that reads a selection on several threads gives
    /// each run of series its own part and calls its `finish` when the run
    /// is read. This default reads through `select_map` into one part.
    fn select_fold(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
        hints: SelectHints,
        map: &SampleMap<'_>,
        part: &NewFoldPart<'_>,
    ) -> Result<Folded, ReadError> {
        let m = self.select_map(matchers, mint, maxt, hints, map)?;
        let mut p = part(0);
        for s in &m.series {
            p.add(&s.labels, &s.samples);
        }
        p.finish();
        Ok(Folded {
            series: m.series.len(),
            samples_read: m.samples_read,
            stopped: m.stopped,
        })
    }

    /// Label sets of matching series with data in `[mint, maxt]`, sorted.
    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, ReadError> {
        Ok(self
            .select(matchers, mint, maxt, SelectHints::default())?
            .into_iter()
            .map(|s| s.labels)
            .collect())
    }

    /// Sorted label names of series matching `matchers` (all series when empty).
    fn label_names(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<String>, ReadError>;

    /// Sorted values of label `name` over series matching `matchers`.
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, ReadError>;
}
