//! How long a store takes to open again after a crash, against the size of
//! its WAL: the fleet of `--series N` (default 20,000) is written for 30 min,
//! 1 h and 2 h at 15 s into stores whose head is never cut, the stores are
//! closed without a flush (as a killed process leaves them, the WAL being
//! all there is), and each is opened again and timed. Prints a Markdown table.
//!
//! `cargo run --release -p sextant-benches --bin wal_replay -- --series 20000`

use std::time::Instant;

use sextant_benches::{bench_options, fleet, load};

fn main() {
    let n = sextant_benches::series_arg(20_000);
    let f = fleet(n);
    let opts = sextant_storage::Options {
        block_range_ms: 24 * 3_600_000,
        ..bench_options()
    };
    println!(
        "Fleet: {} series, 15 s interval, head never cut (24 h block range).\n",
        f.series.len()
    );
    println!("| data in the WAL | samples | WAL bytes | open (replay) ms | WAL MB/s | samples/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for minutes in [30usize, 60, 120] {
        let dir = tempfile::tempdir().expect("tempdir");
        let samples = {
            let db = sextant_storage::Db::open(dir.path(), opts.clone()).expect("open");
            let s = load(&db, &f, 1_764_547_200_000, minutes * 4, 15_000);
            db.close().expect("close");
            s
        };
        let t = Instant::now();
        let (db, rep) = sextant_storage::Db::open_with_report(dir.path(), opts.clone()).expect("reopen");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(rep.replayed_samples as usize, samples, "replay restores every sample");
        println!(
            "| {minutes} min | {samples} | {} | {ms:.0} | {:.0} | {:.0} |",
            rep.wal.bytes,
            rep.wal.bytes as f64 / 1e6 / (ms / 1000.0),
            samples as f64 / (ms / 1000.0)
        );
        drop(db);
    }
}
