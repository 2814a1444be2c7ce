//! Prometheus remote-write 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`) messages, written for this project with
//! `prost`, and their decoding into validated series.

use sextant_model::{Label, Labels, Sample, METRIC_NAME};

use crate::{DecodeError, Limits, Metadata, MetricKind, SeriesError, WriteBatch};

/// Remote-write 1.0 messages.
pub mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<Histogram>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    /// Only what is needed to count and reject native histograms.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(double, tag = "3")]
        pub sum: f64,
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }
}

/// Remote-write 2.0 messages.
pub mod v2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<super::v1::Histogram>,
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<Exemplar>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        /// Sent by senders before the start-timestamp field existed.
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
        #[prost(int64, tag = "3")]
        pub start_timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Exemplar {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(double, tag = "2")]
        pub value: f64,
        #[prost(int64, tag = "3")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

/// Which protocol a request speaks, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

/// Maps a `Content-Type` header to a protocol; `None` means 415.
pub fn protocol_for(content_type: Option<&str>) -> Option<Protocol> {
    let Some(ct) = content_type else {
        return Some(Protocol::V1);
    };
    let mut parts = ct.split(';').map(|s| s.trim());
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    if media != "application/x-protobuf" {
        return None;
    }
    let mut proto = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("proto") {
                proto = Some(v.trim().trim_matches('"').to_string());
            }
        }
    }
    match proto.as_deref() {
        None | Some("prometheus.WriteRequest") => Some(Protocol::V1),
        Some("io.prometheus.write.v2.Request") => Some(Protocol::V2),
        Some(_) => None,
    }
}

/// The decompressed length a snappy body declares.
pub fn snappy_len(body: &[u8]) -> Result<usize, DecodeError> {
    snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))
}

/// Decompresses a snappy block, refusing before allocation when the declared
/// length exceeds `limit`.
pub fn snappy_decode(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let declared = snappy_len(body)?;
    if declared > limit {
        return Err(DecodeError::TooLarge { size: declared, limit });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))
}

fn kind_of(t: i32) -> MetricKind {
    match t {
        1 => MetricKind::Counter,
        2 => MetricKind::Gauge,
        3 => MetricKind::Histogram,
        4 => MetricKind::GaugeHistogram,
        5 => MetricKind::Summary,
        6 => MetricKind::Info,
        7 => MetricKind::StateSet,
        _ => MetricKind::Unknown,
    }
}

/// Checks one series' labels; on success returns them as a label set.
pub fn validate_labels(pairs: Vec<(String, String)>, limits: &Limits) -> Result<Labels, String> {
    check_labels(&pairs, limits)?;
    Ok(into_labels(pairs))
}

fn into_labels(pairs: Vec<(String, String)>) -> Labels {
    Labels::from_sorted_unchecked(pairs.into_iter().map(|(n, v)| Label::new(n, v)).collect())
}

/// Checks one series' labels: present, within limits, sorted, unique, named.
pub fn check_labels(pairs: &[(String, String)], limits: &Limits) -> Result<(), String> {
    if pairs.is_empty() {
        return Err("series has no labels".into());
    }
    if pairs.len() > limits.max_labels {
        return Err(format!(
            "series has {} labels, more than the limit of {}",
            pairs.len(),
            limits.max_labels
        ));
    }
    for (i, (n, v)) in pairs.iter().enumerate() {
        if n.is_empty() {
            return Err("a label has an empty name".into());
        }
        if v.is_empty() {
            return Err(format!("label {n:?} has an empty value"));
        }
        if n.len() > limits.max_label_name_bytes {
            return Err(format!(
                "label name of {} bytes is longer than the limit of {}",
                n.len(),
                limits.max_label_name_bytes
            ));
        }
        if v.len() > limits.max_label_value_bytes {
            return Err(format!(
                "value of label {n:?} is {} bytes, longer than the limit of {}",
                v.len(),
                limits.max_label_value_bytes
            ));
        }
        if i > 0 {
            let prev = &pairs[i - 1].0;
            if prev == n {
                return Err(format!("duplicate label name {n:?}"));
            }
            if prev > n {
                return Err(format!("labels are not sorted by name: {prev:?} comes before {n:?}"));
            }
        }
    }
    if !pairs.iter().any(|(n, _)| n == METRIC_NAME) {
        return Err("series has no metric name (__name__ label)".into());
    }
    Ok(())
}

fn describe(pairs: &[(String, String)]) -> String {
    let mut s = String::new();
    let name = pairs
        .iter()
        .find(|(n, _)| n == METRIC_NAME)
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    s.push_str(name);
    s.push('{');
    let mut first = true;
    for (n, v) in pairs.iter().filter(|(n, _)| n != METRIC_NAME) {
        if !first {
            s.push_str(", ");
        }
        first = false;
        let v: String = v.chars().take(64).collect();
        s.push_str(&format!("{n}={v:?}"));
    }
    s.push('}');
    s.chars().take(512).collect()
}

/// Checks that no sample is too far in the future.
pub fn check_samples(samples: &[Sample], limits: &Limits, now_ms: i64) -> Result<(), String> {
    for s in samples {
        if s.t > now_ms + limits.max_future_ms {
            return Err(format!(
                "sample timestamp {} is more than {}s in the future",
                s.t,
                limits.max_future_ms / 1000
            ));
        }
    }
    Ok(())
}

/// Decodes a decompressed remote-write 1.0 body.
pub fn decode_v1(buf: &[u8], limits: &Limits, now_ms: i64) -> Result<WriteBatch, DecodeError> {
    let req = <v1::WriteRequest as prost::Message>::decode(buf).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let mut out = WriteBatch::default();
    for ts in req.timeseries {
        decode_v1_series(ts, limits, now_ms, &mut out);
    }
    for m in req.metadata {
        decode_v1_metadata(m, &mut out);
    }
    Ok(out)
}

/// Decodes one encoded `TimeSeries` of a 1.0 request into `out`.
pub fn decode_v1_series_bytes(
    buf: &[u8],
    limits: &Limits,
    now_ms: i64,
    out: &mut WriteBatch,
) -> Result<(), DecodeError> {
    let ts = <v1::TimeSeries as prost::Message>::decode(buf).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    decode_v1_series(ts, limits, now_ms, out);
    Ok(())
}

/// Decodes one encoded `MetricMetadata` of a 1.0 request into `out`.
pub fn decode_v1_metadata_bytes(buf: &[u8], out: &mut WriteBatch) -> Result<(), DecodeError> {
    let m = <v1::MetricMetadata as prost::Message>::decode(buf).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    decode_v1_metadata(m, out);
    Ok(())
}

fn decode_v1_series(ts: v1::TimeSeries, limits: &Limits, now_ms: i64, out: &mut WriteBatch) {
    let pairs: Vec<(String, String)> = ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
    out.exemplars += ts.exemplars.len();
    if !ts.histograms.is_empty() {
        out.histograms_rejected += ts.histograms.len();
        out.invalid.push(SeriesError {
            series: describe(&pairs),
            reason: "native histogram samples are not supported yet".into(),
        });
    }
    let samples: Vec<Sample> = ts.samples.iter().map(|s| Sample::new(s.timestamp, s.value)).collect();
    push_series(pairs, samples, limits, now_ms, out);
}

/// Validates one decoded series and adds it to `out`, valid or rejected.
/// The description is built only for a rejected series.
fn push_series(pairs: Vec<(String, String)>, samples: Vec<Sample>, limits: &Limits, now_ms: i64, out: &mut WriteBatch) {
    if samples.is_empty() {
        return;
    }
    match check_labels(&pairs, limits).and_then(|_| check_samples(&samples, limits, now_ms)) {
        Ok(()) => {
            out.samples += samples.len();
            out.series.push((into_labels(pairs), samples));
        }
        Err(reason) => {
            out.samples_rejected += samples.len();
            out.invalid.push(SeriesError {
                series: describe(&pairs),
                reason,
            });
        }
    }
}

fn decode_v1_metadata(m: v1::MetricMetadata, out: &mut WriteBatch) {
    if m.metric_family_name.is_empty() {
        return;
    }
    out.metadata.push(Metadata {
        metric: m.metric_family_name,
        kind: kind_of(m.r#type),
        help: m.help,
        unit: m.unit,
    });
}

/// Decodes a decompressed remote-write 2.0 body.
pub fn decode_v2(buf: &[u8], limits: &Limits, now_ms: i64) -> Result<WriteBatch, DecodeError> {
    let req = <v2::Request as prost::Message>::decode(buf).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let sym = |r: u32| req.symbols.get(r as usize).map(|s| s.as_str());
    if req.symbols.first().is_some_and(|s| !s.is_empty()) {
        return Err(DecodeError::Protobuf("symbols[0] must be the empty string".into()));
    }
    let mut out = WriteBatch::default();
    for ts in &req.timeseries {
        let mut pairs = Vec::with_capacity(ts.labels_refs.len() / 2);
        let mut bad_ref = None;
        if ts.labels_refs.len() % 2 != 0 {
            bad_ref = Some("labels_refs has an odd length".to_string());
        }
        for p in ts.labels_refs.chunks_exact(2) {
            match (sym(p[0]), sym(p[1])) {
                (Some(n), Some(v)) => pairs.push((n.to_string(), v.to_string())),
                _ => {
                    bad_ref = Some(format!(
                        "label reference out of range (symbols table has {} entries)",
                        req.symbols.len()
                    ));
                    break;
                }
            }
        }
        out.exemplars += ts.exemplars.len();
        if !ts.histograms.is_empty() {
            out.histograms_rejected += ts.histograms.len();
            out.invalid.push(SeriesError {
                series: describe(&pairs),
                reason: "native histogram samples are not supported yet".into(),
            });
        }
        if let Some(reason) = bad_ref {
            out.samples_rejected += ts.samples.len();
            out.invalid.push(SeriesError {
                series: describe(&pairs),
                reason,
            });
            continue;
        }
        let name = pairs.iter().find(|(n, _)| n == METRIC_NAME).map(|(_, v)| v.clone());
        if let (Some(md), Some(name)) = (&ts.metadata, &name) {
            let help = sym(md.help_ref).unwrap_or("").to_string();
            let unit = sym(md.unit_ref).unwrap_or("").to_string();
            if md.r#type != 0 || !help.is_empty() || !unit.is_empty() {
                out.metadata.push(Metadata {
                    metric: family_name(name, kind_of(md.r#type)),
                    kind: kind_of(md.r#type),
                    help,
                    unit,
                });
            }
        }
        let samples: Vec<Sample> = ts.samples.iter().map(|s| Sample::new(s.timestamp, s.value)).collect();
        push_series(pairs, samples, limits, now_ms, &mut out);
    }
    Ok(out)
}

/// The metric family of a series name: `_bucket`, `_sum`, `_count` (and
/// `_total` for counters) belong to their base name.
fn family_name(name: &str, kind: MetricKind) -> String {
    let suffixes: &[&str] = match kind {
        MetricKind::Histogram | MetricKind::GaugeHistogram => &["_bucket", "_sum", "_count"],
        MetricKind::Summary => &["_sum", "_count"],
        _ => &[],
    };
    for s in suffixes {
        if let Some(b) = name.strip_suffix(s) {
            return b.to_string();
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn content_types_select_the_protocol() {
        assert_eq!(protocol_for(Some("application/x-protobuf")), Some(Protocol::V1));
        assert_eq!(protocol_for(None), Some(Protocol::V1));
        assert_eq!(
            protocol_for(Some("application/x-protobuf;proto=io.prometheus.write.v2.Request")),
            Some(Protocol::V2)
        );
        assert_eq!(
            protocol_for(Some("application/x-protobuf; proto=prometheus.WriteRequest")),
            Some(Protocol::V1)
        );
        assert_eq!(protocol_for(Some("application/json")), None);
        assert_eq!(protocol_for(Some("application/x-protobuf;proto=foo.Bar")), None);
    }

    #[test]
    fn snappy_declared_length_is_checked_before_allocating() {
        let raw = vec![0u8; 10_000];
        let comp = snap::raw::Encoder::new().compress_vec(&raw).expect("compress");
        assert!(matches!(
            snappy_decode(&comp, 1000),
            Err(DecodeError::TooLarge {
                size: 10_000,
                limit: 1000
            })
        ));
        assert_eq!(snappy_decode(&comp, 10_000).expect("fits").len(), 10_000);
        assert!(matches!(
            snappy_decode(b"\xff\xff\xff\xff\xff\x01garbage", 1 << 30),
            Err(DecodeError::Snappy(_)) | Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn invalid_series_are_reported_and_valid_ones_kept() {
        let lbl = |n: &str, v: &str| v1::Label {
            name: n.into(),
            value: v.into(),
        };
        let smp = vec![v1::Sample {
            value: 1.0,
            timestamp: 1000,
        }];
        let req = v1::WriteRequest {
            timeseries: vec![
                v1::TimeSeries {
                    labels: vec![lbl("__name__", "ok"), lbl("a", "1")],
                    samples: smp.clone(),
                    ..Default::default()
                },
                v1::TimeSeries {
                    labels: vec![lbl("b", "1"), lbl("a", "1"), lbl("__name__", "x")],
                    samples: smp.clone(),
                    ..Default::default()
                },
                v1::TimeSeries {
                    labels: vec![lbl("__name__", "dup"), lbl("a", "1"), lbl("a", "2")],
                    samples: smp.clone(),
                    ..Default::default()
                },
                v1::TimeSeries {
                    labels: vec![lbl("a", "1")],
                    samples: smp.clone(),
                    ..Default::default()
                },
                v1::TimeSeries {
                    labels: vec![lbl("__name__", "e"), lbl("a", "")],
                    samples: smp,
                    ..Default::default()
                },
            ],
            metadata: vec![v1::MetricMetadata {
                r#type: 1,
                metric_family_name: "ok".into(),
                help: "h".into(),
                unit: "".into(),
            }],
        };
        let b = decode_v1(&req.encode_to_vec(), &limits(), 10_000).expect("decodes");
        assert_eq!(b.series.len(), 1);
        assert_eq!(b.invalid.len(), 4);
        assert!(b.invalid[0].reason.contains("not sorted"), "{:?}", b.invalid);
        assert!(b.invalid[1].reason.contains("duplicate"), "{:?}", b.invalid);
        assert!(b.invalid[2].reason.contains("metric name"), "{:?}", b.invalid);
        assert!(b.invalid[3].reason.contains("empty value"), "{:?}", b.invalid);
        assert_eq!(b.metadata[0].kind, MetricKind::Counter);
    }

    #[test]
    fn v2_resolves_symbols_and_rejects_bad_refs() {
        let req = v2::Request {
            symbols: vec![
                "".into(),
                "__name__".into(),
                "up".into(),
                "job".into(),
                "x".into(),
                "help text".into(),
            ],
            timeseries: vec![
                v2::TimeSeries {
                    labels_refs: vec![1, 2, 3, 4],
                    samples: vec![v2::Sample {
                        value: 1.0,
                        timestamp: 5,
                        start_timestamp: 0,
                    }],
                    metadata: Some(v2::Metadata {
                        r#type: 2,
                        help_ref: 5,
                        unit_ref: 0,
                    }),
                    ..Default::default()
                },
                v2::TimeSeries {
                    labels_refs: vec![1, 99],
                    samples: vec![v2::Sample {
                        value: 1.0,
                        timestamp: 5,
                        start_timestamp: 0,
                    }],
                    ..Default::default()
                },
            ],
        };
        let b = decode_v2(&req.encode_to_vec(), &limits(), 10_000).expect("decodes");
        assert_eq!(b.series.len(), 1);
        assert_eq!(b.series[0].0.get("job"), "x");
        assert_eq!(b.metadata[0].help, "help text");
        assert!(b.invalid[0].reason.contains("out of range"));
    }

    #[test]
    fn malformed_protobuf_is_an_error() {
        assert!(matches!(
            decode_v1(b"\x0a\xff\xff\xff", &limits(), 0),
            Err(DecodeError::Protobuf(_))
        ));
    }
}
