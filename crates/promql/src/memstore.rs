//! A simple in-memory [`Queryable`], for tests and for embedding small data sets.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot_free::RwLock;
use sextant_model::{Labels, Matcher, Queryable, ReadError, Sample, SelectHints, Series};

mod parking_lot_free {
    /// `std`'s lock with poisoning ignored, so a panicking test cannot wedge others.
    pub struct RwLock<T>(std::sync::RwLock<T>);
    impl<T> RwLock<T> {
        pub fn new(v: T) -> Self {
            RwLock(std::sync::RwLock::new(v))
        }
        pub fn read(&self) -> std::sync::RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(|e| e.into_inner())
        }
        pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// Series kept in a sorted map; samples are kept sorted by time.
pub struct MemStore {
    series: RwLock<BTreeMap<Labels, Vec<Sample>>>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore {
            series: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds samples to a series; a sample at an existing timestamp replaces it.
    pub fn add(&self, labels: Labels, samples: &[Sample]) {
        let mut m = self.series.write();
        let e = m.entry(labels).or_default();
        for s in samples {
            match e.binary_search_by_key(&s.t, |x| x.t) {
                Ok(i) => e[i] = *s,
                Err(i) => e.insert(i, *s),
            }
        }
    }

    pub fn clear(&self) {
        self.series.write().clear();
    }

    fn matching(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Vec<Series> {
        self.series
            .read()
            .iter()
            .filter(|(l, _)| ms.iter().all(|m| m.matches(l.get(m.name()))))
            .filter_map(|(l, s)| {
                let samples: Vec<Sample> = s.iter().filter(|x| x.t >= mint && x.t <= maxt).copied().collect();
                (!samples.is_empty()).then(|| Series {
                    labels: l.clone(),
                    samples,
                })
            })
            .collect()
    }
}

impl Queryable for MemStore {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64, hints: SelectHints) -> Result<Vec<Series>, ReadError> {
        let mut out = self.matching(ms, mint, maxt);
        if hints.any_order {
            // An order unrelated to labels, as a real store's may be, so that
            // tests show the engine does not lean on sorted input.
            out.sort_by_key(|s| s.labels.hash64());
        }
        if let Some(limit) = hints.sample_limit {
            if out.iter().map(|s| s.samples.len()).sum::<usize>() > limit {
                return Err(ReadError::TooManySamples { limit });
            }
        }
        Ok(out)
    }

    fn label_names(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
        let mut set = BTreeSet::new();
        for s in self.matching(ms, mint, maxt) {
            set.extend(s.labels.iter().map(|l| l.name.to_string()));
        }
        Ok(set.into_iter().collect())
    }

    fn label_values(&self, name: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
        let mut set = BTreeSet::new();
        for s in self.matching(ms, mint, maxt) {
            let v = s.labels.get(name);
            if !v.is_empty() {
                set.insert(v.to_string());
            }
        }
        Ok(set.into_iter().collect())
    }
}
