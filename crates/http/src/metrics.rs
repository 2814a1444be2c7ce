//! Self-monitoring counters, rendered in the Prometheus text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sextant_storage::Db;

const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let c = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {c}");
        let brace = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            brace(labels),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{} {c}", brace(labels));
    }
}

/// Counters kept by the HTTP layer.
#[derive(Default)]
pub struct HttpMetrics {
    pub requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub instant_queries: Histogram,
    pub range_queries: Histogram,
    pub query_errors: AtomicU64,
    pub queries_timed_out_in_queue: AtomicU64,
    pub write_requests: AtomicU64,
    pub write_samples: AtomicU64,
    pub write_invalid_series: AtomicU64,
    pub write_histograms_rejected: AtomicU64,
    pub write_decode_errors: AtomicU64,
    /// Remote-write requests that waited for room in the decode budget.
    pub write_decode_waits: AtomicU64,
    pub write_latency: Histogram,
}

impl HttpMetrics {
    pub fn count_request(&self, handler: &str, code: u16) {
        *self.requests.lock().entry((handler.to_string(), code)).or_default() += 1;
    }
}

fn proc_stats() -> (Option<u64>, Option<f64>) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096);
    let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        let after = s.rsplit(')').next()?;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ut: f64 = f.get(11)?.parse().ok()?;
        let st: f64 = f.get(12)?.parse().ok()?;
        Some((ut + st) / 100.0)
    });
    (rss, cpu)
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// The whole `/metrics` page.
pub fn render(m: &HttpMetrics, db: &Db) -> String {
    let mut out = String::with_capacity(8192);
    let s = db.metrics();
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        &mut out,
        "sextant_samples_appended_total",
        "Samples written to the WAL and head.",
        l(&s.samples_appended),
    );
    counter(
        &mut out,
        "sextant_samples_duplicate_total",
        "Samples identical to one already stored, accepted silently.",
        l(&s.samples_duplicate),
    );
    let _ = writeln!(out, "# HELP sextant_samples_rejected_total Samples rejected, by reason.\n# TYPE sextant_samples_rejected_total counter");
    for (reason, v) in [
        ("out_of_order", l(&s.rejected_out_of_order)),
        ("too_old", l(&s.rejected_too_old)),
        ("duplicate_timestamp", l(&s.rejected_duplicate_timestamp)),
        ("series_limit", l(&s.rejected_series_limit)),
        ("invalid_series", l(&m.write_invalid_series)),
        ("native_histogram", l(&m.write_histograms_rejected)),
    ] {
        let _ = writeln!(out, "sextant_samples_rejected_total{{reason=\"{reason}\"}} {v}");
    }
    counter(
        &mut out,
        "sextant_series_created_total",
        "Series created in the head.",
        l(&s.series_created),
    );
    gauge(
        &mut out,
        "sextant_head_series",
        "Series in the head.",
        db.head_series() as f64,
    );
    gauge(
        &mut out,
        "sextant_head_bytes",
        "Approximate heap bytes held by the head.",
        db.head_bytes() as f64,
    );
    gauge(
        &mut out,
        "sextant_blocks",
        "Persisted blocks.",
        db.blocks().len() as f64,
    );
    counter(&mut out, "sextant_wal_fsyncs_total", "WAL fsyncs.", l(&s.wal_fsyncs));
    counter(&mut out, "sextant_commits_total", "Appender commits.", l(&s.commits));
    gauge(
        &mut out,
        "sextant_commit_seconds_total",
        "Time spent in appender commits.",
        l(&s.commit_micros) as f64 / 1e6,
    );
    counter(
        &mut out,
        "sextant_head_cuts_total",
        "Head ranges cut into blocks.",
        l(&s.head_cuts),
    );
    counter(
        &mut out,
        "sextant_compactions_total",
        "Block compactions.",
        l(&s.compactions),
    );
    counter(
        &mut out,
        "sextant_compaction_failures_total",
        "Failed block compactions.",
        l(&s.compaction_failures),
    );
    gauge(
        &mut out,
        "sextant_compaction_seconds_total",
        "Time spent compacting.",
        l(&s.compaction_micros) as f64 / 1e6,
    );
    counter(
        &mut out,
        "sextant_retention_deleted_blocks_total",
        "Blocks deleted by retention.",
        l(&s.blocks_deleted_by_retention),
    );
    counter(
        &mut out,
        "sextant_remote_write_requests_total",
        "Remote-write requests received.",
        l(&m.write_requests),
    );
    counter(
        &mut out,
        "sextant_remote_write_samples_total",
        "Samples received by remote write in valid series.",
        l(&m.write_samples),
    );
    counter(
        &mut out,
        "sextant_remote_write_decode_errors_total",
        "Remote-write bodies that could not be decoded.",
        l(&m.write_decode_errors),
    );
    counter(
        &mut out,
        "sextant_remote_write_decode_waits_total",
        "Remote-write requests that waited for room in the decode budget (--write-decode-bytes).",
        l(&m.write_decode_waits),
    );
    let _ = writeln!(out, "# HELP sextant_remote_write_seconds Remote-write request latency.\n# TYPE sextant_remote_write_seconds histogram");
    m.write_latency.render(&mut out, "sextant_remote_write_seconds", "");
    let _ = writeln!(
        out,
        "# HELP sextant_query_seconds Query latency by type.\n# TYPE sextant_query_seconds histogram"
    );
    m.instant_queries
        .render(&mut out, "sextant_query_seconds", "type=\"instant\"");
    m.range_queries
        .render(&mut out, "sextant_query_seconds", "type=\"range\"");
    counter(
        &mut out,
        "sextant_query_errors_total",
        "Queries that failed.",
        l(&m.query_errors),
    );
    counter(
        &mut out,
        "sextant_queries_timed_out_in_queue_total",
        "Requests that found every query slot busy for their whole timeout.",
        l(&m.queries_timed_out_in_queue),
    );
    let _ = writeln!(out, "# HELP sextant_http_requests_total HTTP requests by handler and status code.\n# TYPE sextant_http_requests_total counter");
    for ((h, c), v) in m.requests.lock().iter() {
        let _ = writeln!(out, "sextant_http_requests_total{{handler=\"{h}\",code=\"{c}\"}} {v}");
    }
    let (rss, cpu) = proc_stats();
    if let Some(r) = rss {
        gauge(
            &mut out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            r as f64,
        );
    }
    if let Some(c) = cpu {
        counter(
            &mut out,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            0,
        );
        // Replace the integer placeholder with the float value.
        let tail = format!("process_cpu_seconds_total {c}\n");
        if let Some(pos) = out.rfind("process_cpu_seconds_total 0\n") {
            out.replace_range(pos.., &tail);
        }
    }
    out
}
