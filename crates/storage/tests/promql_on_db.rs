//! Prometheus's PromQL test scripts run against the storage engine (`Db`)
//! instead of the in-memory test store: with every sample in the head, with
//! everything cut into blocks, and split between blocks and the head. Every
//! eval must have the same outcome as on the in-memory store: the engine's
//! reads through `select` and `select_map` (series read whole, merged across
//! blocks, reduced as they are read, last samples taken from the head) must
//! not change a single answer.

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard};
use sextant_model::{Labels, Mapped, Matcher, Queryable, ReadError, Sample, SampleMap, SelectHints, Series};
use sextant_promql::promqltest::{script_files, Script, ScriptStore};
use sextant_promql::{EngineOptions, MemStore};
use sextant_storage::{Db, FsyncPolicy, Options};

/// Where the loaded samples are when a script reads them.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// All in the head.
    Head,
    /// All cut into blocks.
    Blocks,
    /// Samples up to the middle of the loaded time range in blocks, the rest in
    /// the head, so most series are read from both and merged.
    Split,
}

/// The script's data, and a `Db` built from it (in a temporary directory) on
/// the first read after each load.
struct DbStore {
    layout: Layout,
    /// The loaded data, with the scripts' own replacement rule.
    data: MemStore,
    db: RwLock<Option<(tempfile::TempDir, Db)>>,
}

impl DbStore {
    fn new(layout: Layout) -> DbStore {
        DbStore {
            layout,
            data: MemStore::new(),
            db: RwLock::new(None),
        }
    }

    fn build(&self) -> (tempfile::TempDir, Db) {
        let d = tempfile::tempdir().expect("tempdir");
        let opts = Options {
            background: false,
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        let db = Db::open(d.path(), opts).expect("open");
        let data = self
            .data
            .select(&[], i64::MIN, i64::MAX, SelectHints::default())
            .expect("read data");
        let append = |keep: &dyn Fn(i64) -> bool| {
            let mut app = db.appender();
            for series in &data {
                for s in series.samples.iter().filter(|s| keep(s.t)) {
                    app.append(&series.labels, s.t, s.v);
                }
            }
            let rep = app.commit().expect("commit");
            assert_eq!(rep.rejected_count, 0, "{:?}", rep.rejected.first());
        };
        match self.layout {
            Layout::Head => append(&|_| true),
            Layout::Blocks => {
                append(&|_| true);
                db.flush().expect("flush");
            }
            Layout::Split => {
                let ts = || data.iter().flat_map(|x| &x.samples).map(|s| s.t);
                let (lo, hi) = (ts().min().unwrap_or(0), ts().max().unwrap_or(0));
                let mid = lo + (hi - lo) / 2;
                append(&|t| t <= mid);
                db.flush().expect("flush");
                append(&|t| t > mid);
            }
        }
        (d, db)
    }

    fn read(&self) -> MappedRwLockReadGuard<'_, Db> {
        if self.db.read().is_none() {
            let built = self.build();
            let mut w = self.db.write();
            if w.is_none() {
                *w = Some(built);
            }
        }
        RwLockReadGuard::map(self.db.read(), |d| &d.as_ref().expect("built").1)
    }
}

impl ScriptStore for DbStore {
    fn add(&self, labels: Labels, samples: &[Sample]) -> Result<(), String> {
        self.data.add(labels, samples);
        *self.db.write() = None;
        Ok(())
    }
    fn clear(&self) {
        self.data.clear();
        *self.db.write() = None;
    }
}

impl Queryable for DbStore {
    fn select(&self, ms: &[Matcher], mint: i64, maxt: i64, hints: SelectHints) -> Result<Vec<Series>, ReadError> {
        Queryable::select(&*self.read(), ms, mint, maxt, hints)
    }
    fn select_map(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
        map: &SampleMap<'_>,
    ) -> Result<Mapped, ReadError> {
        Queryable::select_map(&*self.read(), ms, mint, maxt, hints, map)
    }
    fn select_fold(
        &self,
        ms: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: SelectHints,
        map: &SampleMap<'_>,
        part: &sextant_model::NewFoldPart<'_>,
    ) -> Result<sextant_model::Folded, ReadError> {
        Queryable::select_fold(&*self.read(), ms, mint, maxt, hints, map, part)
    }
    fn label_names(&self, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
        Queryable::label_names(&*self.read(), ms, mint, maxt)
    }
    fn label_values(&self, name: &str, ms: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<String>, ReadError> {
        Queryable::label_values(&*self.read(), name, ms, mint, maxt)
    }
}

fn compare(layout: Layout) {
    let opts = EngineOptions::default();
    let store = DbStore::new(layout);
    let (mut same, mut differ) = (0usize, Vec::new());
    for (prefix, path) in script_files() {
        let name = format!(
            "{prefix}{}",
            path.file_name().and_then(|s| s.to_str()).unwrap_or_default()
        );
        let text = std::fs::read_to_string(&path).expect("read script");
        let Ok(script) = Script::parse(&text) else { continue };
        let mem = script.run(&opts);
        let db = script.run_on(&opts, &store);
        assert_eq!(mem.len(), db.len(), "{name}: evals");
        for (m, d) in mem.iter().zip(db.iter()) {
            if m.error.is_some() == d.error.is_some() {
                same += 1;
            } else {
                differ.push(format!(
                    "{name}:{} {}: in memory {:?}, on Db {:?}",
                    m.line, m.expr, m.error, d.error
                ));
            }
        }
    }
    for d in &differ {
        println!("DIFFERENT {d}");
    }
    println!(
        "{same} evals with the same outcome, {} different ({layout:?})",
        differ.len()
    );
    assert!(same > 1000, "ran the scripts ({same} evals)");
    assert!(differ.is_empty(), "{} evals differ on Db", differ.len());
}

#[test]
fn scripts_give_the_same_answers_from_the_head() {
    compare(Layout::Head);
}

#[test]
fn scripts_give_the_same_answers_from_blocks() {
    compare(Layout::Blocks);
}

#[test]
fn scripts_give_the_same_answers_from_blocks_and_head_merged() {
    compare(Layout::Split);
}
