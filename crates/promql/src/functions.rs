//! PromQL functions over float samples.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use promql_parser::parser::{Call, Expr};
use sextant_model::{is_stale_nan, Grouper, Labels, MatchOp, Sample, METRIC_NAME};

use crate::eval::{convert_matchers, Evaluator, Limits, RangeArg, RangeInput, SSeries, Val};
use crate::histogram::{bucket_fraction, bucket_quantile, Bucket};
use crate::value::{Error, Point};

/// Kahan–Neumaier compensated summation step: returns `(sum, compensation)`.
#[inline]
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// The φ-quantile of values (sorted in place), interpolating between neighbours.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Label names are any non-empty UTF-8 (Prometheus 3's default scheme).
pub(crate) fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
}

/// One window of a series, for window functions.
pub(crate) struct Win {
    pub start: i64,
    pub end: i64,
    pub range: i64,
    pub t: i64,
    /// The whole series never decreases, so no window holds a counter reset.
    pub monotonic: bool,
}

/// Points of windows handed to a window function between two checks of the
/// query's deadline: one series' windows can hold billions of points (a long
/// subquery at a fine step), far more than a timeout allows.
const POINTS_BETWEEN_CHECKS: usize = 1 << 22;

/// Applies `f` to the window of `pts` ending at each of `refs`, in one pass,
/// handing each result to `emit` with its step's time. Fails when the query's
/// deadline passes or it is cancelled on the way.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn windows_of<F: Fn(&[Point], &Win, usize) -> Option<f64> + ?Sized>(
    pts: &[Point],
    monotonic: bool,
    refs: &[i64],
    range: i64,
    start: i64,
    step: i64,
    f: &F,
    limits: &Limits,
    mut emit: impl FnMut(i64, f64),
) -> Result<(), Error> {
    let mut since_check = 0usize;
    let (mut lo, mut hi) = (0usize, 0usize);
    // How far each end moved at the last step: at a regular interval, both
    // ends move by the same count at every step.
    let (mut lo_by, mut hi_by) = (0usize, 0usize);
    for (k, &r) in refs.iter().enumerate() {
        let wstart = r - range;
        let (lo0, hi0) = (lo, hi);
        hi = advance(pts, hi, hi_by, pts.len(), r);
        lo = advance(pts, lo, lo_by, hi, wstart);
        (lo_by, hi_by) = (lo - lo0, hi - hi0);
        if lo >= hi {
            continue;
        }
        let t = start + k as i64 * step;
        let w = Win {
            start: wstart,
            end: r,
            range,
            t,
            monotonic,
        };
        since_check += hi - lo;
        if since_check >= POINTS_BETWEEN_CHECKS {
            since_check = 0;
            limits.check()?;
        }
        if let Some(v) = f(&pts[lo..hi], &w, k) {
            emit(t, v);
        }
    }
    Ok(())
}

/// The first index from `from` on, below `bound`, of a point later than
/// `limit` (or `bound`), where every point before `from` is at or before it.
/// Tries `from + by` first with one predictable test, then steps on point by
/// point: at a regular interval the window's ends move by the same count at
/// every step, and a loop whose exit changes from step to step mispredicts
/// it.
#[inline(always)]
fn advance(pts: &[Point], from: usize, by: usize, bound: usize, limit: i64) -> usize {
    let g = from + by;
    if by > 0 && g <= bound && pts[g - 1].t <= limit && (g == bound || pts[g].t > limit) {
        return g;
    }
    let mut i = from;
    while i < bound && pts[i].t <= limit {
        i += 1;
    }
    i
}

/// Whether any point is a stale marker, and whether no value is below the
/// one before it (a NaN counts as a fall): one pass without early exits, so
/// that it runs at the speed of the loads.
fn stale_and_monotonic(pts: &[Point]) -> (bool, bool) {
    let Some(first) = pts.first() else {
        return (false, true);
    };
    let (mut stale, mut monotonic) = (is_stale_nan(first.v), true);
    for w in pts.windows(2) {
        stale |= is_stale_nan(w[1].v);
        monotonic &= w[1].v >= w[0].v;
    }
    (stale, monotonic)
}

fn is_monotonic(pts: &[Point]) -> bool {
    stale_and_monotonic(pts).1
}

thread_local! {
    /// A reader thread's points of the series it is windowing.
    static POINTS: std::cell::RefCell<Vec<Point>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Applies `f` to each series' window at every step in one pass per series.
/// A matrix selector is read series by series straight through `f`, on
/// several threads for large selections; an evaluated input is split across
/// the machine's cores when large.
///
/// Generic in `f`, so that each function's arithmetic is compiled into the
/// loop over its windows instead of called once a window.
fn over_windows<F: Fn(&[Point], &Win, usize) -> Option<f64> + Sync + ?Sized>(
    ev: &Evaluator<'_>,
    input: &RangeArg<'_>,
    drop_name: bool,
    f: &F,
) -> Result<Vec<SSeries>, Error> {
    match input {
        RangeArg::Ready(r) => over_evaluated(ev, r, drop_name, f),
        RangeArg::Matrix { vs, range, refs } => {
            let (start, step, limits, range) = (ev.start, ev.step, ev.limits, *range);
            let lo = refs.iter().copied().min().unwrap_or(ev.start);
            let hi = refs.iter().copied().max().unwrap_or(ev.end);
            let map = |samples: &[Sample], out: &mut Vec<Sample>| -> bool {
                if limits.check_series().is_err() {
                    return false;
                }
                out.reserve(refs.len().min(samples.len()));
                // Windows take the decoded samples as they are, unless stale
                // markers are to be left out first.
                let (stale, monotonic) = stale_and_monotonic(samples);
                if !stale {
                    let done = windows_of(samples, monotonic, refs, range, start, step, f, limits, |t, v| {
                        out.push(Sample { t, v })
                    });
                    return done.is_ok();
                }
                POINTS.with(|cell| -> bool {
                    let mut pts = cell.borrow_mut();
                    pts.clear();
                    pts.extend(samples.iter().filter(|s| !is_stale_nan(s.v)));
                    let done = windows_of(&pts, is_monotonic(&pts), refs, range, start, step, f, limits, |t, v| {
                        out.push(Sample { t, v })
                    });
                    // A thread of the runtime's pool keeps this buffer; do not
                    // let one huge series pin its memory.
                    if pts.capacity() > 1 << 16 {
                        *pts = Vec::new();
                    }
                    // A passed deadline stops the read; the evaluator reports it.
                    done.is_ok()
                })
            };
            let series = ev.select_map(vs, lo - range + 1, hi, false, &map)?;
            Ok(series
                .into_iter()
                .map(|s| SSeries {
                    labels: s.labels,
                    drop_name,
                    points: s.samples,
                })
                .collect())
        }
    }
}

/// [`over_windows`] of series already in memory.
fn over_evaluated<F: Fn(&[Point], &Win, usize) -> Option<f64> + Sync + ?Sized>(
    ev: &Evaluator<'_>,
    input: &RangeInput,
    drop_name: bool,
    f: &F,
) -> Result<Vec<SSeries>, Error> {
    let (start, step, limits) = (ev.start, ev.step, ev.limits);
    let work = |series: &[SSeries]| -> Result<Vec<SSeries>, Error> {
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            limits.check_series()?;
            let mut points = Vec::with_capacity(input.refs.len().min(s.points.len()));
            let monotonic = is_monotonic(&s.points);
            windows_of(
                &s.points,
                monotonic,
                &input.refs,
                input.range,
                start,
                step,
                f,
                limits,
                |t, v| points.push(Point { t, v }),
            )?;
            if !points.is_empty() {
                out.push(SSeries {
                    labels: s.labels.clone(),
                    drop_name: drop_name || s.drop_name,
                    points,
                });
            }
        }
        Ok(out)
    };
    let n = input.series.len();
    let threads = sextant_model::parallel::workers();
    let work_units = n * input.refs.len();
    if threads < 2 || n < 64 || work_units < 200_000 {
        return work(&input.series);
    }
    let parts: Vec<&[SSeries]> = input.series.chunks(sextant_model::parallel::part_len(n, 16)).collect();
    let mut out = Vec::with_capacity(n);
    for r in sextant_model::parallel::map_parts(parts.len(), |k| work(parts[k])) {
        out.extend(r?);
    }
    Ok(out)
}

/// The part of a rate's extrapolation that depends only on where a window's
/// first and last samples sit in it, not on their values: with regular
/// scrapes most windows of a query, across its series too, share it, so it
/// is worked out once and its divisions are not repeated window after window.
#[derive(Clone, Copy)]
struct RateShape {
    /// `(first.t - start, end - last.t, last.t - first.t, points, range,
    /// is_rate)`, in ms.
    key: (i64, i64, i64, usize, i64, bool),
    sampled: f64,
    /// The extrapolation to the window's start, before a counter's
    /// extrapolation to zero is considered.
    to_start: f64,
    to_end: f64,
    /// The factor with that `to_start`.
    factor: f64,
}

thread_local! {
    /// The shape of the last window this thread took a rate of.
    static RATE_SHAPE: std::cell::Cell<Option<RateShape>> = const { std::cell::Cell::new(None) };
}

/// `result` (a counter's last value less its first) with the value before
/// each fall added, one by one in Prometheus's order, so that the sum rounds
/// as its does. Apart from the window's arithmetic, so that the window
/// function stays small enough to compile into its loop.
#[inline(never)]
fn add_resets(p: &[Point], mut result: f64) -> f64 {
    let mut prev = p[0].v;
    for c in &p[1..] {
        if c.v < prev {
            result += prev;
        }
        prev = c.v;
    }
    result
}

impl RateShape {
    /// A new shape, kept as this thread's last: called only when the shape
    /// changes, out of the window loop.
    #[cold]
    #[inline(never)]
    fn new_kept(key: (i64, i64, i64, usize, i64, bool)) -> RateShape {
        let s = RateShape::new(key);
        RATE_SHAPE.set(Some(s));
        s
    }

    /// Prometheus's arithmetic, in its order: every figure equals what it
    /// computes, bit for bit.
    fn new(key: (i64, i64, i64, usize, i64, bool)) -> RateShape {
        let (first_off, last_off, span, n, range, is_rate) = key;
        let mut to_start = first_off as f64 / 1000.0;
        let mut to_end = last_off as f64 / 1000.0;
        let sampled = span as f64 / 1000.0;
        let avg = sampled / (n - 1) as f64;
        let threshold = avg * 1.1;
        if to_start >= threshold {
            to_start = avg / 2.0;
        }
        if to_end >= threshold {
            to_end = avg / 2.0;
        }
        RateShape {
            key,
            sampled,
            to_start,
            to_end,
            factor: Self::factor(sampled, to_start, to_end, range, is_rate),
        }
    }

    fn factor(sampled: f64, to_start: f64, to_end: f64, range: i64, is_rate: bool) -> f64 {
        let mut factor = (sampled + to_start + to_end) / sampled;
        if is_rate {
            factor /= range as f64 / 1000.0;
        }
        factor
    }
}

/// `rate` (`is_rate`), `increase` (`is_counter`) or `delta` of a window.
#[cfg(test)]
fn extrapolated_rate(p: &[Point], w: &Win, is_counter: bool, is_rate: bool) -> Option<f64> {
    match (is_counter, is_rate) {
        (true, true) => rate_of::<true, true>(p, w),
        (true, false) => rate_of::<true, false>(p, w),
        (false, true) => rate_of::<false, true>(p, w),
        (false, false) => rate_of::<false, false>(p, w),
    }
}

/// [`rate_of`] as a window function: a function item, which the window loop
/// it is compiled into takes inline.
#[inline(always)]
fn rate_window<const IS_COUNTER: bool, const IS_RATE: bool>(p: &[Point], w: &Win, _: usize) -> Option<f64> {
    rate_of::<IS_COUNTER, IS_RATE>(p, w)
}

/// [`extrapolated_rate`] with its kind fixed, so that each window loop is
/// compiled with the kind's branches settled and the window's arithmetic
/// inlined.
#[inline(always)]
fn rate_of<const IS_COUNTER: bool, const IS_RATE: bool>(p: &[Point], w: &Win) -> Option<f64> {
    let (is_counter, is_rate) = (IS_COUNTER, IS_RATE);
    if p.len() < 2 {
        return None;
    }
    let first = p[0];
    let last = p[p.len() - 1];
    let mut result = last.v - first.v;
    if is_counter && !w.monotonic {
        result = add_resets(p, result);
    }
    let key = (
        first.t - w.start,
        w.end - last.t,
        last.t - first.t,
        p.len(),
        w.range,
        is_rate,
    );
    let shape = match RATE_SHAPE.get() {
        Some(s) if s.key == key => s,
        _ => RateShape::new_kept(key),
    };
    // A counter is not extrapolated below zero: where the window's start is
    // further back than the counter's zero would be, the zero is the start.
    // That point, `sampled * (first / result)`, is computed only when it can
    // be nearer than the start: the test below multiplies instead of
    // dividing, with a margin far wider than the rounding of either side.
    if is_counter && result > 0.0 && first.v >= 0.0 {
        let lhs = first.v * shape.sampled;
        let clearly_beyond = lhs.is_finite() && result >= 1e-300 && lhs > shape.to_start * result * (1.0 + 1e-9);
        if !clearly_beyond {
            let to_zero = shape.sampled * (first.v / result);
            if to_zero < shape.to_start {
                return Some(result * RateShape::factor(shape.sampled, to_zero, shape.to_end, w.range, is_rate));
            }
        }
    }
    Some(result * shape.factor)
}

fn instant_delta(p: &[Point], is_rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let last = p[p.len() - 1];
    let prev = p[p.len() - 2];
    let mut r = if is_rate && last.v < prev.v {
        last.v
    } else {
        last.v - prev.v
    };
    if is_rate {
        let dt = last.t - prev.t;
        if dt == 0 {
            return None;
        }
        r /= dt as f64 / 1000.0;
    }
    Some(r)
}

/// Least-squares slope and intercept of the points, x measured in seconds from `t0`.
pub(crate) fn linear_regression(p: &[Point], t0: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init = p[0].v;
    let mut const_y = true;
    for (i, s) in p.iter().enumerate() {
        if const_y && i > 0 && s.v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - t0) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(s.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * s.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn avg_over(p: &[Point]) -> f64 {
    let (mut sum, mut count) = (p[0].v, 1.0);
    let (mut mean, mut c) = (0.0, 0.0);
    let mut incremental = false;
    for (i, f) in p[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(f.v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(f.v / count, q * mean, q * c);
    }
    if incremental {
        mean + c
    } else {
        sum / count + c / count
    }
}

fn variance(p: &[Point]) -> f64 {
    let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for f in p {
        count += 1.0;
        let delta = f.v - (mean + cmean);
        (mean, cmean) = kahan_inc(delta / count, mean, cmean);
        (aux, caux) = kahan_inc(delta * (f.v - (mean + cmean)), aux, caux);
    }
    (aux + caux) / count
}

fn holt(p: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = p[0].v;
    let mut b = p[1].v - p[0].v;
    for (i, x) in p.iter().enumerate().skip(1) {
        let xs = sf * x.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = xs + y;
    }
    Some(s1)
}

fn arg(c: &Call, i: usize) -> Result<&Expr, Error> {
    c.args
        .args
        .get(i)
        .map(|b| &**b)
        .ok_or_else(|| Error::bad(format!("missing argument {} of {}", i + 1, c.func.name)))
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        e => e,
    }
}

fn map_values(
    mut v: Vec<SSeries>,
    drop: bool,
    f: impl Fn(f64, usize) -> Option<f64>,
    ev: &Evaluator<'_>,
) -> Vec<SSeries> {
    for s in &mut v {
        s.points = s
            .points
            .iter()
            .filter_map(|p| f(p.v, ((p.t - ev.start) / ev.step) as usize).map(|v| Point { t: p.t, v }))
            .collect();
        if drop {
            s.drop_name = true;
        }
    }
    v.retain(|s| !s.points.is_empty());
    v
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

fn date_fn(name: &str, v: f64) -> Option<f64> {
    let t = DateTime::from_timestamp(v as i64, 0)?;
    Some(match name {
        "minute" => t.minute() as f64,
        "hour" => t.hour() as f64,
        "day_of_week" => t.weekday().num_days_from_sunday() as f64,
        "day_of_month" => t.day() as f64,
        "day_of_year" => t.ordinal() as f64,
        "month" => t.month() as f64,
        "year" => t.year() as f64,
        "days_in_month" => {
            let (y, m) = (t.year(), t.month());
            let next = if m == 12 {
                NaiveDate::from_ymd_opt(y + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(y, m + 1, 1)
            }?;
            let this = NaiveDate::from_ymd_opt(y, m, 1)?;
            (next - this).num_days() as f64
        }
        _ => return None,
    })
}

/// Labels `absent()` gives its result: the selector's equality matchers.
fn absent_labels(e: &Expr) -> Labels {
    let e = unwrap_parens(e);
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let Ok(ms) = convert_matchers(vs) else {
        return Labels::empty();
    };
    // A label is kept only when exactly one matcher names it, and that one is `=`.
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut drop: Vec<String> = Vec::new();
    for m in &ms {
        if m.name() == METRIC_NAME {
            continue;
        }
        if m.op() != MatchOp::Equal || pairs.iter().any(|(n, _)| n == m.name()) {
            drop.push(m.name().to_string());
        }
        pairs.push((m.name().to_string(), m.value().to_string()));
    }
    pairs.retain(|(n, _)| !drop.contains(n));
    Labels::from_pairs(pairs)
}

/// One series with value 1 at every step where `v` has no point, labelled from
/// the argument's equality matchers.
fn absent_result(ev: &Evaluator<'_>, v: &[SSeries], arg: &Expr) -> Val {
    let mut present = vec![false; ev.steps()];
    for s in v {
        for p in &s.points {
            present[((p.t - ev.start) / ev.step) as usize] = true;
        }
    }
    let points: Vec<Point> = (0..ev.steps())
        .filter(|k| !present[*k])
        .map(|k| Point { t: ev.ts(k), v: 1.0 })
        .collect();
    if points.is_empty() {
        return Val::Vector(Vec::new());
    }
    Val::Vector(vec![SSeries {
        labels: absent_labels(arg),
        drop_name: false,
        points,
    }])
}

/// Fails when two series with the same label set have a point at the same time.
fn check_duplicates(v: &[SSeries]) -> Result<(), Error> {
    let mut seen: HashMap<(&Labels, bool), usize> = HashMap::new();
    for (i, s) in v.iter().enumerate() {
        if let Some(&j) = seen.get(&(&s.labels, s.drop_name)) {
            let other = &v[j];
            if s.points
                .iter()
                .any(|p| other.points.binary_search_by_key(&p.t, |q| q.t).is_ok())
            {
                return Err(Error::exec("vector cannot contain metrics with the same labelset"));
            }
        }
        seen.insert((&s.labels, s.drop_name), i);
    }
    Ok(())
}

/// Natural order: runs of digits compare as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let i = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let j = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (nx, ny) = (&x[..i], &y[..j]);
                let tx = std::str::from_utf8(nx).unwrap_or("").trim_start_matches('0');
                let ty = std::str::from_utf8(ny).unwrap_or("").trim_start_matches('0');
                let o = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                x = &x[i..];
                y = &y[j..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

pub(crate) fn call(ev: &Evaluator<'_>, c: &Call) -> Result<Val, Error> {
    let name = c.func.name;
    let nargs = c.args.args.len();
    if let Some(f) = math_fn(name) {
        let v = ev.eval_vector_arg(arg(c, 0)?)?;
        return Ok(Val::Vector(map_values(v, true, |x, _| Some(f(x)), ev)));
    }
    match name {
        "time" => Ok(Val::Scalar((0..ev.steps()).map(|k| ev.ts(k) as f64 / 1000.0).collect())),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; ev.steps()])),
        "step" => Ok(Val::Scalar(vec![ev.query_step as f64 / 1000.0; ev.steps()])),
        "range" => Ok(Val::Scalar(vec![
            (ev.query_end - ev.query_start) as f64 / 1000.0;
            ev.steps()
        ])),
        "start" => Ok(Val::Scalar(vec![ev.query_start as f64 / 1000.0; ev.steps()])),
        "end" => Ok(Val::Scalar(vec![ev.query_end as f64 / 1000.0; ev.steps()])),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar_arg(arg(c, 0)?)?;
            let b = ev.eval_scalar_arg(arg(c, 1)?)?;
            let f = if name == "min_of" { go_min } else { go_max };
            Ok(Val::Scalar(a.iter().zip(b.iter()).map(|(x, y)| f(*x, *y)).collect()))
        }
        "vector" => {
            let s = ev.eval_scalar_arg(arg(c, 0)?)?;
            Ok(Val::Vector(vec![SSeries {
                labels: Labels::empty(),
                drop_name: false,
                points: s
                    .iter()
                    .enumerate()
                    .map(|(k, v)| Point { t: ev.ts(k), v: *v })
                    .collect(),
            }]))
        }
        "scalar" => {
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            let mut out = vec![f64::NAN; ev.steps()];
            let mut count = vec![0u32; ev.steps()];
            for s in &v {
                for p in &s.points {
                    let k = ((p.t - ev.start) / ev.step) as usize;
                    count[k] += 1;
                    out[k] = p.v;
                }
            }
            for (k, n) in count.iter().enumerate() {
                if *n != 1 {
                    out[k] = f64::NAN;
                }
            }
            Ok(Val::Scalar(out))
        }
        "round" => {
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            let to = if nargs > 1 {
                ev.eval_scalar_arg(arg(c, 1)?)?
            } else {
                vec![1.0; ev.steps()]
            };
            Ok(Val::Vector(map_values(
                v,
                true,
                |x, k| {
                    let inv = 1.0 / to[k];
                    Some((x * inv + 0.5).floor() / inv)
                },
                ev,
            )))
        }
        "clamp" => {
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            let lo = ev.eval_scalar_arg(arg(c, 1)?)?;
            let hi = ev.eval_scalar_arg(arg(c, 2)?)?;
            Ok(Val::Vector(map_values(
                v,
                true,
                |x, k| (hi[k] >= lo[k]).then(|| go_max(lo[k], go_min(hi[k], x))),
                ev,
            )))
        }
        "clamp_min" => {
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            let lo = ev.eval_scalar_arg(arg(c, 1)?)?;
            Ok(Val::Vector(map_values(v, true, |x, k| Some(go_max(lo[k], x)), ev)))
        }
        "clamp_max" => {
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            let hi = ev.eval_scalar_arg(arg(c, 1)?)?;
            Ok(Val::Vector(map_values(v, true, |x, k| Some(go_min(hi[k], x)), ev)))
        }
        "timestamp" => {
            let a = unwrap_parens(arg(c, 0)?);
            let mut v = match a {
                Expr::VectorSelector(vs) => {
                    // Points carry the samples' own times; move them back to steps.
                    let raw = ev.eval_vector_selector(vs, true)?;
                    let stepped = ev.eval_vector_selector(vs, false)?;
                    raw.into_iter()
                        .zip(stepped)
                        .map(|(r, s)| SSeries {
                            labels: s.labels,
                            drop_name: true,
                            points: r
                                .points
                                .iter()
                                .zip(s.points.iter())
                                .map(|(rp, sp)| Point {
                                    t: sp.t,
                                    v: rp.t as f64 / 1000.0,
                                })
                                .collect(),
                        })
                        .collect()
                }
                other => {
                    let v = ev.eval_vector_arg(other)?;
                    map_values(v, true, |_, k| Some(ev.ts(k) as f64 / 1000.0), ev)
                }
            };
            for s in &mut v {
                s.drop_name = true;
            }
            Ok(Val::Vector(v))
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month" | "month" | "year" => {
            if nargs == 0 {
                return Ok(Val::Vector(vec![SSeries {
                    labels: Labels::empty(),
                    drop_name: false,
                    points: (0..ev.steps())
                        .filter_map(|k| date_fn(name, ev.ts(k) as f64 / 1000.0).map(|v| Point { t: ev.ts(k), v }))
                        .collect(),
                }]));
            }
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            Ok(Val::Vector(map_values(v, true, |x, _| date_fn(name, x), ev)))
        }
        "absent" => {
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            Ok(absent_result(ev, &v, arg(c, 0)?))
        }
        "absent_over_time" => {
            let input = ev.range_arg(arg(c, 0)?)?;
            let present = over_windows(ev, &input, false, &|_, _, _| Some(1.0))?;
            Ok(absent_result(ev, &present, arg(c, 0)?))
        }
        "label_replace" => {
            let mut v = ev.eval_vector_arg(arg(c, 0)?)?;
            let dst = ev.eval_string_arg(arg(c, 1)?)?;
            let repl = ev.eval_string_arg(arg(c, 2)?)?;
            let src = ev.eval_string_arg(arg(c, 3)?)?;
            let re_s = ev.eval_string_arg(arg(c, 4)?)?;
            let re = regex::Regex::new(&format!("^(?s:{re_s})$"))
                .map_err(|_| Error::exec(format!("invalid regular expression in label_replace(): {re_s}")))?;
            if !valid_label_name(&dst) {
                return Err(Error::exec(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            for s in &mut v {
                let sv = s.labels.get(&src).to_string();
                if let Some(caps) = re.captures(&sv) {
                    let mut res = String::new();
                    caps.expand(&repl, &mut res);
                    let mut b = s.labels.builder();
                    b.set(&dst, &res);
                    s.labels = b.labels();
                    if dst == METRIC_NAME {
                        s.drop_name = false;
                    }
                }
            }
            check_duplicates(&v)?;
            Ok(Val::Vector(v))
        }
        "label_join" => {
            let mut v = ev.eval_vector_arg(arg(c, 0)?)?;
            let dst = ev.eval_string_arg(arg(c, 1)?)?;
            let sep = ev.eval_string_arg(arg(c, 2)?)?;
            let mut srcs = Vec::new();
            for i in 3..nargs {
                let s = ev.eval_string_arg(arg(c, i)?)?;
                if !valid_label_name(&s) {
                    return Err(Error::exec(format!("invalid source label name in label_join(): {s}")));
                }
                srcs.push(s);
            }
            if !valid_label_name(&dst) {
                return Err(Error::exec(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            for s in &mut v {
                let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n)).collect();
                let joined = joined.join(&sep);
                let mut b = s.labels.builder();
                b.set(&dst, &joined);
                s.labels = b.labels();
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
            }
            check_duplicates(&v)?;
            Ok(Val::Vector(v))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ev.eval_vector_arg(arg(c, 0)?)?;
            if ev.is_range_query {
                ev.warn(format!(
                    "sort is ineffective for range queries since results are always ordered by labels {}",
                    crate::pos::call_position(ev.query, name)
                ));
                return Ok(Val::Vector(v));
            }
            let first = |s: &SSeries| s.points.first().map(|p| p.v).unwrap_or(f64::NAN);
            match name {
                "sort" | "sort_desc" => {
                    let desc = name == "sort_desc";
                    v.sort_by(|a, b| {
                        let (x, y) = (first(a), first(b));
                        match (x.is_nan(), y.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                            _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                        }
                        // Equal values by labels, whatever order the store gave.
                        .then_with(|| a.labels.cmp(&b.labels))
                    });
                }
                _ => {
                    let mut names = Vec::new();
                    for i in 1..nargs {
                        names.push(ev.eval_string_arg(arg(c, i)?)?);
                    }
                    let desc = name == "sort_by_label_desc";
                    v.sort_by(|a, b| {
                        let mut o = std::cmp::Ordering::Equal;
                        for n in &names {
                            let (x, y) = (a.labels.get(n), b.labels.get(n));
                            if x != y {
                                o = natural_cmp(x, y);
                                break;
                            }
                        }
                        let o = o.then_with(|| a.labels.cmp(&b.labels));
                        if desc {
                            o.reverse()
                        } else {
                            o
                        }
                    });
                }
            }
            Ok(Val::Vector(v))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar_arg(arg(c, 0)?)?;
            warn_quantiles(ev, &q, "histogram_quantile", 0);
            let v = ev.eval_vector_arg(arg(c, 1)?)?;
            classic_histogram(
                ev,
                &v,
                |k, buckets, metric| {
                    let (r, forced, _) = bucket_quantile(q[k], buckets);
                    if forced {
                        ev.info(format!("input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?} {}", metric, ev.arg_pos("histogram_quantile", 1)));
                    }
                    r
                },
                "histogram_quantile",
                1,
            )
        }
        "histogram_quantiles" => {
            let v = ev.eval_vector_arg(arg(c, 0)?)?;
            let label = ev.eval_string_arg(arg(c, 1)?)?;
            let mut qs = Vec::new();
            for i in 2..nargs {
                let q = ev.eval_scalar_arg(arg(c, i)?)?;
                warn_quantiles(ev, &q, "histogram_quantiles", i);
                qs.push(q);
            }
            let mut out = Vec::new();
            for q in &qs {
                let r = classic_histogram(
                    ev,
                    &v,
                    |k, buckets, metric| {
                        let (r, forced, _) = bucket_quantile(q[k], buckets);
                        if forced {
                            ev.info(format!("input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?} {}", metric, ev.arg_pos("histogram_quantiles", 0)));
                        }
                        r
                    },
                    "histogram_quantiles",
                    0,
                )?;
                if let Val::Vector(vs) = r {
                    for mut s in vs {
                        let mut b = s.labels.builder();
                        b.set(&label, &quantile_label(q.first().copied().unwrap_or(f64::NAN)));
                        s.labels = b.labels();
                        out.push(s);
                    }
                }
            }
            Ok(Val::Vector(out))
        }
        "histogram_fraction" => {
            let lo = ev.eval_scalar_arg(arg(c, 0)?)?;
            let hi = ev.eval_scalar_arg(arg(c, 1)?)?;
            let v = ev.eval_vector_arg(arg(c, 2)?)?;
            classic_histogram(
                ev,
                &v,
                |k, buckets, _| bucket_fraction(lo[k], hi[k], buckets),
                "histogram_fraction",
                2,
            )
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev" | "histogram_stdvar" => {
            // These read native histograms only; float samples are ignored.
            let _ = ev.eval_vector_arg(arg(c, 0)?)?;
            Ok(Val::Vector(Vec::new()))
        }
        _ => window_call(ev, c),
    }
}

/// `0.5` stays `0.5`; whole numbers get a `.0` (`1.0`), as Prometheus labels them.
fn quantile_label(q: f64) -> String {
    let s = crate::value::format_float_plain(q);
    if s.contains(['.', 'e', 'N', 'I']) {
        s
    } else {
        format!("{s}.0")
    }
}

fn warn_quantiles(ev: &Evaluator<'_>, q: &[f64], fname: &str, arg: usize) {
    for &qk in q {
        if !(0.0..=1.0).contains(&qk) {
            ev.warn(format!(
                "quantile value should be between 0 and 1, got {} {}",
                crate::value::format_float(qk),
                ev.arg_pos(fname, arg)
            ));
        }
    }
}

fn classic_histogram(
    ev: &Evaluator<'_>,
    v: &[SSeries],
    f: impl Fn(usize, &mut Vec<Bucket>, &str) -> f64,
    fname: &str,
    arg_index: usize,
) -> Result<Val, Error> {
    let mut grouper = Grouper::new(|name: &str| name != "le");
    let mut members: Vec<Vec<(f64, usize)>> = Vec::new();
    for (i, s) in v.iter().enumerate() {
        let le = s.labels.get("le");
        let Some(ub) = parse_le(le) else {
            ev.warn(format!(
                "bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?} {}",
                le,
                s.labels.metric_name(),
                ev.arg_pos(fname, arg_index)
            ));
            continue;
        };
        let g = grouper.group_of(&s.labels);
        if g == members.len() {
            members.push(Vec::new());
        }
        members[g].push((ub, i));
    }
    let groups: Vec<(Labels, Vec<(f64, usize)>)> = grouper.into_groups().into_iter().zip(members).collect();
    let mut out = Vec::new();
    let mut cur: Vec<usize> = vec![0; v.len()];
    let mut results: Vec<Vec<Point>> = vec![Vec::new(); groups.len()];
    for k in 0..ev.steps() {
        let t = ev.ts(k);
        for (g, (labels, members)) in groups.iter().enumerate() {
            let mut buckets = Vec::new();
            for &(ub, i) in members {
                if let Some(p) = v[i].points.get(cur[i]) {
                    if p.t == t {
                        buckets.push(Bucket { upper: ub, count: p.v });
                        cur[i] += 1;
                    }
                }
            }
            if buckets.is_empty() {
                continue;
            }
            let r = f(k, &mut buckets, labels.metric_name());
            results[g].push(Point { t, v: r });
        }
    }
    for ((labels, _), points) in groups.into_iter().zip(results) {
        if !points.is_empty() {
            out.push(SSeries {
                labels,
                drop_name: true,
                points,
            });
        }
    }
    Ok(Val::Vector(out))
}

fn parse_le(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    match t {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => t.parse().ok(),
    }
}

fn window_call(ev: &Evaluator<'_>, c: &Call) -> Result<Val, Error> {
    let name = c.func.name;
    // The range vector is the first argument, except for quantile_over_time.
    let (range_arg, params) = match name {
        "quantile_over_time" => (1, vec![0]),
        "predict_linear" => (0, vec![1]),
        "double_exponential_smoothing" => (0, vec![1, 2]),
        _ => (0, vec![]),
    };
    let mut scalars = Vec::new();
    for i in &params {
        scalars.push(ev.eval_scalar_arg(arg(c, *i)?)?);
    }
    let input = ev.range_arg(arg(c, range_arg)?)?;
    let keep_name = matches!(name, "last_over_time" | "first_over_time");
    let drop = !keep_name;
    let out = match name {
        "rate" | "increase" | "delta" => {
            let counter = name != "delta";
            let is_rate = name == "rate";
            let out = match (counter, is_rate) {
                (true, true) => over_windows(ev, &input, drop, &rate_window::<true, true>)?,
                (true, false) => over_windows(ev, &input, drop, &rate_window::<true, false>)?,
                _ => over_windows(ev, &input, drop, &rate_window::<false, false>)?,
            };
            if counter {
                // A read folded into an aggregation leaves no series here,
                // only the metric names it saw.
                let folded = match &input {
                    RangeArg::Matrix { vs, .. } => crate::fold::folded_names(ev, vs),
                    RangeArg::Ready(_) => Vec::new(),
                };
                let names = out
                    .iter()
                    .map(|s| s.labels.metric_name())
                    .chain(folded.iter().map(|n| n.as_str()));
                for m in names {
                    if !m.is_empty() && !["_total", "_sum", "_count", "_bucket"].iter().any(|x| m.ends_with(x)) {
                        ev.info(format!(
                            "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {:?} {}",
                            m,
                            ev.arg_pos(name, 0)
                        ));
                    }
                }
            }
            out
        }
        "irate" => over_windows(ev, &input, drop, &|p, _, _| instant_delta(p, true))?,
        "idelta" => over_windows(ev, &input, drop, &|p, _, _| instant_delta(p, false))?,
        "deriv" => over_windows(ev, &input, drop, &|p, _, _| {
            (p.len() >= 2).then(|| linear_regression(p, p[0].t).0)
        })?,
        "predict_linear" => {
            let d = &scalars[0];
            over_windows(ev, &input, drop, &|p, w, k| {
                (p.len() >= 2).then(|| {
                    let (slope, icpt) = linear_regression(p, w.t);
                    slope * d[k] + icpt
                })
            })?
        }
        "double_exponential_smoothing" => {
            let (sf, tf) = (&scalars[0], &scalars[1]);
            for k in 0..ev.steps() {
                if sf[k] <= 0.0 || sf[k] >= 1.0 {
                    return Err(Error::exec(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {:.6}",
                        sf[k]
                    )));
                }
                if tf[k] <= 0.0 || tf[k] >= 1.0 {
                    return Err(Error::exec(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {:.6}",
                        tf[k]
                    )));
                }
            }
            over_windows(ev, &input, drop, &|p, _, k| holt(p, sf[k], tf[k]))?
        }
        "changes" => over_windows(ev, &input, drop, &|p, _, _| {
            let mut n = 0.0;
            for w in p.windows(2) {
                if w[1].v != w[0].v && !(w[1].v.is_nan() && w[0].v.is_nan()) {
                    n += 1.0;
                }
            }
            Some(n)
        })?,
        "resets" => over_windows(ev, &input, drop, &|p, _, _| {
            Some(p.windows(2).filter(|w| w[1].v < w[0].v).count() as f64)
        })?,
        "avg_over_time" => over_windows(ev, &input, drop, &|p, _, _| Some(avg_over(p)))?,
        "sum_over_time" => over_windows(ev, &input, drop, &|p, _, _| {
            let (mut s, mut c) = (0.0, 0.0);
            for x in p {
                (s, c) = kahan_inc(x.v, s, c);
            }
            Some(if s.is_infinite() { s } else { s + c })
        })?,
        "count_over_time" => over_windows(ev, &input, drop, &|p, _, _| Some(p.len() as f64))?,
        "present_over_time" => over_windows(ev, &input, drop, &|_, _, _| Some(1.0))?,
        "last_over_time" => over_windows(ev, &input, drop, &|p, _, _| p.last().map(|x| x.v))?,
        "first_over_time" => over_windows(ev, &input, drop, &|p, _, _| p.first().map(|x| x.v))?,
        "ts_of_last_over_time" => over_windows(ev, &input, drop, &|p, _, _| p.last().map(|x| x.t as f64 / 1000.0))?,
        "ts_of_first_over_time" => over_windows(ev, &input, drop, &|p, _, _| p.first().map(|x| x.t as f64 / 1000.0))?,
        "min_over_time" | "max_over_time" | "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let is_max = name.contains("max");
            let ts = name.starts_with("ts_of");
            over_windows(ev, &input, drop, &|p, _, _| {
                let mut best = p[0];
                for x in &p[1..] {
                    let better = if is_max { x.v > best.v } else { x.v < best.v };
                    if better || best.v.is_nan() {
                        best = *x;
                    }
                }
                Some(if ts { best.t as f64 / 1000.0 } else { best.v })
            })?
        }
        "stddev_over_time" => over_windows(ev, &input, drop, &|p, _, _| Some(variance(p).sqrt()))?,
        "stdvar_over_time" => over_windows(ev, &input, drop, &|p, _, _| Some(variance(p)))?,
        "quantile_over_time" => {
            let q = &scalars[0];
            for &qk in q.iter() {
                if !(0.0..=1.0).contains(&qk) {
                    ev.warn(format!(
                        "quantile value should be between 0 and 1, got {} {}",
                        crate::value::format_float(qk),
                        ev.arg_pos(name, 0)
                    ));
                }
            }
            over_windows(ev, &input, drop, &|p, _, k| {
                let mut v: Vec<f64> = p.iter().map(|x| x.v).collect();
                Some(quantile(q[k], &mut v))
            })?
        }
        "mad_over_time" => over_windows(ev, &input, drop, &|p, _, _| {
            if p.iter().any(|x| x.v.is_nan()) {
                return Some(f64::NAN);
            }
            let mut v: Vec<f64> = p.iter().map(|x| x.v).collect();
            let median = quantile(0.5, &mut v);
            let mut d: Vec<f64> = p.iter().map(|x| (x.v - median).abs()).collect();
            Some(quantile(0.5, &mut d))
        })?,
        other => {
            return Err(Error::exec(format!("function {other}() is not supported")));
        }
    };
    Ok(Val::Vector(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::braced;

    #[test]
    fn a_windows_end_moved_by_a_guess_lands_where_a_point_by_point_walk_does() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for case in 0..20_000 {
            // Times that increase, regularly or not, with repeats of a gap.
            let mut t = rnd(1000) as i64;
            let pts: Vec<Point> = (0..rnd(40))
                .map(|_| {
                    t += if case % 2 == 0 { 15 } else { 1 + rnd(30) as i64 };
                    Point { t, v: 0.0 }
                })
                .collect();
            let bound = rnd(pts.len() as u64 + 1) as usize;
            let limit = rnd(t.max(1) as u64 + 20) as i64;
            // `from` must have only points at or before `limit` behind it.
            let from = pts[..bound].iter().take_while(|p| p.t <= limit).count();
            let from = rnd(from as u64 + 1) as usize;
            let by = rnd(8) as usize;
            let want = from + pts[from..bound].iter().take_while(|p| p.t <= limit).count();
            assert_eq!(
                advance(&pts, from, by, bound, limit),
                want,
                "case {case}: from {from} by {by} bound {bound} limit {limit} in {pts:?}"
            );
        }
    }

    /// Prometheus's extrapolation as it reads, each window on its own.
    fn reference_rate(p: &[Point], w: &Win, is_counter: bool, is_rate: bool) -> Option<f64> {
        if p.len() < 2 {
            return None;
        }
        let (first, last) = (p[0], p[p.len() - 1]);
        let mut result = last.v - first.v;
        if is_counter {
            let mut prev = first.v;
            for c in &p[1..] {
                if c.v < prev {
                    result += prev;
                }
                prev = c.v;
            }
        }
        let mut to_start = (first.t - w.start) as f64 / 1000.0;
        let mut to_end = (w.end - last.t) as f64 / 1000.0;
        let sampled = (last.t - first.t) as f64 / 1000.0;
        let avg = sampled / (p.len() - 1) as f64;
        let threshold = avg * 1.1;
        if to_start >= threshold {
            to_start = avg / 2.0;
        }
        if is_counter {
            let mut to_zero = to_start;
            if result > 0.0 && first.v >= 0.0 {
                to_zero = sampled * (first.v / result);
            }
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
        if to_end >= threshold {
            to_end = avg / 2.0;
        }
        let mut factor = (sampled + to_start + to_end) / sampled;
        if is_rate {
            factor /= w.range as f64 / 1000.0;
        }
        Some(result * factor)
    }

    #[test]
    fn rates_with_a_remembered_shape_equal_prometheus_arithmetic_bit_for_bit() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut zero_extrapolations = 0;
        for case in 0..200_000 {
            let range = [60_000, 300_000, 301_000, 3_600_000][rnd(4) as usize];
            let interval = [1_000, 15_000, 15_000, 30_000, 7_000][rnd(5) as usize];
            let end = 1_700_000_000_000 + rnd(100_000) as i64;
            let start = end - range;
            // Samples at a regular interval with jitter, or at irregular times.
            let mut t = start + 1 + rnd(interval as u64) as i64;
            let mut p = Vec::new();
            while t <= end {
                p.push(Point { t, v: 0.0 });
                t += if case % 3 == 0 {
                    1 + rnd(2 * interval as u64) as i64
                } else {
                    interval
                };
            }
            if p.len() < 2 {
                continue;
            }
            // Values: a counter from some base (near zero, so that the zero
            // extrapolation competes with the start's), sometimes reset,
            // sometimes flat, sometimes negative, NaN or huge.
            let mut v = match rnd(6) {
                0 => 0.0,
                1 => rnd(10) as f64 * 0.37,
                2 => 1e300 * rnd(100) as f64,
                3 => -(rnd(50) as f64),
                _ => rnd(1_000_000) as f64 / 8.0,
            };
            for q in p.iter_mut() {
                q.v = v;
                v += match rnd(12) {
                    0 => -v / 2.0,
                    1 => 0.0,
                    2 if case % 97 == 0 => f64::NAN,
                    _ => rnd(1000) as f64 / 16.0,
                };
            }
            let last = p.len() - 1;
            // Now and then put the zero exactly where the start would be.
            if case % 5 == 0 && p[last].v > p[0].v {
                let sampled = (p[last].t - p[0].t) as f64 / 1000.0;
                let to_start = (p[0].t - start) as f64 / 1000.0;
                let result = p[last].v - p[0].v;
                p[0].v = to_start * result / sampled * (1.0 + (rnd(5) as f64 - 2.0) * f64::EPSILON);
            }
            let monotonic = p.windows(2).all(|q| q[1].v >= q[0].v);
            let w = Win {
                start,
                end,
                range,
                t: end,
                monotonic,
            };
            for (counter, is_rate) in [(true, true), (true, false), (false, false)] {
                let want = reference_rate(&p, &w, counter, is_rate);
                let got = extrapolated_rate(&p, &w, counter, is_rate);
                let same = match (want, got) {
                    (Some(a), Some(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    (a, b) => a == b,
                };
                assert!(
                    same,
                    "case {case} counter {counter} rate {is_rate}: {want:?} vs {got:?} for {p:?}"
                );
                // Twice: the second call takes the remembered shape.
                let again = extrapolated_rate(&p, &w, counter, is_rate);
                assert_eq!(got.map(f64::to_bits), again.map(f64::to_bits));
            }
            let sampled = (p[last].t - p[0].t) as f64 / 1000.0;
            let result = p[last].v - p[0].v;
            if result > 0.0 && p[0].v >= 0.0 && sampled * (p[0].v / result) < (p[0].t - start) as f64 / 1000.0 {
                zero_extrapolations += 1;
            }
        }
        // The cases reach the zero extrapolation, not only the start's.
        assert!(zero_extrapolations > 1000, "{zero_extrapolations}");
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("a10", "a2"), std::cmp::Ordering::Greater);
        assert_eq!(natural_cmp("b", "a"), std::cmp::Ordering::Greater);
    }

    #[test]
    fn quantile_interpolates() {
        let mut v = vec![4.0, 1.0, 2.0, 3.0];
        assert_eq!(quantile(0.5, &mut v), 2.5);
        assert_eq!(quantile(-1.0, &mut v), f64::NEG_INFINITY);
    }

    #[test]
    fn braced_labels_print_like_go() {
        let l = Labels::from_pairs([("__name__", "x"), ("a", "b")]);
        assert_eq!(braced(&l), "{__name__=\"x\", a=\"b\"}");
    }
}
