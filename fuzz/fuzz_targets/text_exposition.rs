//! The Prometheus text exposition parser never panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = sextant_ingest::text::parse(s, 1_700_000_000_000);
    }
});
