//! Pre-encoded remote-write requests of the synthetic fleet, kept as files,
//! and their replay over several keep-alive connections to any URL.
//!
//! A request directory holds `manifest.json` and one file a request,
//! `NNNNNN.rw1.snappy`: the body exactly as it is POSTed (a remote-write 1.0
//! `WriteRequest`, snappy block-compressed). Request `i` carries
//! `series_per_request` series with `samples_per_series` consecutive samples
//! each; the requests of one time window come together, `per_window` of them,
//! so request `i` holds the samples that follow those of request
//! `i - per_window` for the same series. The replay never starts request `i`
//! before request `i - per_window` is acknowledged, so every series receives its
//! samples in order whatever the number of connections, as a remote-write
//! client's shards do.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use sextant_fleet::send::{Client, Target};
use sextant_fleet::Fleet;
use sextant_ingest::remote_write::v1;

/// First sample's timestamp: 2025-12-01T00:00:00Z.
pub const T0: i64 = 1_764_547_200_000;
/// Scrape interval of the requests.
pub const INTERVAL_MS: i64 = 15_000;
const SERIES_PER_REQUEST: usize = 5000;
const SAMPLES_PER_SERIES: usize = 40;

/// What a request directory holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Series asked of the fleet generator, and what it made.
    pub series_asked: usize,
    pub series: usize,
    pub hours: i64,
    pub t0: i64,
    pub interval_ms: i64,
    pub samples: usize,
    pub requests: usize,
    pub per_window: usize,
    pub series_per_request: usize,
    pub samples_per_series: usize,
}

impl Manifest {
    fn to_json(&self) -> String {
        serde_json::json!({
            "format": "sextant fleet remote-write requests 1",
            "series_asked": self.series_asked,
            "series": self.series,
            "hours": self.hours,
            "t0": self.t0,
            "interval_ms": self.interval_ms,
            "samples": self.samples,
            "requests": self.requests,
            "per_window": self.per_window,
            "series_per_request": self.series_per_request,
            "samples_per_series": self.samples_per_series,
        })
        .to_string()
    }

    fn from_json(text: &str) -> Result<Manifest, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("manifest.json: {e}"))?;
        if v["format"] != "sextant fleet remote-write requests 1" {
            return Err(format!("manifest.json: unknown format {}", v["format"]));
        }
        let n = |k: &str| -> Result<i64, String> {
            v[k].as_i64()
                .ok_or_else(|| format!("manifest.json: {k:?} is missing or not an integer"))
        };
        Ok(Manifest {
            series_asked: n("series_asked")? as usize,
            series: n("series")? as usize,
            hours: n("hours")?,
            t0: n("t0")?,
            interval_ms: n("interval_ms")?,
            samples: n("samples")? as usize,
            requests: n("requests")? as usize,
            per_window: n("per_window")? as usize,
            series_per_request: n("series_per_request")? as usize,
            samples_per_series: n("samples_per_series")? as usize,
        })
    }
}

fn request_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{i:06}.rw1.snappy"))
}

/// Reads a directory's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    Manifest::from_json(&text)
}

/// Encodes `hours` of the fleet of about `series` series into `dir`, unless
/// `dir` already holds exactly that (its manifest says so and every file is
/// there). Returns the manifest and whether it encoded anything.
pub fn encode(dir: &Path, series: usize, hours: i64) -> Result<(Manifest, bool), String> {
    if let Ok(m) = read_manifest(dir) {
        let complete = (0..m.requests).all(|i| request_path(dir, i).is_file());
        if m.series_asked == series && m.hours == hours && complete {
            return Ok((m, false));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // A stale manifest must not describe a half-written directory.
    let _ = std::fs::remove_file(dir.join("manifest.json"));
    let fleet = Fleet::new(&sextant_fleet::FleetSpec::with_series(series));
    let steps = (hours * 3_600_000 / INTERVAL_MS) as usize;
    let mut samples = 0usize;
    let mut requests = 0usize;
    let mut per_window = 0usize;
    for s0 in (0..steps).step_by(SAMPLES_PER_SERIES) {
        let mut in_window = 0;
        for first in (0..fleet.series.len()).step_by(SERIES_PER_REQUEST) {
            let mut req = v1::WriteRequest::default();
            for i in first..(first + SERIES_PER_REQUEST).min(fleet.series.len()) {
                let labels = fleet.series[i]
                    .labels
                    .iter()
                    .map(|l| v1::Label {
                        name: l.name.to_string(),
                        value: l.value.to_string(),
                    })
                    .collect();
                let smp: Vec<v1::Sample> = (s0..(s0 + SAMPLES_PER_SERIES).min(steps))
                    .map(|k| {
                        let t = T0 + k as i64 * INTERVAL_MS;
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
            let body = snap::raw::Encoder::new()
                .compress_vec(&req.encode_to_vec())
                .map_err(|e| format!("snappy: {e}"))?;
            let p = request_path(dir, requests);
            std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
            requests += 1;
            in_window += 1;
        }
        per_window = per_window.max(in_window);
    }
    let m = Manifest {
        series_asked: series,
        series: fleet.series.len(),
        hours,
        t0: T0,
        interval_ms: INTERVAL_MS,
        samples,
        requests,
        per_window,
        series_per_request: SERIES_PER_REQUEST,
        samples_per_series: SAMPLES_PER_SERIES,
    };
    let p = dir.join("manifest.json");
    std::fs::write(&p, m.to_json()).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok((m, true))
}

/// Reads every request of a directory into memory, so that the replay reads
/// no file.
pub fn load(dir: &Path) -> Result<(Manifest, Vec<Vec<u8>>), String> {
    let m = read_manifest(dir)?;
    let mut bodies = Vec::with_capacity(m.requests);
    for i in 0..m.requests {
        let p = request_path(dir, i);
        bodies.push(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
    }
    Ok((m, bodies))
}

/// How a replay went.
#[derive(Debug)]
pub struct Replay {
    pub requests: usize,
    pub secs: f64,
    /// The first refusal or transport error, if any (the replay stops there).
    pub error: Option<String>,
}

/// POSTs `bodies` to `url` over `connections` keep-alive connections, in
/// order per series: request `i` starts only once request `i - per_window` has
/// been acknowledged (see the module's note). Stops at the first error.
pub fn replay(url: &str, bodies: &[Vec<u8>], per_window: usize, connections: usize) -> Replay {
    let target = match Target::parse(url) {
        Ok(t) => t,
        Err(e) => {
            return Replay {
                requests: 0,
                secs: 0.0,
                error: Some(e),
            }
        }
    };
    let connections = connections.max(1);
    let per_window = per_window.max(1);
    let next = AtomicUsize::new(0);
    let sent = AtomicUsize::new(0);
    let done: Vec<AtomicBool> = (0..bodies.len()).map(|_| AtomicBool::new(false)).collect();
    let failed = AtomicBool::new(false);
    let error = std::sync::Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..connections {
            let target = target.clone();
            let (next, sent, done, failed, error) = (&next, &sent, &done, &failed, &error);
            sc.spawn(move || {
                let mut client = Client::new(target);
                loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= bodies.len() {
                        return;
                    }
                    if i >= per_window {
                        let waited = Instant::now();
                        while !done[i - per_window].load(Ordering::Acquire) {
                            if failed.load(Ordering::Relaxed) {
                                return;
                            }
                            if waited.elapsed() > Duration::from_secs(600) {
                                fail(
                                    failed,
                                    error,
                                    format!("request {i}: waited 600 s for request {}", i - per_window),
                                );
                                return;
                            }
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    match client.post_remote_write(&bodies[i]) {
                        Ok(r) if r.status < 300 => {
                            done[i].store(true, Ordering::Release);
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            let body: String = String::from_utf8_lossy(&r.body).chars().take(300).collect();
                            fail(failed, error, format!("request {i}: status {}: {body}", r.status));
                            return;
                        }
                        Err(e) => {
                            fail(failed, error, format!("request {i}: {e}"));
                            return;
                        }
                    }
                }
            });
        }
    });
    Replay {
        requests: sent.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
        error: error.into_inner().unwrap_or_else(|p| p.into_inner()),
    }
}

fn fail(failed: &AtomicBool, error: &std::sync::Mutex<Option<String>>, msg: String) {
    failed.store(true, Ordering::Relaxed);
    let mut e = error.lock().unwrap_or_else(|p| p.into_inner());
    if e.is_none() {
        *e = Some(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    #[test]
    fn encoding_is_deterministic_and_reused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (ma, fresh) = encode(a.path(), 2000, 1).unwrap();
        assert!(fresh);
        let (mb, _) = encode(b.path(), 2000, 1).unwrap();
        assert_eq!(ma, mb);
        assert_eq!(ma.samples, ma.series * 240);
        assert_eq!(ma.requests, ma.per_window * 6);
        for i in 0..ma.requests {
            assert_eq!(
                std::fs::read(request_path(a.path(), i)).unwrap(),
                std::fs::read(request_path(b.path(), i)).unwrap()
            );
        }
        // The same parameters reuse the files; others re-encode.
        assert!(!encode(a.path(), 2000, 1).unwrap().1);
        std::fs::remove_file(request_path(a.path(), 3)).unwrap();
        assert!(encode(a.path(), 2000, 1).unwrap().1);
        let (m2, fresh) = encode(a.path(), 1000, 1).unwrap();
        assert!(fresh && m2.series < ma.series);
        let (m, bodies) = load(a.path()).unwrap();
        assert_eq!((m, bodies.len()), (m2.clone(), m2.requests));
    }

    /// A server that records the order in which request bodies arrive, over
    /// how many connections, and refuses the body `refuse` if given.
    /// Stops accepting after `expect` bodies or three seconds.
    /// The bodies received, in order, and the connections they came on.
    type Received = (Vec<Vec<u8>>, usize);

    fn recorder(refuse: Option<Vec<u8>>, expect: usize) -> (String, std::thread::JoinHandle<Received>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            l.set_nonblocking(true).unwrap();
            let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut conns = Vec::new();
            let idle = Instant::now();
            while idle.elapsed() < Duration::from_secs(3) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let got = got.clone();
                        let refuse = refuse.clone();
                        conns.push(std::thread::spawn(move || {
                            let mut r = BufReader::new(s);
                            loop {
                                let mut len = 0usize;
                                let mut line = String::new();
                                loop {
                                    line.clear();
                                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if line.trim().is_empty() {
                                        break;
                                    }
                                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                        len = v.trim().parse().unwrap();
                                    }
                                }
                                let mut body = vec![0; len];
                                r.read_exact(&mut body).unwrap();
                                let bad = refuse.as_ref() == Some(&body);
                                got.lock().unwrap().push(body);
                                let resp: &[u8] = if bad {
                                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nnope"
                                } else {
                                    b"HTTP/1.1 204 No Content\r\n\r\n"
                                };
                                r.get_mut().write_all(resp).unwrap();
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
                if got.lock().unwrap().len() >= expect {
                    break;
                }
            }
            let n = conns.len();
            drop(l);
            for c in conns {
                let _ = c.join();
            }
            let v = got.lock().unwrap().clone();
            (v, n)
        });
        (url, h)
    }

    #[test]
    fn replay_keeps_series_order_over_several_connections() {
        // Sixty bodies, three a window: body i must come after body i - 3.
        let bodies: Vec<Vec<u8>> = (0..60u8).map(|i| vec![i; 10 + i as usize]).collect();
        let (url, h) = recorder(None, 60);
        let r = replay(&url, &bodies, 3, 4);
        assert_eq!(r.error, None);
        assert_eq!(r.requests, 60);
        let (got, conns) = h.join().unwrap();
        assert_eq!(got.len(), 60);
        // One connection a worker, kept alive (a worker that found no work
        // never connects).
        assert!((2..=4).contains(&conns), "{conns} connections");
        let pos = |i: usize| got.iter().position(|b| *b == bodies[i]).unwrap();
        for i in 3..60 {
            assert!(pos(i - 3) < pos(i), "body {i} before body {}", i - 3);
        }
    }

    #[test]
    fn replay_stops_at_a_refusal_and_names_it() {
        let bodies: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 4]).collect();
        let (url, h) = recorder(Some(bodies[5].clone()), 6);
        let r = replay(&url, &bodies, 3, 2);
        let e = r.error.expect("an error");
        assert!(
            e.contains("request 5") && e.contains("400") && e.contains("nope"),
            "{e}"
        );
        assert!(r.requests < 12);
        let _ = h.join();
        let r = replay("https://x/", &bodies, 3, 2);
        assert!(r.error.unwrap().contains("http://"));
    }
}
