//! The evaluator: walks promql-parser's AST over a range of steps. Every node
//! evaluates for all steps at once, so a range query reads each selector once
//! and slides windows over each series in one pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::token::{self, TokenId};
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use sextant_model::{is_stale_nan, Labels, MatchOp, Matcher, Queryable, ReadError, SelectHints, METRIC_NAME};

use crate::functions;
use crate::value::{braced, format_float_plain, Annotations, Error, ErrorKind, Point};

/// A series of an instant-vector result across steps.
#[derive(Debug, Clone)]
pub(crate) struct SSeries {
    pub labels: Labels,
    /// The metric name is to be removed when evaluation ends (Prometheus's
    /// delayed name removal), so that intermediate label sets stay distinct.
    pub drop_name: bool,
    pub points: Vec<Point>,
}

/// The value of a node across all steps.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// One value per step.
    Scalar(Vec<f64>),
    Str(String),
    /// An instant vector: series with points at step timestamps.
    Vector(Vec<SSeries>),
    /// A range vector (only at the top of an instant query).
    Range(Vec<SSeries>),
}

pub(crate) struct Limits {
    pub max_samples: usize,
    pub deadline: Option<Instant>,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Limits {
    /// Fails once the deadline has passed or the query was cancelled.
    pub fn check(&self) -> Result<(), Error> {
        if let Some(d) = self.deadline {
            if Instant::now() > d {
                return Err(Error::new(ErrorKind::Timeout, "query timed out in query execution"));
            }
        }
        if let Some(c) = &self.cancel {
            if c.load(Ordering::Relaxed) {
                return Err(Error::new(ErrorKind::Canceled, "query was canceled in query execution"));
            }
        }
        Ok(())
    }

    /// [`Limits::check`] for a call made once a series: cancellation is seen
    /// at once, the clock read on one call in [`SERIES_BETWEEN_CLOCKS`] on
    /// each thread (a read of the clock costs as much as a small series).
    pub fn check_series(&self) -> Result<(), Error> {
        thread_local! {
            static CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        let n = CALLS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n
        });
        if n.is_multiple_of(SERIES_BETWEEN_CLOCKS) {
            return self.check();
        }
        match &self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => {
                Err(Error::new(ErrorKind::Canceled, "query was canceled in query execution"))
            }
            _ => Ok(()),
        }
    }
}

/// Series read between two reads of the clock by [`Limits::check_series`].
const SERIES_BETWEEN_CLOCKS: u32 = 16;

/// Inputs for window functions: raw series with the reference time per step.
pub(crate) struct RangeInput {
    pub series: Vec<SSeries>,
    pub range: i64,
    /// Reference (window end) time for each step.
    pub refs: Vec<i64>,
}

/// A range-vector argument of a window function: evaluated already (a
/// subquery), or a plain matrix selector, read series by series through the
/// window function so that its samples are never all in memory.
pub(crate) enum RangeArg<'e> {
    Ready(RangeInput),
    Matrix {
        vs: &'e VectorSelector,
        range: i64,
        refs: Vec<i64>,
    },
}

pub(crate) struct Evaluator<'a> {
    pub q: &'a dyn Queryable,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub lookback: i64,
    pub query_start: i64,
    pub query_end: i64,
    /// The step of the top-level query (0 for an instant query).
    pub query_step: i64,
    pub query: &'a str,
    pub default_subquery_step: i64,
    pub limits: &'a Limits,
    pub annos: &'a RefCell<Annotations>,
    pub loaded: &'a Cell<usize>,
    pub series_loaded: &'a Cell<usize>,
    pub is_range_query: bool,
    /// The labels an aggregation reads of the selector it aggregates
    /// directly (see [`SelectHints::only_labels`]).
    pub only_labels: &'a RefCell<Option<OnlyLabels>>,
    /// The read an aggregation folds into itself (see [`crate::fold`]).
    pub(crate) fold: &'a RefCell<Option<crate::fold::Slot>>,
}

/// A selector, by address, and the only labels its reader needs.
pub(crate) type OnlyLabels = (usize, std::sync::Arc<[String]>);

pub(crate) fn ms_of(d: &std::time::Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => ms_of(d),
        Some(Offset::Neg(d)) => -ms_of(d),
    }
}

fn systime_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub(crate) fn convert_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, Error> {
    let mut out = Vec::new();
    if let Some(n) = &vs.name {
        out.push(Matcher::equal(METRIC_NAME, n.clone()));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(Matcher::new(op, m.name.clone(), m.value.clone()).map_err(|e| Error::bad(e.to_string()))?);
    }
    Ok(out)
}

fn read_err(e: ReadError) -> Error {
    match e {
        ReadError::TooManySamples { .. } => Error::new(
            ErrorKind::Limit,
            "query processing would load too many samples into memory in query execution",
        ),
        other => Error::new(ErrorKind::Internal, other.to_string()),
    }
}

pub(crate) fn is_arith(op: TokenId) -> bool {
    matches!(
        op,
        token::T_ADD | token::T_SUB | token::T_MUL | token::T_DIV | token::T_MOD | token::T_POW | token::T_ATAN2
    )
}

fn is_comparison(op: TokenId) -> bool {
    matches!(
        op,
        token::T_EQLC | token::T_NEQ | token::T_LTE | token::T_LSS | token::T_GTE | token::T_GTR
    )
}

/// Applies a binary operator to two floats; the flag says whether a comparison held.
pub(crate) fn binop(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        token::T_ADD => (l + r, true),
        token::T_SUB => (l - r, true),
        token::T_MUL => (l * r, true),
        token::T_DIV => (l / r, true),
        token::T_MOD => (l % r, true),
        token::T_POW => (l.powf(r), true),
        token::T_ATAN2 => (l.atan2(r), true),
        token::T_EQLC => (l, l == r),
        token::T_NEQ => (l, l != r),
        token::T_GTR => (l, l > r),
        token::T_LSS => (l, l < r),
        token::T_GTE => (l, l >= r),
        token::T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

impl<'a> Evaluator<'a> {
    pub fn steps(&self) -> usize {
        ((self.end - self.start) / self.step + 1) as usize
    }

    pub fn ts(&self, k: usize) -> i64 {
        self.start + k as i64 * self.step
    }

    pub fn check(&self) -> Result<(), Error> {
        self.limits.check()
    }

    fn count_samples(&self, n: usize) -> Result<(), Error> {
        let total = self.loaded.get() + n;
        self.loaded.set(total);
        if total > self.limits.max_samples {
            return Err(Error::new(
                ErrorKind::Limit,
                "query processing would load too many samples into memory in query execution",
            ));
        }
        Ok(())
    }

    pub fn warn(&self, msg: String) {
        self.annos.borrow_mut().warn(msg);
    }

    pub fn info(&self, msg: String) {
        self.annos.borrow_mut().info(msg);
    }

    /// `(line:col)` of argument `arg` of the first call to `func` in the query.
    pub fn arg_pos(&self, func: &str, arg: usize) -> String {
        crate::pos::arg_position(self.query, func, arg)
    }

    fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(systime_ms(t)),
        }
    }

    /// Reference times of a selector for every step (`@` and offset applied).
    fn refs(&self, at: &Option<AtModifier>, offset: &Option<Offset>) -> Vec<i64> {
        let off = offset_ms(offset);
        let at = self.at_ms(at);
        (0..self.steps()).map(|k| at.unwrap_or(self.ts(k)) - off).collect()
    }

    fn select(&self, vs: &VectorSelector, mint: i64, maxt: i64) -> Result<Vec<sextant_model::Series>, Error> {
        self.check()?;
        let ms = convert_matchers(vs)?;
        let remaining = self.limits.max_samples.saturating_sub(self.loaded.get());
        let series = self
            .q
            .select(
                &ms,
                mint,
                maxt,
                SelectHints {
                    sample_limit: Some(remaining.saturating_add(1)),
                    any_order: true,
                    ..SelectHints::default()
                },
            )
            .map_err(read_err)?;
        let n: usize = series.iter().map(|s| s.samples.len()).sum();
        self.series_loaded.set(self.series_loaded.get() + series.len());
        self.count_samples(n)?;
        Ok(series)
    }

    /// Reads the series of `vs` with data in `[mint, maxt]`, each through
    /// `map` (see [`Queryable::select_map`]).
    pub fn select_map(
        &self,
        vs: &VectorSelector,
        mint: i64,
        maxt: i64,
        last_only: bool,
        map: &sextant_model::SampleMap<'_>,
    ) -> Result<Vec<sextant_model::Series>, Error> {
        self.check()?;
        let ms = convert_matchers(vs)?;
        let remaining = self.limits.max_samples.saturating_sub(self.loaded.get());
        let only_labels = match &*self.only_labels.borrow() {
            Some((at, names)) if *at == vs as *const VectorSelector as usize => Some(names.clone()),
            _ => None,
        };
        let mut hints = SelectHints {
            sample_limit: Some(remaining.saturating_add(1)),
            any_order: true,
            last_only,
            only_labels,
            large_parts: false,
        };
        if let Some(spec) = crate::fold::spec_for(self, vs) {
            hints.large_parts = spec.wants_large_parts();
            let done = std::sync::Mutex::new(Vec::new());
            let part = |first: usize| crate::fold::new_part(&spec, first, &done);
            let folded = self
                .q
                .select_fold(&ms, mint, maxt, hints, map, &part)
                .map_err(read_err)?;
            self.series_loaded.set(self.series_loaded.get() + folded.series);
            self.count_samples(folded.samples_read)?;
            if folded.stopped {
                self.check()?;
                return Err(Error::exec("BUG: a series read stopped without a reason"));
            }
            crate::fold::store(self, vs, done.into_inner().unwrap_or_else(|e| e.into_inner()));
            return Ok(Vec::new());
        }
        let mapped = self.q.select_map(&ms, mint, maxt, hints, map).map_err(read_err)?;
        self.series_loaded.set(self.series_loaded.get() + mapped.series.len());
        self.count_samples(mapped.samples_read)?;
        if mapped.stopped {
            // The maps stop only when the query's deadline or cancellation
            // says so.
            self.check()?;
            return Err(Error::exec("BUG: a series read stopped without a reason"));
        }
        Ok(mapped.series)
    }

    pub fn eval(&self, e: &Expr) -> Result<Val, Error> {
        self.check()?;
        match e {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; self.steps()])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|x| -x).collect())),
                Val::Vector(mut vs) => {
                    for s in &mut vs {
                        s.drop_name = true;
                        for p in &mut s.points {
                            p.v = -p.v;
                        }
                    }
                    Ok(Val::Vector(vs))
                }
                _ => Err(Error::exec(
                    "unary expression only allowed on expressions of type scalar or vector",
                )),
            },
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.eval_vector_selector(vs, false)?)),
            Expr::MatrixSelector(ms) => {
                let r = self.range_input_matrix(ms)?;
                Ok(Val::Range(window_series(&r)))
            }
            Expr::Subquery(sq) => {
                let r = self.range_input_subquery(sq)?;
                Ok(Val::Range(window_series(&r)))
            }
            Expr::Binary(b) => self.eval_binary(b),
            Expr::Aggregate(a) => self.eval_aggregate(a),
            Expr::Call(c) => self.eval_call(c),
            Expr::Extension(_) => Err(Error::exec("extension expressions are not supported")),
        }
    }

    /// Evaluates an instant vector selector at every step; with `keep_ts`, points
    /// carry the sample's own timestamp (for `timestamp()`).
    pub fn eval_vector_selector(&self, vs: &VectorSelector, keep_ts: bool) -> Result<Vec<SSeries>, Error> {
        let refs = self.refs(&vs.at, &vs.offset);
        let lo = refs.iter().copied().min().unwrap_or(self.start);
        let hi = refs.iter().copied().max().unwrap_or(self.end);
        let (start, step, lookback, limits) = (self.start, self.step, self.lookback, self.limits);
        // Each series is reduced to its points as it is read, so the samples
        // of every series are never in memory at once.
        let map = |smp: &[sextant_model::Sample], points: &mut Vec<sextant_model::Sample>| -> bool {
            if limits.check_series().is_err() {
                return false;
            }
            points.reserve(refs.len().min(smp.len()));
            let mut i = 0usize;
            // Reference times never decrease (constant under `@`), so one cursor suffices.
            for (k, &r) in refs.iter().enumerate() {
                while i < smp.len() && smp[i].t <= r {
                    i += 1;
                }
                if i == 0 {
                    continue;
                }
                let last = smp[i - 1];
                if last.t <= r - lookback || is_stale_nan(last.v) {
                    continue;
                }
                let t = if keep_ts { last.t } else { start + k as i64 * step };
                points.push(sextant_model::Sample { t, v: last.v });
            }
            true
        };
        // At a single time only the last sample counts.
        let last_only = refs.iter().all(|r| *r == hi);
        let raw = self.select_map(vs, lo - lookback + 1, hi, last_only, &map)?;
        Ok(raw
            .into_iter()
            .map(|s| SSeries {
                labels: s.labels,
                drop_name: false,
                points: s.samples,
            })
            .collect())
    }

    pub fn range_input_matrix(&self, ms: &MatrixSelector) -> Result<RangeInput, Error> {
        let vs = &ms.vs;
        let range = ms_of(&ms.range);
        let refs = self.refs(&vs.at, &vs.offset);
        let lo = refs.iter().copied().min().unwrap_or(self.start);
        let hi = refs.iter().copied().max().unwrap_or(self.end);
        let raw = self.select(vs, lo - range + 1, hi)?;
        let series = raw
            .into_iter()
            .map(|s| SSeries {
                labels: s.labels,
                drop_name: false,
                points: {
                    let mut points = s.samples;
                    points.retain(|p| !is_stale_nan(p.v));
                    points
                },
            })
            .collect();
        Ok(RangeInput { series, range, refs })
    }

    pub fn range_input_subquery(&self, sq: &SubqueryExpr) -> Result<RangeInput, Error> {
        let range = ms_of(&sq.range);
        let step = sq
            .step
            .as_ref()
            .map(ms_of)
            .filter(|s| *s > 0)
            .unwrap_or(self.default_subquery_step);
        let refs = self.refs(&sq.at, &sq.offset);
        let lo = refs.iter().copied().min().unwrap_or(self.start);
        let hi = refs.iter().copied().max().unwrap_or(self.end);
        let new_start = lo - range;
        let mut start = new_start - new_start.rem_euclid(step);
        if start < new_start {
            start += step;
        }
        if start > hi {
            return Ok(RangeInput {
                series: Vec::new(),
                range,
                refs,
            });
        }
        let inner = Evaluator {
            start,
            end: hi,
            step,
            is_range_query: true,
            ..*self
        };
        let series = match inner.eval(&sq.expr)? {
            Val::Vector(v) => v,
            Val::Scalar(v) => vec![SSeries {
                labels: Labels::empty(),
                drop_name: false,
                points: v
                    .iter()
                    .enumerate()
                    .map(|(k, x)| Point { t: inner.ts(k), v: *x })
                    .collect(),
            }],
            _ => return Err(Error::exec("subquery is only allowed on instant vector or scalar")),
        };
        Ok(RangeInput { series, range, refs })
    }

    /// A window function's range-vector argument: a matrix selector is left
    /// to be read through the function, a subquery is evaluated.
    pub fn range_arg<'e>(&self, e: &'e Expr) -> Result<RangeArg<'e>, Error> {
        match e {
            Expr::MatrixSelector(ms) => Ok(RangeArg::Matrix {
                vs: &ms.vs,
                range: ms_of(&ms.range),
                refs: self.refs(&ms.vs.at, &ms.vs.offset),
            }),
            Expr::Subquery(sq) => Ok(RangeArg::Ready(self.range_input_subquery(sq)?)),
            Expr::Paren(p) => self.range_arg(&p.expr),
            _ => Err(Error::exec("expected a range vector argument")),
        }
    }

    pub fn eval_scalar_arg(&self, e: &Expr) -> Result<Vec<f64>, Error> {
        match self.eval(e)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(Error::exec("expected a scalar argument")),
        }
    }

    pub fn eval_vector_arg(&self, e: &Expr) -> Result<Vec<SSeries>, Error> {
        match self.eval(e)? {
            Val::Vector(v) => Ok(v),
            _ => Err(Error::exec("expected an instant vector argument")),
        }
    }

    pub fn eval_string_arg(&self, e: &Expr) -> Result<String, Error> {
        match self.eval(e)? {
            Val::Str(s) => Ok(s),
            _ => Err(Error::exec("expected a string argument")),
        }
    }

    fn step_index(&self, t: i64) -> usize {
        ((t - self.start) / self.step) as usize
    }

    // ----- binary operators -----

    fn eval_binary(&self, b: &BinaryExpr) -> Result<Val, Error> {
        let op = b.op.id();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs)?;
        let rhs = self.eval(&b.rhs)?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
                l.iter()
                    .zip(r.iter())
                    .map(|(a, c)| {
                        let (v, keep) = binop(op, *a, *c);
                        if is_comparison(op) {
                            if keep {
                                1.0
                            } else {
                                0.0
                            }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (Val::Vector(l), Val::Scalar(r)) => Ok(Val::Vector(self.vector_scalar(l, &r, op, return_bool, false))),
            (Val::Scalar(l), Val::Vector(r)) => Ok(Val::Vector(self.vector_scalar(r, &l, op, return_bool, true))),
            (Val::Vector(l), Val::Vector(r)) => {
                let card = b
                    .modifier
                    .as_ref()
                    .map(|m| m.card.clone())
                    .unwrap_or(VectorMatchCardinality::OneToOne);
                let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
                match op {
                    token::T_LAND | token::T_LOR | token::T_LUNLESS => {
                        Ok(Val::Vector(self.set_op(l, r, op, &matching)))
                    }
                    _ => Ok(Val::Vector(self.vector_vector(
                        l,
                        r,
                        op,
                        return_bool,
                        &card,
                        &matching,
                    )?)),
                }
            }
            _ => Err(Error::exec(
                "binary operators are only defined on scalars and instant vectors",
            )),
        }
    }

    fn vector_scalar(
        &self,
        mut v: Vec<SSeries>,
        s: &[f64],
        op: TokenId,
        return_bool: bool,
        swap: bool,
    ) -> Vec<SSeries> {
        for ser in &mut v {
            let mut out = Vec::with_capacity(ser.points.len());
            for p in &ser.points {
                let sv = s[self.step_index(p.t)];
                let (l, r) = if swap { (sv, p.v) } else { (p.v, sv) };
                let (mut val, keep) = binop(op, l, r);
                if is_comparison(op) && swap {
                    val = p.v;
                }
                if return_bool {
                    out.push(Point {
                        t: p.t,
                        v: if keep { 1.0 } else { 0.0 },
                    });
                } else if keep {
                    out.push(Point { t: p.t, v: val });
                }
            }
            ser.points = out;
            if return_bool || is_arith(op) {
                ser.drop_name = true;
            }
        }
        v.retain(|s| !s.points.is_empty());
        v
    }

    fn signature(&self, l: &Labels, matching: &Option<LabelModifier>) -> String {
        let mut s = String::new();
        match matching {
            Some(LabelModifier::Include(names)) => {
                let mut names: Vec<&String> = names.labels.iter().collect();
                names.sort();
                names.dedup();
                for n in names {
                    s.push_str(n);
                    s.push('\u{ff}');
                    s.push_str(l.get(n));
                    s.push('\u{ff}');
                }
            }
            other => {
                let ignored: &[String] = match other {
                    Some(LabelModifier::Exclude(n)) => &n.labels,
                    _ => &[],
                };
                for lb in l.iter() {
                    if lb.name == METRIC_NAME || ignored.iter().any(|n| *n == lb.name) {
                        continue;
                    }
                    s.push_str(&lb.name);
                    s.push('\u{ff}');
                    s.push_str(&lb.value);
                    s.push('\u{ff}');
                }
            }
        }
        s
    }

    fn match_labels(&self, l: &Labels, matching: &Option<LabelModifier>) -> Labels {
        match matching {
            Some(LabelModifier::Include(names)) => l.keep(&names.labels),
            Some(LabelModifier::Exclude(names)) => {
                let mut n = names.labels.clone();
                n.push(METRIC_NAME.into());
                l.drop_names(&n)
            }
            None => l.without_metric_name(),
        }
    }

    fn set_op(&self, l: Vec<SSeries>, r: Vec<SSeries>, op: TokenId, matching: &Option<LabelModifier>) -> Vec<SSeries> {
        let n = self.steps();
        let lsig: Vec<String> = l.iter().map(|s| self.signature(&s.labels, matching)).collect();
        let rsig: Vec<String> = r.iter().map(|s| self.signature(&s.labels, matching)).collect();
        // Which signatures are present at each step, per side.
        let presence = |side: &[SSeries], sigs: &[String]| -> Vec<std::collections::HashSet<String>> {
            let mut p = vec![std::collections::HashSet::new(); n];
            for (s, sig) in side.iter().zip(sigs) {
                for pt in &s.points {
                    p[self.step_index(pt.t)].insert(sig.clone());
                }
            }
            p
        };
        match op {
            token::T_LAND => {
                let rp = presence(&r, &rsig);
                filter_points(l, |i, k| rp[k].contains(&lsig[i]), self)
            }
            token::T_LUNLESS => {
                let rp = presence(&r, &rsig);
                filter_points(l, |i, k| !rp[k].contains(&lsig[i]), self)
            }
            _ => {
                let lp = presence(&l, &lsig);
                let mut out = l;
                let right = filter_points(r, |i, k| !lp[k].contains(&rsig[i]), self);
                // A right series with the same labels as a left one continues it.
                let mut index: HashMap<(Labels, bool), usize> = HashMap::new();
                for (i, s) in out.iter().enumerate() {
                    index.entry((s.labels.clone(), s.drop_name)).or_insert(i);
                }
                for s in right {
                    match index.get(&(s.labels.clone(), s.drop_name)) {
                        Some(&i) => {
                            let mut pts = std::mem::take(&mut out[i].points);
                            pts.extend(s.points);
                            pts.sort_by_key(|p| p.t);
                            out[i].points = pts;
                        }
                        None => out.push(s),
                    }
                }
                out
            }
        }
    }

    fn vector_vector(
        &self,
        l: Vec<SSeries>,
        r: Vec<SSeries>,
        op: TokenId,
        return_bool: bool,
        card: &VectorMatchCardinality,
        matching: &Option<LabelModifier>,
    ) -> Result<Vec<SSeries>, Error> {
        let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
        let (many, one) = if swapped { (r, l) } else { (l, r) };
        let include: Option<&Vec<String>> = match card {
            VectorMatchCardinality::ManyToOne(ls) | VectorMatchCardinality::OneToMany(ls) => Some(&ls.labels),
            _ => None,
        };
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        let msig: Vec<String> = many.iter().map(|s| self.signature(&s.labels, matching)).collect();
        let osig: Vec<String> = one.iter().map(|s| self.signature(&s.labels, matching)).collect();
        let n = self.steps();
        // Per step: the one-side series for each signature.
        let mut one_at: Vec<HashMap<&str, (usize, f64)>> = vec![HashMap::new(); n];
        for (j, s) in one.iter().enumerate() {
            for p in &s.points {
                let k = self.step_index(p.t);
                if let Some((prev, _)) = one_at[k].insert(osig[j].as_str(), (j, p.v)) {
                    let side = if swapped { "left" } else { "right" };
                    let (mut a, mut b) = (braced(&one[j].labels), braced(&one[prev].labels));
                    if a > b {
                        std::mem::swap(&mut a, &mut b);
                    }
                    return Err(Error::exec(format!(
                        "found duplicate series for the match group {} on the {side} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side",
                        braced(&self.match_labels(&one[j].labels, matching)),
                    )));
                }
            }
        }
        let drop = return_bool || is_arith(op);
        let mut result_cache: HashMap<(usize, usize), Labels> = HashMap::new();
        let mut out: Vec<SSeries> = Vec::new();
        let mut out_index: HashMap<(Labels, bool), usize> = HashMap::new();
        // Per step: signatures matched so far and the result label sets they produced.
        let mut matched: Vec<HashMap<&str, Vec<Labels>>> = vec![HashMap::new(); n];
        for (i, s) in many.iter().enumerate() {
            for p in &s.points {
                let k = self.step_index(p.t);
                let Some(&(j, ov)) = one_at[k].get(msig[i].as_str()) else {
                    continue;
                };
                let (vl, vr) = if swapped { (ov, p.v) } else { (p.v, ov) };
                let (mut val, keep) = binop(op, vl, vr);
                if is_comparison(op) && swapped {
                    val = p.v;
                }
                if return_bool {
                    val = if keep { 1.0 } else { 0.0 };
                }
                let metric = result_cache
                    .entry((i, j))
                    .or_insert_with(|| {
                        let mut b = s.labels.builder();
                        if one_to_one {
                            match matching {
                                Some(LabelModifier::Include(on)) => {
                                    b = s.labels.keep(&on.labels).builder();
                                }
                                Some(LabelModifier::Exclude(ign)) => {
                                    for n in &ign.labels {
                                        b.del(n);
                                    }
                                }
                                None => {}
                            }
                        }
                        if let Some(inc) = include {
                            for n in inc {
                                let v = one[j].labels.get(n);
                                b.set(n, v);
                            }
                        }
                        b.labels()
                    })
                    .clone();
                // Matches are checked before filtering, so an ambiguous match is an
                // error even when the comparison would drop it.
                let e = matched[k].entry(msig[i].as_str()).or_default();
                if one_to_one {
                    if !e.is_empty() {
                        return Err(Error::exec(
                            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                        ));
                    }
                } else if e.contains(&metric) {
                    return Err(Error::exec(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    ));
                }
                e.push(metric.clone());
                if !return_bool && !keep {
                    continue;
                }
                let dn = drop || s.drop_name;
                let idx = *out_index.entry((metric.clone(), dn)).or_insert_with(|| {
                    out.push(SSeries {
                        labels: metric,
                        drop_name: dn,
                        points: Vec::new(),
                    });
                    out.len() - 1
                });
                out[idx].points.push(Point { t: p.t, v: val });
            }
        }
        for s in &mut out {
            s.points.sort_by_key(|p| p.t);
        }
        Ok(out)
    }

    // ----- aggregations -----

    fn eval_aggregate(&self, a: &AggregateExpr) -> Result<Val, Error> {
        crate::aggregate::eval(self, a)
    }

    fn eval_call(&self, c: &Call) -> Result<Val, Error> {
        functions::call(self, c)
    }
}

fn filter_points(v: Vec<SSeries>, keep: impl Fn(usize, usize) -> bool, ev: &Evaluator<'_>) -> Vec<SSeries> {
    let mut out = Vec::with_capacity(v.len());
    for (i, mut s) in v.into_iter().enumerate() {
        s.points.retain(|p| keep(i, ev.step_index(p.t)));
        if !s.points.is_empty() {
            out.push(s);
        }
    }
    out
}

/// The raw samples of each series in the (single) window, for range-vector results.
fn window_series(r: &RangeInput) -> Vec<SSeries> {
    let end = r.refs.last().copied().unwrap_or(0);
    r.series
        .iter()
        .map(|s| SSeries {
            labels: s.labels.clone(),
            drop_name: s.drop_name,
            points: s
                .points
                .iter()
                .filter(|p| p.t > end - r.range && p.t <= end)
                .copied()
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Formats a value for `count_values` labels.
pub(crate) fn value_label(v: f64) -> String {
    format_float_plain(v)
}
