use std::fmt;
use std::sync::Arc;

/// The label that holds a series' metric name.
pub const METRIC_NAME: &str = "__name__";

/// An immutable string that is cheap to clone (shared storage): label names
/// and values, which the store interns, so that handing a label set to a
/// query costs reference counts rather than an allocation per string.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Str(Arc<str>);

/// By the text, as `str`; two handles of one interned string (most names
/// and many values of the label sets a query compares) are equal without
/// reading it. (`Arc`'s equality already looks at the address first; its
/// order does not.)
impl Ord for Str {
    #[inline]
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &o.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.cmp(&o.0)
    }
}

impl PartialOrd for Str {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Str {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Str {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Str {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Default for Str {
    fn default() -> Self {
        Str::from("")
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str(Arc::from(s))
    }
}

impl From<String> for Str {
    fn from(s: String) -> Self {
        Str(Arc::from(s))
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Self {
        Str(Arc::from(s.as_str()))
    }
}

impl From<Arc<str>> for Str {
    fn from(s: Arc<str>) -> Self {
        Str(s)
    }
}

impl From<&Arc<str>> for Str {
    fn from(s: &Arc<str>) -> Self {
        Str(s.clone())
    }
}

impl From<&Str> for Str {
    fn from(s: &Str) -> Self {
        s.clone()
    }
}

impl From<Str> for String {
    fn from(s: Str) -> Self {
        s.0.to_string()
    }
}

impl PartialEq<str> for Str {
    fn eq(&self, o: &str) -> bool {
        &*self.0 == o
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, o: &&str) -> bool {
        &*self.0 == *o
    }
}

impl PartialEq<String> for Str {
    fn eq(&self, o: &String) -> bool {
        &*self.0 == o.as_str()
    }
}

impl PartialEq<Str> for str {
    fn eq(&self, o: &Str) -> bool {
        self == &*o.0
    }
}

impl PartialEq<Str> for &str {
    fn eq(&self, o: &Str) -> bool {
        *self == &*o.0
    }
}

impl PartialEq<Str> for String {
    fn eq(&self, o: &Str) -> bool {
        self.as_str() == &*o.0
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// One name/value pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: Str,
    pub value: Str,
}

impl Label {
    pub fn new(name: impl Into<Str>, value: impl Into<Str>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A label set: sorted by name, names unique, no empty values.
///
/// The invariant is kept by the constructors, so two equal label sets always
/// compare, hash and print the same. Cloning is cheap (shared storage), and
/// the 64-bit hash is computed once, the first time it is needed (most label
/// sets a query reads are never hashed).
#[derive(Clone)]
pub struct Labels(Arc<Inner>);

struct Inner {
    /// The hash, or 0 before it is first computed (a hash of 0 is kept as 1).
    hash: std::sync::atomic::AtomicU64,
    labels: Box<[Label]>,
}

impl Labels {
    fn new_inner(v: Vec<Label>) -> Labels {
        Labels(Arc::new(Inner {
            hash: std::sync::atomic::AtomicU64::new(0),
            labels: v.into_boxed_slice(),
        }))
    }

    /// Whether `self` and `o` are one set, the same allocation (a clone of
    /// the other): a cheap test that equal sets need not pass.
    pub fn is_same_set(&self, o: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }

    /// The address of the set's allocation: equal for clones of one set,
    /// and not reused by another set while a clone is held.
    pub fn address(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    fn hash_cached(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let h = self.0.hash.load(Relaxed);
        if h != 0 {
            return h;
        }
        // Racing threads compute the same value; either store is right.
        let h = hash_of(&self.0.labels).max(1);
        self.0.hash.store(h, Relaxed);
        h
    }
}

impl PartialEq for Labels {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0) || (self.hash_cached() == o.hash_cached() && self.0.labels == o.0.labels)
    }
}

impl Eq for Labels {}

impl PartialOrd for Labels {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Labels {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.labels.cmp(&o.0.labels)
    }
}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash_cached());
    }
}

impl Default for Labels {
    fn default() -> Self {
        Labels::empty()
    }
}

/// Hash over names and values with their lengths, eight bytes at a time
/// (multiply-rotate, as FxHash does).
fn hash_of(v: &[Label]) -> u64 {
    let mut h = LabelHasher::default();
    for l in v {
        h.add(l);
    }
    h.0
}

/// The streaming form of [`hash_of`]: labels added one by one, in order,
/// hash as the label set of exactly those labels does.
#[derive(Default)]
struct LabelHasher(u64);

impl LabelHasher {
    #[inline]
    fn add(&mut self, l: &Label) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let h = &mut self.0;
        let mut add = |w: u64| *h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        for part in [l.name.as_bytes(), l.value.as_bytes()] {
            let mut chunks = part.chunks_exact(8);
            for c in &mut chunks {
                add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
            }
            let rest = chunks.remainder();
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab"+"c" apart from "a"+"bc".
            add(u64::from_le_bytes(last) ^ ((part.len() as u64) << 56));
        }
    }
}

/// Sorts label sets into groups by the labels a predicate keeps (an
/// aggregation's `by` or `without`, a histogram's labels but `le`). A
/// group's label set is built once, for its first member; later members are
/// matched by a hash and a comparison, without allocating.
pub struct Grouper<F> {
    keep: F,
    /// The first group of each hash (already well mixed, so not hashed
    /// again).
    first: crate::IntHashMap<u64, usize>,
    /// The next group with the same hash, or `usize::MAX`.
    next: Vec<usize>,
    groups: Vec<Labels>,
}

impl<F: Fn(&str) -> bool> Grouper<F> {
    /// `keep` tells, by name, which labels make up the group.
    pub fn new(keep: F) -> Self {
        Grouper {
            keep,
            first: crate::IntHashMap::default(),
            next: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// The index of the group of `l`, in order of first appearance.
    pub fn group_of(&mut self, l: &Labels) -> usize {
        let keep = &self.keep;
        let mut h = LabelHasher::default();
        for x in l.iter().filter(|x| keep(&x.name)) {
            h.add(x);
        }
        let h = h.0.max(1);
        let mut g = self.first.get(&h).copied().unwrap_or(usize::MAX);
        while g != usize::MAX {
            if self.groups[g].iter().eq(l.iter().filter(|x| keep(&x.name))) {
                return g;
            }
            g = self.next[g];
        }
        let labels: Vec<Label> = l.iter().filter(|x| keep(&x.name)).cloned().collect();
        let g = self.groups.len();
        let set = Labels::new_inner(labels);
        set.0.hash.store(h, std::sync::atomic::Ordering::Relaxed);
        self.groups.push(set);
        self.next.push(self.first.insert(h, g).unwrap_or(usize::MAX));
        g
    }

    /// The label set of the group of `l`, made afresh (its hash kept), for
    /// a caller that remembers it to pass to [`Grouper::group_of_group`].
    pub fn project(&self, l: &Labels) -> Labels {
        let keep = &self.keep;
        let labels: Vec<Label> = l.iter().filter(|x| keep(&x.name)).cloned().collect();
        let set = Labels::new_inner(labels);
        set.hash_cached();
        set
    }

    /// The index of the group of `set`, a group's label set made by a
    /// grouper with the same `keep` (a part's group, merged into the
    /// whole's): a new group takes `set` itself rather than a copy.
    pub fn group_of_group(&mut self, set: &Labels) -> usize {
        let h = set.hash_cached();
        let mut g = self.first.get(&h).copied().unwrap_or(usize::MAX);
        while g != usize::MAX {
            if self.groups[g] == *set {
                return g;
            }
            g = self.next[g];
        }
        let g = self.groups.len();
        self.groups.push(set.clone());
        self.next.push(self.first.insert(h, g).unwrap_or(usize::MAX));
        g
    }

    /// The groups' label sets, by index.
    pub fn groups(&self) -> &[Labels] {
        &self.groups
    }

    pub fn into_groups(self) -> Vec<Labels> {
        self.groups
    }
}

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Labels::new_inner(Vec::new())
    }

    /// Builds a label set from pairs in any order; empty values are dropped and
    /// a repeated name keeps its last value.
    pub fn from_pairs<N: Into<Str>, V: Into<Str>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let v: Vec<Label> = pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect();
        Self::from_vec(v)
    }

    /// Builds a label set from labels in any order (see [`Labels::from_pairs`]).
    pub fn from_vec(mut v: Vec<Label>) -> Self {
        // Stable sort keeps insertion order among equal names, so "last wins" below.
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(last) if last.name == l.name => *last = l,
                _ => out.push(l),
            }
        }
        out.retain(|l| !l.value.is_empty());
        Labels::new_inner(out)
    }

    /// Wraps labels the caller guarantees are sorted, unique and non-empty.
    /// Checked in debug builds.
    pub fn from_sorted_unchecked(v: Vec<Label>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].name < w[1].name));
        debug_assert!(v.iter().all(|l| !l.value.is_empty()));
        Labels::new_inner(v)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.labels.iter()
    }

    pub fn len(&self) -> usize {
        self.0.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.labels.is_empty()
    }

    /// The value of label `name`, or `""` when absent (Prometheus semantics).
    pub fn get(&self, name: &str) -> &str {
        match self.0.labels.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => &self.0.labels[i].value,
            Err(_) => "",
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.labels.binary_search_by(|l| l.name.as_str().cmp(name)).is_ok()
    }

    /// The metric name, or `""`. Asked of every series a query reads: the
    /// names are scanned by length (held beside each name's pointer), and
    /// only one of the metric name's length is compared byte by byte, where
    /// a binary search compares the bytes of several.
    pub fn metric_name(&self) -> &str {
        self.0
            .labels
            .iter()
            .find(|l| l.name.len() == METRIC_NAME.len() && l.name.as_str() == METRIC_NAME)
            .map_or("", |l| l.value.as_str())
    }

    /// A copy without the metric name.
    pub fn without_metric_name(&self) -> Labels {
        if !self.has(METRIC_NAME) {
            return self.clone();
        }
        Labels::new_inner(self.iter().filter(|l| l.name != METRIC_NAME).cloned().collect())
    }

    /// Keeps only the labels whose names are in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels::new_inner(
            self.0
                .labels
                .iter()
                .filter(|l| names.iter().any(|n| *n == l.name))
                .cloned()
                .collect(),
        )
    }

    /// Drops the labels whose names are in `names`.
    pub fn drop_names(&self, names: &[String]) -> Labels {
        Labels::new_inner(
            self.0
                .labels
                .iter()
                .filter(|l| !names.iter().any(|n| *n == l.name))
                .cloned()
                .collect(),
        )
    }

    /// A builder starting from these labels.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            labels: self.0.labels.to_vec(),
        }
    }

    pub fn to_vec(&self) -> Vec<Label> {
        self.0.labels.to_vec()
    }

    /// A stable 64-bit hash of the label set (computed on first use).
    pub fn hash64(&self) -> u64 {
        self.hash_cached()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.labels.iter()
    }
}

impl fmt::Display for Labels {
    /// Prometheus's notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        f.write_str(name)?;
        let rest: Vec<&Label> = self.0.labels.iter().filter(|l| l.name != METRIC_NAME).collect();
        if rest.is_empty() && !name.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, l) in rest.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=\"", l.name)?;
            for c in l.value.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Edits a label set; `labels()` restores the sorted, unique invariant.
#[derive(Debug, Clone, Default)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`; an empty value deletes the label.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.labels.retain(|l| l.name != name);
        if !value.is_empty() {
            self.labels.push(Label::new(name, value));
        }
        self
    }

    pub fn del(&mut self, name: &str) -> &mut Self {
        self.labels.retain(|l| l.name != name);
        self
    }

    pub fn get(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
            .unwrap_or("")
    }

    pub fn labels(&self) -> Labels {
        Labels::from_vec(self.labels.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_order_by_their_text_whether_or_not_they_share_storage() {
        let texts = ["", "a", "ab", "b", "model", "model_name", "é", "z"];
        let shared: Vec<Str> = texts.iter().map(|t| Str::from(*t)).collect();
        for (i, a) in texts.iter().enumerate() {
            for (j, b) in texts.iter().enumerate() {
                let want = a.cmp(b);
                // One handle against another of the same storage, and
                // against a copy of the text in storage of its own.
                assert_eq!(shared[i].cmp(&shared[j]), want, "{a:?} {b:?}");
                assert_eq!(shared[i].cmp(&Str::from(*b)), want, "{a:?} {b:?}");
                assert_eq!(shared[i].partial_cmp(&shared[j].clone()), Some(want), "{a:?} {b:?}");
            }
        }
        let x = Labels::from_pairs([("__name__", "x"), ("model", "a")]);
        let y = Labels::from_pairs([("__name__", "x"), ("model", "b")]);
        assert_eq!(x.cmp(&x.clone()), std::cmp::Ordering::Equal);
        assert_eq!(x.cmp(&y), std::cmp::Ordering::Less);
        assert_eq!(y.cmp(&x), std::cmp::Ordering::Greater);
    }

    #[test]
    fn a_grouper_builds_each_projection_once_and_equal_to_a_plain_label_set() {
        let sets = [
            Labels::from_pairs([("__name__", "x"), ("le", "1"), ("model", "a"), ("zone", "z1")]),
            Labels::from_pairs([("__name__", "x"), ("le", "2"), ("model", "a"), ("zone", "z1")]),
            Labels::from_pairs([("__name__", "x"), ("le", "1"), ("model", "b"), ("zone", "z1")]),
            Labels::from_pairs([("__name__", "y"), ("le", "1"), ("model", "a"), ("zone", "z1")]),
            // A projection that is empty.
            Labels::from_pairs([("__name__", "x"), ("le", "3")]),
        ];
        let mut g = Grouper::new(|n: &str| n == "model" || n == "zone");
        let idx: Vec<usize> = sets.iter().map(|l| g.group_of(l)).collect();
        assert_eq!(idx, vec![0, 0, 1, 0, 2]);
        let groups = g.into_groups();
        for (i, l) in sets.iter().enumerate() {
            let plain = l.keep(&["model".to_string(), "zone".to_string()]);
            assert_eq!(groups[idx[i]], plain);
            assert_eq!(groups[idx[i]].hash64(), plain.hash64());
        }
        assert!(groups[2].is_empty());

        // Merging two parts' groups: a set seen before finds its group, a new
        // one becomes its own group as it is (no copy), in order of arrival.
        let keep = |n: &str| n == "model" || n == "zone";
        let (mut p1, mut p2) = (Grouper::new(keep), Grouper::new(keep));
        for l in &sets[..3] {
            p1.group_of(l);
        }
        for l in &sets[2..] {
            p2.group_of(l);
        }
        let mut whole = Grouper::new(keep);
        let parts: Vec<Labels> = p1.into_groups().into_iter().chain(p2.into_groups()).collect();
        let merged: Vec<usize> = parts.iter().map(|l| whole.group_of_group(l)).collect();
        assert_eq!(merged, vec![0, 1, 1, 0, 2]);
        let whole_groups = whole.into_groups();
        assert_eq!(whole_groups, groups);
        assert!(whole_groups[0].is_same_set(&parts[0]) && whole_groups[2].is_same_set(&parts[4]));
    }

    #[test]
    fn a_grouper_tells_apart_projections_that_only_move_bytes_between_name_and_value() {
        let mut g = Grouper::new(|n: &str| n != "le");
        let a = g.group_of(&Labels::from_pairs([("ab", "c")]));
        let b = g.group_of(&Labels::from_pairs([("a", "bc")]));
        let c = g.group_of(&Labels::from_pairs([("ab", "c"), ("le", "+Inf")]));
        assert_ne!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn from_pairs_sorts_dedups_and_drops_empty() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.to_vec(), vec![Label::new("a", "1"), Label::new("b", "3")]);
        assert_eq!(l.get("b"), "3");
        assert_eq!(l.get("zz"), "");
    }

    #[test]
    fn display_matches_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(l.to_string(), "up{job=\"a\\\"b\"}");
        assert_eq!(Labels::from_pairs([("__name__", "up")]).to_string(), "up");
        assert_eq!(Labels::empty().to_string(), "{}");
    }

    #[test]
    fn hash_differs_for_shifted_boundaries() {
        let a = Labels::from_pairs([("a", "bc")]);
        let b = Labels::from_pairs([("ab", "c")]);
        assert_ne!(a.hash64(), b.hash64());
    }
}
