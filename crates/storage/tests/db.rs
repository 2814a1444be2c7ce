//! The `Db` API end to end: against a naive model, across flushes, restarts,
//! compaction, retention, deletes and corruption.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sextant_model::{Labels, MatchOp, Matcher, Sample, SelectHints, STALE_NAN};
use sextant_storage::{Db, Error, FsyncPolicy, Options, SampleRejection};

fn opts() -> Options {
    Options {
        background: false,
        fsync: FsyncPolicy::Never,
        ..Options::default()
    }
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// A tiny deterministic PRNG so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Model = BTreeMap<Labels, Vec<Sample>>;

fn check(db: &Db, model: &Model, ms: &[Matcher], mint: i64, maxt: i64) {
    let got = db.select(ms, mint, maxt).expect("select");
    let want: Vec<(Labels, Vec<Sample>)> = model
        .iter()
        .filter(|(l, _)| ms.iter().all(|m| m.matches(l.get(m.name()))))
        .map(|(l, s)| {
            (
                l.clone(),
                s.iter()
                    .filter(|s| s.t >= mint && s.t <= maxt)
                    .copied()
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let got: Vec<(Labels, Vec<Sample>)> = got.into_iter().map(|s| (s.labels, s.samples)).collect();
    assert_eq!(got.len(), want.len(), "series count for {ms:?} in [{mint}, {maxt}]");
    for (g, w) in got.iter().zip(want.iter()) {
        assert_eq!(g, w, "for {ms:?} in [{mint}, {maxt}]");
    }
    // The same series through select_map, which reads each series whole
    // (merged across head and blocks) and keeps only what the map returns:
    // here every sample, and the count as one more sample.
    let map = |s: &[Sample], out: &mut Vec<Sample>| {
        out.extend_from_slice(s);
        out.push(Sample::new(i64::MAX, s.len() as f64));
        true
    };
    let mapped = db
        .select_map(ms, mint, maxt, SelectHints::default(), &map)
        .expect("select_map");
    assert!(!mapped.stopped);
    let mut got: Vec<(Labels, Vec<Sample>)> = mapped.series.into_iter().map(|s| (s.labels, s.samples)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got.len(),
        want.len(),
        "select_map series count for {ms:?} in [{mint}, {maxt}]"
    );
    let read: usize = want.iter().map(|(_, s)| s.len()).sum();
    assert_eq!(mapped.samples_read, read, "samples read for {ms:?}");
    for (g, w) in got.iter().zip(want.iter()) {
        let mut w = w.clone();
        w.1.push(Sample::new(i64::MAX, w.1.len() as f64));
        assert_eq!(*g, w, "select_map for {ms:?} in [{mint}, {maxt}]");
    }
    // Asking for some labels only: one series per stored series still, each
    // with its samples, and labels that are the full set or its projection
    // onto the names asked for and the metric name.
    let only = SelectHints {
        only_labels: Some(["zone".to_string()].into()),
        ..SelectHints::default()
    };
    let project = |l: &Labels| l.keep(&["__name__".to_string(), "zone".to_string()]);
    let mapped = db.select_map(ms, mint, maxt, only, &copy_all).expect("select_map only");
    let bits = |l: Labels, s: &[Sample]| -> (Labels, Vec<(i64, u64)>) {
        (l, s.iter().map(|x| (x.t, x.v.to_bits())).collect())
    };
    let mut got: Vec<_> = mapped
        .series
        .iter()
        .map(|s| {
            let p = project(&s.labels);
            assert!(
                s.labels == p || want.iter().any(|w| w.0 == s.labels),
                "labels {:?}",
                s.labels
            );
            bits(p, &s.samples)
        })
        .collect();
    let mut projected: Vec<_> = want.iter().map(|(l, s)| bits(project(l), s)).collect();
    got.sort();
    projected.sort();
    assert_eq!(
        got, projected,
        "select_map with only some labels for {ms:?} in [{mint}, {maxt}]"
    );
    // Asking for the last sample only hands the map exactly that sample,
    // bit for bit (stale markers included), whether it is the series' newest
    // or lies in a block or a sealed chunk.
    let (last, copy) = (last_only(), copy_all);
    let mapped = db.select_map(ms, mint, maxt, last, &copy).expect("select_map last");
    let mut got: Vec<(Labels, Vec<Sample>)> = mapped.series.into_iter().map(|s| (s.labels, s.samples)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got.len(),
        want.len(),
        "last-only series count for {ms:?} in [{mint}, {maxt}]"
    );
    for (g, w) in got.iter().zip(want.iter()) {
        assert_eq!(g.0, w.0);
        assert_eq!(
            g.1,
            vec![*w.1.last().expect("non-empty")],
            "last sample of {} in [{mint}, {maxt}]",
            w.0
        );
    }
}

/// Hints asking for each series' last sample only.
fn last_only() -> SelectHints {
    SelectHints {
        last_only: true,
        ..SelectHints::default()
    }
}

/// A map that keeps every sample it is given.
fn copy_all(s: &[Sample], out: &mut Vec<Sample>) -> bool {
    out.extend_from_slice(s);
    true
}

fn limit(n: usize) -> SelectHints {
    SelectHints {
        sample_limit: Some(n),
        ..SelectHints::default()
    }
}

fn random_matchers(r: &mut Rng) -> Vec<Matcher> {
    let names = ["__name__", "job", "zone", "gpu"];
    let vals = ["", "a", "b", "m0", "m1", "z1", ".*", "a|b", "m.*", "z[12]"];
    let ops = [MatchOp::Equal, MatchOp::NotEqual, MatchOp::Regex, MatchOp::NotRegex];
    (0..1 + r.below(3))
        .map(|_| {
            Matcher::new(
                ops[r.below(4) as usize],
                names[r.below(4) as usize],
                vals[r.below(vals.len() as u64) as usize],
            )
            .expect("valid matcher")
        })
        .collect()
}

fn fill(db: &Db, model: &mut Model, r: &mut Rng, series: usize, from: i64, to: i64, step: i64) {
    let all: Vec<Labels> = (0..series)
        .map(|i| {
            l(&[
                ("__name__", &format!("m{}", i % 3)),
                ("job", ["a", "b"][i % 2]),
                ("zone", &format!("z{}", i % 4)),
                ("gpu", &format!("{i}")),
            ])
        })
        .collect();
    let mut t = from;
    while t < to {
        let mut app = db.appender();
        for ls in &all {
            if r.below(10) == 0 {
                continue; // gaps
            }
            let v = match r.below(5) {
                0 => r.next() as f64 / 3.0,
                1 => STALE_NAN,
                _ => (r.below(1000)) as f64,
            };
            app.append(ls, t, v);
            model.entry(ls.clone()).or_default().push(Sample::new(t, v));
        }
        let rep = app.commit().expect("commit");
        assert_eq!(rep.rejected_count, 0);
        t += step;
    }
}

#[test]
fn select_matches_a_naive_model_across_head_blocks_and_restarts() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut r = Rng(0x5eed);
    let mut model = Model::new();
    let hour = 3_600_000;
    {
        let db = Db::open(d.path(), opts()).expect("open");
        fill(&db, &mut model, &mut r, 24, 0, 3 * hour, 60_000);
        for _ in 0..40 {
            let ms = random_matchers(&mut r);
            let a = r.below(4 * hour as u64) as i64 - hour;
            check(&db, &model, &ms, a, a + r.below(3 * hour as u64) as i64);
        }
        // Cut blocks, keep writing, and read across both.
        let metas = db.flush().expect("flush");
        assert_eq!(metas.len(), 2, "three hours of data make two 2h-aligned blocks");
        fill(&db, &mut model, &mut r, 24, 3 * hour, 4 * hour, 60_000);
        for _ in 0..40 {
            let ms = random_matchers(&mut r);
            let a = r.below(5 * hour as u64) as i64 - hour;
            check(&db, &model, &ms, a, a + r.below(3 * hour as u64) as i64);
        }
        db.close().expect("close");
    }
    // Reopen: blocks from disk, head from the WAL.
    let db = Db::open(d.path(), opts()).expect("reopen");
    for _ in 0..40 {
        let ms = random_matchers(&mut r);
        let a = r.below(5 * hour as u64) as i64 - hour;
        check(&db, &model, &ms, a, a + r.below(3 * hour as u64) as i64);
    }
    // Compaction merges the three blocks' worth of data into fewer blocks, losing nothing.
    db.flush().expect("flush");
    let before = db.blocks().len();
    db.run_maintenance().expect("maintenance");
    assert!(
        db.blocks().len() < before,
        "compaction merged blocks: {} -> {}",
        before,
        db.blocks().len()
    );
    check(&db, &model, &[], i64::MIN, i64::MAX);
    drop(db);
    let db = Db::open(d.path(), opts()).expect("reopen after compaction");
    check(&db, &model, &[], i64::MIN, i64::MAX);
}

#[test]
fn ordering_and_duplicate_rules_name_the_series() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        d.path(),
        Options {
            ooo_window_ms: 10_000,
            ..opts()
        },
    )
    .expect("open");
    let s = l(&[("__name__", "up"), ("job", "x")]);
    let mut app = db.appender();
    app.append(&s, 100_000, 1.0);
    app.append(&s, 100_000, 1.0); // identical duplicate: accepted silently
    app.append(&s, 100_000, 2.0); // different value: rejected
    app.append(&s, 95_000, 3.0); // within the window: accepted
    app.append(&s, 50_000, 4.0); // too far behind: rejected
    let rep = app.commit().expect("commit");
    assert_eq!(rep.appended, 2);
    assert_eq!(rep.duplicates, 1);
    assert_eq!(rep.rejected_count, 2);
    assert!(matches!(
        rep.rejected[0].reason,
        SampleRejection::DuplicateTimestamp { .. }
    ));
    assert!(matches!(
        rep.rejected[1].reason,
        SampleRejection::OutOfOrder { newest: 100_000 }
    ));
    assert_eq!(rep.rejected[1].labels, s);
    let got = db.select(&[Matcher::equal("job", "x")], 0, 200_000).expect("select");
    assert_eq!(
        got[0].samples,
        vec![Sample::new(95_000, 3.0), Sample::new(100_000, 1.0)]
    );
    // After a flush, samples below the persisted range are too old.
    db.flush().expect("flush");
    let mut app = db.appender();
    app.append(&s, 99_000, 5.0);
    let rep = app.commit().expect("commit");
    assert!(matches!(rep.rejected[0].reason, SampleRejection::TooOld { .. }));
}

#[test]
fn stale_markers_survive_wal_and_blocks_bit_exactly() {
    let d = tempfile::tempdir().expect("tempdir");
    let s = l(&[("__name__", "g")]);
    {
        let db = Db::open(d.path(), opts()).expect("open");
        let mut app = db.appender();
        app.append(&s, 1, 1.5);
        app.append(&s, 2, STALE_NAN);
        app.append(&s, 3, f64::NAN);
        app.commit().expect("commit");
    }
    let check_bits = |db: &Db| {
        let got = db.select(&[], 0, 10).expect("select");
        let bits: Vec<u64> = got[0].samples.iter().map(|s| s.v.to_bits()).collect();
        assert_eq!(bits, vec![1.5f64.to_bits(), STALE_NAN.to_bits(), f64::NAN.to_bits()]);
    };
    let db = Db::open(d.path(), opts()).expect("reopen");
    check_bits(&db);
    db.flush().expect("flush");
    drop(db);
    let db = Db::open(d.path(), opts()).expect("reopen");
    check_bits(&db);
}

#[test]
fn delete_hides_samples_in_head_and_blocks_and_persists() {
    let d = tempfile::tempdir().expect("tempdir");
    let a = l(&[("__name__", "a")]);
    let b = l(&[("__name__", "b")]);
    {
        let db = Db::open(d.path(), opts()).expect("open");
        let mut app = db.appender();
        for t in 0..10 {
            app.append(&a, t * 1000, t as f64);
            app.append(&b, t * 1000, t as f64);
        }
        app.commit().expect("commit");
        db.flush().expect("flush");
        let mut app = db.appender();
        for t in 10..20 {
            app.append(&a, t * 1000, t as f64);
        }
        app.commit().expect("commit");
        db.delete(&[Matcher::equal("__name__", "a")], 5000, 14_000)
            .expect("delete");
        let got = db
            .select(&[Matcher::equal("__name__", "a")], 0, 100_000)
            .expect("select");
        assert_eq!(got[0].samples.len(), 10);
    }
    let db = Db::open(d.path(), opts()).expect("reopen");
    let got = db
        .select(&[Matcher::equal("__name__", "a")], 0, 100_000)
        .expect("select");
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
    assert_eq!(
        ts,
        vec![0, 1000, 2000, 3000, 4000, 15_000, 16_000, 17_000, 18_000, 19_000]
    );
    assert_eq!(
        db.select(&[Matcher::equal("__name__", "b")], 0, 100_000)
            .expect("select")[0]
            .samples
            .len(),
        10
    );
    // A deletion that covers the newest sample hides it from a last-sample
    // read too.
    db.delete(&[Matcher::equal("__name__", "a")], 17_000, 30_000)
        .expect("delete newest");
    let (last, copy) = (last_only(), copy_all);
    let m = db
        .select_map(&[Matcher::equal("__name__", "a")], 0, 100_000, last, &copy)
        .expect("select_map");
    assert_eq!(m.series[0].samples, vec![Sample::new(16_000, 16.0)]);
}

#[test]
fn a_selection_for_some_labels_gets_head_series_with_only_those_and_keeps_them_apart() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let mut app = db.appender();
    for (i, zone) in ["z1", "z1", "z2"].iter().enumerate() {
        let s = l(&[("__name__", "up"), ("gpu", &i.to_string()), ("zone", zone)]);
        app.append(&s, 1_000, i as f64);
    }
    app.commit().expect("commit");
    let only = SelectHints {
        only_labels: Some(["zone".to_string()].into()),
        ..SelectHints::default()
    };
    let m = db
        .select_map(&[Matcher::equal("__name__", "up")], 0, 2_000, only, &copy_all)
        .expect("select_map");
    let mut got: Vec<(Labels, f64)> = m.series.iter().map(|s| (s.labels.clone(), s.samples[0].v)).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let z = |zone| l(&[("__name__", "up"), ("zone", zone)]);
    assert_eq!(got, vec![(z("z1"), 0.0), (z("z1"), 1.0), (z("z2"), 2.0)]);
}

#[test]
fn a_selection_for_some_labels_gets_block_series_with_only_those_and_keeps_them_apart() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let mut app = db.appender();
    for (i, zone) in ["z1", "z1", "z2"].iter().enumerate() {
        let s = l(&[
            ("__name__", "up"),
            ("gpu", &i.to_string()),
            ("host", "h"),
            ("zone", zone),
        ]);
        app.append(&s, 1_000, i as f64);
    }
    // A series without the label asked for keeps its name alone.
    app.append(&l(&[("__name__", "up"), ("gpu", "9")]), 1_000, 9.0);
    app.commit().expect("commit");
    db.flush().expect("flush");
    let select = |names: &[&str]| {
        let only = SelectHints {
            only_labels: Some(names.iter().map(|s| s.to_string()).collect::<Vec<_>>().into()),
            ..SelectHints::default()
        };
        let m = db
            .select_map(&[Matcher::equal("__name__", "up")], 0, 2_000, only, &copy_all)
            .expect("select_map");
        assert_eq!(m.samples_read, 4);
        let mut got: Vec<(Labels, f64)> = m.series.iter().map(|s| (s.labels.clone(), s.samples[0].v)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        got
    };
    let z = |zone| l(&[("__name__", "up"), ("zone", zone)]);
    assert_eq!(
        select(&["zone"]),
        vec![
            (l(&[("__name__", "up")]), 9.0),
            (z("z1"), 0.0),
            (z("z1"), 1.0),
            (z("z2"), 2.0)
        ]
    );
    let hz = |zone| l(&[("__name__", "up"), ("host", "h"), ("zone", zone)]);
    assert_eq!(
        select(&["zone", "host", "absent"]),
        vec![
            (l(&[("__name__", "up")]), 9.0),
            (hz("z1"), 0.0),
            (hz("z1"), 1.0),
            (hz("z2"), 2.0)
        ]
    );
}

#[test]
fn one_projection_read_from_blocks_with_different_symbols_gets_each_block_s_labels() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let hour = 3_600_000;
    // The second block has more symbols, so the same label names have other
    // symbol ids there.
    let mut app = db.appender();
    app.append(&l(&[("__name__", "up"), ("zone", "z1")]), 1_000, 1.0);
    app.commit().expect("commit");
    db.flush().expect("flush");
    let mut app = db.appender();
    app.append(
        &l(&[
            ("__name__", "up"),
            ("aa", "x"),
            ("bb", "y"),
            ("model", "m"),
            ("zone", "z2"),
        ]),
        3 * hour,
        2.0,
    );
    app.commit().expect("commit");
    db.flush().expect("flush");
    assert_eq!(db.blocks().len(), 2);
    for _ in 0..2 {
        for (mint, maxt, want) in [
            (0, 2_000, l(&[("__name__", "up"), ("zone", "z1")])),
            (3 * hour - 1, 3 * hour + 1, l(&[("__name__", "up"), ("zone", "z2")])),
        ] {
            let only = SelectHints {
                only_labels: Some(["zone".to_string()].into()),
                ..SelectHints::default()
            };
            let m = db
                .select_map(&[Matcher::equal("__name__", "up")], mint, maxt, only, &copy_all)
                .expect("select_map");
            let got: Vec<Labels> = m.series.iter().map(|s| s.labels.clone()).collect();
            assert_eq!(got, vec![want]);
        }
    }
}

#[test]
fn series_of_a_block_that_project_onto_one_label_set_share_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    // 5,000 pods in three zones: a projection on the zone has three sets;
    // one on the pod has more distinct sets than a reader keeps.
    let mut app = db.appender();
    for p in 0..5_000 {
        let zone = format!("z{}", p % 3);
        let pod = format!("pod-{p:04}");
        app.append(
            &l(&[("__name__", "up"), ("pod", &pod), ("zone", &zone)]),
            1_000,
            p as f64,
        );
    }
    app.commit().expect("commit");
    db.flush().expect("flush");
    assert_eq!(db.blocks().len(), 1);
    // The series of `up` with their labels projected onto `name`.
    let projected = |name: &str| {
        let only = SelectHints {
            only_labels: Some([name.to_string()].into()),
            ..SelectHints::default()
        };
        let m = db
            .select_map(&[Matcher::equal("__name__", "up")], 0, 2_000, only, &copy_all)
            .expect("select_map");
        assert_eq!(m.series.len(), 5_000);
        m.series
    };
    for _ in 0..2 {
        let series = projected("zone");
        let mut firsts: Vec<Labels> = Vec::new();
        for s in &series {
            let p = s.samples[0].v as usize;
            let want = l(&[("__name__", "up"), ("zone", &format!("z{}", p % 3))]);
            assert_eq!(s.labels, want, "pod {p}");
            // Read on one thread, equal sets are one allocation; each thread
            // of a parallel read has its own.
            if !firsts.iter().any(|f| f.is_same_set(&s.labels)) {
                firsts.push(s.labels.clone());
            }
        }
        // The pool's threads, and the caller's.
        let threads = std::thread::available_parallelism()
            .map(|x| x.get())
            .unwrap_or(1)
            .min(8)
            + 1;
        assert!(
            (3..=3 * threads).contains(&firsts.len()),
            "{} allocations for 3 sets on {threads} threads",
            firsts.len()
        );
        for s in &projected("pod") {
            let p = s.samples[0].v as usize;
            assert_eq!(s.labels, l(&[("__name__", "up"), ("pod", &format!("pod-{p:04}"))]));
        }
    }
}

#[test]
fn head_is_cut_into_blocks_and_retention_drops_old_ones() {
    let d = tempfile::tempdir().expect("tempdir");
    let hour = 3_600_000;
    let db = Db::open(
        d.path(),
        Options {
            retention_ms: Some(6 * hour),
            ..opts()
        },
    )
    .expect("open");
    let s = l(&[("__name__", "c")]);
    for h in 0..12 {
        let mut app = db.appender();
        for k in 0..4 {
            app.append(&s, h * hour + k * 15 * 60_000, (h * 4 + k) as f64);
        }
        app.commit().expect("commit");
        db.run_maintenance().expect("maintenance");
    }
    assert!(!db.blocks().is_empty(), "the head was cut into blocks");
    let oldest = db.min_time();
    assert!(
        oldest >= 11 * hour - 6 * hour - 2 * hour,
        "retention kept too much: oldest {oldest}"
    );
    let got = db.select(&[], 0, i64::MAX).expect("select");
    let last = got[0].samples.last().expect("samples").t;
    assert_eq!(last, 11 * hour + 45 * 60_000);
    // Data in retained blocks and head is continuous.
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
    assert!(ts.windows(2).all(|w| w[1] - w[0] == 15 * 60_000), "{ts:?}");
}

#[test]
fn a_corrupt_block_is_moved_aside_and_the_rest_opens() {
    let d = tempfile::tempdir().expect("tempdir");
    let hour = 3_600_000;
    let s = l(&[("__name__", "x")]);
    {
        let db = Db::open(d.path(), opts()).expect("open");
        let mut app = db.appender();
        app.append(&s, 0, 1.0);
        app.append(&s, 3 * hour, 2.0);
        app.commit().expect("commit");
        assert_eq!(db.flush().expect("flush").len(), 2);
    }
    let blocks = d.path().join("blocks");
    let mut dirs: Vec<_> = std::fs::read_dir(&blocks)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    let chunks = dirs[0].join("chunks");
    let mut data = std::fs::read(&chunks).expect("read");
    let n = data.len();
    data[n - 2] ^= 0xff;
    std::fs::write(&chunks, data).expect("write");
    let (db, rep) = Db::open_with_report(d.path(), opts()).expect("open with a corrupt block");
    assert_eq!(rep.quarantined.len(), 1, "{:?}", rep.quarantined);
    assert!(rep.quarantined[0].contains("checksum"), "{:?}", rep.quarantined);
    assert!(d
        .path()
        .join("corrupted")
        .join(dirs[0].file_name().expect("name"))
        .exists());
    let got = db.select(&[], 0, i64::MAX).expect("select");
    assert_eq!(got[0].samples, vec![Sample::new(3 * hour, 2.0)]);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let d = tempfile::tempdir().expect("tempdir");
    let _db = Db::open(d.path(), opts()).expect("open");
    assert!(matches!(Db::open(d.path(), opts()), Err(Error::Invalid(m)) if m.contains("in use")));
}

#[test]
fn concurrent_appenders_lose_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(d.path(), opts()).expect("open"));
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for t in 0..200i64 {
                    let mut app = db.appender();
                    for s in 0..20 {
                        // Half the series are shared by all writers, half are own.
                        let name = if s % 2 == 0 {
                            format!("shared{s}")
                        } else {
                            format!("own{w}_{s}")
                        };
                        app.append(
                            &l(&[("__name__", &name), ("w", if s % 2 == 0 { "all" } else { "one" })]),
                            t * 1000 + w,
                            (t * 8 + w) as f64,
                        );
                    }
                    app.commit().expect("commit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let own = db.select(&[Matcher::equal("w", "one")], 0, i64::MAX).expect("select");
    assert_eq!(own.len(), 8 * 10);
    assert!(own.iter().all(|s| s.samples.len() == 200));
    drop(db);
    // Replay sees the same: shared series got out-of-order-rejected samples only.
    let db = Db::open(d.path(), opts()).expect("reopen");
    let own2 = db.select(&[Matcher::equal("w", "one")], 0, i64::MAX).expect("select");
    assert_eq!(own, own2);
}

#[test]
fn committed_fixture_wal_with_torn_tail_recovers() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/storage/wal-torn-tail");
    let d = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture, d.path());
    let (db, rep) = Db::open_with_report(d.path(), opts()).expect("open");
    assert_eq!(rep.wal.repairs.len(), 1, "{:?}", rep.wal.repairs);
    assert!(rep.wal.repairs[0].contains("torn"), "{:?}", rep.wal.repairs);
    let got = db.select(&[], i64::MIN, i64::MAX).expect("select");
    // The fixture holds 10 whole commits of one sample each and a torn 11th.
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples.len(), 10);
}

#[test]
fn committed_fixture_block_with_corrupt_chunk_is_quarantined() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/storage/block-corrupt-chunk");
    let d = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture, d.path());
    let (db, rep) = Db::open_with_report(d.path(), opts()).expect("open");
    assert_eq!(rep.quarantined.len(), 1, "{:?}", rep.quarantined);
    assert!(db.select(&[], i64::MIN, i64::MAX).expect("select").is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("fixture {}: {e}", from.display())) {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

/// Regenerates the committed fixtures: `SEXTANT_WRITE_FIXTURES=1 cargo test -p
/// sextant-storage --test db write_fixtures`.
#[test]
fn write_fixtures() {
    if std::env::var_os("SEXTANT_WRITE_FIXTURES").is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/storage");
    let wal_dir = root.join("wal-torn-tail");
    let _ = std::fs::remove_dir_all(&wal_dir);
    {
        let db = Db::open(&wal_dir, opts()).expect("open");
        let s = l(&[("__name__", "fixture_counter"), ("job", "fixture")]);
        for t in 0..11 {
            let mut app = db.appender();
            app.append(&s, t * 15_000, t as f64);
            app.commit().expect("commit");
        }
    }
    let seg = wal_dir.join("wal").join("00000001");
    let len = std::fs::metadata(&seg).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let _ = std::fs::remove_file(wal_dir.join("LOCK"));
    let blk = root.join("block-corrupt-chunk");
    let _ = std::fs::remove_dir_all(&blk);
    {
        let db = Db::open(&blk, opts()).expect("open");
        let mut app = db.appender();
        app.append(&l(&[("__name__", "fixture_gauge")]), 1000, 0.25);
        app.commit().expect("commit");
        db.flush().expect("flush");
    }
    let _ = std::fs::remove_dir_all(blk.join("wal"));
    let _ = std::fs::remove_file(blk.join("LOCK"));
    for e in std::fs::read_dir(blk.join("blocks")).expect("ls") {
        let chunks = e.expect("entry").path().join("chunks");
        let mut data = std::fs::read(&chunks).expect("read");
        let n = data.len();
        data[n - 1] ^= 0x5a;
        std::fs::write(&chunks, data).expect("write");
    }
}

#[test]
fn appends_by_reference_survive_garbage_collection_of_their_series() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let s = l(&[("__name__", "by_ref"), ("gpu", "0")]);
    let r = db.series_ref(&s).expect("ref");
    let mut app = db.appender();
    app.append_ref(&r, 1_000, 1.0);
    app.append_ref(&r, 2_000, 2.0);
    assert_eq!(app.commit().expect("commit").appended, 2);
    // The flush empties the head, which drops the series; the old reference still works.
    db.flush().expect("flush");
    let mut app = db.appender();
    app.append_ref(&r, 3_000, 3.0);
    assert_eq!(app.commit().expect("commit").appended, 1);
    let got = db
        .select(&[Matcher::equal("__name__", "by_ref")], 0, 10_000)
        .expect("select");
    assert_eq!(
        got[0].samples,
        vec![
            Sample::new(1_000, 1.0),
            Sample::new(2_000, 2.0),
            Sample::new(3_000, 3.0)
        ]
    );
    drop(db);
    // And the WAL knows the series: it replays after a restart.
    let db = Db::open(d.path(), opts()).expect("reopen");
    let got = db
        .select(&[Matcher::equal("__name__", "by_ref")], 0, 10_000)
        .expect("select");
    assert_eq!(got[0].samples.len(), 3);
}

#[test]
fn a_batch_out_of_time_order_is_judged_as_if_applied_in_order_and_replays_the_same() {
    let dir = tempfile::tempdir().expect("dir");
    let s = l(&[("__name__", "x")]);
    let w = l(&[("__name__", "w")]);
    let samples = |db: &Db, ls: &Labels| -> Vec<i64> {
        db.select(&[Matcher::equal("__name__", ls.metric_name())], 0, i64::MAX)
            .expect("select")
            .first()
            .map(|x| x.samples.iter().map(|p| p.t).collect())
            .unwrap_or_default()
    };
    {
        let db = Db::open(
            dir.path(),
            Options {
                ooo_window_ms: 10_000,
                ..opts()
            },
        )
        .expect("open");
        let mut a = db.appender();
        a.append(&s, 8_000, 1.0);
        a.commit().expect("commit");
        // Without a window (series w: the window is per store, so use times
        // outside it): 20 s behind the batch's own newest is out of order.
        let mut a = db.appender();
        a.append(&w, 100_000, 1.0);
        a.append(&w, 70_000, 1.0);
        a.append(&w, 100_000, 2.0);
        let r = a.commit().expect("commit");
        assert_eq!(r.appended, 1);
        assert_eq!(r.rejected_count, 2, "{:?}", r.rejected);
        // Within the window: a sample behind one staged by the same batch.
        let mut a = db.appender();
        a.append(&s, 10_000, 1.0);
        a.append(&s, 9_000, 1.0);
        a.append(&s, 10_000, 1.0);
        let r = a.commit().expect("commit");
        assert_eq!(
            (r.appended, r.duplicates, r.rejected_count),
            (2, 1, 0),
            "{:?}",
            r.rejected
        );
        assert_eq!(samples(&db, &s), vec![8_000, 9_000, 10_000]);
        db.close().expect("close");
    }
    let db = Db::open(
        dir.path(),
        Options {
            ooo_window_ms: 10_000,
            ..opts()
        },
    )
    .expect("reopen");
    assert_eq!(samples(&db, &s), vec![8_000, 9_000, 10_000], "the replay agrees");
    assert_eq!(samples(&db, &w), vec![100_000]);
}

#[test]
fn appends_by_handle_survive_garbage_collection_and_report_by_name() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let s = l(&[("__name__", "by_handle"), ("gpu", "1")]);
    let h = db.series_handle(&s).expect("handle");
    assert!(db.handle_matches(&h, [(&b"__name__"[..], &b"by_handle"[..]), (b"gpu", b"1")].into_iter()));
    assert!(!db.handle_matches(&h, [(&b"__name__"[..], &b"by_handle"[..])].into_iter()));
    assert!(!db.handle_matches(&h, [(&b"__name__"[..], &b"by_handle"[..]), (b"gpu", b"2")].into_iter()));
    let mut app = db.appender();
    app.append_handle(&h, 1_000, 1.0);
    assert_eq!(app.commit().expect("commit").appended, 1);
    // A rejection by handle names the series from the head's labels.
    let mut app = db.appender();
    app.append_handle(&h, 500, 1.0);
    let r = app.commit().expect("commit");
    assert_eq!(r.rejected_count, 1);
    assert_eq!(r.rejected[0].labels, s);
    db.flush().expect("flush");
    let mut app = db.appender();
    app.append_handle(&h, 3_000, 3.0);
    assert_eq!(app.commit().expect("commit").appended, 1);
    drop(db);
    let db = Db::open(d.path(), opts()).expect("reopen");
    let got = db
        .select(&[Matcher::equal("__name__", "by_handle")], 0, 10_000)
        .expect("select");
    assert_eq!(got[0].samples, vec![Sample::new(1_000, 1.0), Sample::new(3_000, 3.0)]);
}

#[test]
fn samples_handed_over_by_range_go_to_their_series_only() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let (a, b) = (l(&[("__name__", "a")]), l(&[("__name__", "b")]));
    let (ha, hb) = (db.series_handle(&a).expect("a"), db.series_handle(&b).expect("b"));
    let buf: Vec<Sample> = (0..10).map(|k| Sample::new(k * 1000, k as f64)).collect();
    let mut app = db.appender();
    // Samples 2..4 are a series the caller did not know: left out.
    app.append_handle_ranges(buf.clone(), &[(ha.clone(), 0..2), (hb.clone(), 4..7)]);
    // Out of bounds and empty ranges add nothing; a second hand-over is
    // copied after the first.
    app.append_handle_ranges(buf, &[(ha.clone(), 8..11), (hb.clone(), 3..3), (ha.clone(), 9..10)]);
    app.append_slice(l(&[("__name__", "c")]), &[Sample::new(5, 5.0)]);
    let r = app.commit().expect("commit");
    assert_eq!(r.appended, 2 + 3 + 1 + 1);
    let got = |n: &str| {
        db.select(&[Matcher::equal("__name__", n)], 0, 100_000)
            .expect("select")
            .pop()
            .map(|s| s.samples)
            .unwrap_or_default()
    };
    assert_eq!(
        got("a"),
        vec![Sample::new(0, 0.0), Sample::new(1000, 1.0), Sample::new(9000, 9.0)]
    );
    assert_eq!(
        got("b"),
        vec![Sample::new(4000, 4.0), Sample::new(5000, 5.0), Sample::new(6000, 6.0)]
    );
    assert_eq!(got("c"), vec![Sample::new(5, 5.0)]);
}

#[test]
fn reads_during_head_cuts_and_compactions_see_every_sample() {
    // One-minute blocks and a sample a second: the background thread cuts the
    // head every 60 commits and compacts behind it, while a reader checks that
    // every committed sample is visible, with no gap at any moment.
    let db = Arc::new(
        Db::open(
            tempfile::tempdir().expect("tempdir").keep(),
            Options {
                background: true,
                block_range_ms: 60_000,
                tick: std::time::Duration::from_millis(2),
                ..opts()
            },
        )
        .expect("open"),
    );
    let acked = Arc::new(std::sync::atomic::AtomicI64::new(-1));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ls = l(&[("__name__", "cut_read")]);
    let writer = {
        let (db, acked, done, ls) = (db.clone(), acked.clone(), done.clone(), ls.clone());
        std::thread::spawn(move || {
            for k in 0..4_000i64 {
                let mut app = db.appender();
                app.append(&ls, k * 1000, k as f64);
                app.commit().expect("commit");
                acked.store(k, std::sync::atomic::Ordering::SeqCst);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let ms = [Matcher::equal("__name__", "cut_read")];
    let mut reads = 0;
    let started = std::time::Instant::now();
    let compactions = || db.metrics().compactions.load(std::sync::atomic::Ordering::Relaxed);
    // Go on reading after the last commit until the store has compacted.
    while !done.load(std::sync::atomic::Ordering::SeqCst)
        || (compactions() < 3 && started.elapsed() < std::time::Duration::from_secs(60))
    {
        let a = acked.load(std::sync::atomic::Ordering::SeqCst);
        let got = db.select(&ms, 0, i64::MAX).expect("select");
        let samples = got.first().map(|s| s.samples.clone()).unwrap_or_default();
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.t, i as i64 * 1000, "read {reads}: a gap before {}", s.t);
        }
        assert!(
            samples.len() as i64 > a,
            "read {reads}: {} samples, {a} committed",
            samples.len()
        );
        reads += 1;
    }
    writer.join().expect("writer");
    assert!(db.blocks().len() > 1, "the head was cut");
    assert!(compactions() >= 3, "blocks were compacted");
    assert!(reads > 100, "{reads} reads");
}

#[test]
fn select_map_reads_many_series_on_several_threads_across_head_and_blocks() {
    // Enough series that the read is split across threads, with each series
    // in a block and in the head, so every part merges its pieces.
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let hour = 3_600_000;
    let series: Vec<Labels> = (0..6000)
        .map(|i| l(&[("__name__", "m"), ("i", &format!("{i}"))]))
        .collect();
    let write = |from: i64, to: i64| {
        let mut t = from;
        while t < to {
            let mut app = db.appender();
            for (i, ls) in series.iter().enumerate() {
                app.append(ls, t, (i as i64 * 1000 + t / 60_000) as f64);
            }
            app.commit().expect("commit");
            t += 60_000;
        }
    };
    write(0, 2 * hour);
    db.flush().expect("flush");
    write(2 * hour, 3 * hour);
    assert!(!db.blocks().is_empty());
    // Sum of each series' values and its sample count.
    let map = |s: &[Sample], out: &mut Vec<Sample>| {
        assert!(s.windows(2).all(|w| w[0].t < w[1].t), "samples in time order");
        out.push(Sample::new(s.len() as i64, s.iter().map(|x| x.v).sum()));
        true
    };
    let (mint, maxt) = (hour + 30 * 60_000, 2 * hour + 30 * 60_000);
    let m = db
        .select_map(&[], mint, maxt, SelectHints::default(), &map)
        .expect("select_map");
    assert!(!m.stopped);
    assert_eq!(m.series.len(), series.len());
    assert_eq!(m.samples_read, series.len() * 61);
    let m_all = &m;
    let mut seen = std::collections::HashSet::new();
    for s in &m.series {
        let i: i64 = s.labels.get("i").parse().expect("i");
        assert!(seen.insert(i), "series {i} once");
        let want: f64 = (90..=150).map(|minute| (i * 1000 + minute) as f64).sum();
        assert_eq!(s.samples, vec![Sample::new(61, want)], "series {i}");
    }
    // The sample limit holds across threads, and names itself.
    let err = db.select_map(&[], mint, maxt, limit(10_000), &map).expect_err("limit");
    assert!(matches!(err, Error::TooManySamples { limit: 10_000 }), "{err}");
    // A map that asks to stop ends the read early and says so.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let stop = |_: &[Sample], _: &mut Vec<Sample>| calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 10;
    let stopped = db
        .select_map(&[], mint, maxt, SelectHints::default(), &stop)
        .expect("select_map");
    assert!(stopped.stopped);
    assert!(stopped.series.is_empty());
    assert!(calls.into_inner() < series.len());

    // A folded read hands the same mapped series to parts, one run of
    // series a part, and finishes each part once.
    type Runs = std::sync::Mutex<Vec<(usize, Vec<(i64, Sample)>)>>;
    struct Part<'a> {
        first: usize,
        got: Vec<(i64, Sample)>,
        done: &'a Runs,
    }
    impl sextant_model::FoldPart for Part<'_> {
        fn add(&mut self, labels: &Labels, mapped: &[Sample]) {
            assert_eq!(mapped.len(), 1);
            self.got.push((labels.get("i").parse().expect("i"), mapped[0]));
        }
        fn finish(self: Box<Self>) {
            self.done.lock().unwrap().push((self.first, self.got));
        }
    }
    // Folds the selection with `hints`; each part's first series and what
    // it was given, in no order.
    let fold = |hints: SelectHints| {
        let done: Runs = std::sync::Mutex::new(Vec::new());
        let part = |first: usize| -> Box<dyn sextant_model::FoldPart + '_> {
            Box::new(Part {
                first,
                got: Vec::new(),
                done: &done,
            })
        };
        let f = db
            .select_fold(&[], mint, maxt, hints, &map, &part)
            .expect("select_fold");
        (f, done.into_inner().unwrap())
    };
    let (f, mut runs) = fold(SelectHints::default());
    assert!(!f.stopped);
    assert_eq!((f.series, f.samples_read), (series.len(), series.len() * 61));
    assert!(runs.len() >= 2, "{} parts", runs.len());
    runs.sort_by_key(|r| r.0);
    let mut next = 0;
    for (first, got) in &runs {
        assert_eq!(*first, next, "the parts' runs follow each other");
        next += got.len();
    }
    let folded: Vec<(i64, Sample)> = runs.into_iter().flat_map(|r| r.1).collect();
    let mapped: Vec<(i64, Sample)> = m_all
        .series
        .iter()
        .map(|s| (s.labels.get("i").parse().expect("i"), s.samples[0]))
        .collect();
    assert_eq!(folded, mapped, "the same series in the same order as select_map's");

    // Asked for large parts, it hands each worker one run.
    let (f, mut runs) = fold(SelectHints {
        large_parts: true,
        ..SelectHints::default()
    });
    assert_eq!(f.series, series.len());
    let workers = sextant_model::parallel::workers();
    assert!(
        runs.len() <= workers && runs.len() >= workers.min(2),
        "{} parts for {workers} workers",
        runs.len()
    );
    runs.sort_by_key(|r| r.0);
    let folded: Vec<(i64, Sample)> = runs.into_iter().flat_map(|r| r.1).collect();
    assert_eq!(folded, mapped, "the same series in the same order");
}

#[test]
fn a_few_hundred_series_over_a_long_range_are_read_on_several_threads() {
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let series: Vec<Labels> = (0..300)
        .map(|i| l(&[("__name__", "g"), ("i", &format!("{i}"))]))
        .collect();
    for k in 0..120i64 {
        let mut app = db.appender();
        for (i, ls) in series.iter().enumerate() {
            app.append(ls, k * 60_000, (i as i64 * 1000 + k) as f64);
        }
        app.commit().expect("commit");
    }
    db.flush().expect("flush");
    let threads = std::sync::Mutex::new(std::collections::HashSet::new());
    let map = |s: &[Sample], out: &mut Vec<Sample>| {
        threads.lock().unwrap().insert(std::thread::current().id());
        // Long enough a series that one worker cannot take every part
        // before the other wakes.
        std::thread::sleep(std::time::Duration::from_micros(200));
        out.push(Sample::new(s.len() as i64, s.iter().map(|x| x.v).sum()));
        true
    };
    let read = |mint: i64, maxt: i64| {
        threads.lock().unwrap().clear();
        let m = db
            .select_map(&[], mint, maxt, SelectHints::default(), &map)
            .expect("select_map");
        let mut got: Vec<(i64, Sample)> = m
            .series
            .iter()
            .map(|s| (s.labels.get("i").parse().expect("i"), s.samples[0]))
            .collect();
        got.sort_by_key(|x| x.0);
        (got, threads.lock().unwrap().len())
    };
    let cores = std::thread::available_parallelism().map(|x| x.get()).unwrap_or(1);
    // An hour of 300 series: split across threads.
    let (got, used) = read(60 * 60_000, 119 * 60_000);
    assert_eq!(got.len(), 300);
    for (i, s) in &got {
        let want: f64 = (60..120).map(|k| (i * 1000 + k) as f64).sum();
        assert_eq!(*s, Sample::new(60, want), "series {i}");
    }
    assert_eq!(used > 1, cores > 1, "{used} threads on {cores} cores");
    // Ten minutes of them: one thread.
    let (got, used) = read(100 * 60_000, 109 * 60_000);
    assert_eq!(got.len(), 300);
    assert_eq!(used, 1);
}

#[test]
fn samples_at_the_ends_of_time_are_stored_and_read() {
    // The head's time span is computed from its extremes; samples near
    // i64::MIN and i64::MAX once overflowed that subtraction.
    let d = tempfile::tempdir().expect("tempdir");
    let db = Db::open(d.path(), opts()).expect("open");
    let a = l(&[("__name__", "a")]);
    let b = l(&[("__name__", "b")]);
    let mut app = db.appender();
    app.append(&a, i64::MIN + 1, 1.0);
    app.append(&b, i64::MAX - 1, 2.0);
    let rep = app.commit().expect("commit");
    assert_eq!(rep.rejected_count, 0);
    let got = db.select(&[], i64::MIN, i64::MAX).expect("select");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].samples, vec![Sample::new(i64::MIN + 1, 1.0)]);
    assert_eq!(got[1].samples, vec![Sample::new(i64::MAX - 1, 2.0)]);
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

#[test]
fn sealed_head_chunks_leave_the_heap_and_read_back_across_restarts_and_cuts() {
    let series: Vec<Labels> = (0..50)
        .map(|i| l(&[("__name__", "m"), ("i", &i.to_string())]))
        .collect();
    let mut model = Model::new();
    // 1,000 samples of 15 s each (four sealed chunks and an open one),
    // float values so the chunks are large.
    let write = |db: &Db, model: &mut Model| {
        for k in 0..1000i64 {
            let mut app = db.appender();
            for (i, s) in series.iter().enumerate() {
                let v = ((k * 7919 + i as i64 * 104_729) % 10_007) as f64 / 3.0;
                app.append(s, k * 15_000, v);
                model.entry(s.clone()).or_default().push(Sample { t: k * 15_000, v });
            }
            app.commit().expect("commit");
        }
    };
    let on_heap = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        on_heap.path(),
        Options {
            head_chunks_on_disk: false,
            ..opts()
        },
    )
    .expect("open");
    write(&db, &mut Model::new());
    let heap_bytes = db.stats(0).head_bytes;
    assert_eq!(files_in(&on_heap.path().join("head_chunks")), 0);
    drop(db);

    let d = tempfile::tempdir().expect("tempdir");
    let chunks = d.path().join("head_chunks");
    let db = Db::open(d.path(), opts()).expect("open");
    write(&db, &mut model);
    let mapped_bytes = db.stats(0).head_bytes;
    assert_eq!(files_in(&chunks), 1, "one segment holds the sealed chunks");
    // Four sealed chunks of 240 float samples a series are well over 100
    // bytes each.
    assert!(
        mapped_bytes + 50 * 4 * 100 < heap_bytes,
        "head heap bytes {mapped_bytes} with segments against {heap_bytes} without"
    );
    check(&db, &model, &[], i64::MIN, i64::MAX);
    check(&db, &model, &[], 200 * 15_000, 700 * 15_000);
    drop(db);

    // Replay writes the segment anew; the old one is gone.
    let db = Db::open(d.path(), opts()).expect("reopen");
    assert_eq!(files_in(&chunks), 1);
    check(&db, &model, &[], i64::MIN, i64::MAX);
    assert!(db.stats(0).head_bytes + 50 * 4 * 100 < heap_bytes);
    // Once everything is in a block, reads go there; new chunks fill the
    // same segment while it has room.
    db.flush().expect("flush");
    check(&db, &model, &[], i64::MIN, i64::MAX);
    let mut more = model.clone();
    for k in 1000..1300i64 {
        let mut app = db.appender();
        for s in &series {
            app.append(s, k * 15_000, k as f64);
            more.get_mut(s).expect("series").push(Sample {
                t: k * 15_000,
                v: k as f64,
            });
        }
        app.commit().expect("commit");
    }
    check(&db, &more, &[], i64::MIN, i64::MAX);
    assert_eq!(files_in(&chunks), 1);
}

#[test]
fn an_out_of_order_sample_behind_several_entries_of_its_series_keeps_every_sample() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = || Options {
        ooo_window_ms: 10_000,
        ..opts()
    };
    let (s, w) = (l(&[("__name__", "s")]), l(&[("__name__", "w")]));
    let read = |db: &Db, ls: &Labels| -> Vec<(i64, f64)> {
        db.select(&[Matcher::equal("__name__", ls.metric_name())], 0, i64::MAX)
            .expect("select")
            .first()
            .map(|x| x.samples.iter().map(|p| (p.t, p.v)).collect())
            .unwrap_or_default()
    };
    {
        let db = Db::open(dir.path(), o()).expect("open");
        let mut a = db.appender();
        // Series s in three entries, w between them; 11 s arrives behind
        // the staged 10 s and 12 s of two earlier entries, then 13 s.
        a.append(&s, 10_000, 1.0);
        a.append(&w, 1_000, 1.0);
        a.append(&s, 12_000, 2.0);
        a.append(&w, 2_000, 2.0);
        a.append(&s, 11_000, 3.0);
        a.append(&s, 13_000, 4.0);
        a.append(&s, 13_000, 4.0);
        let r = a.commit().expect("commit");
        assert_eq!(
            (r.appended, r.duplicates, r.rejected_count),
            (6, 1, 0),
            "{:?}",
            r.rejected
        );
        assert_eq!(
            read(&db, &s),
            vec![(10_000, 1.0), (11_000, 3.0), (12_000, 2.0), (13_000, 4.0)]
        );
        assert_eq!(read(&db, &w), vec![(1_000, 1.0), (2_000, 2.0)]);
        db.close().expect("close");
    }
    let db = Db::open(dir.path(), o()).expect("reopen");
    assert_eq!(
        read(&db, &s),
        vec![(10_000, 1.0), (11_000, 3.0), (12_000, 2.0), (13_000, 4.0)],
        "the replay agrees"
    );
    assert_eq!(read(&db, &w), vec![(1_000, 1.0), (2_000, 2.0)]);
}
