//! Sealed head chunks out of the heap. Once a series' open chunk is full and
//! sealed, its bytes are written to a segment file and read back through a
//! read-only memory map: the kernel's page cache holds them, and can drop them,
//! instead of the process's heap. A head of a few hours then keeps in memory
//! only each series' open chunk, its labels and its index entries.
//!
//! The segment files are a cache of what the WAL already holds, never a source
//! of truth: a store that opens deletes what an earlier process left, and WAL
//! replay writes the head's sealed chunks anew. So a segment needs no header,
//! checksum or fsync (`docs/format/head_chunks.md`). A segment is deleted when
//! the last chunk in it is dropped (once the head's range it holds has been
//! cut into a block) and the writer has moved on to a newer one.
//!
//! Writing never fails an append: when a segment cannot be created or written
//! (a full disk, say), the chunk stays on the heap, as every chunk did before,
//! and creating segments is retried only after [`RETRY_AFTER`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::Mmap;
use parking_lot::Mutex;

/// The size of a segment file; chunk offsets in it fit 32 bits.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// How long after a failed write the head keeps new chunks on the heap.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// One segment file, mapped read-only for its whole size. Its bytes are
/// written once, with `pwrite`, before any chunk that refers to them exists,
/// and never again; the file is never truncated while mapped.
pub struct Segment {
    path: PathBuf,
    file: File,
    map: Mmap,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Segment({})", self.path.display())
    }
}

impl Segment {
    fn create(path: PathBuf) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        // Sparse: blocks are allocated as chunks are written.
        let made = file.set_len(SEGMENT_BYTES).and_then(|_| {
            // SAFETY: the file is this process's own (created just now, in a
            // directory of a locked store), is never truncated while mapped,
            // and a range of it is read only after it was written in full.
            unsafe { Mmap::map(&file) }
        });
        match made {
            Ok(map) => Ok(Segment { path, file, map }),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// The `len` bytes at `off`, which a [`ChunkFile::store`] wrote.
    pub fn bytes(&self, off: u32, len: u32) -> &[u8] {
        &self.map[off as usize..off as usize + len as usize]
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // No chunk refers to it any more and the writer has left it.
        let _ = fs::remove_file(&self.path);
    }
}

struct Writer {
    current: Option<(Arc<Segment>, u64)>,
    next_seq: u64,
    retry_at: Option<Instant>,
}

/// The head's segment files, in one directory of the store.
pub struct ChunkFile {
    dir: PathBuf,
    writer: Mutex<Writer>,
    /// Chunk bytes written to segments, in all.
    pub stored_bytes: AtomicU64,
    /// Chunks that stayed on the heap because a segment could not be made or
    /// written.
    pub failures: AtomicU64,
}

impl ChunkFile {
    /// Opens `dir`, deleting the segments an earlier process left there.
    pub fn open(dir: &Path) -> io::Result<ChunkFile> {
        fs::create_dir_all(dir)?;
        for e in fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::remove_file(e.path())?;
            }
        }
        Ok(ChunkFile {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                current: None,
                next_seq: 1,
                retry_at: None,
            }),
            stored_bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// Writes `bytes` to a segment; `None` when they must stay on the heap.
    pub fn store(&self, bytes: &[u8]) -> Option<(Arc<Segment>, u32)> {
        let len = bytes.len() as u64;
        if len == 0 || len > SEGMENT_BYTES {
            return None;
        }
        let (seg, off) = {
            let mut w = self.writer.lock();
            let room = w.current.as_ref().is_some_and(|(_, used)| used + len <= SEGMENT_BYTES);
            if !room {
                w.current = None;
                if w.retry_at.is_some_and(|t| Instant::now() < t) {
                    return None;
                }
                let path = self.dir.join(format!("{:08}", w.next_seq));
                w.next_seq += 1;
                match Segment::create(path) {
                    Ok(s) => {
                        w.current = Some((Arc::new(s), 0));
                        w.retry_at = None;
                    }
                    Err(e) => {
                        self.note_failure(&mut w, &e);
                        return None;
                    }
                }
            }
            let (seg, used) = w.current.as_mut().expect("a segment with room");
            let off = *used;
            *used += len;
            (seg.clone(), off)
        };
        // Outside the lock: the range is this chunk's alone.
        if let Err(e) = seg.file.write_all_at(bytes, off) {
            let mut w = self.writer.lock();
            // Nothing more goes to a segment that failed a write.
            if w.current.as_ref().is_some_and(|(s, _)| Arc::ptr_eq(s, &seg)) {
                w.current = None;
            }
            self.note_failure(&mut w, &e);
            return None;
        }
        self.stored_bytes.fetch_add(len, Ordering::Relaxed);
        Some((seg, off as u32))
    }

    fn note_failure(&self, w: &mut Writer, e: &io::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if w.retry_at.is_none() {
            tracing::warn!(
                target: "sextant::storage",
                "head chunks stay in memory: cannot write a segment in {}: {e}",
                self.dir.display()
            );
        }
        w.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    /// Segment files now on disk.
    pub fn segments(&self) -> usize {
        fs::read_dir(&self.dir).map(|rd| rd.count()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_read_back_and_segments_go_with_their_last_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("head_chunks");
        fs::create_dir_all(&d).expect("dir");
        fs::write(d.join("00000001"), b"left by an earlier process").expect("stale");
        let f = ChunkFile::open(&d).expect("open");
        assert_eq!(f.segments(), 0, "stale segments are deleted at open");
        let (a, off_a) = f.store(b"first chunk").expect("stored");
        let (b, off_b) = f.store(b"second").expect("stored");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.bytes(off_a, 11), b"first chunk");
        assert_eq!(b.bytes(off_b, 6), b"second");
        assert_eq!(f.segments(), 1);
        assert_eq!(f.stored_bytes.load(Ordering::Relaxed), 17);
        // An empty chunk stays on the heap.
        assert!(f.store(&[]).is_none());
        drop((a, b));
        assert_eq!(f.segments(), 1, "the writer still uses it");
        drop(f);
        assert_eq!(
            fs::read_dir(&d).expect("dir").count(),
            0,
            "no chunk and no writer: deleted"
        );
    }

    #[test]
    fn a_full_segment_is_left_for_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = ChunkFile::open(dir.path()).expect("open");
        let big = vec![7u8; (SEGMENT_BYTES / 2 + 1) as usize];
        let (a, _) = f.store(&big).expect("stored");
        let (b, off) = f.store(&big).expect("stored");
        assert!(!Arc::ptr_eq(&a, &b), "the second did not fit the first segment");
        assert_eq!(off, 0);
        assert_eq!(f.segments(), 2);
        drop(a);
        assert_eq!(f.segments(), 1, "the full segment went with its last chunk");
        assert_eq!(b.bytes(0, 3), &[7, 7, 7]);
    }

    #[test]
    fn an_unwritable_directory_keeps_chunks_on_the_heap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("head_chunks");
        let f = ChunkFile::open(&d).expect("open");
        // The directory disappears under the store (or the disk is full).
        fs::remove_dir_all(&d).expect("remove");
        assert!(f.store(b"chunk").is_none());
        assert_eq!(f.failures.load(Ordering::Relaxed), 1);
        // Within the retry delay nothing is attempted again.
        fs::create_dir_all(&d).expect("dir");
        assert!(f.store(b"chunk").is_none());
        assert_eq!(f.failures.load(Ordering::Relaxed), 1);
        assert_eq!(f.segments(), 0);
    }
}
