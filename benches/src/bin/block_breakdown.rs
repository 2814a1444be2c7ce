//! Where a block's bytes go: index sections and chunk columns by value kind,
//! for a fleet of `--series N` over 2 h at 15 s.
//!
//! `cargo run --release -p sextant-benches --bin block_breakdown -- --series 20000`

use sextant_benches::{bench_options, fleet, load};

fn main() {
    let n = sextant_benches::series_arg(20_000);
    let f = fleet(n);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sextant_storage::Db::open(dir.path(), bench_options()).expect("open");
    let samples = load(&db, &f, 1_764_547_200_000, 480, 15_000);
    db.flush().expect("flush");
    for e in std::fs::read_dir(dir.path().join("blocks")).expect("blocks") {
        let p = e.expect("entry").path();
        let b = sextant_storage::block::Block::open(&p).expect("open block");
        for (name, len) in b.index_sections() {
            println!(
                "  index section {name}: {len} bytes, {:.3} bytes/sample",
                len as f64 / samples as f64
            );
        }
        for file in ["index", "chunks", "meta.json"] {
            let len = std::fs::metadata(p.join(file)).map(|m| m.len()).unwrap_or(0);
            println!("{file}: {len} bytes, {:.3} bytes/sample", len as f64 / samples as f64);
        }
    }
    // Raw (pre-zstd) column sizes by kind, from re-encoding the series.
    let (mut ints, mut floats, mut n_int, mut n_float) = (0usize, 0usize, 0usize, 0usize);
    let (mut decs, mut n_dec) = (0usize, 0usize);
    for i in 0..f.series.len() {
        let s: Vec<sextant_model::Sample> = (0..480)
            .map(|k| {
                let t = 1_764_547_200_000 + k * 15_000;
                sextant_model::Sample::new(t, f.value(i, t))
            })
            .collect();
        let c = sextant_storage::chunkenc::encode(&s);
        match c.kind {
            sextant_storage::chunkenc::ValueKind::Int | sextant_storage::chunkenc::ValueKind::FittedInt => {
                ints += c.vals().len();
                n_int += 480;
            }
            sextant_storage::chunkenc::ValueKind::Float => {
                floats += c.vals().len();
                n_float += 480;
            }
            sextant_storage::chunkenc::ValueKind::Decimal(_)
            | sextant_storage::chunkenc::ValueKind::FittedDecimal(_) => {
                decs += c.vals().len();
                n_dec += 480;
            }
        }
    }
    println!(
        "int value columns: {:.2} bytes/sample over {n_int} samples",
        ints as f64 / n_int as f64
    );
    println!(
        "decimal value columns: {:.2} bytes/sample over {n_dec} samples",
        decs as f64 / n_dec.max(1) as f64
    );
    println!(
        "float value columns: {:.2} bytes/sample over {n_float} samples",
        floats as f64 / n_float as f64
    );
}
