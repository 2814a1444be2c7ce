//! Write-ahead log: numbered segment files of checksummed records, replayed on
//! open, with torn or corrupt tails truncated, and checkpoints that let old
//! segments be deleted. Format: `docs/format/wal.md`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use sextant_model::{Label, Labels};

use crate::bits::{put_len_prefixed, put_uvarint, put_varint, ByteReader, Truncated};
use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;

/// Segment size after which a new segment is started.
pub const SEGMENT_SIZE: u64 = 128 << 20;
/// Largest record accepted on replay; anything larger is treated as corruption.
const MAX_RECORD: usize = 256 << 20;
const HEADER_LEN: usize = 9;

pub const REC_SERIES: u8 = 1;
pub const REC_SAMPLES: u8 = 2;
pub const REC_TOMBSTONES: u8 = 3;

/// When appended records are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every acknowledgement: nothing acknowledged is lost on power loss.
    Always,
    /// In the background every so many milliseconds: a power loss may lose that much.
    IntervalMs(u64),
    /// Never explicitly; the OS writes back. Process crashes lose nothing, power loss may.
    Never,
}

/// A decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Series(Vec<(u32, Labels)>),
    Samples(Vec<WalSample>),
    Tombstones(Vec<(u32, i64, i64)>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WalSample {
    pub sref: u32,
    pub t: i64,
    pub v: f64,
}

pub fn encode_series(out: &mut Vec<u8>, series: &[(u32, &Labels)]) {
    out.push(REC_SERIES);
    for (r, ls) in series {
        put_uvarint(out, *r as u64);
        put_uvarint(out, ls.len() as u64);
        for l in ls.iter() {
            put_len_prefixed(out, l.name.as_bytes());
            put_len_prefixed(out, l.value.as_bytes());
        }
    }
}

/// Builds a Samples record one sample at a time, with no list of them in
/// between: the same bytes as [`encode_samples`].
pub struct SamplesRecord {
    buf: Vec<u8>,
    base: Option<(u32, i64)>,
    len: usize,
}

impl SamplesRecord {
    /// A record with room for about `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        let mut buf = Vec::with_capacity(n.saturating_mul(12).saturating_add(16));
        buf.push(REC_SAMPLES);
        SamplesRecord {
            buf,
            base: None,
            len: 0,
        }
    }

    pub fn push(&mut self, sref: u32, t: i64, v: f64) {
        let (base_ref, base_t) = *self.base.get_or_insert_with(|| {
            put_uvarint(&mut self.buf, sref as u64);
            put_varint(&mut self.buf, t);
            (sref, t)
        });
        put_varint(&mut self.buf, sref as i64 - base_ref as i64);
        put_varint(&mut self.buf, t.wrapping_sub(base_t));
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
        self.len += 1;
    }

    /// Samples pushed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The record's body.
    pub fn into_body(self) -> Vec<u8> {
        self.buf
    }
}

pub fn encode_samples(out: &mut Vec<u8>, samples: &[WalSample]) {
    out.push(REC_SAMPLES);
    let Some(first) = samples.first() else { return };
    put_uvarint(out, first.sref as u64);
    put_varint(out, first.t);
    for s in samples {
        put_varint(out, s.sref as i64 - first.sref as i64);
        put_varint(out, s.t.wrapping_sub(first.t));
        out.extend_from_slice(&s.v.to_bits().to_le_bytes());
    }
}

pub fn encode_tombstones(out: &mut Vec<u8>, ts: &[(u32, i64, i64)]) {
    out.push(REC_TOMBSTONES);
    for (r, a, b) in ts {
        put_uvarint(out, *r as u64);
        put_varint(out, *a);
        put_varint(out, *b);
    }
}

pub fn decode_record(b: &[u8]) -> std::result::Result<Record, Truncated> {
    let mut r = ByteReader::new(b);
    match r.u8()? {
        REC_SERIES => {
            let mut out = Vec::new();
            while !r.is_empty() {
                let sref = u32::try_from(r.uvarint()?).map_err(|_| Truncated)?;
                let n = r.uvarint()? as usize;
                if n > 10_000 {
                    return Err(Truncated);
                }
                let mut ls = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.str()?;
                    let value = r.str()?;
                    ls.push(Label::new(name, value));
                }
                out.push((sref, Labels::from_vec(ls)));
            }
            Ok(Record::Series(out))
        }
        REC_SAMPLES => {
            let mut out = Vec::new();
            if r.is_empty() {
                return Ok(Record::Samples(out));
            }
            let base_ref = r.uvarint()? as i64;
            let base_t = r.varint()?;
            while !r.is_empty() {
                let sref = base_ref.checked_add(r.varint()?).ok_or(Truncated)?;
                let sref = u32::try_from(sref).map_err(|_| Truncated)?;
                let t = base_t.wrapping_add(r.varint()?);
                let v = f64::from_bits(r.u64_le()?);
                out.push(WalSample { sref, t, v });
            }
            Ok(Record::Samples(out))
        }
        REC_TOMBSTONES => {
            let mut out = Vec::new();
            while !r.is_empty() {
                let sref = u32::try_from(r.uvarint()?).map_err(|_| Truncated)?;
                out.push((sref, r.varint()?, r.varint()?));
            }
            Ok(Record::Tombstones(out))
        }
        _ => Err(Truncated),
    }
}

/// Frames a record body: `len u32 | crc32 u32 | 0 u8 (reserved) | body`.
fn frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.push(0);
    out.extend_from_slice(body);
}

fn segment_name(n: u64) -> String {
    format!("{n:08}")
}

/// Lists `(number, path)` of segments in `dir`, ascending.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = s.parse() {
                v.push((n, e.path()));
            }
        }
    }
    v.sort();
    Ok(v)
}

/// The newest complete checkpoint `checkpoint.NNNNNNNN` (covering segments up to N).
fn latest_checkpoint(dir: &Path) -> io::Result<Option<(u64, PathBuf)>> {
    let mut best = None;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(s) = name.to_str() else { continue };
        if let Some(num) = s.strip_prefix("checkpoint.") {
            if let Ok(n) = num.parse::<u64>() {
                if best.as_ref().is_none_or(|(b, _)| n > *b) {
                    best = Some((n, e.path()));
                }
            }
        }
    }
    Ok(best)
}

/// What replay found, for the startup log.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub checkpoint: Option<u64>,
    /// Human-readable descriptions of what was truncated or dropped.
    pub repairs: Vec<String>,
    /// Damaged records stepped over.
    pub skipped_records: u64,
    /// Bytes cut from damaged tails.
    pub truncated_bytes: u64,
}

/// What reading one file found.
#[derive(Debug, Default)]
struct FileScan {
    records: u64,
    size: u64,
    /// Where the readable part ends and why (the file is cut there).
    cut: Option<(u64, String)>,
    /// Damaged records that were stepped over: their frame was whole and a
    /// good record follows, so only they are lost.
    skipped: Vec<String>,
    /// Records whose reserved byte was not zero; their checksum is good, so
    /// they are kept.
    odd_reserved: u64,
}

/// What comes next in a WAL file.
enum Next {
    End,
    /// The readable part ends here, for this reason.
    Cut(String),
    Frame {
        crc: u32,
        reserved: u8,
        body: Vec<u8>,
    },
}

/// Reads the next frame from `r`, which has `remaining` bytes left.
fn read_next(r: &mut impl Read, remaining: u64) -> io::Result<Next> {
    if remaining == 0 {
        return Ok(Next::End);
    }
    if remaining < HEADER_LEN as u64 {
        return Ok(Next::Cut("torn record header".into()));
    }
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len == 0 && crc == 0 {
        // Zero padding after a crash while preallocated space was unwritten,
        // or an empty frame, which the writer never makes.
        let mut rest = remaining - HEADER_LEN as u64;
        let mut buf = [0u8; 8192];
        let mut zero = h[8] == 0;
        while rest > 0 && zero {
            let n = buf.len().min(rest as usize);
            r.read_exact(&mut buf[..n])?;
            zero = buf[..n].iter().all(|b| *b == 0);
            rest -= n as u64;
        }
        return Ok(Next::Cut(
            if zero { "zeroed tail" } else { "undecodable record" }.into(),
        ));
    }
    if len > MAX_RECORD || remaining - (HEADER_LEN as u64) < len as u64 {
        return Ok(Next::Cut(format!("torn record of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Next::Frame {
        crc,
        reserved: h[8],
        body,
    })
}

/// A frame's record, or why it is damaged.
fn check_frame(crc: u32, body: &[u8]) -> std::result::Result<Record, &'static str> {
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch");
    }
    decode_record(body).map_err(|_| "undecodable record")
}

/// Reads the records of one file into `f`, streaming (memory is one record
/// and one read ahead, whatever the file's size). A record that fails its
/// checksum or does not decode is skipped when its frame is whole and a good
/// record follows it (a flipped bit costs that record alone); otherwise the
/// file's readable part ends there (a torn or damaged tail).
fn read_file_records(path: &Path, f: &mut dyn FnMut(Record)) -> io::Result<FileScan> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = io::BufReader::with_capacity(1 << 20, file);
    let mut scan = FileScan {
        size,
        ..Default::default()
    };
    let mut off = 0u64;
    let mut pending = read_next(&mut r, size)?;
    loop {
        let (crc, reserved, body) = match pending {
            Next::End => break,
            Next::Cut(why) => {
                scan.cut = Some((off, why));
                break;
            }
            Next::Frame { crc, reserved, body } => (crc, reserved, body),
        };
        let len = body.len() as u64;
        let next_off = off + HEADER_LEN as u64 + len;
        match check_frame(crc, &body) {
            Ok(rec) => {
                if reserved != 0 {
                    scan.odd_reserved += 1;
                }
                f(rec);
                scan.records += 1;
                pending = read_next(&mut r, size - next_off)?;
            }
            Err(why) => {
                let next = read_next(&mut r, size - next_off)?;
                let next_good = matches!(&next, Next::Frame { crc, body, .. } if check_frame(*crc, body).is_ok());
                if !next_good {
                    scan.cut = Some((off, why.into()));
                    break;
                }
                scan.skipped.push(format!(
                    "record at byte {off} ({len} bytes, {why}) skipped; replay goes on with the next record"
                ));
                pending = next;
            }
        }
        off = next_off;
    }
    Ok(scan)
}

impl ReplayReport {
    fn note(&mut self, what: &str, path: &Path, scan: &FileScan) {
        for s in &scan.skipped {
            self.repairs.push(format!("{what} {}: {s}", path.display()));
        }
        if scan.odd_reserved > 0 {
            self.repairs.push(format!(
                "{what} {}: {} records with a non-zero reserved byte kept (their checksums are good)",
                path.display(),
                scan.odd_reserved
            ));
        }
        self.skipped_records += scan.skipped.len() as u64;
    }
}

struct Active {
    file: File,
    seq: u64,
    size: u64,
    dirty: bool,
}

/// The write-ahead log of one store.
pub struct Wal {
    dir: PathBuf,
    policy: FsyncPolicy,
    active: Mutex<Active>,
    poisoned: AtomicBool,
}

impl Wal {
    /// Opens the WAL in `dir`, replaying every record into `apply` first.
    pub fn open(dir: &Path, policy: FsyncPolicy, apply: &mut dyn FnMut(Record)) -> Result<(Wal, ReplayReport)> {
        fs::create_dir_all(dir)?;
        let mut report = ReplayReport::default();
        let cp = latest_checkpoint(dir)?;
        let mut first_seg = 0;
        if let Some((n, path)) = &cp {
            let scan = read_file_records(path, apply)?;
            report.note("checkpoint", path, &scan);
            if let Some((off, why)) = &scan.cut {
                // A checkpoint is written atomically, so damage means the disk lied.
                report.repairs.push(format!(
                    "checkpoint {} damaged at byte {off} of {} ({why}); the {} bytes after it are lost",
                    path.display(),
                    scan.size,
                    scan.size - off
                ));
                report.truncated_bytes += scan.size - off;
            }
            report.records += scan.records;
            report.bytes += scan.size;
            report.checkpoint = Some(*n);
            first_seg = n + 1;
        }
        let segs = list_segments(dir)?;
        let mut last_seq = first_seg.saturating_sub(1);
        let total = segs.iter().filter(|(n, _)| *n >= first_seg).count();
        let mut done = 0usize;
        for (n, path) in segs.iter() {
            if *n >= first_seg && total > 2 {
                done += 1;
                tracing::info!(target: "sextant::wal", "replaying WAL segment {done}/{total} ({})", path.display());
            }
            if *n < first_seg {
                // Already covered by the checkpoint; a crash stopped its deletion.
                let _ = fs::remove_file(path);
                continue;
            }
            let scan = read_file_records(path, apply)?;
            report.note("segment", path, &scan);
            report.segments += 1;
            report.records += scan.records;
            report.bytes += scan.size;
            last_seq = *n;
            if let Some((off, why)) = &scan.cut {
                // Later segments stay: each starts at a record boundary, and
                // replay does not depend on record order.
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(*off)?;
                f.sync_all()?;
                report.repairs.push(format!(
                    "segment {} truncated at byte {off} of {} ({why}); {} bytes cut",
                    path.display(),
                    scan.size,
                    scan.size - off
                ));
                report.truncated_bytes += scan.size - off;
            }
        }
        for r in &report.repairs {
            tracing::warn!(target: "sextant::wal", "WAL repair: {r}");
        }
        // Always write into a fresh segment: never append after a repaired tail.
        let seq = last_seq + 1;
        let file = create_segment(dir, seq)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            policy,
            active: Mutex::new(Active {
                file,
                seq,
                size: 0,
                dirty: false,
            }),
            poisoned: AtomicBool::new(false),
        };
        Ok((wal, report))
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.policy
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned(
                "an earlier WAL fsync failed; restart the server after fixing the disk".into(),
            ));
        }
        Ok(())
    }

    /// Writes record bodies (each starting with its type byte) as one write; returns
    /// once the OS has them (and, with `FsyncPolicy::Always`, the disk).
    pub fn log(&self, bodies: &[&[u8]]) -> Result<()> {
        self.check_poisoned()?;
        let mut buf = Vec::with_capacity(bodies.iter().map(|b| b.len() + HEADER_LEN).sum());
        for b in bodies {
            frame(b, &mut buf);
        }
        let mut a = self.active.lock();
        if a.size > 0 && a.size + buf.len() as u64 > SEGMENT_SIZE {
            self.rotate_locked(&mut a)?;
        }
        if let Err(e) = a.file.write_all(&buf) {
            // Undo a partial write so the segment stays a sequence of whole
            // records, e.g. when the disk is full; the caller gets the error.
            let size = a.size;
            let _ = a.file.set_len(size);
            let _ = a.file.seek(SeekFrom::Start(size));
            return Err(Error::Io(e));
        }
        a.size += buf.len() as u64;
        a.dirty = true;
        if self.policy == FsyncPolicy::Always {
            self.sync_locked(&mut a)?;
        }
        Ok(())
    }

    fn sync_locked(&self, a: &mut Active) -> Result<()> {
        if let Err(e) = a.file.sync_data() {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(target: "sextant::wal", "WAL fsync failed, refusing further writes: {e}");
            return Err(Error::Poisoned(format!("WAL fsync failed: {e}")));
        }
        a.dirty = false;
        Ok(())
    }

    /// Fsyncs the active segment if anything was written since the last sync.
    pub fn sync(&self) -> Result<()> {
        let mut a = self.active.lock();
        if a.dirty {
            self.sync_locked(&mut a)?;
        }
        Ok(())
    }

    fn rotate_locked(&self, a: &mut Active) -> Result<()> {
        self.sync_locked(a)?;
        let seq = a.seq + 1;
        a.file = create_segment(&self.dir, seq)?;
        a.seq = seq;
        a.size = 0;
        Ok(())
    }

    /// Starts a new segment and returns the number of the last closed one.
    pub fn cut_segment(&self) -> Result<u64> {
        let mut a = self.active.lock();
        let closed = a.seq;
        self.rotate_locked(&mut a)?;
        Ok(closed)
    }

    /// Rewrites the segments up to `upto` (inclusive) as one checkpoint holding
    /// only what `keep` retains, then deletes them. Records are streamed through
    /// `keep`, which may rewrite them; `None` drops a record.
    pub fn checkpoint(&self, upto: u64, keep: &mut dyn FnMut(Record) -> Option<Record>) -> Result<()> {
        // Streamed to a temporary file record by record: a checkpoint can hold
        // hours of samples, which must not all sit in memory at once.
        let name = format!("checkpoint.{}", segment_name(upto));
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let mut failed: Option<io::Error> = None;
        let mut body = Vec::new();
        let mut framed = Vec::new();
        let mut push = |r: Record| {
            if failed.is_some() {
                return;
            }
            body.clear();
            match &r {
                Record::Series(s) => {
                    let refs: Vec<(u32, &Labels)> = s.iter().map(|(r, l)| (*r, l)).collect();
                    encode_series(&mut body, &refs)
                }
                Record::Samples(s) => encode_samples(&mut body, s),
                Record::Tombstones(t) => encode_tombstones(&mut body, t),
            }
            framed.clear();
            frame(&body, &mut framed);
            if let Err(e) = w.write_all(&framed) {
                failed = Some(e);
            }
        };
        if let Some((_, p)) = latest_checkpoint(&self.dir)? {
            read_file_records(&p, &mut |r| {
                if let Some(r) = keep(r) {
                    push(r)
                }
            })?;
        }
        for (n, p) in list_segments(&self.dir)? {
            if n > upto {
                break;
            }
            read_file_records(&p, &mut |r| {
                if let Some(r) = keep(r) {
                    push(r)
                }
            })?;
        }
        if let Some(e) = failed {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        let f = w.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.dir.join(&name))?;
        fsync_dir(&self.dir)?;
        crate::fsutil::crash_point("checkpoint-written");
        // Everything the checkpoint covers can go now.
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let fname = e.file_name();
            let Some(s) = fname.to_str() else { continue };
            if let Some(num) = s.strip_prefix("checkpoint.") {
                if num.parse::<u64>().is_ok_and(|x| x < upto) || num.ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for (n, p) in list_segments(&self.dir)? {
            if n <= upto {
                fs::remove_file(p)?;
                crate::fsutil::crash_point("checkpoint-segment-deleted");
            }
        }
        fsync_dir(&self.dir)?;
        Ok(())
    }

    /// Bytes the WAL occupies on disk.
    pub fn size_bytes(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }
}

fn create_segment(dir: &Path, seq: u64) -> Result<File> {
    let path = dir.join(segment_name(seq));
    let f = OpenOptions::new().create(true).append(true).read(true).open(&path)?;
    fsync_dir(dir)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(dir: &Path) -> (Vec<Record>, ReplayReport) {
        let mut recs = Vec::new();
        let (_w, rep) = Wal::open(dir, FsyncPolicy::Never, &mut |r| recs.push(r)).expect("open");
        (recs, rep)
    }

    fn samples_body(sref: u32, t: i64, v: f64) -> Vec<u8> {
        let mut b = Vec::new();
        encode_samples(&mut b, &[WalSample { sref, t, v }]);
        b
    }

    #[test]
    fn a_record_built_sample_by_sample_is_the_listed_encoding() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in [0usize, 1, 2, 17, 500] {
            let list: Vec<WalSample> = (0..n)
                .map(|_| WalSample {
                    sref: (next() % 5000) as u32,
                    t: next() as i64 >> (next() % 64),
                    v: f64::from_bits(next()),
                })
                .collect();
            let mut want = Vec::new();
            encode_samples(&mut want, &list);
            let mut rec = SamplesRecord::with_capacity(n / 2);
            for s in &list {
                rec.push(s.sref, s.t, s.v);
            }
            assert_eq!(rec.len(), n);
            assert_eq!(rec.into_body(), want, "{n} samples");
            match decode_record(&want) {
                Ok(Record::Samples(got)) => assert_eq!(
                    got.iter().map(|s| (s.sref, s.t, s.v.to_bits())).collect::<Vec<_>>(),
                    list.iter().map(|s| (s.sref, s.t, s.v.to_bits())).collect::<Vec<_>>()
                ),
                _ => panic!("not a samples record"),
            }
        }
    }

    #[test]
    fn a_series_reference_past_the_integers_is_a_damaged_record() {
        // A base reference near the top of i64 and a delta that carries it
        // over (found by fuzzing): refused, not wrapped around.
        for (base, delta) in [(i64::MAX as u64, 1i64), (i64::MAX as u64 - 3, 9), (u64::MAX, -1)] {
            let mut b = vec![REC_SAMPLES];
            put_uvarint(&mut b, base);
            put_varint(&mut b, 0);
            put_varint(&mut b, delta);
            put_varint(&mut b, 0);
            b.extend_from_slice(&1.0f64.to_bits().to_le_bytes());
            assert!(decode_record(&b).is_err(), "base {base}, delta {delta}");
        }
        // A reference that fits is read.
        let mut b = vec![REC_SAMPLES];
        put_uvarint(&mut b, 7);
        put_varint(&mut b, 1_000);
        put_varint(&mut b, 5);
        put_varint(&mut b, 15);
        b.extend_from_slice(&2.5f64.to_bits().to_le_bytes());
        match decode_record(&b) {
            Ok(Record::Samples(got)) => {
                assert_eq!(
                    got.iter().map(|s| (s.sref, s.t, s.v)).collect::<Vec<_>>(),
                    vec![(12, 1_015, 2.5)]
                )
            }
            _ => panic!("not a samples record"),
        }
    }

    #[test]
    fn records_replay_in_order() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (w, _) = Wal::open(d.path(), FsyncPolicy::Always, &mut |_| {}).expect("open");
            let ls = Labels::from_pairs([("__name__", "up")]);
            let mut b = Vec::new();
            encode_series(&mut b, &[(7, &ls)]);
            w.log(&[&b, &samples_body(7, 1000, 1.5)]).expect("log");
            w.log(&[&samples_body(7, 2000, f64::NAN)]).expect("log");
        }
        let (recs, rep) = replay(d.path());
        assert_eq!(recs.len(), 3);
        assert!(rep.repairs.is_empty());
        assert!(matches!(&recs[0], Record::Series(s) if s[0].0 == 7));
        assert!(matches!(&recs[2], Record::Samples(s) if s[0].v.is_nan() && s[0].t == 2000));
    }

    #[test]
    fn torn_tail_is_truncated_and_logged() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (w, _) = Wal::open(d.path(), FsyncPolicy::Never, &mut |_| {}).expect("open");
            w.log(&[&samples_body(1, 1, 1.0)]).expect("log");
            w.log(&[&samples_body(1, 2, 2.0)]).expect("log");
        }
        let seg = d.path().join(segment_name(1));
        let len = fs::metadata(&seg).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open")
            .set_len(len - 3)
            .expect("truncate");
        let (recs, rep) = replay(d.path());
        assert_eq!(recs.len(), 1);
        assert_eq!(rep.repairs.len(), 1, "{:?}", rep.repairs);
        assert!(rep.repairs[0].contains("truncated"), "{:?}", rep.repairs);
        // The repaired WAL replays cleanly the next time.
        let (recs, rep) = replay(d.path());
        assert_eq!(recs.len(), 1);
        assert!(rep.repairs.is_empty(), "{:?}", rep.repairs);
    }

    #[test]
    fn bit_flip_costs_only_the_damaged_record() {
        let d = tempfile::tempdir().expect("tempdir");
        {
            let (w, _) = Wal::open(d.path(), FsyncPolicy::Never, &mut |_| {}).expect("open");
            for i in 0..10 {
                w.log(&[&samples_body(1, i, i as f64)]).expect("log");
            }
        }
        let seg = d.path().join(segment_name(1));
        let mut data = fs::read(&seg).expect("read");
        let rec_len = data.len() / 10;
        data[rec_len * 4 + 12] ^= 0x10;
        fs::write(&seg, &data).expect("write");
        let (recs, rep) = replay(d.path());
        let ts: Vec<i64> = recs
            .iter()
            .flat_map(|r| match r {
                Record::Samples(s) => s.iter().map(|s| s.t).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(ts, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
        assert_eq!(rep.skipped_records, 1);
        assert!(
            rep.repairs[0].contains(&format!("record at byte {}", rec_len * 4)) && rep.repairs[0].contains("checksum"),
            "{:?}",
            rep.repairs
        );
        // A flip in the length field misaligns the frames: the segment is cut
        // there, and a later segment still replays.
        // (Record 4 is still damaged.)
        let mut data = fs::read(&seg).expect("read");
        data[rec_len * 6] ^= 0x40;
        fs::write(&seg, &data).expect("write");
        let (recs, rep) = replay(d.path());
        assert_eq!(recs.len(), 5, "{:?}", rep.repairs);
        assert!(
            rep.repairs
                .iter()
                .any(|r| r.contains(&format!("truncated at byte {}", rec_len * 6))),
            "{:?}",
            rep.repairs
        );
        assert_eq!(rep.truncated_bytes, (rec_len * 4) as u64);
    }

    #[test]
    fn a_damaged_segment_does_not_cost_the_later_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        for round in 0..3 {
            let (w, _) = Wal::open(d.path(), FsyncPolicy::Never, &mut |_| {}).expect("open");
            for i in 0..5 {
                w.log(&[&samples_body(1, round * 10 + i, 1.0)]).expect("log");
            }
        }
        // Zero the tail of the first segment, as a lost write would.
        let seg = d.path().join(segment_name(1));
        let mut data = fs::read(&seg).expect("read");
        let n = data.len();
        data[n - 10..].fill(0);
        fs::write(&seg, &data).expect("write");
        let (recs, rep) = replay(d.path());
        assert_eq!(recs.len(), 14, "{:?}", rep.repairs);
        assert_eq!(rep.repairs.len(), 1, "{:?}", rep.repairs);
    }

    #[test]
    fn checkpoint_keeps_only_what_is_asked() {
        let d = tempfile::tempdir().expect("tempdir");
        let (w, _) = Wal::open(d.path(), FsyncPolicy::Never, &mut |_| {}).expect("open");
        for i in 0..10 {
            w.log(&[&samples_body(1, i * 10, i as f64)]).expect("log");
        }
        let upto = w.cut_segment().expect("cut");
        w.log(&[&samples_body(1, 1000, 100.0)]).expect("log");
        w.checkpoint(upto, &mut |r| match r {
            Record::Samples(s) => Some(Record::Samples(s.into_iter().filter(|s| s.t >= 50).collect())),
            other => Some(other),
        })
        .expect("checkpoint");
        drop(w);
        let (recs, rep) = replay(d.path());
        assert_eq!(rep.checkpoint, Some(upto));
        let ts: Vec<i64> = recs
            .iter()
            .flat_map(|r| match r {
                Record::Samples(s) => s.iter().map(|s| s.t).collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(ts, vec![50, 60, 70, 80, 90, 1000]);
    }
}
