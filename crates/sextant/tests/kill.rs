//! The kill harness: a loader sends remote-write batches at a steady rate and
//! records which were acknowledged; the server is SIGKILLed at random moments
//! and restarted over the same directory. After every restart each
//! acknowledged sample is queried back, and no timestamp appears twice.
//! Iterations: `SEXTANT_KILL_ITERATIONS` (default 6).
//!
//! The server runs with one-minute blocks and each batch one second newer than
//! the last, so head cuts, WAL checkpoints and compactions happen all through
//! the load. A second test makes the server stop itself at each named step of
//! those (`SEXTANT_CRASH_AT`) while the load goes on.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, series, KillOnDrop};
use prost::Message;
use sextant_ingest::remote_write::v1;

const SERIES: usize = 40;

fn start(dir: &std::path::Path, port: u16) -> KillOnDrop {
    start_with(dir, port, None)
}

fn start_with(dir: &std::path::Path, port: u16, crash_at: Option<&str>) -> KillOnDrop {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sextant"));
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--otlp-grpc-listen",
        "off",
        "--block-range",
        "1m",
        "--retention-time",
        "0",
    ])
    .args(["--wal-fsync", "never", "--data-dir"])
    .arg(dir)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log_path(dir)).expect("log"));
    if let Some(p) = crash_at {
        cmd.env("SEXTANT_CRASH_AT", p);
    }
    let child = cmd.spawn().expect("spawn");
    let mut s = KillOnDrop(child);
    if crash_at.is_some() {
        // It may reach its crash point before it even listens.
        return s;
    }
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        let exited = s.0.try_wait().ok().flatten();
        if exited.is_some() || t.elapsed() > Duration::from_secs(60) {
            panic!(
                "server did not start ({exited:?}); log: {}",
                std::fs::read_to_string(log_path(dir)).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    s
}

fn log_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("server.log")
}

/// From the last start's log: (WAL bytes replayed, milliseconds to open the store).
fn replay_figures(dir: &std::path::Path) -> Option<(u64, u64)> {
    let log = std::fs::read_to_string(log_path(dir)).ok()?;
    let line = log.lines().rev().find(|l| l.contains("store open"))?;
    let field = |name: &str| -> Option<u64> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some((field("wal_bytes")?, field("elapsed_ms")?))
}

/// One POST without panicking on a dead server: `Some(status)` or `None`.
fn post(port: u16, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).ok()?;
    c.write_all(body).ok()?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).ok()?;
    let line = String::from_utf8_lossy(&out);
    line.split_whitespace().nth(1)?.parse().ok()
}

fn batch(name: &str, t: i64) -> Vec<u8> {
    let timeseries = (0..SERIES)
        .map(|i| series(&[("__name__", name), ("s", &format!("{i:02}"))], &[(t, t as f64)]))
        .collect();
    let req = v1::WriteRequest {
        timeseries,
        metadata: vec![],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

/// Ten days ago, so that a long run of one-second steps stays in the past.
fn t0() -> i64 {
    1000 * (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        - 10 * 86_400)
}

/// The loader: a batch every 2 ms, each one second of sample time after the
/// last, bounded in count (at most 5 days of sample time).
fn loader(
    name: &'static str,
    port: u16,
    t0: i64,
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut k = 0i64;
        while !stop.load(Ordering::Relaxed) && k < 400_000 {
            let t = t0 + k * 1000;
            if post(port, &batch(name, t)) == Some(204) {
                acked.lock().expect("lock").push(t);
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

fn wait_ready(base: &str) {
    let t = Instant::now();
    while common::get(base, "/-/ready").status != 200 {
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_server_stopped_inside_each_step_of_block_writes_and_compaction_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let t0 = t0();
    let acked: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = loader("crash_load", port, t0, acked.clone(), stop.clone());
    let points = [
        "block-before-rename",
        "block-after-rename",
        "cut-before-truncate",
        "checkpoint-written",
        "compact-before-delete",
        "block-delete-renamed",
        "compact-input-deleted",
    ];
    for point in points {
        let mut s = start_with(dir.path(), port, Some(point));
        let t = Instant::now();
        loop {
            if let Some(status) = s.0.try_wait().expect("try_wait") {
                assert!(!status.success(), "{point}: the server exited cleanly");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{point}: never reached");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(s);
        let before: Vec<i64> = acked.lock().expect("lock").clone();
        let _server = start(dir.path(), port);
        wait_ready(&base);
        check(&base, "crash_load", t0, &before);
        assert!(
            !dir.path().join("corrupted").exists(),
            "{point}: a block was quarantined"
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().expect("loader");
    let n = acked.lock().expect("lock").len();
    eprintln!(
        "{} crash points under load, {n} batches acknowledged, all present",
        points.len()
    );
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_sample() {
    let iterations: usize = std::env::var("SEXTANT_KILL_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let t0 = t0();
    let acked: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = Some(start(dir.path(), port));
    let loader = loader("kill_load", port, t0, acked.clone(), stop.clone());
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills = 0;
    let mut replays: Vec<(u64, u64)> = Vec::new();
    for _ in 0..iterations {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(150 + rng % 400));
        if let Some(mut s) = server.take() {
            let _ = s.0.kill();
            let _ = s.0.wait();
            kills += 1;
        }
        let before: Vec<i64> = acked.lock().expect("lock").clone();
        server = Some(start(dir.path(), port));
        wait_ready(&base);
        if let Some(f) = replay_figures(dir.path()) {
            replays.push(f);
        }
        check(&base, "kill_load", t0, &before);
    }
    stop.store(true, Ordering::Relaxed);
    loader.join().expect("loader");
    let all: Vec<i64> = acked.lock().expect("lock").clone();
    check(&base, "kill_load", t0, &all);
    eprintln!("{kills} kills, {} batches acknowledged, all present", all.len());
    assert_eq!(replays.len(), kills, "every restart logs what it replayed");
    let (bytes, ms) = replays.iter().fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
    let most = replays.iter().max_by_key(|r| r.0).copied().unwrap_or_default();
    eprintln!(
        "restarts: {} KiB of WAL replayed in {ms} ms in all; the largest, {} KiB, opened in {} ms",
        bytes / 1024,
        most.0 / 1024,
        most.1
    );
    assert!(
        kills >= iterations && all.len() > iterations * 10,
        "the load was too light to mean anything"
    );
}

/// Every acknowledged timestamp is stored for every series, once.
fn check(base: &str, name: &str, t0: i64, acked: &[i64]) {
    let Some(&last) = acked.last() else { return };
    let range_s = (last - t0) / 1000 + 5;
    let q = format!("{name}[{range_s}s]");
    let j = common::get(
        base,
        &format!("/api/v1/query?query={}&time={}", common::enc(&q), last as f64 / 1000.0),
    )
    .json();
    let result = j["data"]["result"].as_array().expect("matrix").clone();
    assert_eq!(result.len(), SERIES, "{j}");
    for s in &result {
        let ts: Vec<i64> = s["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|p| (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64)
            .collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "a timestamp stored twice");
        let set: std::collections::HashSet<i64> = ts.into_iter().collect();
        let missing: Vec<&i64> = acked.iter().filter(|t| !set.contains(t)).collect();
        assert!(
            missing.is_empty(),
            "acknowledged but lost: {} of {}, first {:?}, last {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)],
            missing.last()
        );
    }
}
