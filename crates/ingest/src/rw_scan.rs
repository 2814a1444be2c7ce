//! A zero-copy scan of remote-write 1.0 requests for the hot path.
//!
//! A sender writes the same series again and again, byte for byte: the
//! encoded labels of a series are a stable key. The scan finds each
//! `TimeSeries`, borrows its label bytes and reads its samples without
//! allocating a string; a receiver that has seen those bytes before can append
//! by series reference. A series seen for the first time, or one with
//! exemplars, histograms or interleaved fields, takes the full decoding path
//! ([`decode_v1_series`]), which validates everything.

use std::ops::Range;

use sextant_model::{Labels, Sample};

use crate::DecodeError;

/// One `TimeSeries` of a request.
#[derive(Debug, Clone)]
pub struct RawSeries<'a> {
    /// The whole encoded message.
    pub whole: &'a [u8],
    /// The encoded label fields, contiguous.
    pub labels: &'a [u8],
    /// Its samples in [`Scan::samples`].
    pub samples: Range<usize>,
    /// Only contiguous labels and samples: the fast path may take it.
    pub plain: bool,
}

/// A scanned request.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    pub series: Vec<RawSeries<'a>>,
    pub samples: Vec<Sample>,
    /// Encoded `MetricMetadata` messages.
    pub metadata: Vec<&'a [u8]>,
}

fn malformed(what: &str) -> DecodeError {
    DecodeError::Protobuf(format!("malformed protobuf: {what}"))
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| malformed("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

/// Reads one field: its number, wire type and, for length-delimited fields,
/// the payload; other payloads are skipped.
fn field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<(u64, u8, &'a [u8], u64), DecodeError> {
    let key = varint(buf, pos)?;
    let (num, wt) = (key >> 3, (key & 7) as u8);
    if num == 0 {
        return Err(malformed("field number 0"));
    }
    match wt {
        0 => {
            let v = varint(buf, pos)?;
            Ok((num, wt, &[], v))
        }
        1 | 5 => {
            let n = if wt == 1 { 8 } else { 4 };
            let b = buf
                .get(*pos..*pos + n)
                .ok_or_else(|| malformed("truncated fixed-width field"))?;
            *pos += n;
            let mut x = [0u8; 8];
            x[..n].copy_from_slice(b);
            Ok((num, wt, b, u64::from_le_bytes(x)))
        }
        2 => {
            let len = varint(buf, pos)? as usize;
            let end = pos.checked_add(len).filter(|e| *e <= buf.len());
            let end = end.ok_or_else(|| malformed("length beyond the end of the message"))?;
            let b = &buf[*pos..end];
            *pos = end;
            Ok((num, wt, b, len as u64))
        }
        _ => Err(malformed("unsupported wire type")),
    }
}

fn sample(b: &[u8]) -> Result<Sample, DecodeError> {
    let (mut v, mut t, mut pos) = (0.0, 0i64, 0);
    while pos < b.len() {
        match field(b, &mut pos)? {
            (1, 1, _, bits) => v = f64::from_bits(bits),
            (2, 0, _, x) => t = x as i64,
            (1 | 2, _, _, _) => return Err(malformed("sample field of the wrong type")),
            _ => {}
        }
    }
    Ok(Sample::new(t, v))
}

/// Scans a decompressed `WriteRequest`.
pub fn scan_v1(buf: &[u8]) -> Result<Scan<'_>, DecodeError> {
    let mut out = Scan::default();
    let mut pos = 0;
    while pos < buf.len() {
        let (num, wt, payload, _) = field(buf, &mut pos)?;
        match (num, wt) {
            (1, 2) => {
                let first = out.samples.len();
                let (mut lab_start, mut lab_end) = (usize::MAX, 0);
                let mut plain = true;
                let mut p = 0;
                while p < payload.len() {
                    let start = p;
                    let (n, w, b, _) = field(payload, &mut p)?;
                    match (n, w) {
                        (1, 2) => {
                            if lab_start == usize::MAX {
                                lab_start = start;
                            } else if lab_end != start {
                                plain = false;
                            }
                            lab_end = p;
                        }
                        (2, 2) => out.samples.push(sample(b)?),
                        (1 | 2, _) => return Err(malformed("time series field of the wrong type")),
                        _ => plain = false,
                    }
                }
                let labels = if lab_start == usize::MAX {
                    plain = false;
                    &payload[..0]
                } else {
                    &payload[lab_start..lab_end]
                };
                out.series.push(RawSeries {
                    whole: payload,
                    labels,
                    samples: first..out.samples.len(),
                    plain,
                });
            }
            (3, 2) => out.metadata.push(payload),
            (1 | 3, _) => return Err(malformed("request field of the wrong type")),
            _ => {}
        }
    }
    Ok(out)
}

/// A hash of encoded label bytes.
pub fn label_key(labels: &[u8]) -> u64 {
    let a = crc32fast::hash(labels) as u64;
    let mut h = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
    h.update(labels);
    (a << 32) | h.finalize() as u64 ^ labels.len() as u64
}

/// The (name, value) byte pairs of encoded label fields; stops at the first
/// malformed field (the caller then sees a mismatch).
pub fn label_pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut pos = 0;
    let mut bad = false;
    std::iter::from_fn(move || {
        if bad || pos >= raw.len() {
            return None;
        }
        let Ok((1, 2, b, _)) = field(raw, &mut pos) else {
            bad = true;
            return Some((&b"\xff"[..], &b"\xff"[..]));
        };
        let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
        let mut p = 0;
        while p < b.len() {
            match field(b, &mut p) {
                Ok((1, 2, x, _)) => name = x,
                Ok((2, 2, x, _)) => value = x,
                _ => {
                    bad = true;
                    return Some((&b"\xff"[..], &b"\xff"[..]));
                }
            }
        }
        Some((name, value))
    })
}

/// Whether encoded label fields spell exactly `labels`, in order.
pub fn labels_match(raw: &[u8], labels: &Labels) -> bool {
    let mut it = labels.iter();
    let mut pos = 0;
    while pos < raw.len() {
        let Ok((1, 2, b, _)) = field(raw, &mut pos) else {
            return false;
        };
        let (mut name, mut value): (&[u8], &[u8]) = (&[], &[]);
        let mut p = 0;
        while p < b.len() {
            match field(b, &mut p) {
                Ok((1, 2, x, _)) => name = x,
                Ok((2, 2, x, _)) => value = x,
                Ok(_) => return false,
                Err(_) => return false,
            }
        }
        match it.next() {
            Some(l) if l.name.as_bytes() == name && l.value.as_bytes() == value => {}
            _ => return false,
        }
    }
    it.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{decode_v1, decode_v1_series_bytes, v1};
    use crate::{Limits, WriteBatch};
    use proptest::prelude::*;
    use prost::Message;

    type TestSeries = (Vec<(String, String)>, Vec<(i64, f64)>);

    fn request(series: &[TestSeries]) -> Vec<u8> {
        v1::WriteRequest {
            timeseries: series
                .iter()
                .map(|(l, s)| v1::TimeSeries {
                    labels: l
                        .iter()
                        .map(|(n, v)| v1::Label {
                            name: n.clone(),
                            value: v.clone(),
                        })
                        .collect(),
                    samples: s
                        .iter()
                        .map(|(t, v)| v1::Sample {
                            value: *v,
                            timestamp: *t,
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        }
        .encode_to_vec()
    }

    fn label_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::btree_map("[a-z_]{1,6}", "[a-zA-Z0-9 é]{1,8}", 0..6)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
            .prop_map(|mut v| {
                v.push(("__name__".into(), "m".into()));
                v.sort();
                v
            })
    }

    proptest! {
        #[test]
        fn scanning_then_decoding_each_series_equals_decoding_the_request(
            series in prop::collection::vec(
                (label_pairs(), prop::collection::vec((any::<i64>(), any::<f64>().prop_map(|v| if v == 0.0 { 0.0 } else { v })), 0..4)), 0..8)
        ) {
            let buf = request(&series);
            let limits = Limits::default();
            let whole = decode_v1(&buf, &limits, i64::MAX / 2).expect("decode");
            let scan = scan_v1(&buf).expect("scan");
            prop_assert_eq!(scan.series.len(), series.len());
            let mut parts = WriteBatch::default();
            for (s, (pairs, samples)) in scan.series.iter().zip(&series) {
                prop_assert!(s.plain || pairs.is_empty());
                let got: Vec<(i64, u64)> = scan.samples[s.samples.clone()].iter().map(|x| (x.t, x.v.to_bits())).collect();
                let want: Vec<(i64, u64)> = samples.iter().map(|(t, v)| (*t, v.to_bits())).collect();
                prop_assert_eq!(got, want);
                decode_v1_series_bytes(s.whole, &limits, i64::MAX / 2, &mut parts).expect("series");
            }
            prop_assert_eq!(parts.series.len(), whole.series.len());
            for ((a, sa), (b, sb)) in parts.series.iter().zip(&whole.series) {
                prop_assert_eq!(a, b);
                prop_assert_eq!(sa.len(), sb.len());
            }
            prop_assert_eq!(parts.invalid.len(), whole.invalid.len());
        }

        #[test]
        fn encoded_labels_match_their_label_set_only(a in label_pairs(), b in label_pairs()) {
            let buf = request(&[(a.clone(), vec![(1, 1.0)]), (b.clone(), vec![(1, 1.0)])]);
            let scan = scan_v1(&buf).expect("scan");
            let la = Labels::from_pairs(a.clone());
            prop_assert!(labels_match(scan.series[0].labels, &la));
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                super::label_pairs(scan.series[0].labels).map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> =
                a.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
            prop_assert_eq!(pairs, want);
            prop_assert_eq!(labels_match(scan.series[1].labels, &la), a == b);
            prop_assert_eq!(label_key(scan.series[0].labels) == label_key(scan.series[1].labels), a == b);
        }

        #[test]
        fn any_bytes_scan_without_panicking(buf in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = scan_v1(&buf);
            let _ = labels_match(&buf, &Labels::from_pairs(vec![("a".to_string(), "b".to_string())]));
        }
    }

    #[test]
    fn truncated_and_mistyped_requests_are_errors() {
        let buf = request(&[(vec![("__name__".into(), "up".into())], vec![(1, 1.0)])]);
        for cut in 1..buf.len() {
            assert!(scan_v1(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // Field 1 as a varint instead of a message.
        assert!(scan_v1(&[0x08, 0x01]).is_err());
    }
}
