//! Compaction: planning which blocks to merge, and merging them into one.

use std::path::Path;
use std::sync::Arc;

use sextant_model::{Labels, Sample};

use crate::block::{new_block_id, Block, BlockWriter};
use crate::error::Result;
use crate::head::merge_sorted;

/// Blocks to merge into one covering `range`.
pub struct Plan {
    pub inputs: Vec<Arc<Block>>,
    pub range: (i64, i64),
}

/// Picks the next merge: overlapping blocks first, then two or more blocks that
/// fit in one aligned window of the next level (each level spans three of the
/// one below), once that window lies wholly below the head (`floor`).
pub fn plan(blocks: &[Arc<Block>], base: i64, max_range: i64, floor: i64) -> Option<Plan> {
    // Overlaps (out-of-order data, crashed flushes) are merged whatever their size.
    for (i, a) in blocks.iter().enumerate() {
        let overl: Vec<Arc<Block>> = blocks
            .iter()
            .enumerate()
            .filter(|(j, b)| *j != i && b.meta().min_time < a.meta().max_time && a.meta().min_time < b.meta().max_time)
            .map(|(_, b)| b.clone())
            .collect();
        if !overl.is_empty() {
            let mut inputs = vec![a.clone()];
            inputs.extend(overl);
            let lo = inputs.iter().map(|b| b.meta().min_time).min().unwrap_or(0);
            let hi = inputs.iter().map(|b| b.meta().max_time).max().unwrap_or(0);
            return Some(Plan {
                inputs,
                range: (lo, hi),
            });
        }
    }
    let mut size = base * 3;
    while size <= max_range {
        let mut groups: std::collections::BTreeMap<i64, Vec<Arc<Block>>> = std::collections::BTreeMap::new();
        for b in blocks {
            let w = b.meta().min_time.div_euclid(size);
            if b.meta().max_time <= (w + 1) * size && b.meta().max_time - b.meta().min_time < size {
                groups.entry(w).or_default().push(b.clone());
            }
        }
        for (w, g) in groups {
            let end = (w + 1) * size;
            if g.len() >= 2 && end <= floor {
                return Some(Plan {
                    inputs: g,
                    range: (w * size, end),
                });
            }
        }
        size *= 3;
    }
    None
}

/// Merges `inputs` (tombstones applied, duplicates removed) into a new block.
pub fn merge_blocks(dir: &Path, inputs: &[Arc<Block>], range: (i64, i64)) -> Result<Option<Block>> {
    let id = new_block_id();
    let mut w = BlockWriter::new(dir, &id)?;
    // Each block's series ids are in label order: a k-way merge by labels.
    let mut cursors: Vec<(u32, u32)> = inputs.iter().map(|b| (0, b.num_series())).collect();
    let mut heads: Vec<Option<Labels>> = inputs.iter().map(|b| b.labels(0)).collect();
    let mut buf = Vec::new();
    let mut merged: Vec<Sample> = Vec::new();
    while let Some(min) = heads.iter().flatten().min().cloned() {
        merged.clear();
        for (i, b) in inputs.iter().enumerate() {
            if heads[i].as_ref() == Some(&min) {
                buf.clear();
                b.samples(cursors[i].0, i64::MIN, i64::MAX, &mut buf)?;
                if merged.is_empty() {
                    merged.append(&mut buf);
                } else {
                    let old = std::mem::take(&mut merged);
                    merge_sorted(&old, &buf, &mut merged);
                }
                cursors[i].0 += 1;
                heads[i] = if cursors[i].0 < cursors[i].1 {
                    b.labels(cursors[i].0)
                } else {
                    None
                };
            }
        }
        w.add_series(&min, &merged)?;
    }
    let level = inputs.iter().map(|b| b.meta().level).max().unwrap_or(1) + 1;
    let mut sources: Vec<String> = inputs.iter().flat_map(|b| b.meta().sources.clone()).collect();
    sources.extend(inputs.iter().map(|b| b.meta().id.clone()));
    sources.sort();
    sources.dedup();
    match w.finish(Some(range), level, sources)? {
        Some(m) => Ok(Some(Block::open(&dir.join(m.id))?)),
        None => Ok(None),
    }
}
