//! A PromQL evaluator with Prometheus semantics over the [`Queryable`] trait.
//!
//! Architecture invariant: this crate parses with `promql-parser`, reads data
//! only through `sextant_model::Queryable`, and knows nothing of HTTP or the
//! storage engine's formats.

mod aggregate;
mod eval;
mod fold;
mod functions;
mod histogram;
mod memstore;
pub mod pos;
pub mod promqltest;
mod value;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promql_parser::parser::value::ValueType;
use promql_parser::parser::Expr;
use sextant_model::{Labels, Queryable};

pub use memstore::MemStore;
pub use value::{
    braced, format_float, format_float_plain, Annotations, Error, ErrorKind, Point, QueryResult, QueryStats, Sample,
    Series, Value,
};

use eval::{Evaluator, Limits, SSeries, Val};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (ms). Default 5 m.
    pub lookback_ms: i64,
    /// Most samples a query may load. Default 50,000,000.
    pub max_samples: usize,
    /// Longest a query may run. Default 2 minutes.
    pub timeout: Option<Duration>,
    /// Step of subqueries that give none (ms). Default 1 m.
    pub default_subquery_step_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_ms: 300_000,
            max_samples: 50_000_000,
            timeout: Some(Duration::from_secs(120)),
            default_subquery_step_ms: 60_000,
        }
    }
}

/// Evaluates PromQL queries.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// Parses a query, with Prometheus's error wording.
pub fn parse(query: &str) -> Result<Expr, Error> {
    promql_parser::parser::parse(query).map_err(|e| {
        let msg = e.to_string();
        match error_offset(query, &msg) {
            Some(at) => {
                let (line, col) = line_col(query, at);
                Error::bad(format!("{line}:{col}: parse error: {msg}"))
            }
            None => Error::bad(format!("parse error: {msg}")),
        }
    })
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(q: &str, at: usize) -> (usize, usize) {
    let before = &q[..at.min(q.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Byte offsets of the code characters of `q`: outside string literals and
/// comments, so that brackets inside label values are not counted.
fn code_chars(q: &str) -> Vec<(usize, char)> {
    let mut out = Vec::new();
    let mut it = q.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some((_, d)) = it.next() {
                    if d == '\\' && c != '`' {
                        it.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '#' => {
                for (_, d) in it.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            _ => out.push((i, c)),
        }
    }
    out
}

/// Where in `q` the parser's complaint `msg` points, as a byte offset: the
/// parser reports no positions, so they are recovered from the text.
fn error_offset(q: &str, msg: &str) -> Option<usize> {
    let code = code_chars(q);
    let unmatched = |open: char, close: char| -> (Option<usize>, Option<usize>) {
        let mut stack = Vec::new();
        for &(i, c) in &code {
            if c == open {
                stack.push(i);
            } else if c == close && stack.pop().is_none() {
                return (None, Some(i));
            }
        }
        (stack.first().copied(), None)
    };
    let quoted = |m: &str| -> Option<String> {
        let a = m.find('\'')?;
        let b = m[a + 1..].find('\'')?;
        Some(m[a + 1..a + 1 + b].to_string())
    };
    if msg.contains("unclosed left parenthesis") {
        return unmatched('(', ')').0;
    }
    if msg.contains("unexpected right parenthesis") {
        return unmatched('(', ')').1;
    }
    if msg.contains("inside braces") && msg.contains("end of input") {
        return unmatched('{', '}').0.or(Some(q.len()));
    }
    if msg.contains("inside brackets") && msg.contains("end of input") {
        return unmatched('[', ']').0.or(Some(q.len()));
    }
    if msg.contains("end of input") {
        return Some(q.trim_end().len());
    }
    if let Some(c) = msg
        .strip_prefix("unexpected character inside brackets: ")
        .and_then(quoted)
    {
        let open = code.iter().find(|(_, ch)| *ch == '[').map(|(i, _)| *i)?;
        return code
            .iter()
            .find(|(i, ch)| *i > open && c.starts_with(*ch))
            .map(|(i, _)| *i);
    }
    if msg.contains("function") {
        if let Some(f) = quoted(msg) {
            let fc = format!("{f}(");
            return q.find(&fc).or_else(|| q.find(&f));
        }
    }
    if let Some(rest) = msg.strip_prefix("illegal regex for ") {
        return q.find(rest.trim());
    }
    // Otherwise: just past the longest prefix that parses.
    let mut cuts: Vec<usize> = code
        .windows(2)
        .filter(|w| !w[0].1.is_alphanumeric() || !w[1].1.is_alphanumeric())
        .map(|w| w[1].0)
        .collect();
    cuts.truncate(300);
    for &end in cuts.iter().rev() {
        if promql_parser::parser::parse(&q[..end]).is_ok() {
            let next = q[end..].find(|c: char| !c.is_whitespace()).map_or(q.len(), |o| end + o);
            return Some(next);
        }
    }
    Some(code.first().map_or(0, |(i, _)| *i))
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at time `t` (ms).
    pub fn instant(&self, q: &dyn Queryable, query: &str, t: i64) -> Result<QueryResult, Error> {
        let expr = parse(query)?;
        self.instant_expr(q, &expr, query, t, None)
    }

    /// Evaluates `query` from `start` to `end` (ms) every `step` ms.
    pub fn range(&self, q: &dyn Queryable, query: &str, start: i64, end: i64, step: i64) -> Result<QueryResult, Error> {
        let expr = parse(query)?;
        self.range_expr(q, &expr, query, start, end, step, None)
    }

    /// Instant evaluation of a parsed expression; `cancel` aborts it when set.
    pub fn instant_expr(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        text: &str,
        t: i64,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<QueryResult, Error> {
        self.run(q, expr, text, t, t, 1, false, cancel)
    }

    /// Range evaluation of a parsed expression.
    #[allow(clippy::too_many_arguments)]
    pub fn range_expr(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        text: &str,
        start: i64,
        end: i64,
        step: i64,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<QueryResult, Error> {
        if step <= 0 {
            return Err(Error::bad(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end < start {
            return Err(Error::bad("end timestamp must not be before start time"));
        }
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            other => {
                return Err(Error::bad(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    type_word(other)
                )))
            }
        }
        self.run(q, expr, text, start, end, step, true, cancel)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        text: &str,
        start: i64,
        end: i64,
        step: i64,
        is_range: bool,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<QueryResult, Error> {
        let started = Instant::now();
        let limits = Limits {
            max_samples: self.opts.max_samples,
            deadline: self.opts.timeout.map(|d| started + d),
            cancel,
        };
        let annos = RefCell::new(Annotations::default());
        let loaded = Cell::new(0usize);
        let series_loaded = Cell::new(0usize);
        let only_labels = RefCell::new(None);
        let fold = RefCell::new(None);
        let ev = Evaluator {
            q,
            start,
            end,
            step,
            lookback: self.opts.lookback_ms,
            query_start: start,
            query_end: end,
            query_step: if is_range { step } else { 0 },
            query: text,
            default_subquery_step: self.opts.default_subquery_step_ms,
            limits: &limits,
            annos: &annos,
            loaded: &loaded,
            series_loaded: &series_loaded,
            is_range_query: is_range,
            only_labels: &only_labels,
            fold: &fold,
        };
        let val = ev.eval(expr)?;
        let value = if is_range {
            to_matrix(&ev, val)?
        } else {
            to_instant(start, val, orders_its_output(expr))?
        };
        Ok(QueryResult {
            value,
            annotations: annos.into_inner(),
            stats: QueryStats {
                samples_loaded: loaded.get(),
                series_loaded: series_loaded.get(),
                peak_samples: loaded.get(),
                eval_micros: started.elapsed().as_micros() as u64,
            },
        })
    }
}

fn type_word(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}

fn final_labels(s: &SSeries) -> Labels {
    if s.drop_name {
        s.labels.without_metric_name()
    } else {
        s.labels.clone()
    }
}

/// Whether the query's outermost operation puts its result in an order of
/// its own (the sort functions, `topk`, `bottomk`), which an instant
/// query's answer keeps; other answers are sorted by labels.
fn orders_its_output(e: &Expr) -> bool {
    match e {
        Expr::Paren(p) => orders_its_output(&p.expr),
        Expr::Call(c) => matches!(
            c.func.name,
            "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc"
        ),
        Expr::Aggregate(a) => matches!(
            a.op.id(),
            promql_parser::parser::token::T_TOPK | promql_parser::parser::token::T_BOTTOMK
        ),
        _ => false,
    }
}

fn to_instant(t: i64, v: Val, keep_order: bool) -> Result<Value, Error> {
    Ok(match v {
        Val::Scalar(s) => Value::Scalar {
            t,
            v: s.first().copied().unwrap_or(f64::NAN),
        },
        Val::Str(s) => Value::String { t, v: s },
        Val::Vector(vs) => {
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::with_capacity(vs.len());
            for s in &vs {
                let l = final_labels(s);
                if !seen.insert(l.clone()) {
                    return Err(Error::exec("vector cannot contain metrics with the same labelset"));
                }
                if let Some(p) = s.points.first() {
                    out.push(Sample { labels: l, t, v: p.v });
                }
            }
            if !keep_order {
                // The store hands series over in no particular order.
                out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
            }
            Value::Vector(out)
        }
        Val::Range(vs) => {
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::with_capacity(vs.len());
            for s in vs {
                let l = final_labels(&s);
                if !seen.insert(l.clone()) {
                    return Err(Error::exec("vector cannot contain metrics with the same labelset"));
                }
                out.push(Series {
                    labels: l,
                    points: s.points,
                });
            }
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Value::Matrix(out)
        }
    })
}

fn to_matrix(ev: &Evaluator<'_>, v: Val) -> Result<Value, Error> {
    Ok(match v {
        Val::Scalar(s) => Value::Matrix(vec![Series {
            labels: Labels::empty(),
            points: s
                .iter()
                .enumerate()
                .map(|(k, v)| Point { t: ev.ts(k), v: *v })
                .collect(),
        }]),
        Val::Vector(vs) | Val::Range(vs) => {
            // Series that end up with equal labels merge when they never overlap.
            let mut index: HashMap<Labels, usize> = HashMap::new();
            let mut out: Vec<Series> = Vec::with_capacity(vs.len());
            for s in vs {
                let l = final_labels(&s);
                match index.get(&l) {
                    Some(&i) => {
                        let mut pts = std::mem::take(&mut out[i].points);
                        pts.extend(s.points);
                        pts.sort_by_key(|p| p.t);
                        if pts.windows(2).any(|w| w[0].t == w[1].t) {
                            return Err(Error::exec("vector cannot contain metrics with the same labelset"));
                        }
                        out[i].points = pts;
                    }
                    None => {
                        index.insert(l.clone(), out.len());
                        out.push(Series {
                            labels: l,
                            points: s.points,
                        });
                    }
                }
            }
            out.retain(|s| !s.points.is_empty());
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
            Value::Matrix(out)
        }
        Val::Str(_) => {
            return Err(Error::bad(
                "invalid expression type \"string\" for range query, must be Scalar or instant Vector",
            ))
        }
    })
}

/// Parses a series selector such as `up{job="x"}` into label matchers, as the
/// `match[]` parameter of the API needs.
pub fn parse_selector(s: &str) -> Result<Vec<sextant_model::Matcher>, Error> {
    match parse(s)? {
        Expr::VectorSelector(vs) => eval::convert_matchers(&vs),
        _ => Err(Error::bad(format!(
            "invalid series selector {s:?}: expected a vector selector"
        ))),
    }
}

#[cfg(test)]
mod parse_error_tests {
    use super::parse;

    fn err(q: &str) -> String {
        match parse(q) {
            Ok(_) => panic!("{q:?} parsed"),
            Err(e) => e.msg,
        }
    }

    #[test]
    fn parse_errors_carry_their_position() {
        assert!(err("sum by (zone (up)").starts_with("1:8: parse error: unclosed left parenthesis"));
        assert!(err("sum(rate(x[5m])))").starts_with("1:17: parse error: unexpected right parenthesis"));
        assert!(err("foo{").starts_with("1:4: parse error:"));
        assert!(err("rate(x[5m)").starts_with("1:10: parse error:"));
        assert!(err("unknown_fn(x)").starts_with("1:1: parse error:"));
        assert!(err("foo bar").starts_with("1:5: parse error:"), "{}", err("foo bar"));
        assert!(err("1 +").starts_with("1:"), "{}", err("1 +"));
        assert!(
            err("up{a=\"(\"} +\n  (").starts_with("2:3: parse error"),
            "{}",
            err("up{a=\"(\"} +\n  (")
        );
    }
}

#[cfg(test)]
mod projection_tests {
    use std::sync::Mutex;

    use sextant_model::{Labels, Mapped, Matcher, Queryable, ReadError, Sample, SampleMap, SelectHints, Series};

    use crate::{Engine, MemStore};

    /// A store that records which labels each `select_map` asked for and
    /// then gives exactly those (and the metric name), as the head does.
    struct Projecting {
        inner: MemStore,
        asked: Mutex<Vec<(String, Option<Vec<String>>)>>,
    }

    impl Queryable for Projecting {
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
            let name = ms
                .iter()
                .find(|m| m.name() == "__name__")
                .map(|m| m.value().to_string());
            let only = hints.only_labels.clone();
            self.asked
                .lock()
                .unwrap()
                .push((name.unwrap_or_default(), only.as_ref().map(|n| n.to_vec())));
            let mut m = self.inner.select_map(ms, mint, maxt, hints, map)?;
            if let Some(names) = only {
                let mut keep = names.to_vec();
                keep.push("__name__".into());
                for s in &mut m.series {
                    s.labels = s.labels.keep(&keep);
                }
            }
            Ok(m)
        }
        fn label_names(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
            self.inner.label_names(ms, mint, maxt)
        }
        fn label_values(&self, n: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
            self.inner.label_values(n, ms, mint, maxt)
        }
    }

    fn store() -> Projecting {
        let inner = MemStore::new();
        for (i, zone) in ["a", "a", "b"].iter().enumerate() {
            for name in ["x", "y"] {
                let l = Labels::from_pairs([("__name__", name), ("zone", zone), ("gpu", &i.to_string())]);
                let samples: Vec<Sample> = (0..20)
                    .map(|k| Sample::new(k * 15_000, (k * (i as i64 + 1)) as f64))
                    .collect();
                inner.add(l, &samples);
            }
        }
        Projecting {
            inner,
            asked: Mutex::new(Vec::new()),
        }
    }

    #[test]
    fn an_aggregation_reads_only_the_labels_it_groups_by_and_answers_the_same() {
        let full = store();
        let eng = Engine::default();
        // Per query: each selector's metric name and the labels it asks for.
        type Asks<'a> = &'a [(&'a str, Option<&'a [&'a str]>)];
        let cases: [(&str, Asks); 7] = [
            ("sum by (zone) (rate(x[1m]))", &[("x", Some(&["zone"]))]),
            ("count(x)", &[("x", Some(&[]))]),
            (
                "quantile by (zone) (0.5, max_over_time(x[1m]))",
                &[("x", Some(&["zone"]))],
            ),
            // These need every label of the series: no projection.
            ("topk by (zone) (1, x)", &[("x", None)]),
            ("sum without (gpu) (x)", &[("x", None)]),
            ("sum by (zone) (x / y)", &[("x", None), ("y", None)]),
            // The scalar parameter's selector is not the aggregated one.
            (
                "sum by (zone) (predict_linear(x[1m], scalar(max(y))))",
                &[("x", Some(&["zone"])), ("y", Some(&[]))],
            ),
        ];
        for (q, want) in cases {
            let p = store();
            let got = eng.instant(&p, q, 240_000).expect(q);
            let plain = eng.instant(&full.inner, q, 240_000).expect(q);
            assert_eq!(format!("{:?}", got.value), format!("{:?}", plain.value), "{q}");
            let mut asked = p.asked.lock().unwrap().clone();
            asked.sort();
            let mut want: Vec<(String, Option<Vec<String>>)> = want
                .iter()
                .map(|(n, o)| (n.to_string(), o.map(|o| o.iter().map(|s| s.to_string()).collect())))
                .collect();
            want.sort();
            assert_eq!(asked, want, "{q}");
        }
    }
}
