//! A cache of range-query results, so that a dashboard refreshing every few
//! seconds evaluates only the newest steps.
//!
//! An entry holds, for one query text and step, the points of the steps that
//! were at least `freshness` old when computed ("frozen" steps): data that
//! late can still change a step is not kept. A later request with the same
//! query, step and step alignment takes the frozen steps it overlaps from the
//! cache and evaluates the rest. Anything that can change old data (a commit
//! with a sample older than the store's `late_write_ms`, a delete) advances
//! the store's `old_data_changes`, which retires every entry. Queries whose steps depend on the range itself
//! (`@ start()`, `@ end()`, the `start()`/`end()`/`range()`/`step()`
//! functions) are never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sextant_model::Labels;
use sextant_promql::{Annotations, Point, Series};

struct Entry {
    generation: u64,
    /// First step of the entry (its alignment) and last frozen step.
    start: i64,
    frozen_end: i64,
    series: Vec<Series>,
    annotations: Annotations,
    points: usize,
    last_used: u64,
}

/// The cache; cheap to consult when disabled.
pub struct RangeCache {
    freshness_ms: Option<i64>,
    entries: Mutex<HashMap<(String, i64), Entry>>,
    clock: AtomicU64,
    max_points: usize,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// What the cache can give for a request.
pub struct Cached {
    /// Points of the frozen steps `[start, upto]`.
    pub series: Vec<Series>,
    /// Last step served from the cache.
    pub upto: i64,
    /// Warnings and infos of the cached evaluation.
    pub annotations: Annotations,
}

impl RangeCache {
    /// `freshness_ms: None` disables the cache.
    pub fn new(freshness_ms: Option<i64>, max_points: usize) -> RangeCache {
        RangeCache {
            freshness_ms,
            entries: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            max_points,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn freshness_ms(&self) -> Option<i64> {
        self.freshness_ms
    }

    /// Whether the cache applies to this query text.
    pub fn cacheable(&self, query: &str) -> bool {
        self.freshness_ms.is_some()
            && !query.contains('@')
            && !["start(", "end(", "range(", "step("].iter().any(|f| query.contains(f))
    }

    /// Frozen points for `[start, end]` at `step`, if an entry computed at
    /// the same data `generation` lines up.
    pub fn get(&self, query: &str, start: i64, end: i64, step: i64, generation: u64) -> Option<Cached> {
        let mut map = self.entries.lock();
        let Some(e) = map.get_mut(&(query.to_string(), step)) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if e.generation != generation
            || (start - e.start).rem_euclid(step) != 0
            || start < e.start
            || start > e.frozen_end
        {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        e.last_used = self.clock.fetch_add(1, Ordering::Relaxed);
        let upto = e.frozen_end.min(end);
        let series = e
            .series
            .iter()
            .filter_map(|s| {
                let points: Vec<Point> = s
                    .points
                    .iter()
                    .filter(|p| p.t >= start && p.t <= upto)
                    .copied()
                    .collect();
                (!points.is_empty()).then(|| Series {
                    labels: s.labels.clone(),
                    points,
                })
            })
            .collect();
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Cached {
            series,
            upto,
            annotations: e.annotations.clone(),
        })
    }

    /// Stores the steps of `result` (covering `[start, end]`) that are frozen
    /// at `now_ms`, under the generation read before evaluating.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        now_ms: i64,
        generation: u64,
        result: &[Series],
        annotations: &Annotations,
    ) {
        let Some(f) = self.freshness_ms else { return };
        let limit = now_ms - f;
        if limit < start {
            return;
        }
        let frozen_end = (start + (limit - start) / step * step).min(end);
        let series: Vec<Series> = result
            .iter()
            .filter_map(|s| {
                let points: Vec<Point> = s.points.iter().filter(|p| p.t <= frozen_end).copied().collect();
                (!points.is_empty()).then(|| Series {
                    labels: s.labels.clone(),
                    points,
                })
            })
            .collect();
        let points: usize = series.iter().map(|s| s.points.len()).sum();
        if points > self.max_points / 4 {
            return;
        }
        let mut map = self.entries.lock();
        let mut total: usize = map.values().map(|e| e.points).sum::<usize>() + points;
        while total > self.max_points {
            let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone()) else {
                break;
            };
            total -= map.remove(&oldest).map_or(0, |e| e.points);
        }
        map.insert(
            (query.to_string(), step),
            Entry {
                generation,
                start,
                frozen_end,
                series,
                annotations: annotations.clone(),
                points,
                last_used: self.clock.fetch_add(1, Ordering::Relaxed),
            },
        );
    }
}

/// Joins cached points (steps up to some `upto`) with freshly evaluated ones
/// (steps after it), per label set, sorted by labels as the engine sorts.
pub fn merge(cached: Vec<Series>, fresh: Vec<Series>) -> Vec<Series> {
    let mut by: HashMap<Labels, Vec<Point>> = HashMap::new();
    for s in cached.into_iter().chain(fresh) {
        by.entry(s.labels).or_default().extend(s.points);
    }
    let mut out: Vec<Series> = by
        .into_iter()
        .map(|(labels, mut points)| {
            points.sort_by_key(|p| p.t);
            points.dedup_by_key(|p| p.t);
            Series { labels, points }
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}
