//! Typical dashboard queries over an inference fleet: 1 h range at a 15 s step,
//! and instant queries at the last scrape.
//! Fleet size: `SEXTANT_BENCH_SERIES` (default 100,000).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sextant_benches::{bench_options, fleet, load};
use sextant_promql::Engine;

const T0: i64 = 1_764_547_200_000;

fn queries(c: &mut Criterion) {
    let n: usize = std::env::var("SEXTANT_BENCH_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let f = fleet(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sextant_storage::Db::open(dir.path(), bench_options()).expect("open");
    // 75 minutes so that the first 5m windows are full.
    load(&db, &f, T0, 300, 15_000);
    println!("fleet: {} series", f.series.len());
    let engine = Engine::default();
    let start = T0 + 900_000;
    let end = start + 3_600_000;
    let mut g = c.benchmark_group("promql_1h_15s");
    g.sample_size(10);
    for (name, q) in [
        (
            "ttft_p99_by_model",
            "histogram_quantile(0.99, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
        ),
        (
            "tokens_per_s_by_model",
            "sum by (model_name) (rate(vllm:generation_tokens_total[1m]))",
        ),
        ("topk_kv_cache", "topk(10, vllm:kv_cache_usage_perc)"),
        ("gpu_util_by_zone", "avg by (availability_zone) (DCGM_FI_DEV_GPU_UTIL)"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(engine.range(&db, q, start, end, 15_000).expect("query")))
        });
    }
    g.finish();
    // Instant queries at the last scrape, as a dashboard's tables and alerts ask them.
    let mut g = c.benchmark_group("promql_instant");
    g.sample_size(10);
    for (name, q) in [
        (
            "ttft_p99_by_component",
            "histogram_quantile(0.99, sum by (le, endpoint, inference_component, model_name) \
             (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
        ),
        ("gpu_util_by_zone", "avg by (availability_zone) (DCGM_FI_DEV_GPU_UTIL)"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(engine.instant(&db, q, end).expect("query")))
        });
    }
    g.finish();
    // The same data persisted: instant panel queries read from a block.
    db.flush().expect("flush");
    let mut g = c.benchmark_group("promql_instant_block");
    g.sample_size(20);
    for (name, q) in [
        ("topk_kv_cache", "topk(10, vllm:kv_cache_usage_perc)"),
        (
            "gpu_power_top5_hosts",
            "topk(5, sum by (Hostname) (DCGM_FI_DEV_POWER_USAGE))",
        ),
        ("gpu_util_by_zone", "avg by (availability_zone) (DCGM_FI_DEV_GPU_UTIL)"),
        (
            "request_rate_by_zone",
            "sum by (availability_zone) (rate(vllm:request_success_total[5m]))",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(engine.instant(&db, q, end).expect("query")))
        });
    }
    g.finish();
}

criterion_group!(benches, queries);
criterion_main!(benches);
