//! One reader interface over the head and persisted blocks, and the merge that
//! makes a series spanning several of them read as one.

use std::collections::HashMap;
use std::sync::Arc;

use roaring::RoaringBitmap;
use sextant_model::{Labels, Matcher, Sample, Series};

use crate::block::Block;
use crate::error::{Error, Result};
use crate::head::{merge_sorted, Head};

/// What a query needs from any part of the store.
pub trait SeriesReader {
    /// Inclusive time bounds of the data this reader may hold.
    fn bounds(&self) -> (i64, i64);
    fn select_ids(&self, ms: &[Matcher]) -> RoaringBitmap;
    fn labels(&self, id: u32) -> Option<Labels>;
    fn samples(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()>;
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
    fn samples(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()> {
        Block::samples(self, id, mint, maxt, out)
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
    fn samples(&self, id: u32, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> Result<()> {
        if let Some(s) = self.0.by_id(id) {
            s.data.lock().samples(mint, maxt, self.1, out);
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

/// Selects and merges matching series from every reader whose bounds
/// overlap; sorted by labels when `sorted`, else in first-seen order.
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
    let mut total = 0usize;
    let mut buf: Vec<Sample> = Vec::new();
    let mut contributing = 0;
    for r in readers {
        let (lo, hi) = r.bounds();
        if hi < mint || lo > maxt {
            continue;
        }
        let first = contributing == 0;
        contributing += 1;
        for id in &r.select_ids(ms) {
            buf.clear();
            r.samples(id, mint, maxt, &mut buf)?;
            if buf.is_empty() {
                continue;
            }
            let Some(labels) = r.labels(id) else { continue };
            total += buf.len();
            if let Some(l) = limit {
                if total > l {
                    return Err(Error::TooManySamples { limit: l });
                }
            }
            // Whole chunks are decoded into `buf` and cut to the range, so it
            // can be far larger than what is kept (an instant query keeps
            // minutes of an hour-long chunk): then the series gets an exact
            // copy and `buf` is reused; otherwise it takes `buf` itself.
            let samples = if buf.len() * 2 < buf.capacity() {
                buf.as_slice().to_vec()
            } else {
                let next = Vec::with_capacity(buf.len());
                std::mem::replace(&mut buf, next)
            };
            if first && readers.len() == 1 {
                out.push(Series { labels, samples });
                continue;
            }
            match index.get(&labels) {
                None => {
                    index.insert(labels.clone(), out.len());
                    out.push(Series { labels, samples });
                }
                Some(&i) => {
                    let e = &mut out[i].samples;
                    if e.last().is_some_and(|last| last.t < samples[0].t) {
                        e.extend_from_slice(&samples);
                    } else {
                        let old = std::mem::take(e);
                        merge_sorted(&old, &samples, e);
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
