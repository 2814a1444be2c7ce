//! Chunk columns: any sample run round-trips bit for bit through the encoder,
//! and decoding arbitrary column bytes never panics or over-allocates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_model::Sample;
use sextant_storage::chunkenc::{
    decode_block_range, decode_columns, decode_packed_values, decode_range, encode, encode_block, range_times, Restarts,
    ValueKind,
};

fn kind(b: u8) -> ValueKind {
    ValueKind::ALL[b as usize % ValueKind::ALL.len()]
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize % 1_000;
    let k = kind(data[2]);
    let split = (data[3] as usize).min(data.len() - 4);
    let (ts, vals) = data[4..].split_at(split);
    let mut out = Vec::new();
    let _ = decode_columns(ts, k, vals, n, &mut out);
    let mut part = Vec::new();
    let lo = i64::from(data[2]) << 40;
    if decode_range(ts, k, vals, n, (lo, lo + (1 << 44)), &mut part).is_ok() {
        assert!(part.iter().all(|s| s.t >= lo && s.t <= lo + (1 << 44)));
    }
    // The same bytes as the columns of an indexed block chunk, with and
    // without a tail restart point; and read as a block's reader reads a
    // packed chunk, the range's timestamps worked out first.
    for restarts in [Restarts::Every, Restarts::EveryAndTail] {
        let mut part = Vec::new();
        if decode_block_range(ts, k, vals, n, restarts, (lo, lo + (1 << 44)), &mut part).is_ok() {
            assert!(part.iter().all(|s| s.t >= lo && s.t <= lo + (1 << 44)));
        }
    }
    for restarts in [Restarts::None, Restarts::Every, Restarts::EveryAndTail] {
        let Ok(rt) = range_times(ts, n, restarts, (lo, lo + (1 << 44))) else {
            continue;
        };
        let mut part = vec![Sample { t: 1, v: 2.0 }];
        if decode_packed_values(&rt, k, vals, n, restarts, &mut part).is_ok() {
            assert!(part[1..].iter().all(|s| s.t >= lo && s.t <= lo + (1 << 44)));
        } else {
            assert_eq!(part.len(), 1);
        }
    }

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
    round_trip(&samples);
    // The same run with integer values (counters, buckets: the fitted
    // columns), from small steps to the whole exact range, and as decimals.
    let shift = data[2] % 54;
    let ints: Vec<Sample> = samples
        .iter()
        .map(|s| Sample { t: s.t, v: ((s.v.to_bits() >> 11) >> shift) as f64 })
        .collect();
    round_trip(&ints);
    let decimals: Vec<Sample> = ints
        .iter()
        .map(|s| Sample { t: s.t, v: (s.v % 1e9) / 1e3 })
        .collect();
    round_trip(&decimals);
});

fn round_trip(samples: &[Sample]) {
    let c = encode(samples);
    let mut back = Vec::new();
    c.decode_into(&mut back).expect("a chunk the encoder wrote decodes");
    assert_eq!(back.len(), samples.len());
    for (a, b) in back.iter().zip(samples) {
        assert_eq!((a.t, a.v.to_bits()), (b.t, b.v.to_bits()));
    }
    // A range from the middle of the run to its middle holds exactly the
    // samples the run has there.
    let (a, b) = (samples[samples.len() / 3].t, samples[samples.len() * 2 / 3].t);
    let mut mid = Vec::new();
    c.decode_range(a, b, &mut mid).expect("a chunk the encoder wrote decodes");
    let want: Vec<_> = samples.iter().filter(|s| s.t >= a && s.t <= b).map(|s| (s.t, s.v.to_bits())).collect();
    assert_eq!(mid.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>(), want);
    // As a block chunk, with its restart tables: the same range, and the
    // newest fifth, which starts after a restart point when there is one,
    // and the newest twenty samples (after the tail point when there is one).
    let bc = encode_block(samples);
    let newest = samples[samples.len().saturating_sub(20)].t;
    for (lo, hi) in [(a, b), (samples[samples.len() * 4 / 5].t, i64::MAX), (newest, i64::MAX)] {
        let mut got = Vec::new();
        decode_block_range(&bc.ts, bc.kind, &bc.vals, samples.len(), bc.restarts, (lo, hi), &mut got)
            .expect("a block chunk the encoder wrote decodes");
        let want: Vec<_> = samples.iter().filter(|s| s.t >= lo && s.t <= hi).map(|s| (s.t, s.v.to_bits())).collect();
        assert_eq!(got.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>(), want);
    }
}
