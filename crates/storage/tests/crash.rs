//! Kill a writing process with SIGKILL at random moments, reopen, and prove that
//! every acknowledged sample is there. The child is this test binary itself,
//! re-run with `SEXTANT_CRASH_CHILD` set. Iterations: `SEXTANT_CRASH_ITERATIONS`
//! (default 12).
//!
//! Random kills land inside block writes and compactions only by chance, so a
//! second test stops the child at each named step of those (the storage
//! engine's `SEXTANT_CRASH_AT` crash points) and checks the same.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sextant_model::{Labels, Matcher};
use sextant_storage::{Db, FsyncPolicy, Options};

const SERIES: usize = 50;

fn opts() -> Options {
    Options {
        background: true,
        fsync: FsyncPolicy::Never,
        block_range_ms: 60_000,
        tick: Duration::from_millis(20),
        ..Options::default()
    }
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([("__name__", "crash_test"), ("series", &format!("{i:03}"))])
}

/// The child: append batch k at time k*1000 for every series, print `ack k`.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os("SEXTANT_CRASH_CHILD") else {
        return;
    };
    // The parent's reopen has closed the store, but a child that another
    // test of this binary is spawning at the same moment holds a copy of
    // every descriptor, the lock's too, until its exec: wait that out.
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match Db::open(&dir, opts()) {
            Err(e) if e.to_string().contains("in use") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => break r.expect("child open"),
        }
    };
    let start = if db.max_time() == i64::MIN {
        0
    } else {
        db.max_time() / 1000 + 1
    };
    let mut k = start;
    loop {
        let mut app = db.appender();
        for i in 0..SERIES {
            app.append(&labels(i), k * 1000, k as f64);
        }
        let rep = app.commit().expect("child commit");
        assert_eq!(rep.rejected_count, 0, "{:?}", rep.rejected);
        println!("ack {k}");
        if k % 97 == 0 {
            db.flush().expect("child flush");
        }
        k += 1;
    }
}

/// Reopens the store and checks that every series holds exactly the batches
/// 0..=n for some n >= `acked`, with no gap or duplicate.
fn verify(dir: &std::path::Path, acked: i64, what: &str) {
    let db = Db::open(
        dir,
        Options {
            background: false,
            ..opts()
        },
    )
    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let got = db
        .select(&[Matcher::equal("__name__", "crash_test")], 0, i64::MAX)
        .expect("select");
    if acked >= 0 {
        assert_eq!(got.len(), SERIES, "{what}: series lost");
    }
    for s in &got {
        for (k, smp) in s.samples.iter().enumerate() {
            assert_eq!(
                smp.t,
                k as i64 * 1000,
                "{what}: {} has a gap or duplicate at {}",
                s.labels,
                smp.t
            );
            assert_eq!(smp.v, k as f64);
        }
        assert!(
            s.samples.len() as i64 > acked,
            "{what}: {} ends at {} but {acked} was acknowledged",
            s.labels,
            s.samples.len() as i64 - 1
        );
    }
    db.close().expect("close");
}

/// Every step of writing a block, cutting the head, checkpointing the WAL and
/// compacting, in the order a store goes through them.
const CRASH_POINTS: &[&str] = &[
    "block-before-rename",
    "block-after-rename",
    "cut-before-truncate",
    "checkpoint-written",
    "checkpoint-segment-deleted",
    "compact-before-delete",
    "block-delete-renamed",
    "compact-input-deleted",
];

#[test]
fn a_crash_inside_each_step_of_block_writes_and_compaction_loses_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("exe");
    let mut acked: i64 = -1;
    let mut runs = 0;
    for point in CRASH_POINTS {
        for nth in [1, 3] {
            let what = format!("crash at {point}:{nth}");
            let mut child = Command::new(&exe)
                .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
                .env("SEXTANT_CRASH_CHILD", d.path())
                .env("SEXTANT_CRASH_AT", format!("{point}:{nth}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child");
            let stdout = child.stdout.take().expect("stdout");
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("ack ").and_then(|k| k.parse::<i64>().ok()) {
                    acked = acked.max(k);
                }
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            let status = child.wait().expect("wait");
            assert!(
                !status.success() && err.contains(&format!("crash point {point} reached")),
                "{what}: the child did not stop there ({status}): {err}"
            );
            runs += 1;
            verify(d.path(), acked, &what);
            // A crash is not corruption: nothing may be moved aside, and no
            // half-written or half-deleted block may be left behind.
            assert!(!d.path().join("corrupted").exists(), "{what}: a block was quarantined");
            for e in std::fs::read_dir(d.path().join("blocks")).expect("blocks").flatten() {
                assert!(
                    !e.file_name().to_string_lossy().ends_with(".tmp"),
                    "{what}: {:?} left behind",
                    e.file_name()
                );
            }
        }
    }
    assert_eq!(runs, CRASH_POINTS.len() * 2);
    println!(
        "crash points: {runs} crashes at {} steps, {} batches acknowledged, none lost",
        CRASH_POINTS.len(),
        acked + 1
    );
}

#[test]
fn crash_sigkill_loses_no_acknowledged_sample() {
    let iterations: usize = std::env::var("SEXTANT_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let d = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("exe");
    let mut seed = 0x9e37_79b9u64;
    let mut acked: i64 = -1;
    let mut total_kills = 0;
    for it in 0..iterations {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env("SEXTANT_CRASH_CHILD", d.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(30 + seed % 400);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(k) = line.strip_prefix("ack ").and_then(|k| k.parse::<i64>().ok()) {
                    if tx.send(k).is_err() {
                        break;
                    }
                }
            }
        });
        let started = Instant::now();
        while started.elapsed() < run_for {
            if let Ok(k) = rx.recv_timeout(Duration::from_millis(5)) {
                acked = acked.max(k);
            }
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        total_kills += 1;
        // Acks that were already printed before the kill count too.
        let _ = reader.join();
        while let Ok(k) = rx.try_recv() {
            acked = acked.max(k);
        }
        // Verify in this process (the child is dead, so the lock is free).
        let db = Db::open(
            d.path(),
            Options {
                background: false,
                ..opts()
            },
        )
        .expect("reopen after kill");
        let got = db
            .select(&[Matcher::equal("__name__", "crash_test")], 0, i64::MAX)
            .expect("select");
        if acked >= 0 {
            assert_eq!(got.len(), SERIES, "iteration {it}: series lost");
        }
        for s in &got {
            let mut expect = 0i64;
            for smp in &s.samples {
                assert_eq!(
                    smp.t,
                    expect * 1000,
                    "iteration {it}: {} has a gap or duplicate at {}",
                    s.labels,
                    smp.t
                );
                assert_eq!(smp.v, expect as f64);
                expect += 1;
            }
            assert!(
                expect > acked,
                "iteration {it}: {} ends at {} but {} was acknowledged",
                s.labels,
                expect - 1,
                acked
            );
        }
        db.close().expect("close");
    }
    assert_eq!(total_kills, iterations);
    assert!(acked > 0, "the writer acknowledged something");
    println!(
        "crash test: {iterations} kills, {} batches acknowledged, none lost",
        acked + 1
    );
}
