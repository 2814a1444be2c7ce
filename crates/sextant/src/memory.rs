//! Keeping the process's memory close to what it uses.
//!
//! With glibc's allocator, memory freed by queries and request decoding stays
//! in per-thread arenas, and large freed buffers raise the threshold above
//! which allocations are mapped (and so returned on free). A 1M-series server
//! was measured holding 8.8 GB resident of which 5.2 GB was free heap. The
//! binary therefore fixes the mapping threshold, bounds the arena count, and
//! hands free heap back to the kernel every few seconds.
//!
//! The threshold is 8 MiB: a remote-write request of a few MB allocates its
//! decompressed body, its samples and its WAL record afresh, and with a 1 MiB
//! threshold each of those was a new mapping, faulted in page by page and
//! unmapped again (13 % of ingest time went to page faults). At 8 MiB they are
//! reused from the heap: 0.241 -> 0.195 CPU-s per million samples, peak memory
//! 8 % higher (`benches/peers/run.sh --systems sextant`, 2 h of the fleet).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
        fn malloc_trim(pad: usize) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;

    pub fn tune() {
        // SAFETY: mallopt only changes allocator parameters; it is called
        // before any other thread exists.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 8 << 20);
            mallopt(M_TRIM_THRESHOLD, 8 << 20);
            mallopt(M_ARENA_MAX, 4);
        }
        let _ = std::thread::Builder::new().name("sextant-trim".into()).spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(10));
            // SAFETY: malloc_trim is thread-safe and only releases free memory.
            unsafe {
                malloc_trim(0);
            }
        });
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn tune() {}
}

/// Sets the allocator up for a long-running server; call first in `main`.
pub fn tune() {
    imp::tune();
}
