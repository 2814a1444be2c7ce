//! OTLP metrics requests as protobuf, as JSON, and gzip-compressed: decoding
//! and translation into series never panic, and gunzip stays within its limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_ingest::otlp::{decode_protobuf, gunzip, json, translate, DeltaState, OtlpConfig};
use sextant_ingest::Limits;

fuzz_target!(|data: &[u8]| {
    let cfg = OtlpConfig::default();
    let limits = Limits::default();
    let now = 1_700_000_000_000;
    let mut delta = DeltaState::default();
    if let Ok(req) = decode_protobuf(data) {
        let _ = translate(&req, &cfg, &mut delta, &limits, now);
    }
    if let Ok(req) = json::decode(data) {
        let _ = translate(&req, &cfg, &mut delta, &limits, now);
    }
    if let Ok(raw) = gunzip(data, 1 << 20) {
        assert!(raw.len() <= 1 << 20);
        if let Ok(req) = decode_protobuf(&raw) {
            let _ = translate(&req, &cfg, &mut delta, &limits, now);
        }
    }
});
