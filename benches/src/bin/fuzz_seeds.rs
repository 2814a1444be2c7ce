//! Writes seed inputs for the fuzz targets in `fuzz/` (one directory per
//! target under the given root), made by the project's own encoders so that
//! the fuzzers start from well-formed requests, chunks, WAL segments, block
//! edits and the queries of the shipped dashboards.
//!
//! `cargo run --release -p sextant-benches --bin fuzz_seeds -- fuzz/corpus`

use std::io::Write as _;
use std::path::Path;

use prost::Message as _;
use sextant_fleet::remote_write::{encode_labels, RequestBuilder};
use sextant_fleet::{Fleet, FleetSpec};
use sextant_model::{Labels, Sample};

const OTLP_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"vllm"}},{"key":"cloud.availability_zone","value":{"stringValue":"us-east-1a"}}]},"scopeMetrics":[{"scope":{"name":"vllm","version":"0.6"},"metrics":[
{"name":"gpu.utilization","unit":"1","gauge":{"dataPoints":[{"asDouble":0.93,"timeUnixNano":"1700000000000000000","attributes":[{"key":"gpu","value":{"intValue":"0"}}]}]}},
{"name":"requests","unit":"{request}","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"42","startTimeUnixNano":"1699999990000000000","timeUnixNano":"1700000000000000000"}]}},
{"name":"ttft","unit":"s","histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"5","sum":1.25,"bucketCounts":["1","3","1"],"explicitBounds":[0.1,0.5],"timeUnixNano":"1700000000000000000"}]}},
{"name":"latency","unit":"s","summary":{"dataPoints":[{"count":"3","sum":0.9,"quantileValues":[{"quantile":0.5,"value":0.2}],"timeUnixNano":"1700000000000000000"}]}}]}]}]}"#;

const TEXT: &str = "# HELP vllm:num_requests_running Requests running.\n# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"llama\"} 3\n# TYPE ttft histogram\nttft_bucket{le=\"0.1\"} 1 1700000000000\nttft_bucket{le=\"+Inf\"} 4\nttft_sum 1.5e0\nttft_count 4\n# EOF\n";

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(q)) if !q.is_empty() => out.push(q.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

fn put(dir: &Path, name: &str, data: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed dir");
    std::fs::write(dir.join(name), data).expect("seed");
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into());
    let root = Path::new(&root);

    // remote_write: fleet requests, raw protobuf and snappy-framed.
    let fleet = Fleet::new(&FleetSpec::demo(400));
    for (k, n) in [1usize, 8, 60].into_iter().enumerate() {
        let mut b = RequestBuilder::default();
        for (i, s) in fleet.series.iter().take(n).enumerate() {
            let v = fleet.value_at(i, 1_700_000_000_000, &[]).unwrap_or(f64::NAN);
            b.push(&encode_labels(&s.labels), 1_700_000_000_000, v);
        }
        let snappy = b.finish();
        let raw = snap::raw::Decoder::new().decompress_vec(&snappy).expect("snappy");
        put(&root.join("remote_write"), &format!("v1-{k}.pb"), &raw);
        put(&root.join("remote_write"), &format!("v1-{k}.snappy"), &snappy);
    }

    // otlp: JSON, the same request as protobuf, and gzip.
    let req = sextant_ingest::otlp::json::decode(OTLP_JSON.as_bytes()).expect("seed JSON decodes");
    let pb = req.encode_to_vec();
    put(&root.join("otlp"), "req.json", OTLP_JSON.as_bytes());
    put(&root.join("otlp"), "req.pb", &pb);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&pb).expect("gzip");
    put(&root.join("otlp"), "req.pb.gz", &gz.finish().expect("gzip"));

    put(&root.join("text_exposition"), "vllm.txt", TEXT.as_bytes());

    // chunk: n, kind, split, then the columns the encoder wrote.
    for vals in [
        (0..120).map(|i| (i * 7) as f64).collect::<Vec<_>>(),
        (0..120).map(|i| (i as f64).sin()).collect(),
        (0..120).map(|i| i as f64 * 0.25).collect(),
        (0..120).map(|i| ((i * i) % 17) as f64).collect(),
    ] {
        let samples: Vec<Sample> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| Sample {
                t: 1_700_000_000_000 + i as i64 * 15_000,
                v: *v,
            })
            .collect();
        // As the head codes them, and as the block writer does (a run this
        // short has no restart tables; its integers are packed).
        let c = sextant_storage::chunkenc::encode(&samples);
        let b = sextant_storage::chunkenc::encode_block(&samples);
        for (kind, ts, vals) in [(c.kind, c.ts(), c.vals()), (b.kind, &b.ts[..], &b.vals[..])] {
            let k = sextant_storage::chunkenc::ValueKind::ALL
                .iter()
                .position(|x| *x == kind)
                .expect("a known kind") as u8;
            let mut seed = (samples.len() as u16).to_le_bytes().to_vec();
            seed.push(k);
            seed.push(ts.len().min(255) as u8);
            seed.extend_from_slice(ts);
            seed.extend_from_slice(vals);
            put(&root.join("chunk"), &format!("kind-{k}"), &seed);
        }
    }

    // wal: a real segment of Series and Samples records.
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let db = sextant_storage::Db::open(
            tmp.path(),
            sextant_storage::Options {
                background: false,
                fsync: sextant_storage::FsyncPolicy::Never,
                ..Default::default()
            },
        )
        .expect("db");
        for t in 0..5 {
            let mut app = db.appender();
            for i in 0..4 {
                let ls = Labels::from_pairs([("__name__", "x"), ("i", &i.to_string())]);
                app.append(&ls, t * 15_000, (t * i) as f64);
            }
            app.commit().expect("commit");
        }
        db.close().expect("close");
    }
    for e in std::fs::read_dir(tmp.path().join("wal")).expect("wal").flatten() {
        let data = std::fs::read(e.path()).expect("segment");
        if !data.is_empty() {
            put(&root.join("wal"), &e.file_name().to_string_lossy(), &data);
        }
    }

    // block: each mode with no edits and with one.
    for mode in 0u8..4 {
        put(&root.join("block"), &format!("mode-{mode}"), &[mode]);
        put(
            &root.join("block"),
            &format!("mode-{mode}-edit"),
            &[mode, 40, 0, 0, 0, 0x10],
        );
    }

    // promql: every query of the shipped Grafana dashboards, variables made concrete.
    let mut n = 0;
    for e in std::fs::read_dir("docs/grafana").expect("docs/grafana").flatten() {
        if e.path().extension().is_none_or(|x| x != "json") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("dashboard");
        let v: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        let mut exprs = Vec::new();
        collect_exprs(&v, &mut exprs);
        for q in exprs {
            let q = q
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "30s")
                .replace("$__range", "5m");
            // Template variables become a concrete value.
            let mut out = String::new();
            let mut rest = q.as_str();
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                out.push('x');
                rest = rest[i + 1..].trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
            }
            out.push_str(rest);
            put(&root.join("promql"), &format!("dash-{n}"), out.as_bytes());
            n += 1;
        }
    }
    for (i, q) in [
        "histogram_quantile(0.99, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket[1m])))",
        "topk(3, avg_over_time(DCGM_FI_DEV_GPU_UTIL[5m:30s]) offset 1m) > bool 0.5",
        "label_replace(count_values(\"v\", DCGM_FI_DEV_GPU_UTIL), \"g\", \"$1\", \"gpu\", \"(.*)\")",
        "sum without (gpu) (DCGM_FI_DEV_GPU_UTIL) / on() group_left vector(2) @ 300",
    ]
    .iter()
    .enumerate()
    {
        put(&root.join("promql"), &format!("q-{i}"), q.as_bytes());
    }
    println!("seeds written under {}", root.display());
}
