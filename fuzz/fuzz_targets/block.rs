//! Blocks: a small valid block is damaged by the fuzzer's edits (XOR bytes at
//! offsets of its `index` or `chunks` file), then its checksums are made
//! right again, so that the damage reaches the decoders behind them. Opening
//! and reading every series, postings list and label must never panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sextant_model::{Labels, MatchOp, Matcher, Sample};
use sextant_storage::block::{Block, BlockWriter};

struct Pristine {
    dir: PathBuf,
    index: Vec<u8>,
    chunks: Vec<u8>,
}

fn pristine() -> &'static Pristine {
    static P: OnceLock<Pristine> = OnceLock::new();
    P.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("sextant-fuzz-block-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("root");
        let mut w = BlockWriter::new(&root, "b").expect("writer");
        let mut all = Vec::new();
        for i in 0..30 {
            let inst = format!("gpu-{i}");
            let ls = Labels::from_pairs([
                (
                    "__name__",
                    if i % 3 == 0 {
                        "vllm:kv_cache_usage_perc"
                    } else {
                        "DCGM_FI_DEV_POWER_USAGE"
                    },
                ),
                ("instance", inst.as_str()),
                ("model_name", if i % 2 == 0 { "llama" } else { "mistral" }),
            ]);
            let samples: Vec<Sample> = (0..600)
                .map(|k| Sample {
                    t: k * 15_000,
                    v: if i % 3 == 0 {
                        (k % 100) as f64 / 100.0
                    } else {
                        250.0 + (k * i) as f64 * 0.37
                    },
                })
                .collect();
            all.push((ls, samples));
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (ls, samples) in &all {
            w.add_series(ls, samples).expect("add");
        }
        w.finish(None, 1, Vec::new()).expect("finish").expect("a block");
        let dir = root.join("b");
        Pristine {
            index: std::fs::read(dir.join("index")).expect("index"),
            chunks: std::fs::read(dir.join("chunks")).expect("chunks"),
            dir,
        }
    })
}

fn u32le(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn u64le(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

/// Recomputes the section CRCs and the TOC CRC (docs/format/index.md).
fn fix_index(b: &mut [u8]) {
    let n = b.len();
    if n < 8 + 5 * 20 + 8 {
        return;
    }
    let toc = n - 8 - 5 * 20;
    for i in 0..5 {
        let e = toc + i * 20;
        let (Some(off), Some(len)) = (u64le(b, e), u64le(b, e + 8)) else {
            return;
        };
        if let Some(sec) = off.checked_add(len).filter(|end| *end <= toc).map(|end| &b[off..end]) {
            let c = crc32fast::hash(sec).to_le_bytes();
            b[e + 16..e + 20].copy_from_slice(&c);
        }
    }
    let c = crc32fast::hash(&b[toc..n - 8]).to_le_bytes();
    b[n - 8..n - 4].copy_from_slice(&c);
}

/// Recomputes each page's CRC (docs/format/chunks.md).
fn fix_chunks(b: &mut [u8]) {
    let mut off = 8;
    while let (Some(raw), Some(comp)) = (u32le(b, off), u32le(b, off + 4)) {
        let Some(end) = (off + 12).checked_add(comp).filter(|e| *e <= b.len()) else {
            return;
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&(raw as u32).to_le_bytes());
        h.update(&(comp as u32).to_le_bytes());
        h.update(&b[off + 12..end]);
        let c = h.finalize().to_le_bytes();
        b[off + 8..off + 12].copy_from_slice(&c);
        off = end;
    }
}

fn read_all(b: &Block) {
    let mut out = Vec::new();
    for id in 0..b.num_series().min(10_000) {
        let _ = b.labels(id);
        out.clear();
        let _ = b.samples(id, i64::MIN, i64::MAX, &mut out);
        // An instant read: the last sample of a window alone.
        out.clear();
        let _ = b.read(id, 3_000_000, 3_300_000, true, None, &mut out);
    }
    let _ = b.postings_for(&[]);
    for m in [
        Matcher::new(MatchOp::Equal, "model_name", "llama"),
        Matcher::new(MatchOp::Regex, "instance", "gpu-1.*"),
        Matcher::new(MatchOp::NotEqual, "__name__", ""),
    ]
    .into_iter()
    .flatten()
    {
        let _ = b.postings_for(std::slice::from_ref(&m));
    }
    for n in b.label_names(None) {
        let _ = b.label_values(&n, None);
    }
}

fn write_block(dir: &Path, index: &[u8], chunks: &[u8]) {
    std::fs::write(dir.join("index"), index).expect("index");
    std::fs::write(dir.join("chunks"), chunks).expect("chunks");
}

fuzz_target!(|data: &[u8]| {
    let p = pristine();
    let (Some(&which), Some(edits)) = (data.first(), data.get(1..)) else {
        return;
    };
    let mut index = p.index.clone();
    let mut chunks = p.chunks.clone();
    {
        let target = if which & 1 == 0 { &mut index } else { &mut chunks };
        // Each edit: u32 offset, one XOR byte.
        for e in edits.chunks_exact(5).take(64) {
            let off = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize % target.len();
            target[off] ^= e[4];
        }
    }
    if which & 2 == 0 {
        fix_index(&mut index);
        fix_chunks(&mut chunks);
    }
    write_block(&p.dir, &index, &chunks);
    if let Ok(b) = Block::open(&p.dir) {
        read_all(&b);
    }
    write_block(&p.dir, &p.index, &p.chunks);
});
