//! Storage micro-benchmarks on inference-fleet data: chunk codecs, the append
//! path through the `Db` API, postings intersection and select.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use roaring::RoaringBitmap;
use sextant_benches::{bench_options, fleet, load};
use sextant_model::{Matcher, Sample};
use sextant_storage::chunkenc;

const T0: i64 = 1_764_547_200_000;

fn fleet_runs(n_series: usize, len: usize) -> Vec<Vec<Sample>> {
    let f = fleet(n_series);
    (0..f.series.len().min(n_series))
        .map(|i| {
            (0..len)
                .map(|k| {
                    let t = T0 + k as i64 * 15_000;
                    Sample::new(t, f.value(i, t))
                })
                .collect()
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let runs = fleet_runs(2000, 240);
    let total: usize = runs.iter().map(|r| r.len()).sum();
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function("encode_fleet_240", |b| {
        b.iter(|| {
            for r in &runs {
                black_box(chunkenc::encode(black_box(r)));
            }
        })
    });
    let chunks: Vec<chunkenc::SealedChunk> = runs.iter().map(|r| chunkenc::encode(r)).collect();
    let bytes: usize = chunks.iter().map(|c| c.heap_bytes()).sum();
    println!(
        "chunk bytes per sample (before zstd): {:.3}",
        bytes as f64 / total as f64
    );
    g.bench_function("decode_fleet_240", |b| decode_all(b, &chunks));
    // The same runs as the head codes them, sample by sample (no fitted
    // kinds): what a query pays for data not yet in a block.
    let head: Vec<chunkenc::SealedChunk> = runs
        .iter()
        .map(|r| {
            let mut a = chunkenc::ChunkAppender::new();
            for s in r {
                a.append(s.t, s.v);
            }
            a.seal()
        })
        .collect();
    let bytes: usize = head.iter().map(|c| c.heap_bytes()).sum();
    println!(
        "head-coded chunk bytes per sample (before zstd): {:.3}",
        bytes as f64 / total as f64
    );
    g.bench_function("decode_fleet_240_head_coded", |b| decode_all(b, &head));
    g.finish();
}

/// Decodes every chunk into one reused buffer.
fn decode_all(b: &mut criterion::Bencher<'_>, chunks: &[chunkenc::SealedChunk]) {
    let mut out = Vec::with_capacity(240);
    b.iter(|| {
        for c in chunks {
            out.clear();
            c.decode_into(&mut out).expect("decode");
            black_box(&out);
        }
    })
}

/// Block chunks (480 samples, with restart tables) of one metric each, as
/// the block writer codes them, decoded whole and for their last hour (a
/// range query's read): a noisy gauge (GPU power), a gauge of a few
/// decimals (KV-cache usage), a latency sum and a request count.
fn block_columns(c: &mut Criterion) {
    let f = fleet(139_520);
    let mut g = c.benchmark_group("block_chunk");
    for name in [
        "DCGM_FI_DEV_POWER_USAGE",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_sum",
        "vllm:time_to_first_token_seconds_count",
    ] {
        let chunks: Vec<chunkenc::BlockChunk> = (0..f.series.len())
            .filter(|&i| f.series[i].labels.metric_name() == name)
            .take(300)
            .map(|i| {
                let run: Vec<Sample> = (0..480)
                    .map(|k| {
                        let t = T0 + k as i64 * 15_000;
                        Sample::new(t, f.value(i, t))
                    })
                    .collect();
                chunkenc::encode_block(&run)
            })
            .collect();
        let mut out = Vec::with_capacity(480);
        for (what, from, kept) in [
            ("decode_480", i64::MIN, 480),
            ("decode_last_hour_480", T0 + 240 * 15_000, 240),
        ] {
            g.throughput(Throughput::Elements((chunks.len() * kept) as u64));
            g.bench_function(format!("{what}/{name}"), |b| {
                b.iter(|| {
                    for c in &chunks {
                        out.clear();
                        chunkenc::decode_block_range(
                            &c.ts,
                            c.kind,
                            &c.vals,
                            480,
                            c.restarts,
                            (from, i64::MAX),
                            &mut out,
                        )
                        .expect("decode");
                        black_box(&out);
                    }
                })
            });
        }
    }
    g.finish();
}

fn append(c: &mut Criterion) {
    let f = fleet(10_000);
    let n = f.series.len();
    let mut g = c.benchmark_group("db");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    g.bench_function("append_one_scrape_10k_series", |b| {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sextant_storage::Db::open(dir.path(), bench_options()).expect("open");
        load(&db, &f, T0, 1, 15_000);
        let mut k = 1i64;
        b.iter_batched(
            || {
                k += 1;
                let t = T0 + k * 15_000;
                let mut v = Vec::with_capacity(n);
                for (i, s) in f.series.iter().enumerate() {
                    v.push((s.labels.clone(), vec![Sample::new(t, f.value(i, t))]));
                }
                v
            },
            |batch| {
                let mut app = db.appender();
                for (l, s) in batch {
                    app.append_series(l, s);
                }
                black_box(app.commit().expect("commit"));
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn postings(c: &mut Criterion) {
    let mut a = RoaringBitmap::new();
    let mut b2 = RoaringBitmap::new();
    for i in 0..1_000_000u32 {
        if i % 3 == 0 {
            a.insert(i);
        }
        if i % 7 == 0 {
            b2.insert(i);
        }
    }
    c.bench_function("postings_intersect_1m", |b| b.iter(|| black_box(&a & &b2)));
}

fn select(c: &mut Criterion) {
    let f = fleet(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sextant_storage::Db::open(dir.path(), bench_options()).expect("open");
    load(&db, &f, T0, 240, 15_000);
    let ms = [Matcher::equal("__name__", "vllm:time_to_first_token_seconds_bucket")];
    let mut g = c.benchmark_group("select");
    g.sample_size(20);
    g.bench_function("head_ttft_buckets_1h", |b| {
        b.iter(|| black_box(db.select(&ms, T0, T0 + 3_600_000).expect("select")))
    });
    db.flush().expect("flush");
    g.bench_function("block_ttft_buckets_1h", |b| {
        b.iter(|| black_box(db.select(&ms, T0, T0 + 3_600_000).expect("select")))
    });
    g.finish();
}

criterion_group!(benches, codecs, block_columns, append, postings, select);
criterion_main!(benches);
