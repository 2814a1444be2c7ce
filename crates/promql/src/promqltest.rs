//! Runner for Prometheus's PromQL test-script format (`load`, `clear`, `eval`,
//! `expect ...`), with the same re-runs as Prometheus's own harness: every
//! instant eval is repeated with `@` pinned at shifted evaluation times, and as
//! a range query from t-1m to t+1m whose middle step must agree.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr};
use sextant_model::{is_stale_nan, Label, Labels, Queryable, Sample as MSample, STALE_NAN};

use crate::{Engine, EngineOptions, Error, MemStore, Value};

/// Floats compare with this relative tolerance, NaN equal to NaN.
pub const EPSILON: f64 = 1e-6;

/// Prometheus's `almost.Equal`.
pub fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let min_normal = f64::from_bits(0x0010_0000_0000_0000);
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < min_normal {
        return diff < eps * min_normal;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// One expected value in sequence notation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeqValue {
    Value(f64),
    Omitted,
    /// A native histogram literal, which this runner cannot represent.
    Histogram,
}

#[derive(Debug, Clone)]
struct Expect {
    msg: Option<String>,
    regex: Option<regex::Regex>,
}

impl Expect {
    fn matches(&self, s: &str) -> bool {
        match (&self.msg, &self.regex) {
            (Some(m), _) => m == s,
            (None, Some(r)) => r.is_match(s),
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
enum Expected {
    None,
    Scalar(f64),
    Series(Vec<(Labels, Vec<SeqValue>, usize)>),
    Str(String),
}

/// An `eval` command.
#[derive(Debug, Clone)]
pub struct EvalCmd {
    pub line: usize,
    pub expr: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    fail: bool,
    fail_expect: Option<Expect>,
    warn_flag: bool,
    info_flag: bool,
    warns: Vec<Expect>,
    infos: Vec<Expect>,
    no_warn: bool,
    no_info: bool,
    ordered: bool,
    expected: Expected,
    /// `expect range vector from .. to .. step ..`: start, end, step.
    range_vector: Option<(i64, i64, i64)>,
    exclude_from_range: bool,
}

#[derive(Debug, Clone)]
enum Cmd {
    Clear,
    Load {
        series: Vec<(Labels, Vec<MSample>)>,
        histograms: Vec<Labels>,
    },
    Eval(Box<EvalCmd>),
}

/// A parsed script.
pub struct Script {
    cmds: Vec<Cmd>,
}

/// The outcome of one eval.
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    pub line: usize,
    pub expr: String,
    pub error: Option<String>,
}

/// Parses a Prometheus duration such as `1h30m`, `5m`, `0`, `100ms`.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let mut total: i64 = 0;
    let b = s.as_bytes();
    let mut i = 0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if st == i {
            return None;
        }
        let n: i64 = s[st..i].parse().ok()?;
        let u0 = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult = match &s[u0..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    match t {
        "Inf" | "+Inf" | "inf" | "+inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok().map(|v| v as f64);
    }
    t.parse::<f64>().ok()
}

/// Parses `name{a="b", ...}` at the start of `s`; returns labels and the rest.
pub fn parse_metric(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let mut labels = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
        i += 1;
    }
    if i > 0 {
        labels.push(Label::new("__name__", &s[..i]));
    }
    let mut rest = &s[i..];
    if rest.starts_with('{') {
        rest = &rest[1..];
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, r) = if rest.starts_with('"') {
                let (v, r) = parse_quoted(rest)?;
                (v, r)
            } else {
                let n = rest
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                    .count();
                if n == 0 {
                    return Err(format!("bad label name at {rest:?}"));
                }
                (rest[..n].to_string(), &rest[n..])
            };
            let r = r.trim_start();
            // A lone quoted string is a metric name.
            if r.starts_with(',') || r.starts_with('}') {
                labels.push(Label::new("__name__", name));
                rest = r;
                continue;
            }
            let r = r
                .strip_prefix('=')
                .ok_or_else(|| format!("expected = after label {name}"))?;
            let (v, r) = parse_quoted(r.trim_start())?;
            labels.push(Label::new(name, v));
            rest = r;
        }
    }
    Ok((Labels::from_vec(labels), rest))
}

fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let q = match chars.next() {
        Some((_, c)) if c == '"' || c == '\'' || c == '`' => c,
        _ => return Err(format!("expected a quoted string at {s:?}")),
    };
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Ok((out, &s[i + c.len_utf8()..]));
        }
        if c == '\\' && q != '`' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\'')) => out.push('\''),
                Some((_, 'x')) => {
                    let h: String = chars.by_ref().take(2).map(|x| x.1).collect();
                    let b = u8::from_str_radix(&h, 16).map_err(|_| "bad \\x escape".to_string())?;
                    out.push(b as char);
                }
                Some((_, o)) => {
                    out.push('\\');
                    out.push(o);
                }
                None => break,
            }
        } else {
            out.push(c);
        }
    }
    Err("unterminated string".into())
}

/// Expands sequence notation: `1 2+3x4 _ _x3 stale 5x2 -1-1x3 {{...}}`.
pub fn parse_sequence(s: &str) -> Result<Vec<(SeqValue, bool)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            let end = rest.find("}}").ok_or("unterminated histogram")? + 2;
            let mut tail = &rest[end..];
            let mut reps = 1usize;
            if let Some(t) = tail.strip_prefix('x') {
                let n: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
                reps = n.parse::<usize>().map_err(|_| "bad repeat")? + 1;
                tail = &t[n.len()..];
            } else if tail.starts_with("+{{") || tail.starts_with("-{{") {
                let close = tail.find("}}").ok_or("unterminated histogram")? + 2;
                tail = &tail[close..];
                if let Some(t) = tail.strip_prefix('x') {
                    let n: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
                    reps = n.parse::<usize>().map_err(|_| "bad repeat")? + 1;
                    tail = &t[n.len()..];
                }
            }
            for _ in 0..reps {
                out.push((SeqValue::Histogram, false));
            }
            rest = tail.trim_start();
            continue;
        }
        let sp = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let tok = &rest[..sp];
        rest = rest[sp..].trim_start();
        if tok == "_" {
            out.push((SeqValue::Omitted, false));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad token {tok}"))?;
            out.extend(std::iter::repeat_n((SeqValue::Omitted, false), n));
            continue;
        }
        if tok == "stale" {
            out.push((SeqValue::Value(STALE_NAN), true));
            continue;
        }
        // a, axN, a+bxN, a-bxN
        let (base_s, times) = match tok.rfind('x') {
            Some(i) if tok[i + 1..].chars().all(|c| c.is_ascii_digit()) && i + 1 < tok.len() => (
                &tok[..i],
                Some(
                    tok[i + 1..]
                        .parse::<usize>()
                        .map_err(|_| format!("bad repeat in {tok}"))?,
                ),
            ),
            _ => (tok, None),
        };
        // Split a+b / a-b (not the sign of a or of an exponent).
        let mut split = None;
        for (i, c) in base_s.char_indices().skip(1) {
            if (c == '+' || c == '-') && !matches!(base_s.as_bytes()[i - 1], b'e' | b'E') {
                split = Some(i);
                break;
            }
        }
        let (a, b) = match split {
            Some(i) => {
                let a = parse_number(&base_s[..i]).ok_or_else(|| format!("bad number in {tok}"))?;
                let mut b = parse_number(&base_s[i + 1..]).ok_or_else(|| format!("bad number in {tok}"))?;
                if &base_s[i..=i] == "-" {
                    b = -b;
                }
                (a, b)
            }
            None => (parse_number(base_s).ok_or_else(|| format!("bad number {tok}"))?, 0.0),
        };
        match times {
            None => out.push((SeqValue::Value(a), false)),
            Some(n) => {
                let mut v = a;
                for _ in 0..=n {
                    out.push((SeqValue::Value(v), false));
                    v += b;
                }
            }
        }
    }
    Ok(out)
}

fn parse_expect(line: &str) -> Result<(String, Expect), String> {
    let rest = line.trim_start_matches("expect").trim();
    let (kind, tail) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let mut e = Expect { msg: None, regex: None };
    if let Some(m) = tail.strip_prefix("msg:") {
        e.msg = Some(m.trim().to_string());
    } else if let Some(r) = tail.strip_prefix("regex:") {
        e.regex = Some(regex::Regex::new(r.trim()).map_err(|err| format!("bad regex: {err}"))?);
    } else if !tail.is_empty() {
        return Err(format!("bad expect line {line:?}"));
    }
    Ok((kind.to_string(), e))
}

impl Script {
    /// Parses a script.
    pub fn parse(input: &str) -> Result<Script, String> {
        let lines: Vec<String> = input
            .lines()
            .map(|l| {
                let t = l.trim();
                if t.starts_with('#') {
                    String::new()
                } else {
                    t.to_string()
                }
            })
            .collect();
        let mut cmds = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let l = &lines[i];
            if l.is_empty() {
                i += 1;
                continue;
            }
            let word = l.split_whitespace().next().unwrap_or("").to_lowercase();
            if word == "clear" {
                cmds.push(Cmd::Clear);
                i += 1;
            } else if word.starts_with("load") {
                let step = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(parse_duration)
                    .ok_or(format!("line {}: bad load", i + 1))?;
                let mut series = Vec::new();
                let mut histograms = Vec::new();
                let nhcb = word == "load_with_nhcb";
                i += 1;
                while i < lines.len() && !lines[i].is_empty() {
                    // Start-timestamp lines (`metric@st ...`) are not stored.
                    if lines[i].split_whitespace().next().is_some_and(|w| w.ends_with("@st")) {
                        i += 1;
                        continue;
                    }
                    let (labels, rest) = parse_metric(&lines[i]).map_err(|e| format!("line {}: {e}", i + 1))?;
                    let vals = parse_sequence(rest).map_err(|e| format!("line {}: {e}", i + 1))?;
                    let mut samples = Vec::new();
                    let mut hist = false;
                    for (k, (v, _)) in vals.iter().enumerate() {
                        match v {
                            SeqValue::Value(x) => samples.push(MSample::new(k as i64 * step, *x)),
                            SeqValue::Histogram => hist = true,
                            SeqValue::Omitted => {}
                        }
                    }
                    if hist {
                        histograms.push(labels.clone());
                    }
                    // Loading with NHCB also creates a native histogram under the base name.
                    let name = labels.metric_name();
                    if let Some(base) = name
                        .strip_suffix("_bucket")
                        .or(name.strip_suffix("_count"))
                        .or(name.strip_suffix("_sum"))
                    {
                        if nhcb {
                            let mut b = labels.builder();
                            b.set("__name__", base);
                            b.del("le");
                            histograms.push(b.labels());
                        }
                    }
                    series.push((labels, samples));
                    i += 1;
                }
                cmds.push(Cmd::Load { series, histograms });
            } else if word.starts_with("eval") {
                let (cmd, next) = parse_eval(&lines, i)?;
                cmds.push(Cmd::Eval(Box::new(cmd)));
                i = next;
            } else {
                return Err(format!("line {}: invalid command {l:?}", i + 1));
            }
        }
        Ok(Script { cmds })
    }

    /// Runs the script against a fresh in-memory store, one outcome per eval.
    pub fn run(&self, opts: &EngineOptions) -> Vec<EvalOutcome> {
        self.run_on(opts, &MemStore::new())
    }

    /// Runs the script against `store` (emptied first), one outcome per
    /// eval; an eval after a load the store refused fails, naming it.
    pub fn run_on(&self, opts: &EngineOptions, store: &dyn ScriptStore) -> Vec<EvalOutcome> {
        let engine = Engine::new(opts.clone());
        store.clear();
        let mut refused: Option<String> = None;
        let mut out = Vec::new();
        let mut hist: Vec<Labels> = Vec::new();
        for c in &self.cmds {
            match c {
                Cmd::Clear => {
                    store.clear();
                    hist.clear();
                    refused = None;
                }
                Cmd::Load { series, histograms } => {
                    for (l, s) in series {
                        if let Err(e) = store.add(l.clone(), s) {
                            refused.get_or_insert(format!("the store refused a load of {l}: {e}"));
                        }
                    }
                    hist.extend(histograms.iter().cloned());
                }
                Cmd::Eval(e) => {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_eval(&engine, store, e)));
                    let error = match r {
                        _ if refused.is_some() => refused.clone(),
                        Ok(Ok(())) => None,
                        Ok(Err(m)) if touches(&e.expr, &hist) => Some(format!("selects native histogram data: {m}")),
                        Ok(Err(m)) => Some(m),
                        Err(_) => Some("panic during evaluation".into()),
                    };
                    out.push(EvalOutcome {
                        line: e.line,
                        expr: e.expr.clone(),
                        error,
                    });
                }
            }
        }
        out
    }
}

/// The test scripts to run, each with its display prefix: Prometheus's
/// (from `SEXTANT_PROMQL_TESTDATA`, by default `../shared/conformance/promql`
/// beside the checkout) and the project's own in `testdata/promql/`.
pub fn script_files() -> Vec<(String, std::path::PathBuf)> {
    let upstream = std::env::var_os("SEXTANT_PROMQL_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/conformance/promql"));
    let mut files: Vec<(String, std::path::PathBuf)> =
        scripts_in(&upstream).into_iter().map(|p| (String::new(), p)).collect();
    files.extend(
        scripts_in(&repo_root().join("testdata/promql"))
            .into_iter()
            .map(|p| ("sextant/".to_string(), p)),
    );
    assert!(
        files.len() > 20,
        "expected the upstream PromQL scripts in {} (set SEXTANT_PROMQL_TESTDATA)",
        upstream.display()
    );
    files
}

/// The checkout's top directory.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scripts_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read PromQL test scripts in {}: {e} (set SEXTANT_PROMQL_TESTDATA)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    v.sort();
    v
}

/// A store the test scripts can load and clear.
pub trait ScriptStore: Queryable {
    /// Adds the samples of one series (in time order).
    fn add(&self, labels: Labels, samples: &[MSample]) -> Result<(), String>;
    /// Removes everything.
    fn clear(&self);
}

impl ScriptStore for MemStore {
    fn add(&self, labels: Labels, samples: &[MSample]) -> Result<(), String> {
        MemStore::add(self, labels, samples);
        Ok(())
    }
    fn clear(&self) {
        MemStore::clear(self)
    }
}

/// Whether any selector of the expression matches one of the label sets.
fn touches(expr: &str, series: &[Labels]) -> bool {
    if series.is_empty() {
        return false;
    }
    let Ok(e) = crate::parse(expr) else { return false };
    fn walk(e: &Expr, series: &[Labels]) -> bool {
        let sel = |vs: &promql_parser::parser::VectorSelector| {
            crate::eval::convert_matchers(vs)
                .map(|ms| series.iter().any(|l| ms.iter().all(|m| m.matches(l.get(m.name())))))
                .unwrap_or(false)
        };
        match e {
            Expr::VectorSelector(vs) => sel(vs),
            Expr::MatrixSelector(ms) => sel(&ms.vs),
            Expr::Subquery(s) => walk(&s.expr, series),
            Expr::Aggregate(a) => walk(&a.expr, series),
            Expr::Unary(u) => walk(&u.expr, series),
            Expr::Binary(b) => walk(&b.lhs, series) || walk(&b.rhs, series),
            Expr::Paren(p) => walk(&p.expr, series),
            Expr::Call(c) => c.args.args.iter().any(|a| walk(a, series)),
            _ => false,
        }
    }
    walk(&e, series)
}

fn parse_eval(lines: &[String], start: usize) -> Result<(EvalCmd, usize), String> {
    let l = &lines[start];
    let lineno = start + 1;
    let err = |m: String| format!("line {lineno}: {m}");
    let (head, rest) = l
        .split_once(char::is_whitespace)
        .ok_or_else(|| err("bad eval".into()))?;
    let modifier = head
        .strip_prefix("eval")
        .unwrap_or("")
        .trim_start_matches('_')
        .to_string();
    let rest = rest.trim();
    let mut cmd = EvalCmd {
        line: lineno,
        expr: String::new(),
        range: None,
        at: 0,
        fail: modifier == "fail",
        fail_expect: None,
        warn_flag: modifier == "warn",
        info_flag: modifier == "info",
        warns: vec![],
        infos: vec![],
        no_warn: false,
        no_info: false,
        ordered: modifier == "ordered",
        expected: Expected::None,
        range_vector: None,
        exclude_from_range: false,
    };
    if let Some(r) = rest.strip_prefix("instant") {
        let r = r.trim();
        let r = r
            .strip_prefix("at")
            .ok_or_else(|| err("instant eval needs `at`".into()))?
            .trim();
        let (t, expr) = r
            .split_once(char::is_whitespace)
            .ok_or_else(|| err("bad instant eval".into()))?;
        cmd.at = parse_duration(t).ok_or_else(|| err(format!("bad time {t}")))?;
        cmd.expr = expr.trim().to_string();
    } else if let Some(r) = rest.strip_prefix("range") {
        let r = r
            .trim()
            .strip_prefix("from")
            .ok_or_else(|| err("range eval needs from".into()))?
            .trim();
        let (from, r) = r.split_once(" to ").ok_or_else(|| err("range eval needs to".into()))?;
        let (to, r) = r
            .trim()
            .split_once(" step ")
            .ok_or_else(|| err("range eval needs step".into()))?;
        let r = r.trim();
        let (step, expr) = r
            .split_once(char::is_whitespace)
            .ok_or_else(|| err("bad range eval".into()))?;
        let f = parse_duration(from).ok_or_else(|| err(format!("bad start {from}")))?;
        let t = parse_duration(to.trim()).ok_or_else(|| err(format!("bad end {to}")))?;
        let s = parse_duration(step).ok_or_else(|| err(format!("bad step {step}")))?;
        cmd.range = Some((f, t, s));
        cmd.expr = expr.trim().to_string();
    } else {
        return Err(err("bad eval".into()));
    }
    let mut i = start + 1;
    let mut pos = 0usize;
    let mut series = Vec::new();
    while i < lines.len() && !lines[i].is_empty() {
        let d = &lines[i];
        if let Some(rv) = d.strip_prefix("expect range vector") {
            let rv = rv.trim().strip_prefix("from").unwrap_or("").trim();
            let (f, r) = rv.split_once(" to ").unwrap_or(("", ""));
            let (t, s) = r.split_once(" step ").unwrap_or(("", ""));
            let (f, t, s) = (parse_duration(f), parse_duration(t.trim()), parse_duration(s.trim()));
            match (f, t, s) {
                (Some(f), Some(t), Some(s)) => {
                    cmd.range_vector = Some((f, t, s));
                    cmd.at = t;
                    cmd.exclude_from_range = true;
                }
                _ => return Err(format!("line {}: bad expect range vector", i + 1)),
            }
        } else if let Some(s) = d.strip_prefix("expect string") {
            let (v, _) = parse_quoted(s.trim()).map_err(|e| format!("line {}: {e}", i + 1))?;
            cmd.expected = Expected::Str(v);
            cmd.exclude_from_range = true;
        } else if d.split(' ').next() == Some("expect") {
            let (kind, e) = parse_expect(d).map_err(|e| format!("line {}: {e}", i + 1))?;
            match kind.as_str() {
                "fail" => {
                    cmd.fail = true;
                    cmd.fail_expect = Some(e);
                }
                "warn" => cmd.warns.push(e),
                "info" => cmd.infos.push(e),
                "no_warn" => cmd.no_warn = true,
                "no_info" => cmd.no_info = true,
                "ordered" => cmd.ordered = true,
                other => return Err(format!("line {}: unknown expect {other}", i + 1)),
            }
        } else if let Some(m) = d.strip_prefix("expected_fail_message") {
            cmd.fail_expect = Some(Expect {
                msg: Some(m.trim().to_string()),
                regex: None,
            });
        } else if let Some(m) = d.strip_prefix("expected_fail_regexp") {
            cmd.fail_expect = Some(Expect {
                msg: None,
                regex: regex::Regex::new(m.trim()).ok(),
            });
        } else if let Some(v) = parse_number(d).filter(|_| !d.starts_with('{')) {
            cmd.expected = Expected::Scalar(v);
        } else {
            pos += 1;
            let (labels, rest) = parse_metric(d).map_err(|e| format!("line {}: {e}", i + 1))?;
            let vals = parse_sequence(rest).map_err(|e| format!("line {}: {e}", i + 1))?;
            series.push((labels, vals.into_iter().map(|(v, _)| v).collect(), pos));
        }
        i += 1;
    }
    if !series.is_empty() {
        cmd.expected = Expected::Series(series);
    }
    Ok((cmd, i))
}

fn check_annotations(cmd: &EvalCmd, warnings: &[String], infos: &[String]) -> Result<(), String> {
    if cmd.warn_flag && warnings.is_empty() {
        return Err("expected warnings but got none".into());
    }
    if cmd.info_flag && infos.is_empty() {
        return Err("expected info annotations but got none".into());
    }
    for (kind, exp, actual) in [("warn", &cmd.warns, warnings), ("info", &cmd.infos, infos)] {
        if exp.is_empty() {
            continue;
        }
        if actual.is_empty() {
            return Err(format!("expected {kind} annotations but none were found"));
        }
        for e in exp {
            if !actual.iter().any(|a| e.matches(a)) {
                return Err(format!(
                    "expected {kind} annotation {:?} not found, got {actual:?}",
                    e.msg.as_deref().unwrap_or("<pattern>")
                ));
            }
        }
        for a in actual {
            if !exp.iter().any(|e| e.matches(a)) {
                return Err(format!("unexpected {kind} annotation {a:?}"));
            }
        }
    }
    if cmd.no_warn && !warnings.is_empty() {
        return Err(format!("unexpected warnings: {warnings:?}"));
    }
    if cmd.no_info && !infos.is_empty() {
        return Err(format!("unexpected infos: {infos:?}"));
    }
    Ok(())
}

fn expected_points(vals: &[SeqValue], start: i64, step: i64, end: i64) -> Result<Vec<(i64, f64)>, String> {
    let mut out = Vec::new();
    for (i, v) in vals.iter().enumerate() {
        let t = start + i as i64 * step;
        if t > end {
            return Err(format!(
                "expected {} points, but the query range cannot return this many",
                vals.len()
            ));
        }
        match v {
            SeqValue::Value(x) => out.push((t, *x)),
            SeqValue::Omitted => {}
            SeqValue::Histogram => return Err("native histogram values are not supported".into()),
        }
    }
    Ok(out)
}

fn compare(cmd: &EvalCmd, v: &Value, range: Option<(i64, i64, i64)>) -> Result<(), String> {
    match v {
        Value::Matrix(m) => {
            if cmd.ordered {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            let exp = match &cmd.expected {
                Expected::Series(e) => e.as_slice(),
                Expected::None => &[],
                other => return Err(format!("expected {other:?}, got a matrix of {} series", m.len())),
            };
            let (start, end, step) = range.unwrap_or((cmd.at, cmd.at, 1));
            for s in m {
                let Some((_, vals, _)) = exp.iter().find(|(l, _, _)| *l == s.labels) else {
                    return Err(format!("unexpected metric {} in result", s.labels));
                };
                let want = expected_points(vals, start, step, end)?;
                if want.len() != s.points.len() {
                    return Err(format!(
                        "expected {} points for {}, got {:?}",
                        want.len(),
                        s.labels,
                        s.points
                    ));
                }
                for (w, g) in want.iter().zip(&s.points) {
                    if w.0 != g.t {
                        return Err(format!("expected timestamp {} for {}, got {}", w.0, s.labels, g.t));
                    }
                    if !eq_val(w.1, g.v) {
                        return Err(format!("expected {} at {} for {}, got {}", w.1, w.0, s.labels, g.v));
                    }
                }
            }
            for (l, _, _) in exp {
                if !m.iter().any(|s| s.labels == *l) {
                    return Err(format!("expected metric {l} not found"));
                }
            }
            Ok(())
        }
        Value::Vector(vec) => {
            let exp = match &cmd.expected {
                Expected::Series(e) => e.as_slice(),
                Expected::None => &[],
                other => return Err(format!("expected {other:?}, got a vector")),
            };
            for (i, s) in vec.iter().enumerate() {
                let Some((_, vals, p)) = exp.iter().find(|(l, _, _)| *l == s.labels) else {
                    return Err(format!("unexpected metric {} in result, has value {}", s.labels, s.v));
                };
                if cmd.ordered && *p != i + 1 {
                    return Err(format!(
                        "expected metric {} at position {p} but was at {}",
                        s.labels,
                        i + 1
                    ));
                }
                match vals.first() {
                    Some(SeqValue::Value(x)) => {
                        if !eq_val(*x, s.v) {
                            return Err(format!("expected {x} for {}, got {}", s.labels, s.v));
                        }
                    }
                    Some(SeqValue::Histogram) => return Err("native histogram values are not supported".into()),
                    _ => return Err(format!("no expected value for {}", s.labels)),
                }
            }
            for (l, _, _) in exp {
                if !vec.iter().any(|s| s.labels == *l) {
                    return Err(format!("expected metric {l} not found"));
                }
            }
            Ok(())
        }
        Value::Scalar { v, .. } => match &cmd.expected {
            Expected::Scalar(x) if eq_val(*x, *v) => Ok(()),
            other => Err(format!("expected {other:?}, got scalar {v}")),
        },
        Value::String { v, .. } => match &cmd.expected {
            Expected::Str(x) if x == v => Ok(()),
            other => Err(format!("expected {other:?}, got string {v:?}")),
        },
    }
}

fn eq_val(want: f64, got: f64) -> bool {
    if is_stale_nan(want) || is_stale_nan(got) {
        return is_stale_nan(want) && is_stale_nan(got);
    }
    almost_equal(want, got, EPSILON)
}

fn check_failure(cmd: &EvalCmd, e: &Error) -> Result<(), String> {
    match &cmd.fail_expect {
        Some(x) if !x.matches(&e.msg) => Err(format!(
            "expected error matching {:?}, got {:?}",
            x.msg.as_deref().unwrap_or("<pattern>"),
            e.msg
        )),
        _ => Ok(()),
    }
}

const AT_UNSAFE: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
    "timestamp",
    "start",
    "end",
    "range",
    "step",
];

/// Pins `@ t` on every selector and subquery that has none (not inside a
/// subquery that has one); returns false if the expression uses a function
/// whose value depends on the evaluation time.
fn pin_at(e: &mut Expr, t: SystemTime) -> bool {
    let mut safe = true;
    fn walk(e: &mut Expr, t: SystemTime, safe: &mut bool) {
        match e {
            Expr::VectorSelector(vs) if vs.at.is_none() => vs.at = Some(AtModifier::At(t)),
            Expr::MatrixSelector(ms) if ms.vs.at.is_none() => ms.vs.at = Some(AtModifier::At(t)),
            // Nothing below a subquery with `@` is touched or inspected.
            Expr::Subquery(sq) if sq.at.is_none() => sq.at = Some(AtModifier::At(t)),
            Expr::Aggregate(a) => {
                walk(&mut a.expr, t, safe);
                if let Some(p) = &mut a.param {
                    walk(p, t, safe);
                }
            }
            Expr::Unary(u) => walk(&mut u.expr, t, safe),
            Expr::Binary(b) => {
                walk(&mut b.lhs, t, safe);
                walk(&mut b.rhs, t, safe);
            }
            Expr::Paren(p) => walk(&mut p.expr, t, safe),
            Expr::Call(c) => {
                if AT_UNSAFE.contains(&c.func.name) {
                    *safe = false;
                }
                for a in &mut c.args.args {
                    walk(a, t, safe);
                }
            }
            _ => {}
        }
    }
    walk(e, t, &mut safe);
    safe
}

fn to_systime(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis((-ms) as u64)
    }
}

fn run_eval(engine: &Engine, store: &dyn Queryable, cmd: &EvalCmd) -> Result<(), String> {
    let parsed = match crate::parse(&cmd.expr) {
        Ok(e) => e,
        Err(e) => {
            if cmd.fail {
                return check_failure(cmd, &e);
            }
            return Err(format!("parse error: {}", e.msg));
        }
    };
    if let Some((start, end, step)) = cmd.range {
        let r = engine.range_expr(store, &parsed, &cmd.expr, start, end, step, None);
        return match r {
            Err(e) if cmd.fail => check_failure(cmd, &e),
            Err(e) => Err(format!("error evaluating range query: {}", e.msg)),
            Ok(_) if cmd.fail => Err("expected error but got none".into()),
            Ok(res) => {
                check_annotations(cmd, &res.annotations.warnings, &res.annotations.infos)?;
                compare(cmd, &res.value, Some((start, end, step)))
            }
        };
    }
    let mut queries: Vec<(Expr, String, i64)> = vec![(parsed.clone(), cmd.expr.clone(), cmd.at)];
    let mut pinned = parsed.clone();
    if pin_at(&mut pinned, to_systime(cmd.at)) {
        let ts = cmd.at;
        let times: Vec<i64> = if ts == 0 {
            vec![-1000, 0, 1000]
        } else {
            vec![-10 * ts, 0, ts / 5, ts, 10 * ts]
        };
        let text = pinned.to_string();
        for t in times {
            queries.push((pinned.clone(), text.clone(), t));
        }
    }
    for (expr, text, t) in &queries {
        let r = engine.instant_expr(store, expr, text, *t, None);
        let res = match r {
            Err(e) if cmd.fail => {
                check_failure(cmd, &e)?;
                continue;
            }
            Err(e) => return Err(format!("error evaluating {text} at {t}: {}", e.msg)),
            Ok(_) if cmd.fail => return Err(format!("expected error evaluating {text} at {t} but got none")),
            Ok(r) => r,
        };
        check_annotations(cmd, &res.annotations.warnings, &res.annotations.infos)
            .map_err(|e| format!("{text} at {t}: {e}"))?;
        compare(cmd, &res.value, cmd.range_vector).map_err(|e| format!("{text} at {t}: {e}"))?;
        if cmd.exclude_from_range || cmd.ordered {
            continue;
        }
        let ctx_funcs = ["start()", "end()", "range()", "step()"];
        if ctx_funcs.iter().any(|f| text.contains(f)) {
            continue;
        }
        let rr = engine
            .range_expr(store, expr, text, t - 60_000, t + 60_000, 60_000, None)
            .map_err(|e| format!("{text} at {t} in range mode: {}", e.msg))?;
        let Value::Matrix(m) = rr.value else {
            return Err("range mode did not return a matrix".into());
        };
        let at_t: Vec<crate::Sample> = m
            .iter()
            .filter_map(|s| {
                s.points.iter().find(|p| p.t == *t).map(|p| crate::Sample {
                    labels: s.labels.clone(),
                    t: *t,
                    v: p.v,
                })
            })
            .collect();
        let as_value = match res.value {
            Value::Scalar { .. } => Value::Scalar {
                t: *t,
                v: at_t.first().map(|s| s.v).unwrap_or(f64::NAN),
            },
            _ => Value::Vector(at_t),
        };
        compare(cmd, &as_value, None).map_err(|e| format!("{text} at {t} in range mode: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetitions_of_zero_are_not_hex() {
        assert_eq!(parse_sequence("0x59 60 60").expect("parses").len(), 62);
    }

    #[test]
    fn sequences_expand_like_prometheus() {
        let v: Vec<SeqValue> = parse_sequence("1+2x2 _x2 5x1 -1-1x1 _")
            .expect("parses")
            .into_iter()
            .map(|x| x.0)
            .collect();
        use SeqValue::*;
        assert_eq!(
            v,
            vec![
                Value(1.0),
                Value(3.0),
                Value(5.0),
                Omitted,
                Omitted,
                Value(5.0),
                Value(5.0),
                Value(-1.0),
                Value(-2.0),
                Omitted
            ]
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("100ms"), Some(100));
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn metrics_parse_with_quoted_names_and_escapes() {
        let (l, rest) = parse_metric(r#"{"some.metric", a="x\"y"} 1 2"#).expect("parses");
        assert_eq!(l.get("__name__"), "some.metric");
        assert_eq!(l.get("a"), "x\"y");
        assert_eq!(rest.trim(), "1 2");
    }
}
