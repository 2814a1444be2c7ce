//! Remote-write 1.0 and 2.0 request bodies, raw and snappy-framed: decoding
//! never panics, and what the zero-copy scan accepts is consistent (every
//! series' samples in range, every series decodable or refused). The scan
//! checks less than the full decoder (the server decodes in full every series
//! it has not seen byte for byte before) and knows only the wire types
//! senders use (the server falls back to the full decoder when it refuses).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_ingest::remote_write::{decode_v1, decode_v1_series_bytes, decode_v2, snappy_decode};
use sextant_ingest::rw_scan::{label_pairs, scan_v1};
use sextant_ingest::Limits;
use sextant_ingest::WriteBatch;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let now = 1_700_000_000_000;
    let full = decode_v1(data, &limits, now);
    let scan = scan_v1(data);
    if let Ok(scan) = &scan {
        let mut one = WriteBatch::default();
        for s in &scan.series {
            for (n, v) in label_pairs(s.labels) {
                let _ = (n.len(), v.len());
            }
            assert!(s.samples.end <= scan.samples.len());
            let _ = decode_v1_series_bytes(s.whole, &limits, now, &mut one);
        }
    }
    if let (Ok(_), Ok(scan)) = (&full, &scan) {
        let total: usize = scan.series.iter().map(|s| s.samples.len()).sum();
        assert_eq!(total, scan.samples.len());
    }
    let _ = decode_v2(data, &limits, now);
    if let Ok(raw) = snappy_decode(data, 1 << 20) {
        assert!(raw.len() <= 1 << 20);
        let _ = decode_v1(&raw, &limits, now);
        let _ = decode_v2(&raw, &limits, now);
    }
});
