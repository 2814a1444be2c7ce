//! Decoding and validation of incoming metrics: remote-write 1.0 and 2.0 and
//! the text exposition format. The output is a [`WriteBatch`] of validated
//! series that the server commits to storage.
//!
//! Architecture invariant: no HTTP framework and no storage internals here;
//! every decoder is a pure function of bytes and limits.

pub mod otlp;
pub mod remote_write;
pub mod rw_scan;
pub mod text;

use sextant_model::{Labels, Sample};

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)` spelling, as Prometheus uses
/// for `le` and `quantile` label values.
pub fn format_g(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if v.is_nan() {
        return "NaN".into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e21).contains(&a) {
        let s = format!("{v:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    format!("{v}")
}

/// Request limits applied while decoding.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest decompressed body accepted (bytes).
    pub max_body_bytes: usize,
    pub max_labels: usize,
    pub max_label_name_bytes: usize,
    pub max_label_value_bytes: usize,
    /// Samples further than this in the future are rejected (ms).
    pub max_future_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            max_labels: 128,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 16 << 10,
            max_future_ms: 3_600_000,
        }
    }
}

/// A body that cannot be decoded at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("snappy decoding failed: {0}")]
    Snappy(String),
    #[error("decoded body of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("protobuf decoding failed: {0}")]
    Protobuf(String),
    #[error("gzip decoding failed: {0}")]
    Gzip(String),
    #[error("{0}")]
    Text(String),
}

/// A metric type as senders declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricKind {
    /// The lower-case name the Prometheus API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Unknown => "unknown",
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::GaugeHistogram => "gaugehistogram",
            MetricKind::Summary => "summary",
            MetricKind::Info => "info",
            MetricKind::StateSet => "stateset",
        }
    }
}

/// Metric metadata (HELP, TYPE, UNIT) for one metric family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Metadata {
    pub metric: String,
    pub kind: MetricKind,
    pub help: String,
    pub unit: String,
}

/// A series that was rejected, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesError {
    pub series: String,
    pub reason: String,
}

/// The decoded content of one request.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub series: Vec<(Labels, Vec<Sample>)>,
    pub metadata: Vec<Metadata>,
    pub invalid: Vec<SeriesError>,
    /// Float samples in valid series.
    pub samples: usize,
    /// Float samples in rejected series.
    pub samples_rejected: usize,
    pub histograms_rejected: usize,
    pub exemplars: usize,
}
