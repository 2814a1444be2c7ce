//! Damage at every section of every file kind: single bit flips at the first,
//! middle and last byte of each section (and of each field of WAL frames), and
//! truncations, each on a fresh copy of one store with two blocks (one with
//! tombstones), a WAL checkpoint and live WAL segments.
//!
//! For each case the store must open, say what it lost (the block moved aside,
//! or the WAL record skipped or cut, with its file and byte offset), and serve
//! everything else exactly: the test computes what the damage can cost from
//! the file layouts in `docs/format/` and compares the store with a model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sextant_model::{Labels, MatchOp, Matcher, Sample};
use sextant_storage::wal::{decode_record, Record};
use sextant_storage::{Db, FsyncPolicy, Options};

const HOUR: i64 = 3_600_000;
const STEP: i64 = 60_000;
const SERIES: usize = 12;

fn opts() -> Options {
    Options {
        background: false,
        fsync: FsyncPolicy::Never,
        block_range_ms: HOUR,
        ..Options::default()
    }
}

fn labels(i: usize) -> Labels {
    let inst = format!("gpu-{i}");
    let model = if i.is_multiple_of(2) { "llama" } else { "mistral" };
    Labels::from_pairs([
        ("__name__", "vllm:num_requests_running"),
        ("instance", inst.as_str()),
        ("model_name", model),
    ])
}

fn value(i: usize, t: i64) -> f64 {
    if i.is_multiple_of(3) {
        (t / STEP) as f64 * 0.25
    } else {
        ((t / STEP) as usize * (i + 1) % 17) as f64
    }
}

type Model = BTreeMap<Labels, BTreeSet<(i64, u64)>>;

/// Builds the store: two flushed blocks over [0, 2h) with a delete in the
/// second, then a head over [2h, 2h40m) written one commit per minute.
fn build(dir: &Path) -> Model {
    let mut model = Model::new();
    let db = Db::open(dir, opts()).expect("open");
    for t in (0..2 * HOUR).step_by(STEP as usize) {
        let mut app = db.appender();
        for i in 0..SERIES {
            app.append(&labels(i), t, value(i, t));
            model.entry(labels(i)).or_default().insert((t, value(i, t).to_bits()));
        }
        app.commit().expect("commit");
    }
    assert_eq!(db.flush().expect("flush").len(), 2);
    // Tombstones in the second block: gpu-1 over [1h, 1h30m].
    let gone = [Matcher::new(MatchOp::Equal, "instance", "gpu-1").expect("matcher")];
    db.delete(&gone, HOUR, HOUR + HOUR / 2).expect("delete");
    if let Some(s) = model.get_mut(&labels(1)) {
        s.retain(|(t, _)| !(HOUR..=HOUR + HOUR / 2).contains(t));
    }
    for t in (2 * HOUR..2 * HOUR + 40 * STEP).step_by(STEP as usize) {
        let mut app = db.appender();
        for i in 0..SERIES {
            app.append(&labels(i), t, value(i, t));
            model.entry(labels(i)).or_default().insert((t, value(i, t).to_bits()));
        }
        app.commit().expect("commit");
    }
    db.close().expect("close");
    model
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

fn read_store(db: &Db) -> Model {
    let mut got = Model::new();
    for s in db.select(&[], i64::MIN, i64::MAX).expect("select") {
        let e = got.entry(s.labels).or_default();
        for Sample { t, v } in s.samples {
            assert!(e.insert((t, v.to_bits())), "duplicate sample at {t}");
        }
    }
    got.retain(|_, s| !s.is_empty());
    got
}

/// One piece of damage.
#[derive(Debug, Clone)]
enum Damage {
    Flip { file: PathBuf, pos: usize, bit: u8 },
    Truncate { file: PathBuf, len: usize },
}

impl Damage {
    fn apply(&self, root: &Path) {
        match self {
            Damage::Flip { file, pos, bit } => {
                let p = root.join(file);
                let mut b = std::fs::read(&p).expect("read");
                b[*pos] ^= 1 << bit;
                std::fs::write(&p, b).expect("write");
            }
            Damage::Truncate { file, len } => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(root.join(file))
                    .expect("open");
                f.set_len(*len as u64).expect("truncate");
            }
        }
    }
    fn file(&self) -> &Path {
        match self {
            Damage::Flip { file, .. } | Damage::Truncate { file, .. } => file,
        }
    }
}

/// First, middle and last byte of `[start, end)`, with a bit chosen from the
/// position so that every bit gets hit across the sweep.
fn flips(file: &Path, start: usize, end: usize, out: &mut Vec<(Damage, String)>, what: &str) {
    if end <= start {
        return;
    }
    let mut ps = vec![start, start + (end - start) / 2, end - 1];
    ps.dedup();
    for pos in ps {
        out.push((
            Damage::Flip {
                file: file.to_path_buf(),
                pos,
                bit: (pos % 8) as u8,
            },
            format!("{} {what} byte {pos}", file.display()),
        ));
    }
}

fn u32le(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize
}

fn u64le(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes")) as usize
}

/// Damage cases for one block directory, from the layouts in
/// `docs/format/index.md` and `docs/format/chunks.md`.
fn block_cases(root: &Path, block: &Path, out: &mut Vec<(Damage, String)>) {
    let rel = |f: &str| block.strip_prefix(root).expect("under root").join(f);
    // index: header, five sections from the TOC, the TOC, its CRC, the trailer.
    let idx = std::fs::read(block.join("index")).expect("index");
    let n = idx.len();
    let toc_start = n - 8 - 5 * 20;
    let file = rel("index");
    flips(&file, 0, 8, out, "header");
    let names = ["symbols", "series", "series page table", "postings", "postings table"];
    for (i, name) in names.iter().enumerate() {
        let e = toc_start + i * 20;
        let (off, len) = (u64le(&idx, e), u64le(&idx, e + 8));
        flips(&file, off, off + len, out, &format!("section {name}"));
    }
    flips(&file, toc_start, n - 8, out, "TOC");
    flips(&file, n - 8, n - 4, out, "TOC CRC");
    flips(&file, n - 4, n, out, "trailer");
    for len in [0, 8, n / 2, n - 1] {
        out.push((
            Damage::Truncate {
                file: file.clone(),
                len,
            },
            format!("index truncated to {len}"),
        ));
    }
    // chunks: header, then each field of the first and the last page.
    let ch = std::fs::read(block.join("chunks")).expect("chunks");
    let file = rel("chunks");
    flips(&file, 0, 8, out, "header");
    let mut pages = Vec::new();
    let mut off = 8;
    while off < ch.len() {
        let comp = u32le(&ch, off + 4);
        pages.push(off);
        off += 12 + comp;
    }
    assert_eq!(off, ch.len(), "chunk pages tile the file");
    let last = *pages.last().expect("a page");
    for p in [pages[0], last] {
        let comp = u32le(&ch, p + 4);
        flips(&file, p, p + 4, out, "page raw_len");
        flips(&file, p + 4, p + 8, out, "page comp_len");
        flips(&file, p + 8, p + 12, out, "page crc");
        flips(&file, p + 12, p + 12 + comp, out, "page data");
    }
    for len in [0, 8, ch.len() / 2, ch.len() - 1] {
        out.push((
            Damage::Truncate {
                file: file.clone(),
                len,
            },
            format!("chunks truncated to {len}"),
        ));
    }
    // meta.json: each field's value.
    let meta = std::fs::read_to_string(block.join("meta.json")).expect("meta");
    let file = rel("meta.json");
    for key in [
        "\"id\"",
        "\"min_time\"",
        "\"max_time\"",
        "\"num_series\"",
        "\"level\"",
        "\"version\"",
        "\"checksum\"",
    ] {
        let at = meta.find(key).expect("key") + key.len();
        let end = at + meta[at..].find([',', '\n', '}']).expect("value end");
        flips(&file, at + 2, end, out, &format!("meta {key}"));
    }
    out.push((
        Damage::Truncate {
            file: file.clone(),
            len: meta.len() / 2,
        },
        "meta.json truncated".into(),
    ));
    // tombstones: magic, count, intervals, CRC.
    if let Ok(tb) = std::fs::read(block.join("tombstones")) {
        let file = rel("tombstones");
        let n = tb.len();
        flips(&file, 0, 8, out, "tombstones header");
        flips(&file, 8, n - 4, out, "tombstones intervals");
        flips(&file, n - 4, n, out, "tombstones crc");
        out.push((Damage::Truncate { file, len: n - 2 }, "tombstones truncated".into()));
    }
}

/// A WAL file's frames: (offset, length of body).
fn frames(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 9 <= b.len() {
        let len = u32le(b, off);
        out.push((off, len));
        off += 9 + len;
    }
    assert_eq!(off, b.len(), "frames tile the file");
    out
}

fn wal_cases(root: &Path, file: &Path, out: &mut Vec<(Damage, String)>) {
    let b = std::fs::read(root.join(file)).expect("wal file");
    let fr = frames(&b);
    if fr.is_empty() {
        return;
    }
    let picks = [0, fr.len() / 2, fr.len() - 1];
    for &k in picks.iter().collect::<BTreeSet<_>>() {
        let (off, len) = fr[k];
        flips(file, off, off + 4, out, &format!("frame {k} len"));
        flips(file, off + 4, off + 8, out, &format!("frame {k} crc"));
        flips(file, off + 8, off + 9, out, &format!("frame {k} reserved"));
        flips(file, off + 9, off + 9 + len, out, &format!("frame {k} body"));
    }
    for len in [fr[fr.len() / 2].0 + 3, b.len() - 1] {
        out.push((
            Damage::Truncate {
                file: file.to_path_buf(),
                len,
            },
            format!("{} truncated to {len}", file.display()),
        ));
    }
}

/// What a damaged WAL file can cost: the samples of the frames at and after
/// the first frame the damage touches, in that file. The store may keep more
/// (a skipped record costs only itself) but never less than the rest.
fn wal_at_risk(root: &Path, d: &Damage, refs: &BTreeMap<u32, Labels>) -> (BTreeSet<(Labels, i64)>, usize) {
    let b = std::fs::read(root.join(d.file())).expect("wal file");
    let fr = frames(&b);
    let first = match d {
        Damage::Flip { pos, .. } => fr.iter().position(|(o, l)| *pos < o + 9 + l).expect("frame"),
        Damage::Truncate { len, .. } => fr.iter().position(|(o, l)| *len < o + 9 + l).unwrap_or(fr.len()),
    };
    let mut risk = BTreeSet::new();
    for &(o, l) in &fr[first..] {
        match decode_record(&b[o + 9..o + 9 + l]).expect("pristine record") {
            Record::Samples(ss) => {
                for s in ss {
                    risk.insert((refs[&s.sref].clone(), s.t));
                }
            }
            Record::Series(ss) => {
                // Losing a Series record loses every sample of its series.
                for (_, ls) in ss {
                    for t in (2 * HOUR..2 * HOUR + 40 * STEP).step_by(STEP as usize) {
                        risk.insert((ls.clone(), t));
                    }
                }
            }
            Record::Tombstones(_) => {}
        }
    }
    (risk, first)
}

fn wal_refs(root: &Path, files: &[PathBuf]) -> BTreeMap<u32, Labels> {
    let mut refs = BTreeMap::new();
    for f in files {
        let b = std::fs::read(root.join(f)).expect("wal");
        for (o, l) in frames(&b) {
            if let Ok(Record::Series(ss)) = decode_record(&b[o + 9..o + 9 + l]) {
                for (r, ls) in ss {
                    refs.entry(r).or_insert(ls);
                }
            }
        }
    }
    refs
}

#[test]
fn damage_anywhere_is_detected_reported_and_costs_only_what_it_touched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pristine = tmp.path().join("pristine");
    let model = build(&pristine);
    let mut blocks: Vec<PathBuf> = std::fs::read_dir(pristine.join("blocks"))
        .expect("blocks")
        .map(|e| e.expect("entry").path())
        .collect();
    blocks.sort();
    assert_eq!(blocks.len(), 2);
    assert!(blocks[1].join("tombstones").exists(), "the second block has tombstones");
    let mut wal_files: Vec<PathBuf> = std::fs::read_dir(pristine.join("wal"))
        .expect("wal")
        .map(|e| PathBuf::from("wal").join(e.expect("entry").file_name()))
        .filter(|p| std::fs::metadata(pristine.join(p)).is_ok_and(|m| m.is_file() && m.len() > 0))
        .collect();
    wal_files.sort();
    assert!(!wal_files.is_empty());
    let refs = wal_refs(&pristine, &wal_files);

    let mut cases = Vec::new();
    for b in &blocks {
        block_cases(&pristine, b, &mut cases);
    }
    for f in &wal_files {
        wal_cases(&pristine, f, &mut cases);
    }
    let block_ids: Vec<String> = blocks
        .iter()
        .map(|b| b.file_name().expect("name").to_string_lossy().to_string())
        .collect();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (damage, what)) in cases.iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        copy_dir(&pristine, &dir);
        damage.apply(&dir);
        let (db, rep) = Db::open_with_report(&dir, opts()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        println!("case {i}: {what}");
        let got = read_store(&db);
        let file = damage.file().to_string_lossy().to_string();
        if let Some(bi) = block_ids.iter().position(|id| file.contains(id.as_str())) {
            // The damaged block is moved aside and named; the rest is exact.
            let id = &block_ids[bi];
            assert_eq!(rep.quarantined.len(), 1, "{what}: {:?}", rep.quarantined);
            assert!(
                rep.quarantined[0].contains(id.as_str()),
                "{what}: {:?}",
                rep.quarantined
            );
            assert!(dir.join("corrupted").join(id).is_dir(), "{what}: not moved aside");
            let (lo, hi) = (bi as i64 * HOUR, (bi as i64 + 1) * HOUR);
            let mut want = model.clone();
            for s in want.values_mut() {
                s.retain(|(t, _)| !(lo..hi).contains(t));
            }
            want.retain(|_, s| !s.is_empty());
            assert_eq!(got, want, "{what}: the other block and the head must be intact");
            *tally.entry("block: moved aside").or_default() += 1;
        } else {
            // WAL: nothing outside the damaged frames' reach is lost; what is
            // lost is reported with the file and the first damaged frame.
            assert!(rep.quarantined.is_empty(), "{what}: {:?}", rep.quarantined);
            let (risk, first) = wal_at_risk(&pristine, damage, &refs);
            let mut lost = Vec::new();
            for (ls, samples) in &model {
                let have = got.get(ls);
                for (t, v) in samples {
                    let kept = have.is_some_and(|h| h.contains(&(*t, *v)));
                    if !kept {
                        lost.push((ls.clone(), *t));
                    }
                }
            }
            for x in &lost {
                assert!(risk.contains(x), "{what}: lost {x:?}, which the damage did not touch");
            }
            for (ls, s) in &got {
                let m = model
                    .get(ls)
                    .unwrap_or_else(|| panic!("{what}: invented series {ls:?}"));
                assert!(s.is_subset(m), "{what}: invented samples for {ls:?}");
            }
            let reserved = matches!(damage, Damage::Flip { file, pos, .. }
                if { let b = std::fs::read(pristine.join(file)).expect("wal"); frames(&b).iter().any(|(o, _)| *pos == o + 8) });
            if reserved {
                assert!(lost.is_empty(), "{what}: a reserved-byte flip lost data");
                assert!(
                    rep.wal.repairs.iter().any(|r| r.contains("reserved byte")),
                    "{what}: {:?}",
                    rep.wal.repairs
                );
                *tally.entry("WAL: reserved byte noted, nothing lost").or_default() += 1;
            } else {
                let fname = damage.file().file_name().expect("name").to_string_lossy().to_string();
                let frame_off = {
                    let b = std::fs::read(pristine.join(damage.file())).expect("wal");
                    frames(&b).get(first).map_or(b.len(), |f| f.0)
                };
                assert!(
                    rep.wal
                        .repairs
                        .iter()
                        .any(|r| r.contains(&fname) && r.contains(&format!("byte {frame_off}"))),
                    "{what}: the report must name {fname} at byte {frame_off}: {:?}",
                    rep.wal.repairs
                );
                *tally
                    .entry(if rep.wal.skipped_records > 0 {
                        "WAL: record skipped"
                    } else {
                        "WAL: tail cut"
                    })
                    .or_default() += 1;
            }
        }
        db.close().expect("close");
        drop(db);
        // A second open finds nothing new to repair in blocks and loses nothing more.
        let (db2, rep2) = Db::open_with_report(&dir, opts()).expect("reopen");
        assert!(rep2.quarantined.is_empty(), "{what}: {:?}", rep2.quarantined);
        assert_eq!(read_store(&db2), got, "{what}: a reopen changed the data");
        drop(db2);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
    println!("{} damage cases: {tally:?}", cases.len());
    assert!(cases.len() > 150, "{}", cases.len());
}
