//! Measures what criterion does not: bytes per sample on disk after a flush and
//! memory per active series, for a fleet of `--series N` (default 139,520)
//! scraped every 15 s for 2 h. Prints a Markdown table.
//!
//! `cargo run --release -p sextant-benches --bin storage_report -- --series 139520`

use std::time::Instant;

use sextant_benches::{bench_options, fleet, load_timed, load_timed_by_ref, rss_bytes};

fn main() {
    let n = sextant_benches::series_arg(139_520);
    let steps = 480; // 2 h at 15 s
    let f = fleet(n);
    let series = f.series.len();
    let dir = tempfile::tempdir().expect("tempdir");
    let rss0 = rss_bytes();
    let db = sextant_storage::Db::open(dir.path(), bench_options()).expect("open");
    let t0 = 1_764_547_200_000;
    // First hour by labels, second hour by series references.
    let (s1, secs1) = load_timed(&db, &f, t0, steps / 2, 15_000);
    let (s2, secs2) = load_timed_by_ref(&db, &f, t0 + (steps / 2) as i64 * 15_000, steps - steps / 2, 15_000);
    let samples = s1 + s2;
    let head_bytes = db.head_bytes();
    let rss1 = rss_bytes();
    let wal = sextant_storage_wal_bytes(dir.path());
    let flush_start = Instant::now();
    let metas = db.flush().expect("flush");
    let flush_secs = flush_start.elapsed().as_secs_f64();
    let mut block_bytes = 0u64;
    for e in std::fs::read_dir(dir.path().join("blocks")).expect("blocks") {
        for f in std::fs::read_dir(e.expect("entry").path()).expect("block") {
            block_bytes += f.expect("file").metadata().expect("meta").len();
        }
    }
    let ts_cols: u64 = metas.iter().map(|m| m.stats.num_ts_columns).sum();
    let shared: u64 = metas.iter().map(|m| m.stats.num_shared_ts_columns).sum();
    println!("| measure | value |\n| --- | --- |");
    println!("| series | {series} |");
    println!("| samples (2 h at 15 s) | {samples} |");
    println!(
        "| append rate by labels (samples/s, one thread, one commit per scrape) | {:.0} |",
        s1 as f64 / secs1
    );
    println!(
        "| append rate by series reference (samples/s, one thread) | {:.0} |",
        s2 as f64 / secs2
    );
    println!(
        "| head heap bytes per active series | {:.0} |",
        head_bytes as f64 / series as f64
    );
    println!(
        "| RSS growth per active series | {:.0} |",
        (rss1.saturating_sub(rss0)) as f64 / series as f64
    );
    println!("| WAL bytes per sample | {:.2} |", wal as f64 / samples as f64);
    println!(
        "| block bytes per sample (index, chunks, meta) | {:.3} |",
        block_bytes as f64 / samples as f64
    );
    println!("| timestamp columns stored / reused | {ts_cols} / {shared} |");
    println!("| flush time (s) | {flush_secs:.1} |");
}

fn sextant_storage_wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("wal"))
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}
