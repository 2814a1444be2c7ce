//! Shared setup for Sextant's benchmarks: loading a synthetic inference fleet
//! into a store.

pub mod requests;

use sextant_fleet::{Fleet, FleetSpec};
use sextant_storage::{Db, FsyncPolicy, Options};

/// Options for benchmark stores: no fsync, no background thread.
pub fn bench_options() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        background: false,
        retention_ms: None,
        ..Options::default()
    }
}

/// Appends `steps` scrapes of the fleet every `interval_ms` from `t0`, one commit
/// per scrape; returns the number of samples written.
pub fn load(db: &Db, fleet: &Fleet, t0: i64, steps: usize, interval_ms: i64) -> usize {
    load_timed(db, fleet, t0, steps, interval_ms).0
}

/// Like [`load`], also returning the seconds spent in the `Db` API alone
/// (generating the fleet's values is not counted).
pub fn load_timed(db: &Db, fleet: &Fleet, t0: i64, steps: usize, interval_ms: i64) -> (usize, f64) {
    timed_scrapes(db, fleet, t0, steps, interval_ms, |app, t, values| {
        for (s, v) in fleet.series.iter().zip(values) {
            app.append(&s.labels, t, *v);
        }
    })
}

/// Like [`load_timed`], appending through series references obtained once.
pub fn load_timed_by_ref(db: &Db, fleet: &Fleet, t0: i64, steps: usize, interval_ms: i64) -> (usize, f64) {
    let refs: Vec<sextant_storage::SeriesRef> = fleet
        .series
        .iter()
        .map(|s| db.series_ref(&s.labels).expect("ref"))
        .collect();
    timed_scrapes(db, fleet, t0, steps, interval_ms, |app, t, values| {
        for (r, v) in refs.iter().zip(values) {
            app.append_ref(r, t, *v);
        }
    })
}

/// Runs `steps` scrapes, each one commit filled by `fill`, timing only the `Db` calls.
fn timed_scrapes(
    db: &Db,
    fleet: &Fleet,
    t0: i64,
    steps: usize,
    interval_ms: i64,
    mut fill: impl FnMut(&mut sextant_storage::Appender<'_>, i64, &[f64]),
) -> (usize, f64) {
    let mut n = 0;
    let mut secs = 0.0;
    let mut values = vec![0.0; fleet.series.len()];
    for k in 0..steps {
        let t = t0 + k as i64 * interval_ms;
        for (i, v) in values.iter_mut().enumerate() {
            *v = fleet.value(i, t);
        }
        let started = std::time::Instant::now();
        let mut app = db.appender();
        fill(&mut app, t, &values);
        n += app.len();
        let rep = app.commit().expect("commit");
        secs += started.elapsed().as_secs_f64();
        assert_eq!(rep.rejected_count, 0);
    }
    (n, secs)
}

/// A fleet of about `series` series.
pub fn fleet(series: usize) -> Fleet {
    Fleet::new(&FleetSpec::with_series(series))
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|p| p * 4096)
        .unwrap_or(0)
}

/// The value after `--name` on the command line, if given.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `--series N` from the command line, or `default`.
pub fn series_arg(default: usize) -> usize {
    arg("--series").and_then(|s| s.parse().ok()).unwrap_or(default)
}
