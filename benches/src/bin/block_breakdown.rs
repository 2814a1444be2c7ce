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
    // Raw (pre-zstd) value column sizes by coding, from re-encoding the
    // series as the block writer does.
    let mut by: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for i in 0..f.series.len() {
        let s: Vec<sextant_model::Sample> = (0..480)
            .map(|k| {
                let t = 1_764_547_200_000 + k * 15_000;
                sextant_model::Sample::new(t, f.value(i, t))
            })
            .collect();
        let c = sextant_storage::chunkenc::encode_block(&s);
        use sextant_storage::chunkenc::ValueKind as K;
        let coding = match c.kind {
            K::Int | K::Decimal(_) => "delta-of-delta",
            K::FittedInt | K::FittedDecimal(_) => "fitted",
            K::PackedInt | K::PackedDecimal(_) => "packed",
            K::Float => "float",
        };
        let e = by.entry(coding).or_default();
        e.0 += c.vals.len();
        e.1 += 480;
    }
    for (coding, (bytes, n)) in by {
        println!(
            "{coding} value columns: {:.2} bytes/sample over {n} samples",
            bytes as f64 / n as f64
        );
    }
}
