//! The live demo: backfills the fleet's recent history into any remote-write
//! URL, then keeps writing one scrape per interval, applying the incidents
//! scheduled or injected while it runs.
//!
//! Each connection owns a fixed share of the series and sends its requests in
//! time order, so no series ever arrives out of order.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sextant_model::STALE_NAN;

use crate::remote_write::{encode_labels, RequestBuilder};
use crate::send::{Client, Target};
use crate::{Fleet, FleetSpec, Incident, IncidentKind};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Remote-write URL, e.g. `http://127.0.0.1:9090/api/v1/write`.
    pub url: String,
    pub spec: FleetSpec,
    /// History written before going live (ms).
    pub backfill_ms: i64,
    /// Scrape interval (ms).
    pub interval_ms: i64,
    /// Parallel keep-alive connections.
    pub connections: usize,
    /// Series per request.
    pub batch: usize,
    /// Write nothing at or before this time (a store that already holds it).
    pub resume_after_ms: Option<i64>,
    /// Extra headers on every request, e.g. authorization.
    pub headers: Vec<(String, String)>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            url: "http://127.0.0.1:9090/api/v1/write".into(),
            spec: FleetSpec::demo(5_000),
            backfill_ms: 3 * 3_600_000,
            interval_ms: 15_000,
            connections: 2,
            batch: 5_000,
            resume_after_ms: None,
            headers: Vec::new(),
        }
    }
}

/// Counters of what the demo has sent.
#[derive(Debug, Default)]
pub struct DemoStats {
    pub samples: AtomicU64,
    pub requests: AtomicU64,
    pub failed_requests: AtomicU64,
    /// Connections that finished the backfill.
    pub backfilled: AtomicU64,
    /// Newest timestamp written (ms).
    pub newest_ms: AtomicU64,
    pub last_error: RwLock<Option<String>>,
}

/// A running demo.
pub struct Demo {
    pub fleet: Arc<Fleet>,
    pub config: DemoConfig,
    pub stats: Arc<DemoStats>,
    incidents: Arc<RwLock<Vec<Incident>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Demo {
    /// Starts sending; `schedule` holds incidents known in advance.
    pub fn start(config: DemoConfig, schedule: Vec<Incident>) -> Result<Demo, String> {
        let target = Target::parse(&config.url)?;
        if config.interval_ms <= 0 {
            return Err("the demo interval must be positive".into());
        }
        let fleet = Arc::new(Fleet::new(&config.spec));
        let labels: Arc<Vec<Vec<u8>>> = Arc::new(fleet.series.iter().map(|s| encode_labels(&s.labels)).collect());
        let incidents = Arc::new(RwLock::new(schedule));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DemoStats::default());
        let iv = config.interval_ms;
        let now = now_ms();
        let mut first = (now - config.backfill_ms.max(0)).div_euclid(iv) * iv;
        if let Some(r) = config.resume_after_ms {
            first = first.max((r.div_euclid(iv) + 1) * iv);
        }
        let n = fleet.series.len();
        let conns = config.connections.clamp(1, 64);
        let mut threads = Vec::new();
        for k in 0..conns {
            let range = (k * n / conns)..((k + 1) * n / conns);
            let (fleet, labels, incidents, stop, stats) = (
                fleet.clone(),
                labels.clone(),
                incidents.clone(),
                stop.clone(),
                stats.clone(),
            );
            let mut client = Client::new(target.clone());
            client.headers = config.headers.clone();
            let batch = config.batch.max(1);
            let t = std::thread::Builder::new()
                .name(format!("demo-{k}"))
                .spawn(move || {
                    let mut w = Writer {
                        fleet: &fleet,
                        labels: &labels,
                        client,
                        stats: &stats,
                        present: vec![false; range.len()],
                        range,
                        batch,
                        req: RequestBuilder::default(),
                    };
                    let mut t = first;
                    while !stop.load(Ordering::Relaxed) && t <= now_ms() {
                        let inc = incidents.read().map(|g| g.clone()).unwrap_or_default();
                        w.tick(t, &inc);
                        t += iv;
                    }
                    stats.backfilled.fetch_add(1, Ordering::Relaxed);
                    while !stop.load(Ordering::Relaxed) {
                        let wait = t - now_ms();
                        if wait > 0 {
                            std::thread::sleep(Duration::from_millis(wait.min(200) as u64));
                            continue;
                        }
                        // Far behind (a suspended laptop): skip to the present.
                        if wait < -2 * iv {
                            t = now_ms().div_euclid(iv) * iv;
                        }
                        let inc = incidents.read().map(|g| g.clone()).unwrap_or_default();
                        w.tick(t, &inc);
                        t += iv;
                    }
                })
                .map_err(|e| format!("starting a demo thread: {e}"))?;
            threads.push(t);
        }
        Ok(Demo {
            fleet,
            config,
            stats,
            incidents,
            stop,
            threads,
        })
    }

    /// Whether every connection has written its backfill.
    pub fn backfilled(&self) -> bool {
        self.stats.backfilled.load(Ordering::Relaxed) as usize >= self.threads.len()
    }

    pub fn incidents(&self) -> Vec<Incident> {
        self.incidents.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Starts an incident now, lasting `duration_ms` or until ended.
    pub fn inject(&self, kind: IncidentKind, target: usize, duration_ms: Option<i64>) -> Incident {
        let start_ms = now_ms();
        let x = Incident {
            kind,
            start_ms,
            end_ms: duration_ms.map(|d| start_ms + d),
            target,
        };
        if let Ok(mut g) = self.incidents.write() {
            g.push(x.clone());
        }
        x
    }

    /// Ends every incident still active; returns how many.
    pub fn end_all(&self) -> usize {
        let now = now_ms();
        let mut n = 0;
        if let Ok(mut g) = self.incidents.write() {
            for x in g.iter_mut().filter(|x| x.active(now)) {
                x.end_ms = Some(now);
                n += 1;
            }
        }
        n
    }

    /// Asks every connection to stop after its current request.
    pub fn halt(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops sending and waits for the connections to finish.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Writer<'a> {
    fleet: &'a Fleet,
    labels: &'a [Vec<u8>],
    client: Client,
    stats: &'a DemoStats,
    range: std::ops::Range<usize>,
    present: Vec<bool>,
    batch: usize,
    req: RequestBuilder,
}

impl Writer<'_> {
    fn tick(&mut self, t: i64, incidents: &[Incident]) {
        for (j, i) in self.range.clone().enumerate() {
            match self.fleet.value_at(i, t, incidents) {
                Some(v) => {
                    self.req.push(&self.labels[i], t, v);
                    self.present[j] = true;
                }
                // A series that stops gets a stale marker, as a scraper sends.
                None if self.present[j] => {
                    self.req.push(&self.labels[i], t, STALE_NAN);
                    self.present[j] = false;
                }
                None => {}
            }
            if self.req.len() >= self.batch {
                self.flush();
            }
        }
        self.flush();
        self.stats.newest_ms.fetch_max(t as u64, Ordering::Relaxed);
    }

    fn flush(&mut self) {
        if self.req.is_empty() {
            return;
        }
        let n = self.req.len() as u64;
        let body = self.req.finish();
        // Retry a refused or failed request a few times, then drop it.
        for attempt in 0..4 {
            match self.client.post_remote_write(&body) {
                Ok(r) if (200..300).contains(&r.status) => {
                    self.stats.samples.fetch_add(n, Ordering::Relaxed);
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(r) => {
                    let msg = format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body).trim());
                    if let Ok(mut g) = self.stats.last_error.write() {
                        *g = Some(msg);
                    }
                    if r.status < 500 && r.status != 429 {
                        break;
                    }
                }
                Err(e) => {
                    if let Ok(mut g) = self.stats.last_error.write() {
                        *g = Some(format!("{e}"));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100 << attempt));
        }
        self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
    }
}
