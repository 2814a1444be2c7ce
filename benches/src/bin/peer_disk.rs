//! Loads the same inference-fleet data into Sextant, Prometheus and
//! VictoriaMetrics over remote write, in one run, makes each persist it, and
//! reports on-disk bytes per sample, ingest CPU seconds per million samples and
//! peak RSS per series. Every server listens on 127.0.0.1 only and is stopped
//! by its PID.
//!
//! ```text
//! cargo build --release -p sextant -p sextant-benches
//! target/release/peer_disk --series 139520 --hours 2 --sextant target/release/sextant
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use sextant_fleet::Fleet;
use sextant_ingest::remote_write::v1;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
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
    let args: Vec<String> = std::env::args().collect();
    let n: usize = arg(&args, "--series").and_then(|s| s.parse().ok()).unwrap_or(139_520);
    let hours: i64 = arg(&args, "--hours").and_then(|s| s.parse().ok()).unwrap_or(2);
    let sextant_bin = arg(&args, "--sextant").unwrap_or_else(|| "target/release/sextant".into());
    let fleet = sextant_benches::fleet(n);
    let steps = (hours * 240) as usize;
    let t0 = 1_764_547_200_000i64;
    // Pre-encode: each request holds 5,000 series with 40 consecutive samples.
    let started = Instant::now();
    let mut bodies = Vec::new();
    let mut samples = 0usize;
    for s0 in (0..steps).step_by(40) {
        for chunk in (0..fleet.series.len()).collect::<Vec<_>>().chunks(5000) {
            let mut req = v1::WriteRequest::default();
            for &i in chunk {
                let labels = fleet.series[i]
                    .labels
                    .iter()
                    .map(|l| v1::Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect();
                let smp: Vec<v1::Sample> = (s0..(s0 + 40).min(steps))
                    .map(|k| {
                        let t = t0 + k as i64 * 15_000;
                        v1::Sample {
                            timestamp: t,
                            value: fleet.value(i, t),
                        }
                    })
                    .collect();
                samples += smp.len();
                req.timeseries.push(v1::TimeSeries {
                    labels,
                    samples: smp,
                    ..Default::default()
                });
            }
            bodies.push(
                snap::raw::Encoder::new()
                    .compress_vec(&req.encode_to_vec())
                    .expect("snappy"),
            );
        }
    }
    eprintln!(
        "encoded {samples} samples of {} series in {} requests ({:.1}s)",
        fleet.series.len(),
        bodies.len(),
        started.elapsed().as_secs_f64()
    );
    let root = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    for name in ["sextant", "prometheus", "victoria-metrics"] {
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
        let mut peak_rss = 0u64;
        for b in &bodies {
            let r = http(
                port,
                "POST",
                "/api/v1/write",
                &[
                    ("Content-Type", "application/x-protobuf"),
                    ("Content-Encoding", "snappy"),
                    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
                ],
                b,
            );
            match r {
                Some((s, _)) if s < 300 => {}
                other => panic!(
                    "{name} rejected a write: {:?}",
                    other.map(|x| x.1.chars().take(300).collect::<String>())
                ),
            }
            peak_rss = peak_rss.max(proc_usage(peer.child.id()).1);
        }
        let ingest_secs = t.elapsed().as_secs_f64();
        let (cpu1, rss) = proc_usage(peer.child.id());
        peak_rss = peak_rss.max(rss);
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
        let series = fleet.series.len() as f64;
        rows.push((
            name,
            on_disk as f64 / samples as f64,
            (cpu1 - cpu0) / (samples as f64 / 1e6),
            samples as f64 / ingest_secs,
            peak_rss as f64 / series,
        ));
        drop(peer);
    }
    println!(
        "Fleet: {} series, {} h at 15 s, {samples} samples; one run, same requests for every system.\n",
        fleet.series.len(),
        hours
    );
    println!("| system | bytes/sample on disk | ingest CPU s per 1M samples | ingest samples/s | peak RSS bytes per series |\n| --- | --- | --- | --- | --- |");
    for r in &rows {
        println!("| {} | {:.3} | {:.3} | {:.0} | {:.0} |", r.0, r.1, r.2, r.3, r.4);
    }
    if let Some(s) = rows.iter().find(|r| r.0 == "sextant") {
        for r in rows.iter().filter(|r| r.0 != "sextant") {
            println!(
                "\nSextant / {}: bytes per sample {:.2}x, ingest CPU {:.2}x, peak RSS per series {:.2}x",
                r.0,
                s.1 / r.1,
                s.2 / r.2,
                s.4 / r.4
            );
        }
    }
    let _ = Fleet::new;
}
