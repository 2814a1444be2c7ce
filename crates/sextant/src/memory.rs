//! Keeping the process's memory close to what it uses.
//!
//! The binary's global allocator is mimalloc (`main.rs`). With glibc's
//! allocator a query that drops the label sets and buffers of 100,000 series
//! spent most of its time consolidating freed chunks: on the 1M-series demo,
//! 55 % of an instant `count()`'s profile was in `_int_malloc`,
//! `unlink_chunk` and `malloc_consolidate`. With mimalloc the same server,
//! on the same data, answered the dashboard's histogram queries 2.4-4.5x
//! faster, with a slightly smaller resident set (3.1 against 3.25 GB); the
//! figures are in docs/BENCHMARKS.md.
//!
//! What follows still tunes glibc's allocator, which the C code linked in
//! (zstd) uses. With it, memory freed stays in per-thread arenas, and large
//! freed buffers raise the threshold above which allocations are mapped (and
//! so returned on free): a 1M-series server was once measured holding 8.8 GB
//! resident of which 5.2 GB was free heap. So the mapping threshold is fixed
//! at 8 MiB (below it, buffers of a few MB are reused from the heap instead of
//! being mapped and faulted in afresh), the arena count is bounded, and free
//! heap is handed back to the kernel every few seconds.

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
