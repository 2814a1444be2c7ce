//! Loads the same inference-fleet data into Sextant, Prometheus and
//! VictoriaMetrics over remote write, in one run, makes each persist it, and
//! reports on-disk bytes per sample, ingest CPU seconds per million samples,
//! samples per second, and peak and steady (idle after ingest) RSS per
//! series; then runs the queries of an inference dashboard against each
//! (instant, over 1 h and over 6 h, or the whole data when shorter), reports
//! the median latency of each and whether Sextant's answer equals
//! Prometheus's (relative tolerance 1e-6). Every server listens on 127.0.0.1
//! only and is stopped by its PID.
//!
//! ```text
//! bash benches/peers/run.sh --series 139520 --hours 2
//! ```
//!
//! The requests are encoded once to files under `--requests-dir DIR`
//! (`target/fleet-requests/<series>-<hours>h` unless told; see
//! `sextant_benches::requests`) and replayed over `--connections N` (4)
//! keep-alive connections. `--runs N` sets the timed runs per query (5);
//! `--systems sextant,prometheus` measures only those.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sextant_benches::{arg, requests};

/// The dashboard: the vLLM example dashboard's panels (latency quantiles
/// from `_bucket` rates, token rates, running and waiting requests, KV-cache
/// usage, finish reasons) and GPU and availability-zone aggregations.
const QUERIES: &[(&str, &str)] = &[
    (
        "TTFT p99 by model",
        "histogram_quantile(0.99, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
    ),
    (
        "TTFT p50 by model",
        "histogram_quantile(0.5, sum by (le, model_name) (rate(vllm:time_to_first_token_seconds_bucket[5m])))",
    ),
    (
        "E2E latency p90 by model",
        "histogram_quantile(0.9, sum by (le, model_name) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))",
    ),
    (
        "inter-token latency p95 by model",
        "histogram_quantile(0.95, sum by (le, model_name) (rate(vllm:inter_token_latency_seconds_bucket[5m])))",
    ),
    (
        "mean TTFT by model",
        "sum by (model_name) (rate(vllm:time_to_first_token_seconds_sum[5m])) / sum by (model_name) (rate(vllm:time_to_first_token_seconds_count[5m]))",
    ),
    (
        "generation tokens/s by model",
        "sum by (model_name) (rate(vllm:generation_tokens_total[5m]))",
    ),
    (
        "prompt tokens/s by model",
        "sum by (model_name) (rate(vllm:prompt_tokens_total[5m]))",
    ),
    (
        "running and waiting requests",
        "sum by (model_name) (vllm:num_requests_running) + sum by (model_name) (vllm:num_requests_waiting)",
    ),
    ("KV-cache usage, busiest 10", "topk(10, vllm:kv_cache_usage_perc)"),
    (
        "finish reasons",
        "sum by (finished_reason) (increase(vllm:request_success_total[5m]))",
    ),
    (
        "GPU utilisation by zone",
        "avg by (availability_zone) (DCGM_FI_DEV_GPU_UTIL)",
    ),
    (
        "GPU power by hostname, top 5",
        "topk(5, sum by (Hostname) (DCGM_FI_DEV_POWER_USAGE))",
    ),
    (
        "request rate by zone",
        "sum by (availability_zone) (rate(vllm:request_success_total[5m]))",
    ),
];

/// A query answer reduced to what is compared: per series (labels as sorted
/// text), its points (time in ms, value).
type Answer = std::collections::BTreeMap<String, Vec<(i64, f64)>>;

/// Per query, per shape.
type PerQuery<T> = Vec<Vec<T>>;

fn parse_answer(body: &str) -> Result<Answer, String> {
    let split = body.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0);
    let (head, rest) = body.split_at(split);
    let text = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut b = rest.as_bytes();
        while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
            if size == 0 || nl + 2 + size > b.len() {
                break;
            }
            out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
            b = &b[(nl + 4 + size).min(b.len())..];
        }
        String::from_utf8_lossy(&out).to_string()
    } else {
        rest.to_string()
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!("{}", v["error"]));
    }
    let mut out = Answer::new();
    for r in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let mut labels: Vec<(String, String)> = r["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        labels.sort();
        let key = format!("{labels:?}");
        let point = |p: &serde_json::Value| {
            let t = (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
            let v: f64 = p[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
            (t, v)
        };
        let pts = match r.get("values") {
            Some(vs) => vs.as_array().map(|a| a.iter().map(point).collect()).unwrap_or_default(),
            None => vec![point(&r["value"])],
        };
        out.insert(key, pts);
    }
    Ok(out)
}

/// Where two answers differ, or `None` when every series and point matches
/// within a relative tolerance of 1e-6.
fn difference(a: &Answer, b: &Answer) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} series vs {}", a.len(), b.len()));
    }
    for ((ka, pa), (kb, pb)) in a.iter().zip(b) {
        if ka != kb {
            return Some(format!("series {ka} vs {kb}"));
        }
        if pa.len() != pb.len() {
            return Some(format!("{ka}: {} points vs {}", pa.len(), pb.len()));
        }
        for ((ta, va), (tb, vb)) in pa.iter().zip(pb) {
            let same = ta == tb
                && ((va.is_nan() && vb.is_nan()) || va == vb || (va - vb).abs() <= 1e-6 * va.abs().max(vb.abs()));
            if !same {
                return Some(format!("{ka} at {ta}: {va} vs {vb} (t {tb})"));
            }
        }
    }
    None
}

/// For `topk`: which of several series with the same value makes the cut
/// depends on the order an engine meets them, so the answers are compared as
/// the sorted values at each time.
fn difference_of_values(a: &Answer, b: &Answer) -> Option<String> {
    let by_time = |x: &Answer| {
        let mut m: std::collections::BTreeMap<i64, Vec<f64>> = std::collections::BTreeMap::new();
        for pts in x.values() {
            for (t, v) in pts {
                m.entry(*t).or_default().push(*v);
            }
        }
        for v in m.values_mut() {
            v.sort_by(|p, q| p.total_cmp(q));
        }
        m
    };
    let (ma, mb) = (by_time(a), by_time(b));
    if ma.len() != mb.len() {
        return Some(format!("{} times vs {}", ma.len(), mb.len()));
    }
    for ((ta, va), (tb, vb)) in ma.iter().zip(&mb) {
        let same = ta == tb
            && va.len() == vb.len()
            && va
                .iter()
                .zip(vb)
                .all(|(x, y)| x == y || (x - y).abs() <= 1e-6 * x.abs().max(y.abs()));
        if !same {
            return Some(format!("at {ta}: values {va:?} vs {vb:?}"));
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(600))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// CPU seconds (user + system) and RSS bytes of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0;
    let cpu = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let rss = f.get(21).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) * 4096;
    (cpu / tick, rss)
}

struct Peer {
    name: &'static str,
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(p: &Peer, path: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if http(p.port, "GET", path, &[], b"").is_some_and(|(s, _)| s == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{} did not start", p.name);
}

fn main() {
    let n = sextant_benches::series_arg(139_520);
    let hours: i64 = arg("--hours").and_then(|s| s.parse().ok()).unwrap_or(2);
    let sextant_bin = arg("--sextant").unwrap_or_else(|| "target/release/sextant".into());
    let connections: usize = arg("--connections").and_then(|s| s.parse().ok()).unwrap_or(4);
    // The requests are encoded to files once (kept for later runs with the
    // same size) and read into memory before any system starts, so that the
    // client is never the bottleneck.
    let requests_dir = arg("--requests-dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("target/fleet-requests/{n}-{hours}h")));
    let started = Instant::now();
    let (manifest, fresh) = requests::encode(&requests_dir, n, hours).unwrap_or_else(|e| panic!("encode: {e}"));
    let (manifest, bodies) = match requests::load(&requests_dir) {
        Ok((m, b)) if m == manifest => (m, b),
        Ok(_) => panic!("{}: changed while loading", requests_dir.display()),
        Err(e) => panic!("load: {e}"),
    };
    let samples = manifest.samples;
    let steps = (hours * 240) as usize;
    let t0 = manifest.t0;
    eprintln!(
        "{} {samples} samples of {} series in {} requests under {} ({:.1}s)",
        if fresh { "encoded" } else { "reused" },
        manifest.series,
        bodies.len(),
        requests_dir.display(),
        started.elapsed().as_secs_f64()
    );
    let runs: usize = arg("--runs").and_then(|s| s.parse().ok()).unwrap_or(5);
    // Seconds idle after ingest before the steady RSS is read.
    let idle: u64 = arg("--idle").and_then(|s| s.parse().ok()).unwrap_or(10);
    // Evaluation times fall halfway between samples. Sextant follows current
    // Prometheus, whose range and lookback windows are left-open; Prometheus
    // 2.42's are left-closed. The two agree wherever no sample sits exactly on
    // a window's start, which times halfway between scrapes ensure, so the
    // answers compare the engines and not that change of definition.
    let end = t0 + (steps as i64 - 1) * 15_000 - 7_500;
    // Instant at the end, 1 h and 6 h (or everything, when less) at a 60 s step.
    // Whole minutes, so that every step stays halfway between samples.
    let span = |h: i64| (h * 3_600_000).min((end - t0 - 300_000) / 60_000 * 60_000);
    let shapes: Vec<(String, Option<(i64, i64)>)> = vec![
        ("instant".to_string(), None),
        (
            format!("{:.1} h range", span(1) as f64 / 3.6e6),
            Some((span(1), 60_000)),
        ),
        (
            format!("{:.1} h range", span(6) as f64 / 3.6e6),
            Some((span(6), 60_000)),
        ),
    ];
    // latencies[system][query][shape] = median ms; answers likewise.
    let mut latencies: Vec<(&str, Vec<Vec<f64>>)> = Vec::new();
    let mut answers: Vec<(&str, PerQuery<Result<Answer, String>>)> = Vec::new();
    let root = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    let systems = arg("--systems").unwrap_or_else(|| "sextant,prometheus,victoria-metrics".into());
    for name in ["sextant", "prometheus", "victoria-metrics"] {
        if !systems.split(',').any(|s| s == name) {
            continue;
        }
        let port = free_port();
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut cmd = match name {
            "sextant" => {
                let mut c = Command::new(&sextant_bin);
                c.args([
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--otlp-grpc-listen",
                    "off",
                    "--wal-fsync",
                    "never",
                    "--retention-time",
                    "0",
                    "--max-request-bytes",
                    "256MiB",
                    "--query-cache-freshness",
                    "off",
                    "--data-dir",
                ])
                .arg(&dir);
                c
            }
            "prometheus" => {
                std::fs::write(dir.join("prometheus.yml"), "global:\n  scrape_interval: 15s\n").expect("config");
                let mut c = Command::new("prometheus");
                c.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                    .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .args([
                        "--web.enable-remote-write-receiver",
                        "--web.enable-admin-api",
                        "--storage.tsdb.retention.time=100y",
                    ]);
                c
            }
            _ => {
                let mut c = Command::new("victoria-metrics");
                c.arg(format!("-storageDataPath={}", dir.join("data").display()))
                    .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .args([
                        "-retentionPeriod=100y",
                        "-search.disableCache",
                        "-maxInsertRequestSize=268435456",
                    ]);
                c
            }
        };
        let child = match cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                continue;
            }
        };
        let peer = Peer { name, child, port, dir };
        wait_ready(
            &peer,
            if name == "victoria-metrics" {
                "/health"
            } else {
                "/-/ready"
            },
        );
        let (cpu0, _) = proc_usage(peer.child.id());
        let t = Instant::now();
        // Peak RSS: sampled every 20 ms while the requests are replayed.
        let pid = peer.child.id();
        let replaying = std::sync::atomic::AtomicBool::new(true);
        let (replay, mut peak_rss) = std::thread::scope(|sc| {
            let sampler = sc.spawn(|| {
                let mut peak = 0u64;
                while replaying.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(proc_usage(pid).1);
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            });
            let url = format!("http://127.0.0.1:{port}/api/v1/write");
            let r = requests::replay(&url, &bodies, manifest.per_window, connections);
            replaying.store(false, std::sync::atomic::Ordering::Relaxed);
            (r, sampler.join().expect("sampler"))
        });
        if let Some(e) = replay.error {
            panic!("{name} rejected a write: {e}");
        }
        let ingest_secs = t.elapsed().as_secs_f64();
        let (cpu1, rss) = proc_usage(peer.child.id());
        peak_rss = peak_rss.max(rss);
        // Steady state: the data ingested, the process idle for `--idle`
        // seconds (10 unless told), nothing persisted yet.
        std::thread::sleep(Duration::from_secs(idle));
        let steady_rss = proc_usage(peer.child.id()).1;
        // Persist.
        let on_disk = match name {
            "sextant" => {
                let r = http(port, "POST", "/api/v1/admin/tsdb/flush", &[], b"");
                assert!(r.is_some_and(|(s, _)| s == 200), "flush failed");
                dir_bytes(&peer.dir.join("blocks"))
            }
            "prometheus" => {
                let r = http(port, "POST", "/api/v1/admin/tsdb/snapshot", &[], b"").expect("snapshot");
                assert_eq!(r.0, 200, "{}", r.1);
                dir_bytes(&peer.dir.join("data").join("snapshots"))
            }
            _ => {
                let _ = http(port, "GET", "/internal/force_flush", &[], b"");
                let _ = http(port, "GET", "/internal/force_merge", &[], b"");
                let data = peer.dir.join("data");
                // Background merges finish asynchronously: wait until the size is
                // unchanged over three polls (at most two minutes).
                let size = || dir_bytes(&data.join("data")) + dir_bytes(&data.join("indexdb"));
                let (mut last, mut stable) = (size(), 0);
                let waited = Instant::now();
                while stable < 3 && waited.elapsed() < Duration::from_secs(120) {
                    std::thread::sleep(Duration::from_secs(2));
                    let now = size();
                    stable = if now == last { stable + 1 } else { 0 };
                    last = now;
                }
                dir_bytes(&data.join("data")) + dir_bytes(&data.join("indexdb"))
            }
        };
        // Queries: one warm-up, then `runs` timed runs of each.
        let mut lat = Vec::new();
        let mut ans = Vec::new();
        for (_, q) in QUERIES {
            let mut lq = Vec::new();
            let mut aq = Vec::new();
            for (_, shape) in &shapes {
                let path = match shape {
                    None => format!("/api/v1/query?query={}&time={}", enc(q), end as f64 / 1000.0),
                    Some((span, step)) => format!(
                        "/api/v1/query_range?query={}&start={}&end={}&step={}",
                        enc(q),
                        (end - span) as f64 / 1000.0,
                        end as f64 / 1000.0,
                        *step as f64 / 1000.0
                    ),
                };
                let first = http(port, "GET", &path, &[], b"");
                let answer = match &first {
                    Some((200, body)) => parse_answer(body),
                    Some((s, body)) => Err(format!(
                        "status {s}: {}",
                        body.chars()
                            .rev()
                            .take(200)
                            .collect::<String>()
                            .chars()
                            .rev()
                            .collect::<String>()
                    )),
                    None => Err("no answer".into()),
                };
                let mut times = Vec::new();
                for _ in 0..runs {
                    let t = Instant::now();
                    let _ = http(port, "GET", &path, &[], b"");
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                times.sort_by(|a, b| a.total_cmp(b));
                lq.push(times[times.len() / 2]);
                aq.push(answer);
            }
            lat.push(lq);
            ans.push(aq);
        }
        latencies.push((name, lat));
        answers.push((name, ans));
        let series = manifest.series as f64;
        rows.push((
            name,
            on_disk as f64 / samples as f64,
            (cpu1 - cpu0) / (samples as f64 / 1e6),
            samples as f64 / ingest_secs,
            peak_rss as f64 / series,
            steady_rss as f64 / series,
        ));
        drop(peer);
    }
    println!(
        "Fleet: {} series, {} h at 15 s, {samples} samples in {} requests; one run, same requests for every system, over {connections} keep-alive connections.\n",
        manifest.series,
        hours,
        bodies.len()
    );
    println!("| system | bytes/sample on disk | ingest CPU s per 1M samples | ingest samples/s | peak RSS bytes per series | steady RSS bytes per series |\n| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} |",
            r.0, r.1, r.2, r.3, r.4, r.5
        );
    }
    if let Some(s) = rows.iter().find(|r| r.0 == "sextant") {
        for r in rows.iter().filter(|r| r.0 != "sextant") {
            println!(
                "\nSextant / {}: bytes per sample {:.2}x, ingest CPU {:.2}x, peak RSS per series {:.2}x, steady RSS per series {:.2}x",
                r.0,
                s.1 / r.1,
                s.2 / r.2,
                s.4 / r.4,
                s.5 / r.5
            );
        }
    }
    // Query latency and equality.
    println!("\n### Query latency (median of {runs} runs, ms) and equality with Prometheus\n");
    let names: Vec<&str> = latencies.iter().map(|l| l.0).collect();
    print!("| query | shape |");
    for n in &names {
        print!(" {n} ms |");
    }
    println!(" Sextant / Prometheus | Sextant / VictoriaMetrics | equal to Prometheus |");
    println!("|---|---|{}---|---|---|", "---|".repeat(names.len()));
    let find = |n: &str| latencies.iter().position(|l| l.0 == n);
    let (si, pi, vi) = (find("sextant"), find("prometheus"), find("victoria-metrics"));
    let (mut equal, mut compared) = (0, 0);
    let mut worst_p: f64 = 0.0;
    let mut worst_v: f64 = 0.0;
    let (mut timed, mut within_p, mut within_v, mut within_both) = (0, 0, 0, 0);
    for (qi, (title, _)) in QUERIES.iter().enumerate() {
        for (hi, (shape, _)) in shapes.iter().enumerate() {
            print!("| {title} | {shape} |");
            for l in &latencies {
                // Two decimals below 10 ms: a tenth is 10-25 % of the
                // smallest medians.
                let ms = l.1[qi][hi];
                if ms < 10.0 {
                    print!(" {ms:.2} |");
                } else {
                    print!(" {ms:.1} |");
                }
            }
            let ratio = |o: Option<usize>| match (si, o) {
                (Some(s), Some(o)) => Some(latencies[s].1[qi][hi] / latencies[o].1[qi][hi]),
                _ => None,
            };
            let rp = ratio(pi);
            let rv = ratio(vi);
            worst_p = worst_p.max(rp.unwrap_or(0.0));
            worst_v = worst_v.max(rv.unwrap_or(0.0));
            if let (Some(p), Some(v)) = (rp, rv) {
                timed += 1;
                within_p += usize::from(p <= 0.1);
                within_v += usize::from(v <= 0.3);
                within_both += usize::from(p <= 0.1 && v <= 0.3);
            }
            let fmt = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
            let eq = match (si, pi) {
                (Some(s), Some(p)) => match (&answers[s].1[qi][hi], &answers[p].1[qi][hi]) {
                    (Ok(a), Ok(b)) => {
                        compared += 1;
                        match difference(a, b) {
                            None => {
                                equal += 1;
                                format!("yes ({} series)", a.len())
                            }
                            Some(d) if QUERIES[qi].1.starts_with("topk") => match difference_of_values(a, b) {
                                None => {
                                    equal += 1;
                                    format!("yes, values at every step (ties broken differently: {d})")
                                }
                                Some(dv) => format!("NO: {dv}"),
                            },
                            Some(d) => format!("NO: {d}"),
                        }
                    }
                    (Err(e), _) => format!("Sextant error: {e}"),
                    (_, Err(e)) => format!("Prometheus error: {e}"),
                },
                _ => "-".into(),
            };
            println!(" {} | {} | {eq} |", fmt(rp), fmt(rv));
        }
    }
    println!(
        "\n{equal} of {compared} answers equal to Prometheus's; slowest ratio Sextant / Prometheus {worst_p:.2}x, Sextant / VictoriaMetrics {worst_v:.2}x"
    );
    if timed > 0 {
        println!(
            "Latency bounds (Sextant at most 0.1x Prometheus's and 0.3x VictoriaMetrics's median): {within_both} of {timed} queries within both; {within_p} within 0.1x Prometheus, {within_v} within 0.3x VictoriaMetrics"
        );
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
