//! Real clients against Sextant: Prometheus 2.42 scrapes a target and
//! remote-writes to Sextant, and the same queries against both must agree;
//! promtool queries Sextant as it would Prometheus. Needs `prometheus` and
//! `promtool` on PATH (`.ci/run` installs them); outside CI a missing binary
//! skips the test with a printed reason.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{enc, free_port, get};

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn require(bin: &str) -> bool {
    if have(bin) {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{bin} is not installed; .ci/run must install the Debian package");
    }
    println!("SKIPPED: {bin} is not on PATH (apt-get install prometheus)");
    false
}

/// A scrape target whose counters grow by a fixed amount per scrape.
struct Target {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Target {
    fn start() -> Target {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind target");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let scrapes = Arc::new(AtomicU64::new(0));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                        let n = scrapes.fetch_add(1, Ordering::Relaxed) as f64;
                        let mut body = String::new();
                        body.push_str("# HELP vllm:generation_tokens_total Generated tokens.\n# TYPE vllm:generation_tokens_total counter\n");
                        for (m, r) in [("llama", 7.0), ("mistral", 13.0)] {
                            body.push_str(&format!(
                                "vllm:generation_tokens_total{{model_name=\"{m}\"}} {}\n",
                                n * r
                            ));
                        }
                        body.push_str("# TYPE vllm:kv_cache_usage_perc gauge\n");
                        body.push_str(&format!(
                            "vllm:kv_cache_usage_perc{{model_name=\"llama\"}} {}\n",
                            0.25 + (n % 4.0) / 10.0
                        ));
                        body.push_str("# TYPE vllm:time_to_first_token_seconds histogram\n");
                        let mut cum = 0.0;
                        for (i, le) in ["0.05", "0.1", "0.5", "1", "+Inf"].iter().enumerate() {
                            cum += n * (i as f64 + 1.0);
                            body.push_str(&format!(
                                "vllm:time_to_first_token_seconds_bucket{{model_name=\"llama\",le=\"{le}\"}} {cum}\n"
                            ));
                        }
                        body.push_str(&format!(
                            "vllm:time_to_first_token_seconds_count{{model_name=\"llama\"}} {cum}\n"
                        ));
                        body.push_str(&format!(
                            "vllm:time_to_first_token_seconds_sum{{model_name=\"llama\"}} {}\n",
                            n * 3.7
                        ));
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = c.write_all(resp.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Target {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Prometheus process, stopped by its PID when dropped.
struct Prom {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target_port: u16, write_url: &str) -> Prom {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: inference\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\nremote_write:\n  - url: {write_url}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n      max_samples_per_send: 500\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), cfg).expect("config");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prom { child, port, _dir: dir }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out waiting for {what}");
}

fn result_set(j: &serde_json::Value) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = j["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let v: f64 = s["value"][1].as_str().unwrap_or("NaN").parse().unwrap_or(f64::NAN);
                    (s["metric"].to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

#[test]
fn prometheus_remote_writes_and_both_answer_the_same() {
    if !require("prometheus") {
        return;
    }
    let s = sextant::TestServer::start().expect("sextant");
    let target = Target::start();
    let prom = start_prometheus(target.port, s.url());
    let pbase = format!("http://127.0.0.1:{}", prom.port);
    wait_for("samples from Prometheus in Sextant", Duration::from_secs(60), || {
        get(
            s.url(),
            &format!("/api/v1/query?query={}", enc("count_over_time(up[1m])")),
        )
        .json()["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n >= 12.0)
    });
    // Evaluate a few seconds back so that remote write has delivered everything.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        - 4.0;
    let queries = [
        "up",
        "vllm:generation_tokens_total",
        "rate(vllm:generation_tokens_total[5s])",
        "sum by (model_name) (increase(vllm:generation_tokens_total[8s]))",
        "vllm:kv_cache_usage_perc",
        "avg_over_time(vllm:kv_cache_usage_perc[6s])",
        "histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5s])))",
        "rate(vllm:time_to_first_token_seconds_sum[5s]) / rate(vllm:time_to_first_token_seconds_count[5s])",
        "topk(1, vllm:generation_tokens_total)",
        "count by (job) (scrape_samples_scraped)",
    ];
    let mut compared = 0;
    for q in queries {
        let path = format!("/api/v1/query?query={}&time={t:.3}", enc(q));
        let a = get(s.url(), &path).json();
        let b = get(&pbase, &path).json();
        assert_eq!(a["status"], "success", "sextant {q}: {a}");
        assert_eq!(b["status"], "success", "prometheus {q}: {b}");
        let (ra, rb) = (result_set(&a), result_set(&b));
        assert!(!rb.is_empty(), "Prometheus has no data for {q}");
        assert_eq!(ra.len(), rb.len(), "{q}: sextant {ra:?} vs prometheus {rb:?}");
        for (x, y) in ra.iter().zip(rb.iter()) {
            assert_eq!(x.0, y.0, "{q}: labels differ");
            assert!(close(x.1, y.1), "{q} {}: sextant {} vs prometheus {}", x.0, x.1, y.1);
        }
        compared += 1;
    }
    // A range query too.
    let path = format!(
        "/api/v1/query_range?query={}&start={:.3}&end={t:.3}&step=1",
        enc("sum(rate(vllm:generation_tokens_total[4s]))"),
        t - 6.0
    );
    let a = get(s.url(), &path).json();
    let b = get(&pbase, &path).json();
    assert_eq!(
        a["data"]["result"][0]["values"].as_array().map(|v| v.len()),
        b["data"]["result"][0]["values"].as_array().map(|v| v.len())
    );
    for (x, y) in a["data"]["result"][0]["values"]
        .as_array()
        .expect("a")
        .iter()
        .zip(b["data"]["result"][0]["values"].as_array().expect("b"))
    {
        assert_eq!(x[0], y[0]);
        let (xv, yv): (f64, f64) = (
            x[1].as_str().expect("v").parse().expect("f"),
            y[1].as_str().expect("v").parse().expect("f"),
        );
        assert!(close(xv, yv), "range point {x} vs {y}");
    }
    println!("compared {compared} instant queries and one range query with Prometheus 2.42: identical");
}

#[test]
fn promtool_queries_sextant() {
    if !require("promtool") {
        return;
    }
    let s = sextant::TestServer::start().expect("sextant");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    {
        let mut app = s.db().appender();
        let l = sextant_model::Labels::from_pairs([("__name__", "vllm:num_requests_running"), ("model_name", "llama")]);
        for k in 0..20 {
            app.append(&l, (now - 300 + k * 15) * 1000, k as f64);
        }
        app.commit().expect("commit");
    }
    let run = |args: &[&str]| {
        let out = Command::new("promtool").args(args).output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let t = (now - 300 + 19 * 15).to_string();
    let out = run(&["query", "instant", "--time", &t, s.url(), "vllm:num_requests_running"]);
    assert!(
        out.contains("vllm:num_requests_running{model_name=\"llama\"} => 19"),
        "{out}"
    );
    let (st, en) = ((now - 300).to_string(), (now - 300 + 60).to_string());
    let out = run(&[
        "query",
        "range",
        "--start",
        &st,
        "--end",
        &en,
        "--step",
        "15s",
        s.url(),
        "vllm:num_requests_running",
    ]);
    assert!(out.contains("0 @[") && out.contains("4 @["), "{out}");
    let out = run(&["query", "series", "--match", "vllm:num_requests_running", s.url()]);
    assert!(out.contains("model_name=\"llama\""), "{out}");
    let out = run(&["query", "labels", s.url(), "model_name"]);
    assert!(out.contains("llama"), "{out}");
}
