//! Remote-write 1.0 requests for the fleet, encoded by hand: each series'
//! labels are serialised once, so a request costs little more than copying
//! them and appending one sample. Bodies are snappy block-compressed, as the
//! protocol requires.

use sextant_model::Labels;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// The encoded `Label` messages of one series (field 1 of `TimeSeries`).
pub fn encode_labels(labels: &Labels) -> Vec<u8> {
    let mut out = Vec::new();
    let mut one = Vec::new();
    for l in labels.iter() {
        one.clear();
        bytes_field(&mut one, 0x0a, l.name.as_bytes());
        bytes_field(&mut one, 0x12, l.value.as_bytes());
        bytes_field(&mut out, 0x0a, &one);
    }
    out
}

/// Builds one `WriteRequest` of many series, one sample each.
#[derive(Default)]
pub struct RequestBuilder {
    body: Vec<u8>,
    sample: Vec<u8>,
    series: usize,
}

impl RequestBuilder {
    /// Adds a series with pre-encoded labels and one sample.
    pub fn push(&mut self, labels: &[u8], t_ms: i64, v: f64) {
        self.sample.clear();
        self.sample.push(0x09);
        self.sample.extend_from_slice(&v.to_le_bytes());
        self.sample.push(0x10);
        varint(&mut self.sample, t_ms as u64);
        let inner = labels.len() + 1 + 1 + self.sample.len();
        self.body.push(0x0a);
        varint(&mut self.body, inner as u64);
        self.body.extend_from_slice(labels);
        self.body.push(0x12);
        varint(&mut self.body, self.sample.len() as u64);
        self.body.extend_from_slice(&self.sample);
        self.series += 1;
    }

    pub fn len(&self) -> usize {
        self.series
    }

    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// The snappy-compressed body, leaving the builder empty.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = snap::raw::Encoder::new().compress_vec(&self.body).unwrap_or_default();
        self.body.clear();
        self.series = 0;
        out
    }
}
