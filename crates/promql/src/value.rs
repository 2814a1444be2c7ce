//! Query results and the errors and annotations that come with them.

use sextant_model::Labels;

/// One float point of a result series: the storage's sample type, so a
/// series read from the store is windowed where it was decoded, without a
/// copy. Points compare bit for bit, as samples do.
pub use sextant_model::Sample as Point;

/// A sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
}

/// A series of a range vector (matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<Point>,
}

/// The value of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { t: i64, v: f64 },
    String { t: i64, v: String },
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    /// Prometheus's name for the type, as used in `resultType`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// What kind of failure a query hit, mapping to the Prometheus API's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The query text is invalid (`bad_data`, 400).
    BadData,
    /// Evaluation failed (`execution`, 422).
    Execution,
    /// The timeout was reached (`timeout`, 503).
    Timeout,
    /// The query was cancelled (`canceled`, 503).
    Canceled,
    /// A limit was hit (`execution`, 422).
    Limit,
    /// Storage failed (`internal`, 500).
    Internal,
}

/// A query error with its kind and a message in Prometheus's wording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{msg}")]
pub struct Error {
    pub kind: ErrorKind,
    pub msg: String,
}

impl Error {
    pub fn new(kind: ErrorKind, msg: impl Into<String>) -> Self {
        Error { kind, msg: msg.into() }
    }
    pub fn exec(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Execution, msg)
    }
    pub fn bad(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadData, msg)
    }
}

/// Warnings and infos, deduplicated, in the order raised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

impl Annotations {
    pub fn warn(&mut self, msg: String) {
        let m = format!("PromQL warning: {msg}");
        if !self.warnings.contains(&m) {
            self.warnings.push(m);
        }
    }
    pub fn info(&mut self, msg: String) {
        let m = format!("PromQL info: {msg}");
        if !self.infos.contains(&m) {
            self.infos.push(m);
        }
    }
}

/// Work done by a query, for `stats` in API answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    pub samples_loaded: usize,
    pub series_loaded: usize,
    pub peak_samples: usize,
    pub eval_micros: u64,
}

/// A successful query's value with its annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub value: Value,
    pub annotations: Annotations,
    pub stats: QueryStats,
}

/// Formats labels the way Prometheus prints them in messages: `{a="b", c="d"}`.
pub fn braced(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, lb) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&lb.name);
        s.push('=');
        s.push_str(&format!("{:?}", lb.value));
    }
    s.push('}');
    s
}

/// Formats a float as Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub fn format_float_plain(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{f}");
    if s == "-0" {
        return "-0".into();
    }
    s
}

/// Formats a float as Prometheus's JSON and text output do
/// (`strconv.FormatFloat(f, 'g', -1, 64)` with Go's exponent rules).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // Shortest round-trip digits, then Go's %g layout: exponent form when the
    // exponent is < -4 or >= the number of significant digits (min 21 for 'g' -1).
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits = mant.trim_start_matches('-').replace('.', "");
    let ndigits = digits.len() as i32;
    if exp < -4 || exp >= ndigits.max(21) {
        let sign = if exp < 0 { "-" } else { "+" };
        let a = exp.abs();
        if a < 10 {
            format!("{mant}e{sign}0{a}")
        } else {
            format!("{mant}e{sign}{a}")
        }
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_format_like_go() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1e21), "1e+21");
        assert_eq!(format_float(1e20), "100000000000000000000");
        assert_eq!(format_float(1.5e-7), "1.5e-07");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float_plain(1e21), "1000000000000000000000");
    }
}
