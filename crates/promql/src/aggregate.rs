//! Aggregation operators. Group membership depends only on labels, so it is
//! computed once per series; values are then aggregated step by step.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::token;
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier, VectorSelector};
use sextant_model::{Grouper, Labels, METRIC_NAME};

use crate::eval::{value_label, Evaluator, SSeries, Val};
use crate::functions::{kahan_inc, quantile};
use crate::value::{Error, Point};

/// Groups series by an aggregation's `by` or `without` labels (none: one
/// group).
pub(crate) fn grouper(m: &Option<LabelModifier>) -> Grouper<impl Fn(&str) -> bool + '_> {
    Grouper::new(move |name: &str| match m {
        Some(LabelModifier::Include(by)) => by.labels.iter().any(|n| n == name),
        Some(LabelModifier::Exclude(without)) => name != METRIC_NAME && !without.labels.iter().any(|n| n == name),
        None => false,
    })
}

/// Streaming state of one group at one step.
#[derive(Clone, Copy, Default)]
pub(crate) struct Acc {
    count: f64,
    value: f64,
    kahan: f64,
    mean: f64,
    incremental: bool,
}

/// Range functions whose output has one series per input series, with its
/// labels (the metric name aside): an aggregation over one of them applied
/// to a selector reads of each series only the labels it groups by.
pub(crate) const PER_SERIES_RANGE_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "predict_linear",
    "changes",
    "resets",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "mad_over_time",
    "last_over_time",
    "present_over_time",
];

fn unparen(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unparen(&p.expr),
        e => e,
    }
}

/// The selector whose series an aggregation takes one for one (directly, or
/// through a per-series range function), and the labels it reads of them:
/// for an aggregation whose output is built from its `by` labels alone.
pub(crate) fn label_projection(a: &AggregateExpr) -> Option<(&VectorSelector, Arc<[String]>)> {
    let groups_only = matches!(
        a.op.id(),
        token::T_SUM
            | token::T_AVG
            | token::T_MIN
            | token::T_MAX
            | token::T_COUNT
            | token::T_GROUP
            | token::T_STDDEV
            | token::T_STDVAR
            | token::T_QUANTILE
    );
    let names: Arc<[String]> = match &a.modifier {
        _ if !groups_only => return None,
        Some(LabelModifier::Include(by)) => by.labels.clone().into(),
        None => Arc::from([]),
        Some(LabelModifier::Exclude(_)) => return None,
    };
    let vs = match unparen(&a.expr) {
        Expr::VectorSelector(vs) => vs,
        Expr::Call(c) if PER_SERIES_RANGE_FUNCTIONS.contains(&c.func.name) => {
            c.args.args.iter().find_map(|x| match unparen(x) {
                Expr::MatrixSelector(m) => Some(&m.vs),
                _ => None,
            })?
        }
        _ => return None,
    };
    Some((vs, names))
}

pub(crate) fn eval(ev: &Evaluator<'_>, a: &AggregateExpr) -> Result<Val, Error> {
    let op = a.op.id();
    let input = match crate::fold::eval(ev, a)? {
        crate::fold::Outcome::Folded(out) => return Ok(Val::Vector(out)),
        crate::fold::Outcome::Input(input) => input,
        crate::fold::Outcome::NotTried => unfolded_input(ev, a)?,
    };
    aggregate_input(ev, a, op, input)
}

/// The input of aggregation `a`, each series read whole (with the label
/// projection the aggregation allows).
fn unfolded_input(ev: &Evaluator<'_>, a: &AggregateExpr) -> Result<Vec<SSeries>, Error> {
    Ok(match label_projection(a) {
        Some((vs, names)) => {
            let outer = ev
                .only_labels
                .replace(Some((vs as *const VectorSelector as usize, names)));
            let input = ev.eval_vector_arg(&a.expr);
            *ev.only_labels.borrow_mut() = outer;
            input?
        }
        None => ev.eval_vector_arg(&a.expr)?,
    })
}

fn aggregate_input(
    ev: &Evaluator<'_>,
    a: &AggregateExpr,
    op: token::TokenId,
    input: Vec<SSeries>,
) -> Result<Val, Error> {
    let n = ev.steps();
    let param_scalar = match (&a.param, op) {
        (Some(p), token::T_TOPK | token::T_BOTTOMK | token::T_QUANTILE | token::T_LIMITK | token::T_LIMIT_RATIO) => {
            Some(ev.eval_scalar_arg(p)?)
        }
        _ => None,
    };
    if op == token::T_COUNT_VALUES {
        let label = match &a.param {
            Some(p) => ev.eval_string_arg(p)?,
            None => return Err(Error::exec("count_values needs a label name")),
        };
        return count_values(ev, &input, &label, &a.modifier);
    }
    // Grouping by the metric name keeps names that are due to be dropped, and the
    // group inherits the drop: the end of evaluation removes them.
    let by_name = matches!(&a.modifier, Some(LabelModifier::Include(by)) if by.labels.iter().any(|l| l == METRIC_NAME));
    // Group index per series, and the groups' labels.
    let mut groups = grouper(&a.modifier);
    let sgroup: Vec<usize> = input.iter().map(|s| groups.group_of(&s.labels)).collect();
    let glabels = groups.into_groups();
    let ng = glabels.len();
    if let Some(out) = series_major(ev, op, &input, &sgroup, &glabels)? {
        let mut out = out;
        if by_name {
            for (i, s) in input.iter().enumerate() {
                if s.drop_name {
                    out[sgroup[i]].drop_name = true;
                }
            }
        }
        out.retain(|s| !s.points.is_empty());
        return Ok(Val::Vector(out));
    }
    // Series cursors for walking steps.
    let mut cur = vec![0usize; input.len()];
    let selecting = matches!(
        op,
        token::T_TOPK | token::T_BOTTOMK | token::T_LIMITK | token::T_LIMIT_RATIO
    );
    let mut out: Vec<SSeries> = if selecting {
        Vec::new()
    } else {
        glabels
            .iter()
            .map(|l| SSeries {
                labels: l.clone(),
                drop_name: false,
                points: Vec::new(),
            })
            .collect()
    };
    let mut sel_out: HashMap<usize, usize> = HashMap::new();
    let mut members: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ng];
    // `topk` and `bottomk` break ties of value by labels. Over many steps
    // the input's order by labels is worked out once, so that a tie costs an
    // integer comparison instead of comparing label sets at every step.
    let label_rank: Option<Vec<u32>> = (n > 1 && matches!(op, token::T_TOPK | token::T_BOTTOMK)).then(|| {
        let mut by_labels: Vec<usize> = (0..input.len()).collect();
        by_labels.sort_by(|&x, &y| input[x].labels.cmp(&input[y].labels));
        let mut rank = vec![0u32; input.len()];
        for (r, w) in by_labels.windows(2).enumerate() {
            // Equal label sets share a rank, as they compare equal.
            let same = input[w[0]].labels == input[w[1]].labels;
            rank[w[1]] = if same { rank[w[0]] } else { r as u32 + 1 };
        }
        rank
    });
    if let (Some(rank), Some(params)) = (&label_rank, &param_scalar) {
        if let Some(out) = top_series_major(ev, op == token::T_TOPK, &input, &sgroup, ng, params, rank)? {
            return Ok(Val::Vector(out));
        }
    }
    for k in 0..n {
        ev.check()?;
        let t = ev.ts(k);
        for m in members.iter_mut() {
            m.clear();
        }
        for (i, s) in input.iter().enumerate() {
            if let Some(p) = s.points.get(cur[i]) {
                if p.t == t {
                    members[sgroup[i]].push((i, p.v));
                    cur[i] += 1;
                }
            }
        }
        let param = param_scalar.as_ref().map(|v| v[k]);
        if selecting {
            let p = param.unwrap_or(f64::NAN);
            if p.is_nan() {
                return Err(Error::exec(if op == token::T_LIMIT_RATIO {
                    "Ratio value is NaN"
                } else {
                    "Parameter value is NaN"
                }));
            }
            let mut picked: Vec<(usize, f64)> = Vec::new();
            for m in &members {
                if m.is_empty() {
                    continue;
                }
                match op {
                    token::T_TOPK | token::T_BOTTOMK => {
                        let kk = if p >= m.len() as f64 {
                            m.len()
                        } else if p < 1.0 {
                            0
                        } else {
                            p as usize
                        };
                        let top = op == token::T_TOPK;
                        // NaN sorts as the least desirable value either way;
                        // labels break ties, so the order is total.
                        let order = |x: &(usize, f64), y: &(usize, f64)| {
                            top_value_order(top, x.1, y.1).then_with(|| match &label_rank {
                                Some(rank) => rank[x.0].cmp(&rank[y.0]),
                                None => input[x.0].labels.cmp(&input[y.0].labels),
                            })
                        };
                        // Only the first `kk` in order are kept. A few of many
                        // are kept in order as the members go by: most members
                        // cost one comparison with the last one kept.
                        if kk > 0 && kk <= 32 && kk < m.len() {
                            let mut best: Vec<(usize, f64)> = Vec::with_capacity(kk + 1);
                            for x in m {
                                if best.len() == kk {
                                    if order(x, &best[kk - 1]) != std::cmp::Ordering::Less {
                                        continue;
                                    }
                                    best.pop();
                                }
                                let at = best.partition_point(|y| order(y, x) != std::cmp::Ordering::Greater);
                                best.insert(at, *x);
                            }
                            picked.extend(best);
                            continue;
                        }
                        // Otherwise select them, then sort just those.
                        let mut v = m.clone();
                        if kk < v.len() {
                            if kk > 0 {
                                v.select_nth_unstable_by(kk - 1, order);
                            }
                            v.truncate(kk);
                        }
                        v.sort_by(order);
                        picked.extend(v);
                    }
                    token::T_LIMITK => {
                        let kk = if p >= m.len() as f64 {
                            m.len()
                        } else if p < 1.0 {
                            0
                        } else {
                            p as usize
                        };
                        let mut v = m.clone();
                        v.sort_by(|x, y| input[x.0].labels.hash64().cmp(&input[y.0].labels.hash64()));
                        picked.extend(v.into_iter().take(kk));
                    }
                    _ => {
                        let r = p.clamp(-1.0, 1.0);
                        if r != p {
                            ev.warn(format!(
                                "ratio value should be between -1 and 1, got {p}, capping to {r}"
                            ));
                        }
                        for &(i, v) in m {
                            let off = input[i].labels.hash64() as f64 / u64::MAX as f64;
                            let keep = if r >= 0.0 { off < r } else { off >= 1.0 + r };
                            if keep {
                                picked.push((i, v));
                            }
                        }
                    }
                }
            }
            for (i, v) in picked {
                let oi = *sel_out.entry(i).or_insert_with(|| {
                    out.push(SSeries {
                        labels: input[i].labels.clone(),
                        drop_name: input[i].drop_name,
                        points: Vec::new(),
                    });
                    out.len() - 1
                });
                out[oi].points.push(Point { t, v });
            }
            continue;
        }
        if op == token::T_QUANTILE {
            let q = param.unwrap_or(f64::NAN);
            if !(0.0..=1.0).contains(&q) {
                ev.warn(format!(
                    "quantile value should be between 0 and 1, got {} {}",
                    fmt_g(q),
                    ev.arg_pos("quantile", 0)
                ));
            }
        }
        for (g, m) in members.iter().enumerate() {
            if m.is_empty() {
                continue;
            }
            let v = match op {
                token::T_SUM => {
                    let (mut s, mut c) = (0.0, 0.0);
                    for &(_, v) in m {
                        (s, c) = kahan_inc(v, s, c);
                    }
                    if s.is_infinite() {
                        s
                    } else {
                        s + c
                    }
                }
                token::T_AVG => {
                    let mut acc = Acc {
                        count: 1.0,
                        value: m[0].1,
                        ..Acc::default()
                    };
                    for &(_, v) in &m[1..] {
                        acc.count += 1.0;
                        if !acc.incremental {
                            let (nv, nc) = kahan_inc(v, acc.value, acc.kahan);
                            if !nv.is_infinite() {
                                acc.value = nv;
                                acc.kahan = nc;
                                continue;
                            }
                            acc.incremental = true;
                            acc.mean = acc.value / (acc.count - 1.0);
                            acc.kahan /= acc.count - 1.0;
                        }
                        let q = (acc.count - 1.0) / acc.count;
                        (acc.mean, acc.kahan) = kahan_inc(v / acc.count, q * acc.mean, q * acc.kahan);
                    }
                    if acc.incremental {
                        acc.mean + acc.kahan
                    } else {
                        acc.value / acc.count + acc.kahan / acc.count
                    }
                }
                token::T_COUNT => m.len() as f64,
                token::T_GROUP => 1.0,
                token::T_MIN => {
                    let mut x = m[0].1;
                    for &(_, v) in &m[1..] {
                        if x > v || x.is_nan() {
                            x = v;
                        }
                    }
                    x
                }
                token::T_MAX => {
                    let mut x = m[0].1;
                    for &(_, v) in &m[1..] {
                        if x < v || x.is_nan() {
                            x = v;
                        }
                    }
                    x
                }
                token::T_STDDEV | token::T_STDVAR => {
                    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    for &(_, v) in m {
                        count += 1.0;
                        let delta = v - (mean + cmean);
                        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
                        (aux, caux) = kahan_inc(delta * (v - (mean + cmean)), aux, caux);
                    }
                    let var = (aux + caux) / count;
                    if op == token::T_STDDEV {
                        var.sqrt()
                    } else {
                        var
                    }
                }
                token::T_QUANTILE => {
                    let mut vals: Vec<f64> = m.iter().map(|x| x.1).collect();
                    quantile(param.unwrap_or(f64::NAN), &mut vals)
                }
                _ => return Err(Error::exec(format!("unsupported aggregation {}", a.op))),
            };
            out[g].points.push(Point { t, v });
        }
    }
    if by_name && !selecting {
        for (i, s) in input.iter().enumerate() {
            if s.drop_name {
                out[sgroup[i]].drop_name = true;
            }
        }
    }
    out.retain(|s| !s.points.is_empty());
    Ok(Val::Vector(out))
}

/// The widest `k` that [`top_series_major`] keeps in order as the members
/// go by; a larger one takes the step-by-step walk, which selects and sorts.
const TOP_MAJOR_K: usize = 32;

/// The most places (groups × steps × `k`) [`top_series_major`] holds.
const TOP_MAJOR_PLACES: usize = 1 << 20;

/// `topk` (`top`) and `bottomk` over many steps, series by series: each
/// point of each series, in input order, is offered to the first `k` of its
/// group at its step, kept in order in a place of their own. Each group at
/// each step sees its members in the same order as in the step-by-step walk
/// and keeps them by the same rule (a member that is not before the last
/// kept one is passed over; one that is goes after every kept one not after
/// it), so the answer is the walk's, series for series and point for point.
/// The walk visits every series at every step, which on an input of
/// hundreds of series over a hundred steps misses the cache at nearly every
/// visit (the GPU power top 5 of a fleet's hosts spent most of its serial
/// time there); this reads each series' points once, in order. `None` when
/// the input needs the walk: a point off the step grid, a `k` above
/// [`TOP_MAJOR_K`], too many places.
fn top_series_major(
    ev: &Evaluator<'_>,
    top: bool,
    input: &[SSeries],
    sgroup: &[usize],
    ng: usize,
    params: &[f64],
    rank: &[u32],
) -> Result<Option<Vec<SSeries>>, Error> {
    let n = ev.steps();
    if n < 2 || params.len() != n {
        return Ok(None);
    }
    if params.iter().any(|p| p.is_nan()) {
        return Err(Error::exec("Parameter value is NaN"));
    }
    // `k` at each step, as the walk takes it (no more than the members).
    let ks: Vec<usize> = params
        .iter()
        .map(|&p| {
            if p >= input.len() as f64 {
                input.len()
            } else if p < 1.0 {
                0
            } else {
                p as usize
            }
        })
        .collect();
    let width = ks.iter().copied().max().unwrap_or(0);
    if width > TOP_MAJOR_K || ng.saturating_mul(n).saturating_mul(width) > TOP_MAJOR_PLACES {
        return Ok(None);
    }
    let (start, step) = (ev.ts(0), ev.ts(1) - ev.ts(0));
    // Whether member `x` goes before `y`.
    let before = |x: (u32, f64), y: (u32, f64)| {
        top_value_order(top, x.1, y.1).then_with(|| rank[x.0 as usize].cmp(&rank[y.0 as usize]))
            == std::cmp::Ordering::Less
    };
    let mut places = vec![(0u32, 0.0f64); ng * n * width];
    let mut lens = vec![0u8; ng * n];
    for (i, s) in input.iter().enumerate() {
        if i % 1024 == 0 {
            ev.check()?;
        }
        let base = sgroup[i] * n;
        let mut next = 0usize;
        for p in &s.points {
            let off = p.t - start;
            if off < 0 || off % step != 0 || (off / step) as usize >= n || ((off / step) as usize) < next {
                // Off the grid, or two points at one step: the walk's.
                return Ok(None);
            }
            let k = (off / step) as usize;
            next = k + 1;
            let kk = ks[k];
            if kk == 0 {
                continue;
            }
            let cell = base + k;
            let list = &mut places[cell * width..cell * width + kk];
            let x = (i as u32, p.v);
            let mut len = lens[cell] as usize;
            if len == kk {
                if !before(x, list[kk - 1]) {
                    continue;
                }
                len -= 1;
            }
            let at = list[..len].partition_point(|&y| !before(x, y));
            list.copy_within(at..len, at + 1);
            list[at] = x;
            lens[cell] = (len + 1) as u8;
        }
    }
    // The output in the walk's order: series as they are first picked,
    // step by step, group by group.
    let mut out: Vec<SSeries> = Vec::new();
    let mut out_of = vec![u32::MAX; input.len()];
    for k in 0..n {
        let t = ev.ts(k);
        for g in 0..ng {
            let cell = g * n + k;
            for &(i, v) in &places[cell * width..cell * width + lens[cell] as usize] {
                let o = &mut out_of[i as usize];
                if *o == u32::MAX {
                    *o = out.len() as u32;
                    out.push(SSeries {
                        labels: input[i as usize].labels.clone(),
                        drop_name: input[i as usize].drop_name,
                        points: Vec::new(),
                    });
                }
                out[*o as usize].points.push(Point { t, v });
            }
        }
    }
    Ok(Some(out))
}

/// One group at one step, for the series-major aggregations.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cell {
    pub(crate) n: f64,
    acc: Acc,
}

/// Adds value `v` of a member to its group's cell, for `op` (one of
/// [`series_major`]'s).
#[inline]
pub(crate) fn add_point(op: token::TokenId, c: &mut Cell, v: f64) {
    c.n += 1.0;
    let a = &mut c.acc;
    match op {
        token::T_SUM => (a.value, a.kahan) = kahan_inc(v, a.value, a.kahan),
        token::T_MIN if c.n == 1.0 || a.value > v || a.value.is_nan() => a.value = v,
        token::T_MAX if c.n == 1.0 || a.value < v || a.value.is_nan() => a.value = v,
        token::T_AVG => {
            if c.n == 1.0 {
                a.count = 1.0;
                a.value = v;
                return;
            }
            a.count += 1.0;
            if !a.incremental {
                let (nv, nc) = kahan_inc(v, a.value, a.kahan);
                if !nv.is_infinite() {
                    a.value = nv;
                    a.kahan = nc;
                    return;
                }
                a.incremental = true;
                a.mean = a.value / (a.count - 1.0);
                a.kahan /= a.count - 1.0;
            }
            let q = (a.count - 1.0) / a.count;
            (a.mean, a.kahan) = kahan_inc(v / a.count, q * a.mean, q * a.kahan);
        }
        _ => {}
    }
}

/// Merges the cell `from`, which saw the members after those of `into`,
/// into `into`. `false` when it cannot be done without changing the result
/// beyond rounding (an `avg` whose sum overflowed: its mean is then updated
/// member by member).
pub(crate) fn merge_cell(op: token::TokenId, into: &mut Cell, from: &Cell) -> bool {
    if from.n == 0.0 {
        return true;
    }
    if into.n == 0.0 {
        *into = *from;
        return true;
    }
    let (a, b) = (&mut into.acc, &from.acc);
    match op {
        token::T_SUM => {
            (a.value, a.kahan) = kahan_inc(b.value, a.value, a.kahan);
            a.kahan += b.kahan;
        }
        token::T_MIN if a.value > b.value || a.value.is_nan() => a.value = b.value,
        token::T_MAX if a.value < b.value || a.value.is_nan() => a.value = b.value,
        token::T_AVG => {
            if a.incremental || b.incremental {
                return false;
            }
            let (v, k) = kahan_inc(b.value, a.value, a.kahan);
            if v.is_infinite() {
                return false;
            }
            (a.value, a.kahan) = (v, k + b.kahan);
            a.count += b.count;
        }
        _ => {}
    }
    into.n += from.n;
    true
}

/// The aggregate of a cell that saw at least one member.
pub(crate) fn cell_value(op: token::TokenId, c: &Cell) -> f64 {
    let a = &c.acc;
    match op {
        token::T_SUM if a.value.is_infinite() => a.value,
        token::T_SUM => a.value + a.kahan,
        token::T_COUNT => c.n,
        token::T_GROUP => 1.0,
        token::T_AVG if a.incremental => a.mean + a.kahan,
        token::T_AVG => a.value / a.count + a.kahan / a.count,
        _ => a.value,
    }
}

/// `sum`, `count`, `group`, `min`, `max` and `avg` walk each series once, in
/// input order, and fold its points into per-group, per-step cells. Each cell
/// sees its members in the same order as the step-by-step walk, so the
/// results are identical, bit for bit; this order just reads every series'
/// points sequentially instead of visiting every series at every step.
fn series_major(
    ev: &Evaluator<'_>,
    op: token::TokenId,
    input: &[SSeries],
    sgroup: &[usize],
    glabels: &[Labels],
) -> Result<Option<Vec<SSeries>>, Error> {
    if !matches!(
        op,
        token::T_SUM | token::T_COUNT | token::T_GROUP | token::T_MIN | token::T_MAX | token::T_AVG
    ) {
        return Ok(None);
    }
    let n = ev.steps();
    let step = if n > 1 { ev.ts(1) - ev.ts(0) } else { 1 };
    let start = ev.ts(0);
    let mut cells = vec![Cell::default(); glabels.len() * n];
    for (i, s) in input.iter().enumerate() {
        if i % 1024 == 0 {
            ev.check()?;
        }
        let base = sgroup[i] * n;
        for p in &s.points {
            let off = p.t - start;
            if off < 0 || off % step != 0 || (off / step) as usize >= n {
                // Not on the step grid: leave it to the general walk.
                return Ok(None);
            }
            add_point(op, &mut cells[base + (off / step) as usize], p.v);
        }
    }
    let out = glabels
        .iter()
        .enumerate()
        .map(|(g, l)| {
            let points = (0..n)
                .filter_map(|k| {
                    let c = &cells[g * n + k];
                    (c.n != 0.0).then(|| Point {
                        t: ev.ts(k),
                        v: cell_value(op, c),
                    })
                })
                .collect();
            SSeries {
                labels: l.clone(),
                drop_name: false,
                points,
            }
        })
        .collect();
    Ok(Some(out))
}

fn count_values(ev: &Evaluator<'_>, input: &[SSeries], label: &str, m: &Option<LabelModifier>) -> Result<Val, Error> {
    if !crate::functions::valid_label_name(label) {
        return Err(Error::exec(format!("invalid label name {label:?}")));
    }
    let mut groups = grouper(m);
    let sgroup: Vec<usize> = input.iter().map(|s| groups.group_of(&s.labels)).collect();
    let glabels = groups.into_groups();
    let mut out: Vec<SSeries> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut cur = vec![0usize; input.len()];
    for k in 0..ev.steps() {
        let t = ev.ts(k);
        let mut counts: Vec<(Labels, f64)> = Vec::new();
        let mut pos: HashMap<Labels, usize> = HashMap::new();
        for (i, s) in input.iter().enumerate() {
            if let Some(p) = s.points.get(cur[i]) {
                if p.t == t {
                    cur[i] += 1;
                    let mut b = glabels[sgroup[i]].builder();
                    b.set(label, &value_label(p.v));
                    let l = b.labels();
                    match pos.get(&l) {
                        Some(&j) => counts[j].1 += 1.0,
                        None => {
                            pos.insert(l.clone(), counts.len());
                            counts.push((l, 1.0));
                        }
                    }
                }
            }
        }
        for (l, c) in counts {
            let oi = *index.entry(l.clone()).or_insert_with(|| {
                out.push(SSeries {
                    labels: l,
                    drop_name: false,
                    points: Vec::new(),
                });
                out.len() - 1
            });
            out[oi].points.push(Point { t, v: c });
        }
    }
    Ok(Val::Vector(out))
}

/// Go's `%g`-like formatting used in messages.
pub(crate) fn fmt_g(v: f64) -> String {
    crate::value::format_float(v)
}

#[cfg(test)]
mod cell_tests {
    use promql_parser::parser::token;

    use super::{add_point, cell_value, merge_cell, Cell};

    fn fold(op: token::TokenId, vs: &[f64]) -> Cell {
        let mut c = Cell::default();
        for v in vs {
            add_point(op, &mut c, *v);
        }
        c
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    #[test]
    fn a_merge_of_two_runs_equals_the_run_of_both_or_refuses() {
        let runs: [&[f64]; 7] = [
            &[f64::NAN, 3.0, -2.0, 7.5],
            &[3.0, f64::NAN, 1.0],
            &[1.0, f64::INFINITY, -4.0, f64::NEG_INFINITY, 2.0],
            &[0.1, 0.2, 0.3, 1e16, -1e16, 0.4],
            &[1.5e308, 1.5e308, -1.0],
            &[-0.0, 0.0, -0.0],
            &[5.0],
        ];
        let ops = [
            token::T_SUM,
            token::T_AVG,
            token::T_MIN,
            token::T_MAX,
            token::T_COUNT,
            token::T_GROUP,
        ];
        let mut refused = 0;
        for op in ops {
            for run in runs {
                let whole = cell_value(op, &fold(op, run));
                for cut in 0..=run.len() {
                    let mut into = fold(op, &run[..cut]);
                    if !merge_cell(op, &mut into, &fold(op, &run[cut..])) {
                        assert_eq!(op, token::T_AVG, "only an average may refuse: {run:?} at {cut}");
                        refused += 1;
                        continue;
                    }
                    assert_eq!(into.n, run.len() as f64);
                    let merged = cell_value(op, &into);
                    assert!(
                        same(merged, whole),
                        "{op:?} of {run:?} cut at {cut}: {merged} vs {whole}"
                    );
                }
            }
        }
        // The two halves of 1.5e308 + 1.5e308 each have a finite sum; their
        // merge overflows, which the walk handles by switching to a mean.
        assert!(refused >= 1);
    }
}

/// The order of `topk` (`top`) or `bottomk` by value alone: the larger
/// (smaller) value first, NaN after every number either way, NaNs and equal
/// values tied. The folded `topk` takes members in the same order.
#[inline]
pub(crate) fn top_value_order(top: bool, x: f64, y: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if top => y.partial_cmp(&x).unwrap_or(Ordering::Equal),
        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod selection_tests {
    use sextant_model::{Labels, Sample};

    use crate::{Engine, MemStore, Value};

    /// The order `topk` (`top`) or `bottomk` takes members in: by value, NaN
    /// last, then by labels.
    fn full_order(top: bool, a: &(Labels, f64), b: &(Labels, f64)) -> std::cmp::Ordering {
        let by_value = match (a.1.is_nan(), b.1.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ if top => b.1.total_cmp(&a.1),
            _ => a.1.total_cmp(&b.1),
        };
        by_value.then_with(|| a.0.cmp(&b.0))
    }

    #[test]
    fn topk_and_bottomk_over_a_range_keep_the_first_k_of_the_full_order_at_every_step() {
        let store = MemStore::new();
        let mut all = Vec::new();
        let steps = 6i64;
        for i in 0..40 {
            // Values change from step to step and tie often; some NaN;
            // labels are not in the order the series are added.
            let l = Labels::from_pairs([("__name__", "x"), ("i", &format!("{:02}", (i * 17) % 40))]);
            let vals: Vec<f64> = (0..steps)
                .map(|k| {
                    if (i + k) % 13 == 5 {
                        f64::NAN
                    } else {
                        ((i * 7 + k * 3) % 4) as f64
                    }
                })
                .collect();
            let samples: Vec<Sample> = vals
                .iter()
                .enumerate()
                .map(|(k, v)| Sample::new(k as i64 * 10_000, *v))
                .collect();
            store.add(l.clone(), &samples);
            all.push((l, vals));
        }
        let eng = Engine::default();
        // Of a selector, folded into the read; of an expression, series by
        // series (`k` up to 32) or step by step.
        for (top, input) in [(true, "x"), (false, "x"), (true, "x * 1"), (false, "x * 1")] {
            for k in [1usize, 3, 10, 32, 33, 39, 45] {
                let q = format!("{}({k}, {input})", if top { "topk" } else { "bottomk" });
                let r = eng.range(&store, &q, 0, (steps - 1) * 10_000, 10_000).expect(&q);
                let Value::Matrix(got) = r.value else { panic!("{q}") };
                for step in 0..steps as usize {
                    let mut want: Vec<(Labels, f64)> = all.iter().map(|(l, v)| (l.clone(), v[step])).collect();
                    want.sort_by(|a, b| full_order(top, a, b));
                    let mut want: Vec<String> = want.iter().take(k).map(|(l, _)| l.get("i").to_string()).collect();
                    want.sort();
                    let t = step as i64 * 10_000;
                    let mut picked: Vec<String> = got
                        .iter()
                        .filter(|s| s.points.iter().any(|p| p.t == t))
                        .map(|s| s.labels.get("i").to_string())
                        .collect();
                    picked.sort();
                    assert_eq!(picked, want, "{q} at step {step}");
                }
            }
        }
    }

    #[test]
    fn grouped_topk_and_bottomk_with_gaps_and_a_k_per_step_keep_each_groups_first_k() {
        let store = MemStore::new();
        // Steps ten minutes apart: a missed step is not filled by lookback.
        let steps = 9i64;
        // k per step from a series: 0, 1, 2, ... 8 (0 keeps nothing).
        let ks: Vec<Sample> = (0..steps).map(|k| Sample::new(k * 600_000, k as f64)).collect();
        store.add(Labels::from_pairs([("__name__", "k")]), &ks);
        let mut all = Vec::new();
        for i in 0..60i64 {
            let l = Labels::from_pairs([
                ("__name__", "x"),
                ("g", &format!("g{}", i % 3)),
                ("i", &format!("{:02}", (i * 23) % 60)),
            ]);
            // Some series miss some steps; values tie often; some NaN.
            let vals: Vec<Option<f64>> = (0..steps)
                .map(|k| match (i + 2 * k) % 9 {
                    0 => None,
                    4 => Some(f64::NAN),
                    r => Some(((i * 5 + k * r) % 6) as f64),
                })
                .collect();
            let samples: Vec<Sample> = vals
                .iter()
                .enumerate()
                .filter_map(|(k, v)| v.map(|v| Sample::new(k as i64 * 600_000, v)))
                .collect();
            store.add(l.clone(), &samples);
            all.push((l, vals));
        }
        let eng = Engine::default();
        for (top, input) in [(true, "x"), (false, "x"), (true, "x * 1"), (false, "x * 1")] {
            let q = format!("{} by (g) (scalar(k), {input})", if top { "topk" } else { "bottomk" });
            let r = eng.range(&store, &q, 0, (steps - 1) * 600_000, 600_000).expect(&q);
            let Value::Matrix(got) = r.value else { panic!("{q}") };
            for step in 0..steps as usize {
                let t = step as i64 * 600_000;
                for g in ["g0", "g1", "g2"] {
                    let mut want: Vec<(Labels, f64)> = all
                        .iter()
                        .filter(|(l, _)| l.get("g") == g)
                        .filter_map(|(l, v)| v[step].map(|v| (l.clone(), v)))
                        .collect();
                    want.sort_by(|a, b| full_order(top, a, b));
                    let want: Vec<(String, u64)> = want
                        .iter()
                        .take(step)
                        .map(|(l, v)| (l.get("i").to_string(), v.to_bits()))
                        .collect();
                    let mut picked: Vec<(String, u64)> = got
                        .iter()
                        .filter(|s| s.labels.get("g") == g)
                        .filter_map(|s| {
                            let p = s.points.iter().find(|p| p.t == t)?;
                            Some((s.labels.get("i").to_string(), p.v.to_bits()))
                        })
                        .collect();
                    let mut want = want;
                    picked.sort();
                    want.sort();
                    assert_eq!(picked, want, "{q} at step {step} in {g}");
                }
            }
        }
    }

    #[test]
    fn topk_and_bottomk_keep_the_first_k_of_the_full_order() {
        let store = MemStore::new();
        let mut all = Vec::new();
        for i in 0..50 {
            // Few distinct values, so ties are broken by labels; some NaN.
            let v = if i % 11 == 3 { f64::NAN } else { ((i * 7) % 5) as f64 };
            let l = Labels::from_pairs([("__name__", "x"), ("i", &format!("{i:02}"))]);
            store.add(l.clone(), &[Sample::new(0, v)]);
            all.push((l, v));
        }
        let eng = Engine::default();
        for top in [true, false] {
            let mut want = all.clone();
            want.sort_by(|a, b| full_order(top, a, b));
            for k in [0usize, 1, 2, 5, 17, 49, 50, 60] {
                let q = format!("{}({k}, x)", if top { "topk" } else { "bottomk" });
                let r = eng.instant(&store, &q, 0).expect(&q);
                let Value::Vector(got) = r.value else { panic!("{q}") };
                let got: Vec<(String, u64)> = got
                    .iter()
                    .map(|s| (s.labels.get("i").to_string(), s.v.to_bits()))
                    .collect();
                let want: Vec<(String, u64)> = want
                    .iter()
                    .take(k)
                    .map(|(l, v)| (l.get("i").to_string(), v.to_bits()))
                    .collect();
                assert_eq!(got, want, "{q}");
            }
        }
    }
}
