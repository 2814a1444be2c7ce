//! WAL records and whole segments: decoding arbitrary bytes never panics, and
//! replaying a segment of arbitrary bytes opens the WAL (repairing it) without
//! panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sextant_storage::wal::{decode_record, Wal};
use sextant_storage::FsyncPolicy;

fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sextant-fuzz-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = decode_record(data);
    let dir = scratch();
    for e in std::fs::read_dir(dir).expect("scratch").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    std::fs::write(dir.join("00000001"), data).expect("segment");
    let mut n = 0usize;
    let (wal, rep) = Wal::open(dir, FsyncPolicy::Never, &mut |_r| n += 1).expect("a damaged WAL still opens");
    assert_eq!(rep.records as usize, n);
    drop(wal);
});
