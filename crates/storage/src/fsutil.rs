//! Crash-safe file helpers: write to a temporary name, fsync, rename, fsync the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Fsyncs a directory so a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `data` atomically: other readers and a crash see either
/// the old contents or the new, never a mix.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Total size of the regular files below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Deletes a block directory so that a crash midway leaves nothing that
/// looks like a block: it is renamed to `<id>.tmp` first (a name that opening
/// deletes), then removed.
pub fn remove_block_dir(dir: &Path) -> io::Result<()> {
    let mut doomed = PathBuf::from(dir);
    let name = format!(
        "{}.tmp",
        dir.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    doomed.set_file_name(name);
    fs::rename(dir, &doomed)?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    crash_point("block-delete-renamed");
    fs::remove_dir_all(&doomed)
}

/// A named moment in a multi-step change to the files (writing a block,
/// compacting, checkpointing the WAL). When the environment variable
/// `SEXTANT_CRASH_AT` names it (`name` or `name:N` for the N-th time it is
/// reached), the process aborts there, as a kill at that instant would stop
/// it. This is how the crash tests put a kill inside each step; unset, it
/// costs one load of a cached value.
pub fn crash_point(name: &str) {
    static AT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let v = std::env::var("SEXTANT_CRASH_AT").ok()?;
        match v.split_once(':') {
            Some((n, k)) => Some((n.to_string(), k.parse().unwrap_or(1))),
            None => Some((v, 1)),
        }
    });
    if let Some((want, nth)) = at {
        if want == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth {
            eprintln!("crash point {name} reached: aborting");
            std::process::abort();
        }
    }
}
