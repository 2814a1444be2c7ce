//! The real `sextant` binary: every endpoint over HTTP, clean shutdown on
//! SIGTERM, and restarts that replay the WAL (after SIGTERM and after SIGKILL).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{enc, free_port, get, request};
use prost::Message;
use sextant_ingest::remote_write::v1;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, log: &std::path::Path) -> Server {
    let port = free_port();
    let logf = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .args([
            "--wal-fsync",
            "never",
            "--log-level",
            "info",
            "--otlp-grpc-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .expect("spawn sextant");
    // Wrapped at once, so that the process is killed and reaped on any panic.
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && get(&server.base, "/-/ready").status == 200 {
            return server;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "sextant did not become ready; log: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn signal(s: &Server, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &s.child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} failed");
}

fn write(base: &str, name: &str, t_ms: i64, v: f64) {
    let req = v1::WriteRequest {
        timeseries: vec![v1::TimeSeries {
            labels: vec![v1::Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: vec![v1::Sample {
                value: v,
                timestamp: t_ms,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy");
    let r = request(
        base,
        "POST",
        "/api/v1/write",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "snappy"),
        ],
        &body,
    );
    assert_eq!(r.status, 204, "{}", r.text());
}

fn value_of(base: &str, q: &str, t_s: i64) -> Option<String> {
    let j = get(base, &format!("/api/v1/query?query={}&time={t_s}", enc(q))).json();
    j["data"]["result"][0]["value"][1].as_str().map(str::to_string)
}

#[test]
fn binary_serves_every_endpoint_and_survives_restarts() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let log = dir.path().join("log.txt");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let t_s = now_ms / 1000;
    let s = start(&data, &log);
    write(&s.base, "gpu_power_watts", now_ms, 312.5);
    for path in [
        format!("/api/v1/query?query=gpu_power_watts&time={t_s}"),
        format!(
            "/api/v1/query_range?query=gpu_power_watts&start={}&end={t_s}&step=15",
            t_s - 60
        ),
        "/api/v1/series?match[]=gpu_power_watts".into(),
        "/api/v1/labels".into(),
        "/api/v1/label/__name__/values".into(),
        "/api/v1/metadata".into(),
        "/api/v1/query_exemplars?query=gpu_power_watts".into(),
        "/api/v1/format_query?query=gpu_power_watts".into(),
        "/api/v1/parse_query?query=gpu_power_watts".into(),
        "/api/v1/status/buildinfo".into(),
        "/api/v1/status/tsdb".into(),
        "/api/v1/status/flags".into(),
        "/api/v1/status/runtimeinfo".into(),
        "/api/v1/rules".into(),
        "/api/v1/alerts".into(),
    ] {
        let r = get(&s.base, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["status"], "success", "{path}");
    }
    let flags = get(&s.base, "/api/v1/status/flags").json();
    assert_eq!(flags["data"]["storage.tsdb.wal-fsync"], "never");
    assert_eq!(get(&s.base, "/-/healthy").status, 200);
    assert!(get(&s.base, "/metrics").text().contains("sextant_head_series 1"));
    // SIGTERM: a clean exit, and the data is back after restart.
    signal(&s, "-TERM");
    let mut s = s;
    let t = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().expect("wait") {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("received SIGTERM") && text.contains("shutting down"),
        "{text}"
    );
    drop(s);
    let s = start(&data, &log);
    assert_eq!(
        value_of(&s.base, "gpu_power_watts", t_s + 1).as_deref(),
        Some("312.5"),
        "after restart; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("replayed_samples") && text.contains("store open"),
        "{text}"
    );
    // SIGKILL right after an acknowledged write loses nothing.
    write(&s.base, "gpu_power_watts", now_ms + 15_000, 300.0);
    signal(&s, "-KILL");
    drop(s);
    let s = start(&data, &log);
    assert_eq!(value_of(&s.base, "gpu_power_watts", t_s + 16).as_deref(), Some("300"));
}
