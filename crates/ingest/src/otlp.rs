//! OTLP metrics (`ExportMetricsServiceRequest`) over HTTP, as protobuf or
//! JSON, translated to Prometheus series the way Prometheus translates them by
//! default. Messages are written for this project with `prost`; the JSON
//! mapping follows OTLP's (lowerCamelCase keys, 64-bit integers as strings,
//! enums as numbers).

use std::collections::HashMap;

use sextant_model::{Label, Labels, Sample, METRIC_NAME, STALE_NAN};

use crate::{DecodeError, Limits, Metadata, MetricKind, SeriesError, WriteBatch};

/// OTLP protobuf messages (the subset that carries metrics).
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_metrics: Vec<ResourceMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportMetricsPartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportMetricsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_data_points: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_metrics: Vec<ScopeMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeMetrics {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub description: String,
        #[prost(string, tag = "3")]
        pub unit: String,
        #[prost(oneof = "Data", tags = "5, 7, 9, 10, 11")]
        pub data: Option<Data>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "5")]
        Gauge(Gauge),
        #[prost(message, tag = "7")]
        Sum(Sum),
        #[prost(message, tag = "9")]
        Histogram(Histogram),
        #[prost(message, tag = "10")]
        ExponentialHistogram(ExponentialHistogram),
        #[prost(message, tag = "11")]
        Summary(Summary),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Gauge {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sum {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<NumberDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub is_monotonic: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<HistogramDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExponentialHistogram {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<ExponentialHistogramDataPoint>,
        #[prost(int32, tag = "2")]
        pub aggregation_temporality: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub data_points: Vec<SummaryDataPoint>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(oneof = "Value", tags = "4, 6")]
        pub value: Option<Value>,
        #[prost(uint32, tag = "8")]
        pub flags: u32,
    }

    #[derive(Clone, Copy, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(double, tag = "4")]
        AsDouble(f64),
        #[prost(sfixed64, tag = "6")]
        AsInt(i64),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistogramDataPoint {
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, optional, tag = "5")]
        pub sum: Option<f64>,
        #[prost(fixed64, repeated, tag = "6")]
        pub bucket_counts: Vec<u64>,
        #[prost(double, repeated, tag = "7")]
        pub explicit_bounds: Vec<f64>,
        #[prost(uint32, tag = "10")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExponentialHistogramDataPoint {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "2")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "3")]
        pub time_unix_nano: u64,
        #[prost(fixed64, tag = "4")]
        pub count: u64,
        #[prost(double, tag = "5")]
        pub sum: f64,
        #[prost(message, repeated, tag = "6")]
        pub quantile_values: Vec<ValueAtQuantile>,
        #[prost(uint32, tag = "8")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueAtQuantile {
        #[prost(double, tag = "1")]
        pub quantile: f64,
        #[prost(double, tag = "2")]
        pub value: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Any", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Any {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
        #[prost(message, tag = "5")]
        ArrayValue(ArrayValue),
        #[prost(message, tag = "6")]
        KvlistValue(KeyValueList),
        #[prost(bytes, tag = "7")]
        BytesValue(Vec<u8>),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
}

const FLAG_NO_RECORDED_VALUE: u32 = 1;
const DELTA: i32 = 1;

/// How metric names are translated, as Prometheus's `translation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Escape invalid characters to `_`, add unit and type suffixes (the default).
    UnderscoreEscapingWithSuffixes,
    /// Escape invalid characters, no suffixes.
    UnderscoreEscapingWithoutSuffixes,
    /// Keep UTF-8 names as they are, add suffixes.
    NoUtf8EscapingWithSuffixes,
    /// Keep names exactly as sent.
    NoTranslation,
}

/// Translation settings.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub translation: Translation,
    /// Resource attributes copied onto every series.
    pub promote_resource_attributes: Vec<String>,
    /// Add `otel_scope_name` and `otel_scope_version` labels.
    pub scope_labels: bool,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            translation: Translation::UnderscoreEscapingWithSuffixes,
            promote_resource_attributes: Vec::new(),
            scope_labels: false,
        }
    }
}

/// Running totals for delta-to-cumulative conversion, keyed by series.
#[derive(Debug, Default)]
pub struct DeltaState {
    totals: HashMap<Labels, (u64, f64)>,
}

impl DeltaState {
    /// Adds a delta observed at `t_ns` and returns the new cumulative value.
    fn add(&mut self, l: &Labels, t_ns: u64, d: f64) -> f64 {
        let e = self.totals.entry(l.clone()).or_insert((0, 0.0));
        if t_ns >= e.0 {
            e.0 = t_ns;
        }
        e.1 += d;
        e.1
    }

    pub fn len(&self) -> usize {
        self.totals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }
}

fn any_to_string(v: &pb::AnyValue) -> String {
    match &v.value {
        Some(pb::Any::StringValue(s)) => s.clone(),
        Some(pb::Any::BoolValue(b)) => b.to_string(),
        Some(pb::Any::IntValue(i)) => i.to_string(),
        Some(pb::Any::DoubleValue(d)) => crate::format_g(*d),
        Some(pb::Any::ArrayValue(a)) => format!("[{}]", a.values.iter().map(any_json).collect::<Vec<_>>().join(",")),
        Some(pb::Any::KvlistValue(kv)) => {
            format!(
                "{{{}}}",
                kv.values
                    .iter()
                    .map(|x| format!("{:?}:{}", x.key, x.value.as_ref().map(any_json).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        Some(pb::Any::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        None => String::new(),
    }
}

fn any_json(v: &pb::AnyValue) -> String {
    match &v.value {
        Some(pb::Any::StringValue(s)) => format!("{s:?}"),
        _ => any_to_string(v),
    }
}

/// Label-name sanitisation: invalid characters become `_`, a leading digit gets
/// `key_`, and runs of underscores collapse (except leading ones).
pub fn sanitize_label(name: &str, t: Translation) -> String {
    if matches!(t, Translation::NoUtf8EscapingWithSuffixes | Translation::NoTranslation) {
        return name.to_string();
    }
    if name.is_empty() {
        return String::new();
    }
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s = format!("key_{s}");
    } else if s.starts_with('_') && !s.starts_with("__") {
        s = format!("key{s}");
    }
    s
}

fn unit_suffix(unit: &str) -> Option<String> {
    let unit = unit.trim();
    if unit.is_empty() || unit == "1" || (unit.starts_with('{') && unit.ends_with('}')) {
        return None;
    }
    let one = |u: &str| -> Option<&'static str> {
        Some(match u {
            "d" => "days",
            "h" => "hours",
            "min" => "minutes",
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "GiBy" => "gibibytes",
            "TiBy" => "tibibytes",
            "KBy" => "kilobytes",
            "MBy" => "megabytes",
            "GBy" => "gigabytes",
            "TBy" => "terabytes",
            "m" => "meters",
            "V" => "volts",
            "A" => "amperes",
            "J" => "joules",
            "W" => "watts",
            "g" => "grams",
            "Cel" => "celsius",
            "Hz" => "hertz",
            "%" => "percent",
            _ => return None,
        })
    };
    let per = |u: &str| -> Option<&'static str> {
        Some(match u {
            "s" => "second",
            "m" => "minute",
            "h" => "hour",
            "d" => "day",
            "w" => "week",
            "mo" => "month",
            "y" => "year",
            _ => return None,
        })
    };
    // Annotations in braces are dropped from compound units.
    let clean = |u: &str| -> String { u.split('{').next().unwrap_or("").trim().to_string() };
    if let Some((a, b)) = unit.split_once('/') {
        let (a, b) = (clean(a), clean(b));
        let a = one(&a).map(str::to_string).unwrap_or_else(|| sanitize_name_part(&a));
        let b = per(&b)
            .map(str::to_string)
            .or_else(|| one(&b).map(|x| x.trim_end_matches('s').to_string()))
            .unwrap_or_else(|| sanitize_name_part(&b));
        if a.is_empty() && b.is_empty() {
            return None;
        }
        if b.is_empty() {
            return Some(a);
        }
        return Some(if a.is_empty() {
            format!("per_{b}")
        } else {
            format!("{a}_per_{b}")
        });
    }
    let u = clean(unit);
    Some(one(&u).map(str::to_string).unwrap_or_else(|| sanitize_name_part(&u))).filter(|s| !s.is_empty())
}

fn sanitize_name_part(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

/// The Prometheus metric name for an OTLP metric, as Prometheus builds it.
pub fn metric_name(name: &str, unit: &str, kind: MetricKind, monotonic: bool, t: Translation) -> String {
    if t == Translation::NoTranslation {
        return name.to_string();
    }
    let escape = matches!(
        t,
        Translation::UnderscoreEscapingWithSuffixes | Translation::UnderscoreEscapingWithoutSuffixes
    );
    let suffixes = matches!(
        t,
        Translation::UnderscoreEscapingWithSuffixes | Translation::NoUtf8EscapingWithSuffixes
    );
    let mut base: String = if escape {
        let s: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == ':' { c } else { '_' })
            .collect();
        // Collapse runs of underscores and trim them, as Prometheus does.
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if c == '_' && out.ends_with('_') {
                continue;
            }
            out.push(c);
        }
        let out = out.trim_matches('_').to_string();
        if out.starts_with(|c: char| c.is_ascii_digit()) {
            format!("_{out}")
        } else {
            out
        }
    } else {
        name.to_string()
    };
    if !suffixes {
        return base;
    }
    if let Some(u) = unit_suffix(unit) {
        if !base.ends_with(&format!("_{u}")) && !base.contains(&format!("_{u}_")) {
            base.push('_');
            base.push_str(&u);
        }
    }
    if kind == MetricKind::Gauge && unit.trim() == "1" && !base.ends_with("_ratio") {
        base.push_str("_ratio");
    }
    if kind == MetricKind::Counter && monotonic && !base.ends_with("_total") {
        base.push_str("_total");
    }
    base
}

fn ns_to_ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// Translates one request into series, with the rejected data points counted.
pub fn translate(
    req: &pb::ExportMetricsServiceRequest,
    cfg: &OtlpConfig,
    delta: &mut DeltaState,
    limits: &Limits,
    now_ms: i64,
) -> WriteBatch {
    let mut out = WriteBatch::default();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let t = cfg.translation;
    let mut push = |out: &mut WriteBatch, labels: Labels, s: Sample| {
        out.samples += 1;
        match index.get(&labels) {
            Some(&i) => out.series[i].1.push(s),
            None => {
                index.insert(labels.clone(), out.series.len());
                out.series.push((labels, vec![s]));
            }
        }
    };
    for rm in &req.resource_metrics {
        let attrs: Vec<(String, String)> = rm
            .resource
            .as_ref()
            .map(|r| {
                r.attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.value.as_ref().map(any_to_string).unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let job = match (get("service.namespace"), get("service.name")) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n),
            _ => None,
        };
        let instance = get("service.instance.id");
        let mut base: Vec<(String, String)> = Vec::new();
        if let Some(j) = &job {
            base.push(("job".into(), j.clone()));
        }
        if let Some(i) = &instance {
            base.push(("instance".into(), i.clone()));
        }
        for p in &cfg.promote_resource_attributes {
            if let Some(v) = get(p) {
                base.push((sanitize_label(p, t), v));
            }
        }
        // target_info carries the remaining resource attributes.
        let identifying = ["service.name", "service.namespace", "service.instance.id"];
        let info: Vec<(String, String)> = attrs
            .iter()
            .filter(|(k, v)| !identifying.contains(&k.as_str()) && !v.is_empty())
            .map(|(k, v)| (sanitize_label(k, t), v.clone()))
            .collect();
        let mut latest_ms: Option<i64> = None;
        for sm in &rm.scope_metrics {
            let mut scope_base = base.clone();
            if cfg.scope_labels {
                if let Some(sc) = &sm.scope {
                    if !sc.name.is_empty() {
                        scope_base.push(("otel_scope_name".into(), sc.name.clone()));
                    }
                    if !sc.version.is_empty() {
                        scope_base.push(("otel_scope_version".into(), sc.version.clone()));
                    }
                }
            }
            for m in &sm.metrics {
                let mk =
                    |name: &str, point_attrs: &[pb::KeyValue], extra: &[(&str, String)]| -> Result<Labels, String> {
                        let mut v: Vec<Label> = Vec::new();
                        for kv in point_attrs {
                            let val = kv.value.as_ref().map(any_to_string).unwrap_or_default();
                            if val.is_empty() {
                                continue;
                            }
                            let n = sanitize_label(&kv.key, t);
                            // Attributes that collide after sanitisation are joined with ';'.
                            if let Some(e) = v.iter_mut().find(|l| l.name == n) {
                                e.value = format!("{};{val}", e.value).into();
                            } else {
                                v.push(Label::new(n, val));
                            }
                        }
                        for (k, val) in &scope_base {
                            v.retain(|l| l.name != *k);
                            v.push(Label::new(k.clone(), val.clone()));
                        }
                        for (k, val) in extra {
                            v.retain(|l| l.name != *k);
                            v.push(Label::new(*k, val.clone()));
                        }
                        v.retain(|l| l.name != METRIC_NAME);
                        v.push(Label::new(METRIC_NAME, name));
                        let pairs: Vec<(String, String)> = {
                            let mut p: Vec<(String, String)> =
                                v.into_iter().map(|l| (l.name.into(), l.value.into())).collect();
                            p.sort();
                            p
                        };
                        crate::remote_write::validate_labels(pairs, limits)
                    };
                let reject = |out: &mut WriteBatch, what: String| {
                    out.samples_rejected += 1;
                    if out.invalid.len() < 100 {
                        out.invalid.push(SeriesError {
                            series: m.name.clone(),
                            reason: what,
                        });
                    }
                };
                let value_of = |p: &pb::NumberDataPoint| -> f64 {
                    if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
                        return STALE_NAN;
                    }
                    match p.value {
                        Some(pb::Value::AsDouble(d)) => d,
                        Some(pb::Value::AsInt(i)) => i as f64,
                        None => 0.0,
                    }
                };
                match &m.data {
                    Some(pb::Data::Gauge(g)) => {
                        let name = metric_name(&m.name, &m.unit, MetricKind::Gauge, false, t);
                        out.metadata.push(Metadata {
                            metric: name.clone(),
                            kind: MetricKind::Gauge,
                            help: m.description.clone(),
                            unit: m.unit.clone(),
                        });
                        for p in &g.data_points {
                            let ts = ns_to_ms(p.time_unix_nano);
                            latest_ms = Some(latest_ms.map_or(ts, |l| l.max(ts)));
                            match mk(&name, &p.attributes, &[]) {
                                Ok(l) => push(&mut out, l, Sample::new(ts, value_of(p))),
                                Err(e) => reject(&mut out, e),
                            }
                        }
                    }
                    Some(pb::Data::Sum(s)) => {
                        let kind = if s.is_monotonic {
                            MetricKind::Counter
                        } else {
                            MetricKind::Gauge
                        };
                        let name = metric_name(&m.name, &m.unit, kind, s.is_monotonic, t);
                        out.metadata.push(Metadata {
                            metric: name.clone(),
                            kind,
                            help: m.description.clone(),
                            unit: m.unit.clone(),
                        });
                        for p in &s.data_points {
                            let ts = ns_to_ms(p.time_unix_nano);
                            latest_ms = Some(latest_ms.map_or(ts, |l| l.max(ts)));
                            let l = match mk(&name, &p.attributes, &[]) {
                                Ok(l) => l,
                                Err(e) => {
                                    reject(&mut out, e);
                                    continue;
                                }
                            };
                            let v = value_of(p);
                            if s.aggregation_temporality == DELTA {
                                if !s.is_monotonic {
                                    reject(
                                        &mut out,
                                        format!(
                                            "{}: non-monotonic delta sums cannot be converted to cumulative",
                                            m.name
                                        ),
                                    );
                                    continue;
                                }
                                let c = if v.is_nan() {
                                    v
                                } else {
                                    delta.add(&l, p.time_unix_nano, v)
                                };
                                push(&mut out, l, Sample::new(ts, c));
                            } else {
                                push(&mut out, l, Sample::new(ts, v));
                            }
                        }
                    }
                    Some(pb::Data::Histogram(h)) => {
                        let name = metric_name(&m.name, &m.unit, MetricKind::Histogram, false, t);
                        out.metadata.push(Metadata {
                            metric: name.clone(),
                            kind: MetricKind::Histogram,
                            help: m.description.clone(),
                            unit: m.unit.clone(),
                        });
                        let is_delta = h.aggregation_temporality == DELTA;
                        for p in &h.data_points {
                            let ts = ns_to_ms(p.time_unix_nano);
                            latest_ms = Some(latest_ms.map_or(ts, |l| l.max(ts)));
                            let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                            let mut cum = 0.0;
                            let mut series: Vec<(Labels, f64)> = Vec::new();
                            let mut bad = None;
                            for (i, c) in p.bucket_counts.iter().enumerate() {
                                cum += *c as f64;
                                let le = p
                                    .explicit_bounds
                                    .get(i)
                                    .map(|b| crate::format_g(*b))
                                    .unwrap_or_else(|| "+Inf".into());
                                match mk(&format!("{name}_bucket"), &p.attributes, &[("le", le)]) {
                                    Ok(l) => series.push((l, cum)),
                                    Err(e) => bad = Some(e),
                                }
                            }
                            if p.bucket_counts.is_empty() {
                                match mk(&format!("{name}_bucket"), &p.attributes, &[("le", "+Inf".into())]) {
                                    Ok(l) => series.push((l, p.count as f64)),
                                    Err(e) => bad = Some(e),
                                }
                            }
                            match mk(&format!("{name}_count"), &p.attributes, &[]) {
                                Ok(l) => series.push((l, p.count as f64)),
                                Err(e) => bad = Some(e),
                            }
                            if let Some(sum) = p.sum {
                                match mk(&format!("{name}_sum"), &p.attributes, &[]) {
                                    Ok(l) => series.push((l, sum)),
                                    Err(e) => bad = Some(e),
                                }
                            }
                            if let Some(e) = bad {
                                reject(&mut out, e);
                                continue;
                            }
                            for (l, v) in series {
                                let v = if stale {
                                    STALE_NAN
                                } else if is_delta {
                                    delta.add(&l, p.time_unix_nano, v)
                                } else {
                                    v
                                };
                                push(&mut out, l, Sample::new(ts, v));
                            }
                        }
                    }
                    Some(pb::Data::Summary(s)) => {
                        let name = metric_name(&m.name, &m.unit, MetricKind::Summary, false, t);
                        out.metadata.push(Metadata {
                            metric: name.clone(),
                            kind: MetricKind::Summary,
                            help: m.description.clone(),
                            unit: m.unit.clone(),
                        });
                        for p in &s.data_points {
                            let ts = ns_to_ms(p.time_unix_nano);
                            latest_ms = Some(latest_ms.map_or(ts, |l| l.max(ts)));
                            let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                            let val = |v: f64| if stale { STALE_NAN } else { v };
                            let mut items: Vec<(Result<Labels, String>, f64)> = Vec::new();
                            for q in &p.quantile_values {
                                items.push((
                                    mk(&name, &p.attributes, &[("quantile", crate::format_g(q.quantile))]),
                                    q.value,
                                ));
                            }
                            items.push((mk(&format!("{name}_sum"), &p.attributes, &[]), p.sum));
                            items.push((mk(&format!("{name}_count"), &p.attributes, &[]), p.count as f64));
                            for (l, v) in items {
                                match l {
                                    Ok(l) => push(&mut out, l, Sample::new(ts, val(v))),
                                    Err(e) => reject(&mut out, e),
                                }
                            }
                        }
                    }
                    Some(pb::Data::ExponentialHistogram(e)) => {
                        for _ in &e.data_points {
                            reject(&mut out, format!("{}: exponential histograms need native histogram storage, which is not supported yet", m.name));
                        }
                    }
                    None => {}
                }
            }
        }
        if !info.is_empty() && (job.is_some() || instance.is_some()) {
            if let Some(ts) = latest_ms {
                let mut pairs = info.clone();
                pairs.extend(base.iter().filter(|(k, _)| k == "job" || k == "instance").cloned());
                pairs.push((METRIC_NAME.into(), "target_info".into()));
                pairs.sort();
                pairs.dedup_by(|a, b| a.0 == b.0);
                if let Ok(l) = crate::remote_write::validate_labels(pairs, limits) {
                    push(&mut out, l, Sample::new(ts, 1.0));
                }
            }
        }
    }
    let _ = now_ms;
    out.metadata.sort_by(|a, b| a.metric.cmp(&b.metric));
    out.metadata.dedup_by(|a, b| a.metric == b.metric);
    for (_, s) in &mut out.series {
        s.sort_by_key(|x| x.t);
        s.dedup_by_key(|x| x.t);
    }
    out
}

/// Decodes a protobuf `ExportMetricsServiceRequest`.
pub fn decode_protobuf(buf: &[u8]) -> Result<pb::ExportMetricsServiceRequest, DecodeError> {
    <pb::ExportMetricsServiceRequest as prost::Message>::decode(buf).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// The response body: empty on full success, `partial_success` otherwise.
pub fn response(rejected: usize, message: &str) -> Vec<u8> {
    let r = pb::ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| pb::ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: message.to_string(),
        }),
    };
    prost::Message::encode_to_vec(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, unit: &str, kind: MetricKind, mono: bool) -> String {
        metric_name(name, unit, kind, mono, Translation::UnderscoreEscapingWithSuffixes)
    }

    #[test]
    fn names_follow_prometheus_translation() {
        assert_eq!(
            n("http.server.duration", "s", MetricKind::Histogram, false),
            "http_server_duration_seconds"
        );
        assert_eq!(n("requests", "1", MetricKind::Counter, true), "requests_total");
        assert_eq!(
            n("cpu.utilization", "1", MetricKind::Gauge, false),
            "cpu_utilization_ratio"
        );
        assert_eq!(n("memory.usage", "By", MetricKind::Gauge, false), "memory_usage_bytes");
        assert_eq!(n("latency", "ms", MetricKind::Gauge, false), "latency_milliseconds");
        assert_eq!(
            n("throughput", "By/s", MetricKind::Gauge, false),
            "throughput_bytes_per_second"
        );
        assert_eq!(n("errors", "{error}", MetricKind::Counter, true), "errors_total");
        assert_eq!(n("disk", "%", MetricKind::Gauge, false), "disk_percent");
        assert_eq!(n("requests_total", "1", MetricKind::Counter, true), "requests_total");
        assert_eq!(n("duration_seconds", "s", MetricKind::Gauge, false), "duration_seconds");
        assert_eq!(n("2xx.count", "", MetricKind::Counter, true), "_2xx_count_total");
        assert_eq!(
            metric_name(
                "a.b",
                "s",
                MetricKind::Gauge,
                false,
                Translation::UnderscoreEscapingWithoutSuffixes
            ),
            "a_b"
        );
        assert_eq!(
            metric_name(
                "a.b",
                "s",
                MetricKind::Gauge,
                false,
                Translation::NoUtf8EscapingWithSuffixes
            ),
            "a.b_seconds"
        );
        assert_eq!(
            metric_name("a.b", "s", MetricKind::Gauge, false, Translation::NoTranslation),
            "a.b"
        );
    }

    #[test]
    fn labels_are_sanitised() {
        let t = Translation::UnderscoreEscapingWithSuffixes;
        assert_eq!(sanitize_label("http.method", t), "http_method");
        assert_eq!(sanitize_label("0day", t), "key_0day");
        assert_eq!(sanitize_label("_private", t), "key_private");
        assert_eq!(sanitize_label("__reserved", t), "__reserved");
    }

    fn kv(k: &str, v: &str) -> pb::KeyValue {
        pb::KeyValue {
            key: k.into(),
            value: Some(pb::AnyValue {
                value: Some(pb::Any::StringValue(v.into())),
            }),
        }
    }

    fn req(metrics: Vec<pb::Metric>) -> pb::ExportMetricsServiceRequest {
        pb::ExportMetricsServiceRequest {
            resource_metrics: vec![pb::ResourceMetrics {
                resource: Some(pb::Resource {
                    attributes: vec![
                        kv("service.name", "vllm"),
                        kv("service.namespace", "inference"),
                        kv("service.instance.id", "pod-1"),
                        kv("cloud.availability_zone", "us-east-1a"),
                    ],
                }),
                scope_metrics: vec![pb::ScopeMetrics { scope: None, metrics }],
            }],
        }
    }

    fn point(t_s: u64, v: f64, attrs: Vec<pb::KeyValue>) -> pb::NumberDataPoint {
        pb::NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: 0,
            time_unix_nano: t_s * 1_000_000_000,
            value: Some(pb::Value::AsDouble(v)),
            flags: 0,
        }
    }

    #[test]
    fn resource_becomes_job_instance_and_target_info() {
        let r = req(vec![pb::Metric {
            name: "tokens".into(),
            description: "d".into(),
            unit: "1".into(),
            data: Some(pb::Data::Sum(pb::Sum {
                data_points: vec![point(10, 5.0, vec![kv("model", "llama")])],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
        }]);
        let b = translate(
            &r,
            &OtlpConfig {
                promote_resource_attributes: vec!["cloud.availability_zone".into()],
                ..Default::default()
            },
            &mut DeltaState::default(),
            &Limits::default(),
            0,
        );
        let s = b
            .series
            .iter()
            .find(|(l, _)| l.metric_name() == "tokens_total")
            .expect("counter");
        assert_eq!(s.0.get("job"), "inference/vllm");
        assert_eq!(s.0.get("instance"), "pod-1");
        assert_eq!(s.0.get("model"), "llama");
        assert_eq!(s.0.get("cloud_availability_zone"), "us-east-1a");
        assert_eq!(s.1, vec![Sample::new(10_000, 5.0)]);
        let info = b
            .series
            .iter()
            .find(|(l, _)| l.metric_name() == "target_info")
            .expect("target_info");
        assert_eq!(info.0.get("cloud_availability_zone"), "us-east-1a");
        assert_eq!(info.0.get("job"), "inference/vllm");
        assert_eq!(b.metadata[0].kind, MetricKind::Counter);
    }

    #[test]
    fn summaries_become_quantile_sum_and_count_series() {
        let dp = pb::SummaryDataPoint {
            attributes: vec![kv("model", "llama")],
            start_time_unix_nano: 0,
            time_unix_nano: 5_000_000_000,
            count: 10,
            sum: 12.5,
            quantile_values: vec![
                pb::ValueAtQuantile {
                    quantile: 0.5,
                    value: 1.1,
                },
                pb::ValueAtQuantile {
                    quantile: 0.99,
                    value: 3.2,
                },
            ],
            flags: 0,
        };
        let r = req(vec![pb::Metric {
            name: "rpc.latency".into(),
            description: "RPC latency".into(),
            unit: "ms".into(),
            data: Some(pb::Data::Summary(pb::Summary { data_points: vec![dp] })),
        }]);
        let b = translate(
            &r,
            &OtlpConfig {
                scope_labels: true,
                ..Default::default()
            },
            &mut DeltaState::default(),
            &Limits::default(),
            0,
        );
        let get = |name: &str, q: &str| {
            b.series
                .iter()
                .find(|(l, _)| l.metric_name() == name && l.get("quantile") == q)
                .map(|s| s.1[0].v)
        };
        assert_eq!(get("rpc_latency_milliseconds", "0.5"), Some(1.1));
        assert_eq!(get("rpc_latency_milliseconds", "0.99"), Some(3.2));
        assert_eq!(get("rpc_latency_milliseconds_sum", ""), Some(12.5));
        assert_eq!(get("rpc_latency_milliseconds_count", ""), Some(10.0));
        assert_eq!(
            b.metadata
                .iter()
                .find(|m| m.metric == "rpc_latency_milliseconds")
                .map(|m| m.kind),
            Some(MetricKind::Summary)
        );
    }

    #[test]
    fn json_mapping_reads_strings_for_64_bit_integers() {
        let body = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"x"}}]},"scopeMetrics":[{"scope":{"name":"s","version":"1"},"metrics":[{"name":"c","sum":{"isMonotonic":true,"aggregationTemporality":2,"dataPoints":[{"asInt":"9007199254740993","timeUnixNano":"1700000000000000000"}]}}]}]}]}"#;
        let r = json::decode(body).expect("decodes");
        let b = translate(
            &r,
            &OtlpConfig {
                scope_labels: true,
                ..Default::default()
            },
            &mut DeltaState::default(),
            &Limits::default(),
            0,
        );
        let (l, s) = b
            .series
            .iter()
            .find(|(l, _)| l.metric_name() == "c_total")
            .expect("series");
        assert_eq!(l.get("otel_scope_name"), "s");
        assert_eq!(l.get("otel_scope_version"), "1");
        assert_eq!(s[0].t, 1_700_000_000_000);
        assert_eq!(s[0].v, 9007199254740992.0);
        assert!(json::decode(b"[1]").is_err());
        assert!(json::decode(br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asInt":"x"}]}}]}]}]}"#).is_err());
    }

    #[test]
    fn gzip_is_bounded_by_the_decompressed_size() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&vec![0u8; 100_000]).expect("write");
        let gz = e.finish().expect("finish");
        assert!(matches!(gunzip(&gz, 1000), Err(DecodeError::TooLarge { .. })));
        assert_eq!(gunzip(&gz, 100_000).expect("fits").len(), 100_000);
        assert!(matches!(gunzip(b"nope", 1000), Err(DecodeError::Gzip(_))));
    }

    #[test]
    fn histograms_deltas_stale_points_and_rejections() {
        let hist = pb::HistogramDataPoint {
            attributes: vec![],
            start_time_unix_nano: 0,
            time_unix_nano: 20_000_000_000,
            count: 6,
            sum: Some(3.5),
            bucket_counts: vec![1, 2, 3],
            explicit_bounds: vec![0.1, 0.5],
            flags: 0,
        };
        let mut stale = point(30, 0.0, vec![]);
        stale.flags = 1;
        let r = req(vec![
            pb::Metric {
                name: "ttft".into(),
                description: String::new(),
                unit: "s".into(),
                data: Some(pb::Data::Histogram(pb::Histogram {
                    data_points: vec![hist],
                    aggregation_temporality: 2,
                })),
            },
            pb::Metric {
                name: "reqs".into(),
                description: String::new(),
                unit: "".into(),
                data: Some(pb::Data::Sum(pb::Sum {
                    data_points: vec![point(10, 2.0, vec![]), point(20, 3.0, vec![])],
                    aggregation_temporality: 1,
                    is_monotonic: true,
                })),
            },
            pb::Metric {
                name: "queue".into(),
                description: String::new(),
                unit: "".into(),
                data: Some(pb::Data::Gauge(pb::Gauge {
                    data_points: vec![stale],
                })),
            },
            pb::Metric {
                name: "updown".into(),
                description: String::new(),
                unit: "".into(),
                data: Some(pb::Data::Sum(pb::Sum {
                    data_points: vec![point(10, 1.0, vec![])],
                    aggregation_temporality: 1,
                    is_monotonic: false,
                })),
            },
            pb::Metric {
                name: "exp".into(),
                description: String::new(),
                unit: "".into(),
                data: Some(pb::Data::ExponentialHistogram(pb::ExponentialHistogram {
                    data_points: vec![pb::ExponentialHistogramDataPoint::default()],
                    aggregation_temporality: 2,
                })),
            },
        ]);
        let mut d = DeltaState::default();
        let b = translate(&r, &OtlpConfig::default(), &mut d, &Limits::default(), 0);
        let get = |name: &str, le: &str| {
            b.series
                .iter()
                .find(|(l, _)| l.metric_name() == name && l.get("le") == le)
                .map(|s| s.1.clone())
        };
        assert_eq!(get("ttft_seconds_bucket", "0.1").expect("b")[0].v, 1.0);
        assert_eq!(get("ttft_seconds_bucket", "0.5").expect("b")[0].v, 3.0);
        assert_eq!(get("ttft_seconds_bucket", "+Inf").expect("b")[0].v, 6.0);
        assert_eq!(get("ttft_seconds_sum", "").expect("s")[0].v, 3.5);
        // Delta 2 then 3 becomes cumulative 2 then 5.
        let reqs = get("reqs_total", "").expect("reqs");
        assert_eq!(reqs.iter().map(|s| s.v).collect::<Vec<_>>(), vec![2.0, 5.0]);
        assert!(sextant_model::is_stale_nan(get("queue", "").expect("queue")[0].v));
        assert_eq!(b.samples_rejected, 2);
        assert!(
            b.invalid
                .iter()
                .any(|e| e.series == "exp" && e.reason.contains("exponential")),
            "{:?}",
            b.invalid
        );
        assert!(
            b.invalid
                .iter()
                .any(|e| e.series == "updown" && e.reason.contains("non-monotonic")),
            "{:?}",
            b.invalid
        );
    }
}

/// OTLP's JSON mapping, read into the protobuf types.
pub mod json {
    use serde_json::Value;

    use super::pb;
    use crate::DecodeError;

    fn err(what: &str) -> DecodeError {
        DecodeError::Text(format!("invalid OTLP JSON: {what}"))
    }

    fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
        v.get(k).and_then(|x| x.as_array()).map(|a| a.as_slice()).unwrap_or(&[])
    }

    fn string(v: &Value, k: &str) -> String {
        v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
    }

    /// 64-bit integers arrive as strings, but numbers are accepted too.
    fn u64_of(v: &Value, k: &str) -> Result<u64, DecodeError> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::String(s)) => s
                .parse()
                .map_err(|_| err(&format!("{k} {s:?} is not an unsigned integer"))),
            Some(Value::Number(n)) => n
                .as_u64()
                .ok_or_else(|| err(&format!("{k} is not an unsigned integer"))),
            Some(_) => Err(err(&format!("{k} must be a string or number"))),
        }
    }

    fn i64_of(v: &Value) -> Result<i64, DecodeError> {
        match v {
            Value::String(s) => s.parse().map_err(|_| err(&format!("{s:?} is not an integer"))),
            Value::Number(n) => n.as_i64().ok_or_else(|| err("not an integer")),
            _ => Err(err("integer must be a string or number")),
        }
    }

    fn f64_of(v: &Value) -> Result<f64, DecodeError> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| err("not a number")),
            Value::String(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => s.parse().map_err(|_| err(&format!("{s:?} is not a number"))),
            },
            _ => Err(err("number expected")),
        }
    }

    fn any(v: &Value) -> Result<pb::AnyValue, DecodeError> {
        let value = if let Some(s) = v.get("stringValue") {
            Some(pb::Any::StringValue(s.as_str().unwrap_or("").to_string()))
        } else if let Some(b) = v.get("boolValue") {
            Some(pb::Any::BoolValue(b.as_bool().unwrap_or(false)))
        } else if let Some(i) = v.get("intValue") {
            Some(pb::Any::IntValue(i64_of(i)?))
        } else if let Some(d) = v.get("doubleValue") {
            Some(pb::Any::DoubleValue(f64_of(d)?))
        } else if let Some(a) = v.get("arrayValue") {
            Some(pb::Any::ArrayValue(pb::ArrayValue {
                values: arr(a, "values").iter().map(any).collect::<Result<_, _>>()?,
            }))
        } else if let Some(kv) = v.get("kvlistValue") {
            Some(pb::Any::KvlistValue(pb::KeyValueList {
                values: attrs(kv, "values")?,
            }))
        } else {
            v.get("bytesValue")
                .map(|b| pb::Any::BytesValue(b.as_str().unwrap_or("").as_bytes().to_vec()))
        };
        Ok(pb::AnyValue { value })
    }

    fn attrs(v: &Value, k: &str) -> Result<Vec<pb::KeyValue>, DecodeError> {
        arr(v, k)
            .iter()
            .map(|kv| {
                Ok(pb::KeyValue {
                    key: string(kv, "key"),
                    value: kv.get("value").map(any).transpose()?,
                })
            })
            .collect()
    }

    fn number_point(p: &Value) -> Result<pb::NumberDataPoint, DecodeError> {
        let value = if let Some(d) = p.get("asDouble") {
            Some(pb::Value::AsDouble(f64_of(d)?))
        } else {
            p.get("asInt").map(i64_of).transpose()?.map(pb::Value::AsInt)
        };
        Ok(pb::NumberDataPoint {
            attributes: attrs(p, "attributes")?,
            start_time_unix_nano: u64_of(p, "startTimeUnixNano")?,
            time_unix_nano: u64_of(p, "timeUnixNano")?,
            value,
            flags: u64_of(p, "flags")? as u32,
        })
    }

    fn temporality(v: &Value) -> i32 {
        match v.get("aggregationTemporality") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0) as i32,
            Some(Value::String(s)) if s.contains("DELTA") => 1,
            Some(Value::String(s)) if s.contains("CUMULATIVE") => 2,
            _ => 0,
        }
    }

    fn metric(m: &Value) -> Result<pb::Metric, DecodeError> {
        let points = |d: &Value| -> Result<Vec<pb::NumberDataPoint>, DecodeError> {
            arr(d, "dataPoints").iter().map(number_point).collect()
        };
        let data = if let Some(g) = m.get("gauge") {
            Some(pb::Data::Gauge(pb::Gauge {
                data_points: points(g)?,
            }))
        } else if let Some(s) = m.get("sum") {
            Some(pb::Data::Sum(pb::Sum {
                data_points: points(s)?,
                aggregation_temporality: temporality(s),
                is_monotonic: s.get("isMonotonic").and_then(|b| b.as_bool()).unwrap_or(false),
            }))
        } else if let Some(h) = m.get("histogram") {
            let mut dps = Vec::new();
            for p in arr(h, "dataPoints") {
                dps.push(pb::HistogramDataPoint {
                    attributes: attrs(p, "attributes")?,
                    start_time_unix_nano: u64_of(p, "startTimeUnixNano")?,
                    time_unix_nano: u64_of(p, "timeUnixNano")?,
                    count: u64_of(p, "count")?,
                    sum: p.get("sum").map(f64_of).transpose()?,
                    bucket_counts: arr(p, "bucketCounts")
                        .iter()
                        .map(|c| i64_of(c).map(|x| x as u64))
                        .collect::<Result<_, _>>()?,
                    explicit_bounds: arr(p, "explicitBounds").iter().map(f64_of).collect::<Result<_, _>>()?,
                    flags: u64_of(p, "flags")? as u32,
                });
            }
            Some(pb::Data::Histogram(pb::Histogram {
                data_points: dps,
                aggregation_temporality: temporality(h),
            }))
        } else if let Some(e) = m.get("exponentialHistogram") {
            let dps = arr(e, "dataPoints")
                .iter()
                .map(|p| {
                    Ok(pb::ExponentialHistogramDataPoint {
                        attributes: attrs(p, "attributes")?,
                        time_unix_nano: u64_of(p, "timeUnixNano")?,
                        count: u64_of(p, "count")?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?;
            Some(pb::Data::ExponentialHistogram(pb::ExponentialHistogram {
                data_points: dps,
                aggregation_temporality: temporality(e),
            }))
        } else if let Some(s) = m.get("summary") {
            let mut dps = Vec::new();
            for p in arr(s, "dataPoints") {
                dps.push(pb::SummaryDataPoint {
                    attributes: attrs(p, "attributes")?,
                    start_time_unix_nano: u64_of(p, "startTimeUnixNano")?,
                    time_unix_nano: u64_of(p, "timeUnixNano")?,
                    count: u64_of(p, "count")?,
                    sum: p.get("sum").map(f64_of).transpose()?.unwrap_or(0.0),
                    quantile_values: arr(p, "quantileValues")
                        .iter()
                        .map(|q| {
                            Ok(pb::ValueAtQuantile {
                                quantile: q.get("quantile").map(f64_of).transpose()?.unwrap_or(0.0),
                                value: q.get("value").map(f64_of).transpose()?.unwrap_or(0.0),
                            })
                        })
                        .collect::<Result<_, DecodeError>>()?,
                    flags: u64_of(p, "flags")? as u32,
                });
            }
            Some(pb::Data::Summary(pb::Summary { data_points: dps }))
        } else {
            None
        };
        Ok(pb::Metric {
            name: string(m, "name"),
            description: string(m, "description"),
            unit: string(m, "unit"),
            data,
        })
    }

    /// Decodes an `ExportMetricsServiceRequest` in OTLP's JSON mapping.
    pub fn decode(body: &[u8]) -> Result<pb::ExportMetricsServiceRequest, DecodeError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| DecodeError::Text(format!("invalid JSON: {e}")))?;
        if !v.is_object() {
            return Err(err("the body must be an object"));
        }
        let mut out = pb::ExportMetricsServiceRequest::default();
        for rm in arr(&v, "resourceMetrics") {
            let resource = rm
                .get("resource")
                .map(|r| {
                    Ok::<_, DecodeError>(pb::Resource {
                        attributes: attrs(r, "attributes")?,
                    })
                })
                .transpose()?;
            let mut scope_metrics = Vec::new();
            for sm in arr(rm, "scopeMetrics") {
                let scope = sm.get("scope").map(|s| pb::InstrumentationScope {
                    name: string(s, "name"),
                    version: string(s, "version"),
                    attributes: vec![],
                });
                scope_metrics.push(pb::ScopeMetrics {
                    scope,
                    metrics: arr(sm, "metrics").iter().map(metric).collect::<Result<_, _>>()?,
                });
            }
            out.resource_metrics.push(pb::ResourceMetrics {
                resource,
                scope_metrics,
            });
        }
        Ok(out)
    }

    /// The JSON response body.
    pub fn response(rejected: usize, message: &str) -> Vec<u8> {
        if rejected == 0 {
            return b"{}".to_vec();
        }
        serde_json::json!({"partialSuccess": {"rejectedDataPoints": rejected.to_string(), "errorMessage": message}})
            .to_string()
            .into_bytes()
    }
}

/// Decompresses gzip, failing once the output would exceed `limit` bytes.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut d = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    d.read_to_end(&mut out).map_err(|e| DecodeError::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { size: out.len(), limit });
    }
    Ok(out)
}
