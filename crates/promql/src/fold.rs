//! Aggregations folded into the read. `sum`, `count`, `group`, `min`, `max`
//! and `avg` of a selector, directly or through a per-series range function
//! (`sum by (le) (rate(x_bucket[5m]))`), do not need a vector per input
//! series: each reading thread folds the output of the series it reads
//! into per-group, per-step cells of its own, and the parts' cells are
//! merged in read order at the end. `topk` and `bottomk` of a selector
//! fold the same way: each part keeps each group's first `k` at each step,
//! and the parts' firsts are merged into the whole's. The step-by-step
//! evaluation stays the reference; whatever the fold cannot reproduce (a
//! point off the step grid, an `avg` whose sum overflowed, too many kept
//! places) makes the aggregation run that way.

use std::sync::{Arc, Mutex};

use promql_parser::parser::token::{self, TokenId};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier, VectorSelector};
use sextant_model::{FoldPart, Grouper, IntHashMap, Labels, Sample, METRIC_NAME};

use crate::aggregate::{
    add_point, cell_value, grouper, label_projection, merge_cell, Cell, PER_SERIES_RANGE_FUNCTIONS,
};
use crate::eval::{Evaluator, SSeries};
use crate::value::{Error, Point};

/// What an aggregation asks of the read of its selector.
pub(crate) struct Spec {
    op: TokenId,
    modifier: Option<LabelModifier>,
    start: i64,
    step: i64,
    steps: usize,
    /// For `topk` and `bottomk`: which, and `k` at each step.
    top: Option<TopSpec>,
    /// The grouping (`by` or `without` and the names) as a number, to
    /// remember group label sets by.
    grouping: u64,
}

impl Spec {
    /// Whether the read is better cut into few large parts: a `topk` part
    /// keeps its own first `k`, and keeps less of what it sees the more it
    /// sees.
    pub(crate) fn wants_large_parts(&self) -> bool {
        self.top.is_some()
    }
}

/// What `topk` (`top`) or `bottomk` keeps: the first `ks[step]` members of
/// each group at each step, at most `kmax`.
struct TopSpec {
    top: bool,
    ks: Vec<usize>,
    kmax: usize,
}

/// The largest `k` a fold keeps in order as the members go by; a larger
/// one takes the step-by-step walk, which selects and sorts.
const TOP_FOLD_K: usize = 32;

/// The most kept places (groups × steps × `k`) a part holds; beyond them it
/// gives way to the walk, which holds one step at a time.
const TOP_FOLD_PLACES: usize = 1 << 20;

/// The fold an aggregation has asked for, by its selector's address, and,
/// once the selector is read, what the read's parts gathered, in read order.
pub(crate) struct Slot {
    pub(crate) at: usize,
    pub(crate) spec: Arc<Spec>,
    pub(crate) parts: Option<Vec<Gathered>>,
}

/// What one part of the read gathered.
pub(crate) struct Gathered {
    first: usize,
    groups: Vec<Labels>,
    /// `steps` cells a group, group after group.
    cells: Vec<Cell>,
    /// For `topk` and `bottomk`: each group's first members at each step.
    kept: Kept,
    /// A point fell off the step grid, or too many places were to be kept:
    /// what the part gathered is incomplete.
    incomplete: bool,
    /// The distinct metric names of the series the part took.
    names: Vec<String>,
}

struct Part<'s, F> {
    spec: &'s Spec,
    grouper: Grouper<F>,
    gathered: Gathered,
    done: &'s Mutex<Vec<Gathered>>,
    /// The groups of the label sets seen, by the address of their
    /// allocation: a store that hands out one shared set for the series
    /// projecting onto it (a block's reader does) has the group found
    /// without hashing the labels. Each set is held, so its address cannot
    /// be reused by another; emptied when it reaches [`SEEN_SETS`].
    seen: IntHashMap<usize, (Labels, usize)>,
    /// The aggregation has one group (no `by` labels): its index once the
    /// first series has made it, which every later series takes without
    /// looking at its labels.
    one_group: Option<usize>,
}

/// Label sets a part remembers the group of: more are a sign of sets made
/// for each series, whose addresses never repeat.
const SEEN_SETS: usize = 4096;

thread_local! {
    /// The group label sets of the label sets folds on this thread saw
    /// lately, by the set's address and the grouping: a store that hands
    /// out one shared set for the series projecting onto it keeps handing
    /// out the same one, query after query, and its group's set (hashed
    /// once) is not built again. Each set is held, so its address cannot be
    /// reused by another; emptied when it reaches [`KEPT_GROUP_SETS`].
    static GROUP_SETS: std::cell::RefCell<IntHashMap<(usize, u64), (Labels, Labels)>> =
        std::cell::RefCell::new(IntHashMap::default());
}

/// Label sets whose group sets a thread keeps.
const KEPT_GROUP_SETS: usize = 8192;

/// The label set of the group of `labels` under `grouping` (`grouper`'s).
fn group_set<F: Fn(&str) -> bool>(grouper: &Grouper<F>, grouping: u64, labels: &Labels) -> Labels {
    let key = (labels.address(), grouping);
    GROUP_SETS.with_borrow_mut(|kept| {
        if let Some((_, set)) = kept.get(&key) {
            return set.clone();
        }
        let set = grouper.project(labels);
        if kept.len() >= KEPT_GROUP_SETS {
            kept.clear();
        }
        kept.insert(key, (labels.clone(), set.clone()));
        set
    })
}

/// A grouping: none (0), `by` (1) or `without` (2), and its label names.
type Grouping = (u8, Vec<String>);

/// Groupings numbered so far, with the generation of the numbering.
static GROUPINGS: Mutex<(u64, Vec<Grouping>)> = Mutex::new((0, Vec::new()));

/// Groupings numbered before the numbering starts again (a new generation,
/// whose numbers no earlier one used).
const MAX_GROUPINGS: usize = 1024;

/// The number of grouping `m`: equal for equal groupings, never for
/// unequal ones.
fn grouping_id(m: &Option<LabelModifier>) -> u64 {
    let this: Grouping = match m {
        None => (0, Vec::new()),
        Some(LabelModifier::Include(by)) => (1, by.labels.clone()),
        Some(LabelModifier::Exclude(without)) => (2, without.labels.clone()),
    };
    let mut g = GROUPINGS.lock().unwrap_or_else(|e| e.into_inner());
    let (generation, known) = &mut *g;
    let at = match known.iter().position(|k| *k == this) {
        Some(at) => at,
        None => {
            if known.len() >= MAX_GROUPINGS {
                known.clear();
                *generation += 1;
            }
            known.push(this);
            known.len() - 1
        }
    };
    *generation << 32 | at as u64
}

/// A part's first `k` of each group at each step, for `topk` and
/// `bottomk`: `kmax` places a cell (group after group, step after step),
/// the first `lens[cell]` of them in use, in order, each a member's index
/// in `series` and its value. Once a cell holds `k`, most members cost one
/// comparison with its last.
#[derive(Default)]
struct Kept {
    places: Vec<(u32, f64)>,
    lens: Vec<u8>,
    /// The label sets of the series kept anywhere (and of some dropped
    /// again), in read order.
    series: Vec<Labels>,
}

/// Whether member `(xl, xv)` goes before `(yl, yv)` in `topk` (`top`) or
/// `bottomk` order: by value, NaN last either way, then by label set.
#[inline]
fn top_order(top: bool, xv: f64, xl: &Labels, yv: f64, yl: &Labels) -> std::cmp::Ordering {
    crate::aggregate::top_value_order(top, xv, yv).then_with(|| xl.cmp(yl))
}

impl<F> Part<'_, F> {
    /// Offers each point of a series of group `group` to the group's first
    /// `k` at its step.
    fn add_top(&mut self, t: &TopSpec, group: usize, labels: &Labels, mapped: &[Sample]) {
        let (spec, g) = (self.spec, &mut self.gathered);
        let kept = &mut g.kept;
        let cells = (group + 1) * spec.steps;
        let width = t.kmax;
        if cells * width > TOP_FOLD_PLACES {
            g.incomplete = true;
            return;
        }
        if kept.lens.len() < cells {
            kept.lens.resize(cells, 0);
            kept.places.resize(cells * width, (0, 0.0));
        }
        // The series is named by its place in `series`, where its labels go
        // when it is first kept (most members of many are kept nowhere).
        let me = kept.series.len() as u32;
        let mut used = false;
        let (mut k, mut tk) = (0usize, spec.start);
        for s in mapped {
            while k < spec.steps && tk < s.t {
                k += 1;
                tk += spec.step;
            }
            if k >= spec.steps || tk != s.t {
                g.incomplete = true;
                return;
            }
            let kk = t.ks[k];
            if kk == 0 {
                continue;
            }
            let cell = group * spec.steps + k;
            let list = &mut kept.places[cell * width..cell * width + kk];
            let series = &kept.series;
            // Whether `y` goes before the member (never equal to it: the
            // label sets of a read are distinct).
            let before =
                |y: &(u32, f64)| top_order(t.top, y.1, &series[y.0 as usize], s.v, labels) == std::cmp::Ordering::Less;
            let mut len = kept.lens[cell] as usize;
            if len == kk {
                // Most members of many lose to the last one kept.
                if before(&list[kk - 1]) {
                    continue;
                }
                len -= 1;
            }
            let at = list[..len].partition_point(before);
            list.copy_within(at..len, at + 1);
            list[at] = (me, s.v);
            kept.lens[cell] = (len + 1) as u8;
            if !used {
                kept.series.push(labels.clone());
                used = true;
            }
        }
    }
}

impl<F: Fn(&str) -> bool + Send> FoldPart for Part<'_, F> {
    fn add(&mut self, labels: &Labels, mapped: &[Sample]) {
        let (spec, g) = (self.spec, &mut self.gathered);
        // Two live sets lie more than 16 bytes apart, and the low bits of
        // an address carry nothing for the multiply that hashes it.
        let key = labels.address() >> 4;
        let group = match self.one_group {
            Some(group) => {
                note_name(&mut g.names, labels);
                group
            }
            None => match self.seen.get(&key) {
                Some(&(_, group)) => group,
                None => {
                    note_name(&mut g.names, labels);
                    let set = group_set(&self.grouper, spec.grouping, labels);
                    let group = self.grouper.group_of_group(&set);
                    if by_nothing(&spec.modifier) {
                        self.one_group = Some(group);
                    } else {
                        if self.seen.len() >= SEEN_SETS {
                            self.seen.clear();
                        }
                        self.seen.insert(key, (labels.clone(), group));
                    }
                    group
                }
            },
        };
        if let Some(t) = &spec.top {
            self.add_top(t, group, labels, mapped);
            return;
        }
        let base = group * spec.steps;
        if g.cells.len() < base + spec.steps {
            g.cells.resize(base + spec.steps, Cell::default());
        }
        // A window function's points come in step order: the step of each is
        // found by walking the grid along with them, not by dividing.
        let (mut k, mut tk) = (0usize, spec.start);
        for s in mapped {
            while k < spec.steps && tk < s.t {
                k += 1;
                tk += spec.step;
            }
            let at = if k < spec.steps && tk == s.t {
                k
            } else {
                let off = s.t - spec.start;
                if off < 0 || off % spec.step != 0 || (off / spec.step) as usize >= spec.steps {
                    g.incomplete = true;
                    continue;
                }
                (off / spec.step) as usize
            };
            add_point(spec.op, &mut g.cells[base + at], s.v);
        }
    }

    fn finish(self: Box<Self>) {
        let Part {
            grouper,
            mut gathered,
            done,
            ..
        } = *self;
        gathered.groups = grouper.into_groups();
        done.lock().unwrap_or_else(|e| e.into_inner()).push(gathered);
    }
}

/// Cell buffers of finished folds, kept for the next ones: a part's cells
/// take a few hundred kilobytes, and on a machine whose allocator returns
/// freed memory at once, faulting in fresh pages for them costs more than
/// filling them.
static SPARE: Mutex<Vec<Vec<Cell>>> = Mutex::new(Vec::new());

/// At most this many bytes of spare cell buffers are kept.
const SPARE_BYTES: usize = 8 << 20;

fn take_cells() -> Vec<Cell> {
    let mut v = SPARE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default();
    v.clear();
    v
}

fn give_back(v: Vec<Cell>) {
    let bytes = |v: &Vec<Cell>| v.capacity() * std::mem::size_of::<Cell>();
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    if v.capacity() > 0 && spare.iter().map(bytes).sum::<usize>() + bytes(&v) <= SPARE_BYTES {
        spare.push(v);
    }
}

/// Adds the metric name of `labels` to `names` unless it is there.
fn note_name(names: &mut Vec<String>, labels: &Labels) {
    let name = labels.metric_name();
    if !name.is_empty() && names.last().is_none_or(|l| l != name) && !names.iter().any(|l| l == name) {
        names.push(name.to_string());
    }
}

/// Whether an aggregation under `modifier` has one group: no modifier, or
/// `by` no label.
fn by_nothing(modifier: &Option<LabelModifier>) -> bool {
    match modifier {
        None => true,
        Some(LabelModifier::Include(by)) => by.labels.is_empty(),
        Some(LabelModifier::Exclude(_)) => false,
    }
}

/// Makes the part of a folded read that starts at position `first`; it
/// hands its cells to `done` when finished.
pub(crate) fn new_part<'s>(spec: &'s Spec, first: usize, done: &'s Mutex<Vec<Gathered>>) -> Box<dyn FoldPart + 's> {
    Box::new(Part {
        spec,
        grouper: grouper(&spec.modifier),
        gathered: Gathered {
            first,
            groups: Vec::new(),
            cells: take_cells(),
            kept: Kept::default(),
            incomplete: false,
            names: Vec::new(),
        },
        done,
        seen: IntHashMap::default(),
        one_group: None,
    })
}

/// The distinct metric names of the series a folded read of `vs` took, when
/// `vs` was read by a fold: the function applied to it cannot see them in
/// its (empty) output.
pub(crate) fn folded_names(ev: &Evaluator<'_>, vs: &VectorSelector) -> Vec<String> {
    let slot = ev.fold.borrow();
    let mut out: Vec<String> = Vec::new();
    if let Some(Slot {
        at, parts: Some(parts), ..
    }) = &*slot
    {
        if *at == vs as *const VectorSelector as usize {
            for n in parts.iter().flat_map(|p| &p.names) {
                if !out.contains(n) {
                    out.push(n.clone());
                }
            }
        }
    }
    out
}

/// The selector an aggregation can fold the read of: the aggregation is one
/// of those with per-group cells, does not group by the metric name, and
/// takes its selector directly or through a per-series range function of a
/// single metric (so that dropping the name cannot make two series one);
/// or it is `topk` or `bottomk` of a selector, whose members keep their
/// labels as they are.
fn foldable(a: &AggregateExpr) -> Option<&VectorSelector> {
    let op = a.op.id();
    if let Some(LabelModifier::Include(by)) = &a.modifier {
        if by.labels.iter().any(|l| l == METRIC_NAME) {
            return None;
        }
    }
    if matches!(op, token::T_TOPK | token::T_BOTTOMK) {
        return match unparen(&a.expr) {
            Expr::VectorSelector(vs) => Some(vs),
            _ => None,
        };
    }
    if !matches!(
        op,
        token::T_SUM | token::T_COUNT | token::T_GROUP | token::T_MIN | token::T_MAX | token::T_AVG
    ) || a.param.is_some()
    {
        return None;
    }
    match unparen(&a.expr) {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::Call(c) if PER_SERIES_RANGE_FUNCTIONS.contains(&c.func.name) => {
            let vs = c.args.args.iter().find_map(|x| match unparen(x) {
                Expr::MatrixSelector(m) => Some(&m.vs),
                _ => None,
            })?;
            let named = vs.name.is_some()
                || vs
                    .matchers
                    .matchers
                    .iter()
                    .any(|m| m.name == METRIC_NAME && matches!(m.op, promql_parser::label::MatchOp::Equal));
            named.then_some(vs)
        }
        _ => None,
    }
}

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        e => e,
    }
}

/// What [`eval`] did.
pub(crate) enum Outcome {
    /// The aggregation's result.
    Folded(Vec<SSeries>),
    /// The input was evaluated, but not folded: aggregate it as usual.
    Input(Vec<SSeries>),
    /// Nothing was done: evaluate the aggregation as usual.
    NotTried,
}

/// Evaluates aggregation `a` with its selector's read folded, when it can be.
pub(crate) fn eval(ev: &Evaluator<'_>, a: &AggregateExpr) -> Result<Outcome, Error> {
    let Some(vs) = foldable(a) else {
        return Ok(Outcome::NotTried);
    };
    let steps = ev.steps();
    let top = match (a.op.id(), &a.param) {
        (op @ (token::T_TOPK | token::T_BOTTOMK), Some(p)) => {
            match top_spec(op == token::T_TOPK, &ev.eval_scalar_arg(p)?, steps) {
                Some(t) => Some(t),
                // A `k` the walk must check or that is too large to keep in order.
                None => return Ok(Outcome::NotTried),
            }
        }
        _ => None,
    };
    let spec = Arc::new(Spec {
        op: a.op.id(),
        modifier: a.modifier.clone(),
        start: ev.ts(0),
        step: if steps > 1 { ev.ts(1) - ev.ts(0) } else { 1 },
        steps,
        top,
        grouping: grouping_id(&a.modifier),
    });
    let at = vs as *const VectorSelector as usize;
    let outer_fold = ev.fold.replace(Some(Slot {
        at,
        spec: spec.clone(),
        parts: None,
    }));
    let outer_labels = label_projection(a).map(|(_, names)| ev.only_labels.replace(Some((at, names))));
    let input = ev.eval_vector_arg(&a.expr);
    let slot = ev.fold.replace(outer_fold);
    if let Some(outer) = outer_labels {
        *ev.only_labels.borrow_mut() = outer;
    }
    let input = input?;
    let Some(parts) = slot.and_then(|s| s.parts) else {
        return Ok(Outcome::Input(input));
    };
    let folded = merge(ev, &spec, &parts, input.is_empty());
    for p in parts {
        give_back(p.cells);
    }
    Ok(match folded {
        Some(out) => Outcome::Folded(out),
        None => Outcome::NotTried,
    })
}

/// `k` at each step of `topk` (`top`) or `bottomk` from its parameter's
/// values; `None` for a NaN (an error the walk reports) or a `k` above
/// [`TOP_FOLD_K`].
fn top_spec(top: bool, params: &[f64], steps: usize) -> Option<TopSpec> {
    if params.len() < steps {
        return None;
    }
    let mut ks = Vec::with_capacity(steps);
    for &p in &params[..steps] {
        if p.is_nan() || p >= (TOP_FOLD_K + 1) as f64 {
            return None;
        }
        // As the walk: below 1 keeps nothing; a fraction is cut off.
        ks.push(if p < 1.0 { 0 } else { p as usize });
    }
    let kmax = ks.iter().copied().max().unwrap_or(0);
    Some(TopSpec { top, ks, kmax })
}

/// The aggregation's output from the cells of the parts, in read order;
/// `None` when they cannot give it exactly.
/// The members of each output group, `(part, group in the part)` in read
/// order, in one list: a group's own list each would be an allocation for
/// every group (hundreds of hosts), on every query.
struct Members {
    /// Where each group's members start in `list`, and the end.
    starts: Vec<usize>,
    list: Vec<(usize, usize)>,
}

impl Members {
    /// From `placed`, each part's group as `(output group, part, group)` in
    /// read order, of `n` output groups.
    fn new(n: usize, placed: &[(usize, usize, usize)]) -> Self {
        let mut starts = vec![0usize; n + 1];
        for &(to, _, _) in placed {
            starts[to + 1] += 1;
        }
        for i in 0..n {
            starts[i + 1] += starts[i];
        }
        let mut next = starts.clone();
        let mut list = vec![(0, 0); placed.len()];
        for &(to, pi, g) in placed {
            list[next[to]] = (pi, g);
            next[to] += 1;
        }
        Members { starts, list }
    }

    fn of(&self, g: usize) -> &[(usize, usize)] {
        &self.list[self.starts[g]..self.starts[g + 1]]
    }

    fn all(&self) -> impl Iterator<Item = &[(usize, usize)]> + '_ {
        (0..self.starts.len() - 1).map(|g| self.of(g))
    }
}

fn merge(ev: &Evaluator<'_>, spec: &Spec, parts: &[Gathered], input_empty: bool) -> Option<Vec<SSeries>> {
    let steps = spec.steps;
    if !input_empty || parts.iter().any(|p| p.incomplete) {
        return None;
    }
    // The parts' groups, in read order, become the output's groups; each
    // group's cells are those of its parts, merged in read order (often a
    // group is in one part alone, and its cells are used as they are).
    let mut groups = grouper(&spec.modifier);
    let mut placed: Vec<(usize, usize, usize)> = Vec::with_capacity(parts.iter().map(|p| p.groups.len()).sum());
    for (pi, p) in parts.iter().enumerate() {
        for (g, labels) in p.groups.iter().enumerate() {
            placed.push((groups.group_of_group(labels), pi, g));
        }
    }
    let glabels = groups.into_groups();
    let members = Members::new(glabels.len(), &placed);
    if let Some(t) = &spec.top {
        return Some(merge_top(ev, t, steps, parts, &members));
    }
    let (start, step, op) = (ev.start, ev.step, spec.op);
    // The output series of groups `range`, in order.
    let series_of = |range: std::ops::Range<usize>| -> Option<Vec<SSeries>> {
        let mut merged = Vec::new();
        let mut out = Vec::with_capacity(range.len());
        for g in range {
            let cells_of = |(pi, g): (usize, usize)| &parts[pi].cells[g * steps..(g + 1) * steps];
            let cells = match members.of(g) {
                [one] => cells_of(*one),
                of => {
                    merged.clear();
                    merged.resize(steps, Cell::default());
                    for &m in of {
                        for (into, from) in merged.iter_mut().zip(cells_of(m)) {
                            if !merge_cell(op, into, from) {
                                return None;
                            }
                        }
                    }
                    &merged[..]
                }
            };
            // Sized first: collected from a filter, a series of one point
            // would take room for four.
            let mut points = Vec::with_capacity(cells.iter().filter(|c| c.n != 0.0).count());
            points.extend(
                cells
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.n != 0.0)
                    .map(|(k, c)| Point {
                        t: start + k as i64 * step,
                        v: cell_value(op, c),
                    }),
            );
            if !points.is_empty() {
                out.push(SSeries {
                    labels: glabels[g].clone(),
                    drop_name: false,
                    points,
                });
            }
        }
        Some(out)
    };
    // Many groups over many steps (a sum by host over hours: hundreds of
    // thousands of cells, megabytes read once) are turned into series on
    // every core, each pool thread taking a run of groups.
    let ng = glabels.len();
    if ng < 2 || ng.saturating_mul(steps) < PARALLEL_MERGE_CELLS || sextant_model::parallel::workers() < 2 {
        return series_of(0..ng);
    }
    let len = sextant_model::parallel::part_len(ng, 1);
    let runs = sextant_model::parallel::map_parts(ng.div_ceil(len), |k| series_of(k * len..((k + 1) * len).min(ng)));
    let mut out = Vec::with_capacity(ng);
    for r in runs {
        out.extend(r?);
    }
    Some(out)
}

/// Cells (groups × steps) from which a fold's output series are built on
/// every core.
const PARALLEL_MERGE_CELLS: usize = 1 << 15;

/// The output of `topk` or `bottomk` from the parts' firsts: in the walk's
/// order, step by step, group by group (in read order), each group's
/// members in order, and each series where it was first picked. `members`
/// holds each group's (part, group in part).
fn merge_top(ev: &Evaluator<'_>, t: &TopSpec, steps: usize, parts: &[Gathered], members: &Members) -> Vec<SSeries> {
    let mut out: Vec<SSeries> = Vec::new();
    // Output series by (part, index in the part's series).
    let mut out_of: IntHashMap<(usize, u32), usize> = IntHashMap::default();
    let mut picked: Vec<(usize, u32, f64)> = Vec::new();
    let labels_of = |pi: usize, si: u32| &parts[pi].kept.series[si as usize];
    for k in 0..steps {
        let kk = t.ks[k];
        if kk == 0 {
            continue;
        }
        let time = ev.ts(k);
        for of in members.all() {
            picked.clear();
            for &(pi, g) in of {
                let kept = &parts[pi].kept;
                let cell = g * steps + k;
                let Some(&len) = kept.lens.get(cell) else { continue };
                let first = cell * t.kmax;
                picked.extend(
                    kept.places[first..first + len as usize]
                        .iter()
                        .map(|&(si, v)| (pi, si, v)),
                );
            }
            // Label sets are distinct: the order is total.
            picked.sort_unstable_by(|x, y| top_order(t.top, x.2, labels_of(x.0, x.1), y.2, labels_of(y.0, y.1)));
            picked.truncate(kk);
            for &(pi, si, v) in &picked {
                let o = *out_of.entry((pi, si)).or_insert_with(|| {
                    out.push(SSeries {
                        labels: labels_of(pi, si).clone(),
                        drop_name: false,
                        points: Vec::new(),
                    });
                    out.len() - 1
                });
                out[o].points.push(Point { t: time, v });
            }
        }
    }
    out
}

/// Whether a read of `vs` is to be folded, and how.
pub(crate) fn spec_for(ev: &Evaluator<'_>, vs: &VectorSelector) -> Option<Arc<Spec>> {
    match &*ev.fold.borrow() {
        Some(s) if s.at == vs as *const VectorSelector as usize && s.parts.is_none() => Some(s.spec.clone()),
        _ => None,
    }
}

/// Keeps what the parts of the folded read of `vs` gathered, in read order.
pub(crate) fn store(ev: &Evaluator<'_>, vs: &VectorSelector, mut parts: Vec<Gathered>) {
    parts.sort_by_key(|p| p.first);
    match &mut *ev.fold.borrow_mut() {
        Some(s) if s.at == vs as *const VectorSelector as usize => s.parts = Some(parts),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use sextant_model::{
        Folded, Labels, Mapped, Matcher, NewFoldPart, Queryable, ReadError, Sample, SampleMap, SelectHints, Series,
    };

    use super::{grouping_id, LabelModifier, MAX_GROUPINGS};
    use crate::{Engine, MemStore, QueryResult, Value};

    /// A store whose folded reads hand out the series three at a time to
    /// parts that are finished last first, as several threads might.
    struct Parted {
        inner: MemStore,
        folds: AtomicUsize,
        parts: AtomicUsize,
    }

    impl Queryable for Parted {
        fn select(&self, ms: &[Matcher], mint: i64, maxt: i64, hints: SelectHints) -> Result<Vec<Series>, ReadError> {
            self.inner.select(ms, mint, maxt, hints)
        }
        fn select_map(
            &self,
            ms: &[Matcher],
            mint: i64,
            maxt: i64,
            hints: SelectHints,
            map: &SampleMap<'_>,
        ) -> Result<Mapped, ReadError> {
            self.inner.select_map(ms, mint, maxt, hints, map)
        }
        fn select_fold(
            &self,
            ms: &[Matcher],
            mint: i64,
            maxt: i64,
            hints: SelectHints,
            map: &SampleMap<'_>,
            part: &NewFoldPart<'_>,
        ) -> Result<Folded, ReadError> {
            self.folds.fetch_add(1, Ordering::Relaxed);
            let only = hints.only_labels.clone();
            let m = self.inner.select_map(ms, mint, maxt, hints, map)?;
            // Like a block's reader, series that project onto one label set
            // share one allocation of it.
            let mut shared: Vec<Labels> = Vec::new();
            let mut labels_of = |l: &Labels| match &only {
                None => l.clone(),
                Some(names) => {
                    let mut keep = names.to_vec();
                    keep.push(sextant_model::METRIC_NAME.to_string());
                    let p = l.keep(&keep);
                    match shared.iter().find(|x| **x == p) {
                        Some(x) => x.clone(),
                        None => {
                            shared.push(p.clone());
                            p
                        }
                    }
                }
            };
            let mut parts = Vec::new();
            for (k, run) in m.series.chunks(3).enumerate() {
                let mut p = part(k * 3);
                for s in run {
                    p.add(&labels_of(&s.labels), &s.samples);
                }
                parts.push(p);
            }
            self.parts.fetch_add(parts.len(), Ordering::Relaxed);
            for p in parts.into_iter().rev() {
                p.finish();
            }
            Ok(Folded {
                series: m.series.len(),
                samples_read: m.samples_read,
                stopped: m.stopped,
            })
        }
        fn label_names(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
            self.inner.label_names(ms, mint, maxt)
        }
        fn label_values(&self, n: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
            self.inner.label_values(n, ms, mint, maxt)
        }
    }

    /// Counters with resets (`c_total`), gauges with NaN, infinities and
    /// values so large that an average's sum overflows (`g`), a gauge that is
    /// not a counter by name (`level`), and series with gaps.
    fn store() -> Parted {
        let inner = MemStore::new();
        for i in 0..20i64 {
            let zone = ["a", "b", "c"][(i % 3) as usize];
            let model = ["m1", "m2"][(i % 2) as usize];
            let gpu = i.to_string();
            let l =
                |name: &str| Labels::from_pairs([("__name__", name), ("zone", zone), ("model", model), ("gpu", &gpu)]);
            let counter: Vec<Sample> = (0..120)
                .filter(|k| (k + i) % 17 != 0)
                .map(|k| {
                    Sample::new(
                        k * 15_000,
                        ((k * (i + 1)) % (50 + i * 7)) as f64 * 1.25 + 0.1 * i as f64,
                    )
                })
                .collect();
            inner.add(l("c_total"), &counter);
            let gauge: Vec<Sample> = (0..120)
                .map(|k| {
                    let v = match (i, k % 29) {
                        (3, 5) => f64::NAN,
                        (4, 7) => f64::INFINITY,
                        (5, 7) => f64::NEG_INFINITY,
                        (6..=9, 11) => 1.5e308,
                        _ => ((k * 31 + i * 17) % 97) as f64 / 7.0 - 3.0,
                    };
                    Sample::new(k * 15_000 + i * 100, v)
                })
                .collect();
            inner.add(l("g"), &gauge);
            inner.add(l("level"), &counter[..counter.len() / 2]);
        }
        Parted {
            inner,
            folds: AtomicUsize::new(0),
            parts: AtomicUsize::new(0),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits()
            || (a.is_nan() && b.is_nan())
            || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    /// The same values (within rounding), labels, times and annotations.
    fn assert_same(got: &QueryResult, want: &QueryResult, q: &str) {
        assert_eq!(got.annotations, want.annotations, "{q}");
        match (&got.value, &want.value) {
            (Value::Vector(a), Value::Vector(b)) => {
                assert_eq!(a.len(), b.len(), "{q}: {a:?} vs {b:?}");
                for (x, y) in a.iter().zip(b) {
                    assert_eq!((&x.labels, x.t), (&y.labels, y.t), "{q}");
                    assert!(close(x.v, y.v), "{q}: {x:?} vs {y:?}");
                }
            }
            (Value::Matrix(a), Value::Matrix(b)) => {
                assert_eq!(a.len(), b.len(), "{q}");
                for (x, y) in a.iter().zip(b) {
                    assert_eq!(x.labels, y.labels, "{q}");
                    assert_eq!(x.points.len(), y.points.len(), "{q} {:?}", x.labels);
                    for (p, r) in x.points.iter().zip(&y.points) {
                        assert_eq!(p.t, r.t, "{q}");
                        assert!(close(p.v, r.v), "{q} {:?}: {p:?} vs {r:?}", x.labels);
                    }
                }
            }
            (a, b) => panic!("{q}: {a:?} vs {b:?}"),
        }
    }

    /// `q`, read in several folded parts, answers as the unfolded
    /// `reference`, over a range and at an instant.
    fn assert_folded_as(eng: &Engine, q: &str, reference: &str) {
        let s = store();
        let got = eng.range(&s, q, 0, 1_800_000, 30_000).expect(q);
        let want = eng.range(&s.inner, reference, 0, 1_800_000, 30_000).expect(reference);
        assert_same(&got, &want, q);
        let got = eng.instant(&s, q, 1_000_000).expect(q);
        let want = eng.instant(&s.inner, reference, 1_000_000).expect(reference);
        assert_same(&got, &want, q);
        assert_eq!(s.folds.load(Ordering::Relaxed), 2, "{q} is folded");
        assert!(s.parts.load(Ordering::Relaxed) >= 2, "{q} read in several parts");
    }

    #[test]
    fn folded_aggregations_answer_as_the_step_by_step_walk() {
        let eng = Engine::default();
        let mut folded_queries = 0;
        for op in ["sum", "avg", "min", "max", "count", "group"] {
            for grouping in ["", " by (zone)", " by (zone, model)", " without (gpu)"] {
                for inner in [
                    "rate(c_total[1m])",
                    "increase(c_total[2m])",
                    "g",
                    "max_over_time(g[1m])",
                    "rate(level[1m])",
                ] {
                    let q = format!("{op}{grouping} ({inner})");
                    // A binary operation is not folded: the reference.
                    let reference = format!("{op}{grouping} ({inner} * 1)");
                    assert_folded_as(&eng, &q, &reference);
                    folded_queries += 1;
                }
            }
        }
        assert_eq!(folded_queries, 120);
    }

    #[test]
    fn each_groups_members_are_listed_in_read_order() {
        // Output group 1 is in parts 0, 2 and 3; group 0 in part 1 alone;
        // group 2 in no part; group 3 in parts 2 and 3.
        let placed = [(1, 0, 4), (0, 1, 0), (1, 2, 0), (3, 2, 1), (1, 3, 7), (3, 3, 0)];
        let m = super::Members::new(4, &placed);
        assert_eq!(m.of(0), [(1, 0)]);
        assert_eq!(m.of(1), [(0, 4), (2, 0), (3, 7)]);
        assert_eq!(m.of(2), []);
        assert_eq!(m.of(3), [(2, 1), (3, 0)]);
        assert_eq!(m.all().map(<[_]>::len).collect::<Vec<_>>(), [1, 3, 0, 2]);
        assert_eq!(super::Members::new(0, &[]).all().count(), 0);
    }

    #[test]
    fn many_groups_become_series_on_every_core() {
        // 600 series, two to a host; some miss some steps. By GPU or by
        // host over 120 steps: 36,000 cells or more, built on every core;
        // a host whose series fall in two parts of the read has its cells
        // merged first.
        let inner = MemStore::new();
        for i in 0..600i64 {
            let l = Labels::from_pairs([
                ("__name__", "g"),
                ("gpu", &format!("{i:03}")),
                ("host", &format!("h{:03}", i / 2)),
            ]);
            let samples: Vec<Sample> = (0..120)
                .filter(|k| (k + i) % 13 != 0)
                .map(|k| Sample::new(k * 15_000, ((k * 7 + i * 3) % 23) as f64 / 4.0))
                .collect();
            inner.add(l, &samples);
        }
        let s = Parted {
            inner,
            folds: AtomicUsize::new(0),
            parts: AtomicUsize::new(0),
        };
        let eng = Engine::default();
        for q in [
            "sum by (gpu) (g)",
            "avg by (host) (g)",
            "max without (gpu) (g)",
            "count by (host) (g)",
        ] {
            let reference = q.replace("(g)", "(g * 1)");
            let got = eng.range(&s, q, 0, 119 * 15_000, 15_000).expect(q);
            let want = eng.range(&s.inner, &reference, 0, 119 * 15_000, 15_000).expect(q);
            assert_same(&got, &want, q);
            let Value::Matrix(m) = &got.value else { panic!("{q}") };
            assert!(m.len() >= 300, "{q}: {} series", m.len());
        }
        assert_eq!(s.folds.load(Ordering::Relaxed), 4);
        assert!(s.parts.load(Ordering::Relaxed) >= 8);
    }

    #[test]
    fn folded_topk_and_bottomk_answer_as_the_step_by_step_walk() {
        let eng = Engine::default();
        let mut folded_queries = 0;
        for op in ["topk", "bottomk"] {
            for grouping in ["", " by (zone)", " by (zone, model)", " without (gpu)"] {
                // The last k changes from step to step: 0 at some, with
                // fractions at others.
                for k in ["1", "2", "5", "25", "scalar(c_total{gpu=\"1\"}) / 10"] {
                    for inner in ["g", "level", "{__name__=~\"g|level\"}"] {
                        let q = format!("{op}{grouping} ({k}, {inner})");
                        // A function of the selector is not folded: the
                        // reference (`label_replace` keeps every label).
                        let reference =
                            format!("{op}{grouping} ({k}, label_replace({inner}, \"none\", \"\", \"none\", \"\"))");
                        assert_folded_as(&eng, &q, &reference);
                        folded_queries += 1;
                    }
                }
            }
        }
        assert_eq!(folded_queries, 120);
    }

    #[test]
    fn the_group_sets_kept_for_label_sets_are_kept_per_grouping() {
        // One store for every query: its label sets (and so their
        // addresses) stay the same from query to query, and each grouping
        // must find its own groups' sets, not another's.
        let eng = Engine::default();
        let s = store();
        for round in 0..2 {
            for grouping in [
                " by (zone)",
                " by (model)",
                " by (zone, model)",
                " without (gpu)",
                " without (zone)",
                "",
            ] {
                for inner in ["g", "rate(c_total[1m])"] {
                    let q = format!("sum{grouping} ({inner})");
                    let reference = format!("sum{grouping} ({inner} * 1)");
                    let got = eng.instant(&s.inner, &q, 1_000_000).expect(&q);
                    let want = eng.instant(&s.inner, &reference, 1_000_000).expect(&reference);
                    assert_same(&got, &want, &format!("{q} (round {round})"));
                }
            }
        }
        // Numbers of groupings: one per grouping, and none reused when the
        // numbering starts again.
        let by = |names: &[&str]| {
            Some(LabelModifier::Include(promql_parser::label::Labels::new(
                names.to_vec(),
            )))
        };
        let a = grouping_id(&by(&["zone"]));
        assert_eq!(a, grouping_id(&by(&["zone"])));
        assert_ne!(a, grouping_id(&by(&["model"])));
        assert_ne!(a, grouping_id(&None));
        let mut seen = std::collections::HashSet::new();
        for i in 0..MAX_GROUPINGS + 10 {
            assert!(
                seen.insert(grouping_id(&by(&[&format!("l{i}")]))),
                "a number used twice"
            );
        }
        assert!(
            seen.insert(grouping_id(&by(&["zone"]))),
            "renumbered in a new generation"
        );
    }

    #[test]
    fn an_overflowing_average_falls_back_to_the_walk_and_name_grouping_is_not_folded() {
        let eng = Engine::default();
        let s = store();
        // Four series of one zone hold 1.5e308 at the same step: their sum
        // overflows in the parts, and the fold gives way to the walk.
        let q = "avg by (model) (g)";
        let got = eng.range(&s, q, 0, 1_800_000, 15_000).expect(q);
        let want = eng
            .range(&s.inner, "avg by (model) (g * 1)", 0, 1_800_000, 15_000)
            .expect(q);
        assert_same(&got, &want, q);
        let Value::Matrix(m) = &got.value else { panic!("{q}") };
        assert!(
            m.iter().flat_map(|s| &s.points).any(|p| p.v.is_finite() && p.v > 1e307),
            "{q}: the large values are averaged, not overflowed: {m:?}"
        );
        for q in [
            "sum by (__name__) (g)",
            "sum(rate({__name__=~\"c_total|level\"}[1m]))",
            "topk(2, rate(c_total[1m]))",
            "topk(33, g)",
        ] {
            let s = store();
            eng.range(&s, q, 0, 600_000, 30_000).expect(q);
            assert_eq!(s.folds.load(Ordering::Relaxed), 0, "{q} is not folded");
        }
        // A NaN `k` is the walk's error to report.
        let s = store();
        let e = eng.range(&s, "bottomk(scalar(g), g)", 0, 600_000, 30_000).unwrap_err();
        assert!(e.to_string().contains("Parameter value is NaN"), "{e}");
        assert_eq!(s.folds.load(Ordering::Relaxed), 0);
    }
}
