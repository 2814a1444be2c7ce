//! Postings: resolving label matchers to sets of series ids, for the head's
//! in-memory index and for a block's on-disk index alike.

use std::collections::HashMap;
use std::sync::Arc;

use roaring::RoaringBitmap;
use sextant_model::{MatchOp, Matcher};

/// What a postings index must answer for [`postings_for_matchers`].
pub trait PostingsSource {
    /// Every series id.
    fn all_postings(&self) -> RoaringBitmap;
    /// Series with `name="value"`.
    fn postings(&self, name: &str, value: &str) -> RoaringBitmap;
    /// Every value `name` takes.
    fn values_of(&self, name: &str) -> Vec<String>;
}

/// Series ids that satisfy every matcher, with Prometheus semantics (a missing
/// label reads as `""`). Matchers that need no scan are resolved first.
pub fn postings_for_matchers(src: &dyn PostingsSource, ms: &[Matcher]) -> RoaringBitmap {
    let mut result: Option<RoaringBitmap> = None;
    let mut subtract = RoaringBitmap::new();
    // Cheap, selective matchers first; they may empty the result early.
    let mut order: Vec<&Matcher> = ms.iter().collect();
    order.sort_by_key(|m| match (m.op(), m.matches_empty()) {
        (MatchOp::Equal, false) => 0,
        (MatchOp::Regex, false) if m.set_values().is_some() => 1,
        (_, false) => 2,
        (_, true) => 3,
    });
    for m in order {
        if result.as_ref().is_some_and(|r| r.is_empty()) {
            return RoaringBitmap::new();
        }
        if !m.matches_empty() {
            let bm = match m.op() {
                MatchOp::Equal => src.postings(m.name(), m.value()),
                MatchOp::Regex if m.set_values().is_some() => {
                    let mut u = RoaringBitmap::new();
                    for v in m.set_values().unwrap_or_default() {
                        u |= src.postings(m.name(), &v);
                    }
                    u
                }
                _ => {
                    let mut u = RoaringBitmap::new();
                    for v in src.values_of(m.name()) {
                        if m.matches(&v) {
                            u |= src.postings(m.name(), &v);
                        }
                    }
                    u
                }
            };
            result = Some(match result {
                Some(r) => r & bm,
                None => bm,
            });
        } else {
            // The matcher accepts series without the label; exclude those whose
            // value it rejects.
            match m.op() {
                MatchOp::NotEqual => subtract |= src.postings(m.name(), m.value()),
                _ => {
                    for v in src.values_of(m.name()) {
                        if !m.matches(&v) {
                            subtract |= src.postings(m.name(), &v);
                        }
                    }
                }
            }
        }
    }
    let mut r = result.unwrap_or_else(|| src.all_postings());
    r -= subtract;
    r
}

/// The head's inverted index: label name → value → series ids.
#[derive(Default)]
pub struct MemPostings {
    map: HashMap<Arc<str>, HashMap<Arc<str>, RoaringBitmap>>,
    all: RoaringBitmap,
}

impl MemPostings {
    pub fn add(&mut self, id: u32, labels: &[(Arc<str>, Arc<str>)]) {
        self.all.insert(id);
        for (n, v) in labels {
            self.map
                .entry(n.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(id);
        }
    }

    pub fn remove(&mut self, id: u32, labels: &[(Arc<str>, Arc<str>)]) {
        self.all.remove(id);
        for (n, v) in labels {
            if let Some(vals) = self.map.get_mut(n) {
                if let Some(bm) = vals.get_mut(v) {
                    bm.remove(id);
                    if bm.is_empty() {
                        vals.remove(v);
                    }
                }
                if vals.is_empty() {
                    self.map.remove(n);
                }
            }
        }
    }

    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    pub fn len(&self) -> u64 {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// `(name, value, series count)` for every pair, for cardinality statistics.
    pub fn pair_counts(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for (n, vals) in &self.map {
            for (v, bm) in vals {
                out.push((n.to_string(), v.to_string(), bm.len()));
            }
        }
        out
    }

    /// Bytes held by the bitmaps, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.map
            .values()
            .flat_map(|v| v.values())
            .map(|b| b.serialized_size() + 48)
            .sum::<usize>()
            + self.all.serialized_size()
    }
}

impl PostingsSource for MemPostings {
    fn all_postings(&self) -> RoaringBitmap {
        self.all.clone()
    }

    fn postings(&self, name: &str, value: &str) -> RoaringBitmap {
        self.map
            .get(name)
            .and_then(|m| m.get(value))
            .cloned()
            .unwrap_or_default()
    }

    fn values_of(&self, name: &str) -> Vec<String> {
        self.map
            .get(name)
            .map(|m| m.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sextant_model::Labels;

    fn arcs(l: &Labels) -> Vec<(Arc<str>, Arc<str>)> {
        l.iter()
            .map(|l| (Arc::from(l.name.as_str()), Arc::from(l.value.as_str())))
            .collect()
    }

    fn naive(series: &[Labels], ms: &[Matcher]) -> Vec<u32> {
        series
            .iter()
            .enumerate()
            .filter(|(_, l)| ms.iter().all(|m| m.matches(l.get(m.name()))))
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn arb_matcher() -> impl Strategy<Value = Matcher> {
        let names = prop::sample::select(vec!["a", "b", "c"]);
        let vals = prop::sample::select(vec!["", "x", "y", "z", "x|y", ".*", ".+", "x.*", "[xz]"]);
        let ops = prop::sample::select(vec![
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::Regex,
            MatchOp::NotRegex,
        ]);
        (names, ops, vals).prop_map(|(n, o, v)| Matcher::new(o, n, v).expect("valid"))
    }

    proptest! {
        #[test]
        fn matchers_agree_with_a_naive_scan(
            raw in prop::collection::vec(prop::collection::vec((prop::sample::select(vec!["a","b","c"]), prop::sample::select(vec!["x","y","z"])), 0..3), 1..40),
            ms in prop::collection::vec(arb_matcher(), 1..4),
        ) {
            let series: Vec<Labels> = raw.iter().map(|p| Labels::from_pairs(p.iter().cloned())).collect();
            let mut idx = MemPostings::default();
            for (i, l) in series.iter().enumerate() {
                idx.add(i as u32, &arcs(l));
            }
            let got: Vec<u32> = postings_for_matchers(&idx, &ms).iter().collect();
            prop_assert_eq!(got, naive(&series, &ms));
        }
    }
}
