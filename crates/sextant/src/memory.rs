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

/// mimalloc, the binary's allocator, returns a freed large block's pages (a
/// remote-write request's decompressed body and sample lists, megabytes each)
/// to the kernel only after a delay (its page purge delay, one second, times
/// its arena multiplier, 1); a server taking requests back to back keeps the
/// freed blocks of every request resident. On a 141k-series fleet that was a
/// third of the server's memory at its peak (1,870 against 1,230 bytes a
/// series, docs/BENCHMARKS.md). Returning them at once costs page faults
/// when the next request's buffers are touched: about a quarter more ingest
/// CPU a sample in the same measurement.
mod allocator {
    use std::os::raw::{c_int, c_long};

    // The option numbers of the mimalloc version linked (3.x, the crate's
    // default): `mi_option_e` in its `mimalloc.h`; the test below checks them.
    #[cfg(test)]
    pub const PURGE_DELAY: c_int = 15;
    #[cfg(test)]
    pub const ARENA_RESERVE: c_int = 23;
    pub const ARENA_PURGE_MULT: c_int = 24;

    extern "C" {
        #[cfg(test)]
        pub fn mi_option_get(option: c_int) -> c_long;
        pub fn mi_option_set(option: c_int, value: c_long);
    }

    /// Unless `MIMALLOC_ARENA_PURGE_MULT` is set (mimalloc's own setting,
    /// which then applies: 1 keeps freed blocks for a second, for fewer page
    /// faults and more memory).
    pub fn tune() {
        // Keep the crate linked, whatever the global allocator of the binary.
        let _ = mimalloc::MiMalloc;
        if std::env::var_os("MIMALLOC_ARENA_PURGE_MULT").is_some() {
            return;
        }
        // SAFETY: setting an option is thread-safe and changes only when
        // mimalloc purges freed memory.
        unsafe { mi_option_set(ARENA_PURGE_MULT, 0) };
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_option_numbers_are_the_linked_versions() {
            let _ = mimalloc::MiMalloc;
            // SAFETY: reading options has no side effect beyond their
            // initialisation from the environment.
            let (delay, reserve, mult) = unsafe {
                (
                    mi_option_get(PURGE_DELAY),
                    mi_option_get(ARENA_RESERVE),
                    mi_option_get(ARENA_PURGE_MULT),
                )
            };
            // Their documented defaults: 1,000 ms, 1 GiB (in KiB) and 1.
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(delay, 1000, "option {PURGE_DELAY} is not purge_delay");
            }
            if std::env::var_os("MIMALLOC_ARENA_RESERVE").is_none() {
                assert_eq!(reserve, 1 << 20, "option {ARENA_RESERVE} is not arena_reserve");
            }
            if std::env::var_os("MIMALLOC_ARENA_PURGE_MULT").is_none() {
                assert_eq!(mult, 1, "option {ARENA_PURGE_MULT} is not arena_purge_mult");
            }
            tune();
            if std::env::var_os("MIMALLOC_ARENA_PURGE_MULT").is_none() {
                // SAFETY: as above.
                assert_eq!(unsafe { mi_option_get(ARENA_PURGE_MULT) }, 0);
            }
        }
    }
}

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
    allocator::tune();
    imp::tune();
}
