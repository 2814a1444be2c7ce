//! The query path: any text is parsed, and what parses is evaluated (instant
//! and range) over a small inference store with a samples limit and a
//! timeout. Errors are fine; panics, hangs and runaway memory are not.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sextant_model::{Labels, Sample};
use sextant_promql::MemStore;
use sextant_promql::{Engine, EngineOptions};

fn store() -> &'static MemStore {
    static S: OnceLock<MemStore> = OnceLock::new();
    S.get_or_init(|| {
        let s = MemStore::new();
        for (i, le) in ["0.1", "0.5", "1", "+Inf"].iter().enumerate() {
            for model in ["llama", "mistral"] {
                let samples: Vec<Sample> = (0..40)
                    .map(|k| Sample {
                        t: k * 15_000,
                        v: (k * (i as i64 + 1)) as f64,
                    })
                    .collect();
                s.add(
                    Labels::from_pairs([
                        ("__name__", "vllm:time_to_first_token_seconds_bucket"),
                        ("le", le),
                        ("model_name", model),
                    ]),
                    &samples,
                );
            }
        }
        let g: Vec<Sample> = (0..40)
            .map(|k| Sample {
                t: k * 15_000,
                v: if k == 7 { f64::NAN } else { k as f64 * 0.5 },
            })
            .collect();
        s.add(
            Labels::from_pairs([("__name__", "DCGM_FI_DEV_GPU_UTIL"), ("gpu", "0")]),
            &g,
        );
        s
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else { return };
    if q.len() > 400 {
        return;
    }
    let Ok(_expr) = sextant_promql::parse(q) else { return };
    let engine = Engine::new(EngineOptions {
        max_samples: 200_000,
        timeout: Some(Duration::from_secs(2)),
        ..EngineOptions::default()
    });
    let _ = engine.instant(store(), q, 300_000);
    let _ = engine.range(store(), q, 0, 600_000, 30_000);
});
