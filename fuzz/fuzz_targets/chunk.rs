//! Chunk columns: any sample run round-trips bit for bit through the encoder,
//! and decoding arbitrary column bytes never panics or over-allocates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_model::Sample;
use sextant_storage::chunkenc::{decode_columns, decode_timestamps, decode_values, encode, ValueKind};

fn kind(b: u8) -> ValueKind {
    match b % 11 {
        0 => ValueKind::Int,
        1 => ValueKind::Float,
        k => ValueKind::Decimal(k - 1), // 1..=9, the scales a block can hold
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize % 1_000;
    let k = kind(data[2]);
    let split = (data[3] as usize).min(data.len() - 4);
    let (ts, vals) = data[4..].split_at(split);
    let mut t = Vec::new();
    let _ = decode_timestamps(ts, n, &mut t);
    let mut v = Vec::new();
    let _ = decode_values(vals, k, n, &mut v);
    let mut out = Vec::new();
    let _ = decode_columns(ts, k, vals, n, &mut out);

    // Round trip: 16 bytes a sample, timestamps made increasing.
    let mut samples = Vec::new();
    let mut last = i64::MIN / 4;
    for c in data[4..].chunks_exact(16).take(480) {
        let d = i64::from_le_bytes(c[..8].try_into().unwrap_or_default()).rem_euclid(1 << 40) + 1;
        last = last.saturating_add(d);
        samples.push(Sample {
            t: last,
            v: f64::from_bits(u64::from_le_bytes(c[8..].try_into().unwrap_or_default())),
        });
    }
    if samples.is_empty() {
        return;
    }
    let c = encode(&samples);
    let mut back = Vec::new();
    c.decode_into(&mut back).expect("a chunk the encoder wrote decodes");
    assert_eq!(back.len(), samples.len());
    for (a, b) in back.iter().zip(&samples) {
        assert_eq!((a.t, a.v.to_bits()), (b.t, b.v.to_bits()));
    }
});
