//! Work split across the machine's cores on one pool of long-lived threads,
//! shared by the storage reader and the PromQL evaluator.
//!
//! A query's parts used to run on threads started for it: each new thread
//! faulted in a fresh stack and allocator heap, and gave them back when it
//! ended, which on a loaded two-core machine cost as much as the work of a
//! small query. The pool's threads and their heaps outlive the queries.

/// Worker threads in the pool: the machine's cores, at most eight. Asked of
/// the system once: the answer reads cgroup files, which costs more than a
/// small query's reading.
pub fn workers() -> usize {
    static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WORKERS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|x| x.get())
            .unwrap_or(1)
            .min(8)
    })
}

/// Parts a pool thread takes at a time: a few for each worker, so that a
/// worker that wakes late, or whose parts are the cheap ones, takes parts
/// from the others instead of leaving its core idle; at least `min` items a
/// part.
pub fn part_len(n: usize, min: usize) -> usize {
    n.div_ceil(workers() * 4).max(min).max(1)
}

/// Runs `work(i)` for each `i` in `0..parts` on the pool and returns the
/// results in order of `i`. Blocks until every part has run; a part that
/// panics makes this panic with its payload once the others are done.
pub fn map_parts<T: Send, F: Fn(usize) -> T + Sync>(parts: usize, work: F) -> Vec<T> {
    if parts <= 1 {
        return (0..parts).map(&work).collect();
    }
    let mut slots: Vec<Option<T>> = (0..parts).map(|_| None).collect();
    let work = &work;
    pool().scope(|s| {
        for (i, slot) in slots.iter_mut().enumerate() {
            s.spawn(move |_| *slot = Some(work(i)));
        }
    });
    slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| unreachable!("a scope returns only after its parts ran")))
        .collect()
}

/// Runs `job` on one of the pool's threads and returns at once. A query run
/// this way takes a share of its own parts (a scope begun on a pool thread
/// runs its jobs there too), instead of a thread outside the pool handing
/// every part over and sleeping until they are done: a thread fewer to wake
/// for each query. A panic in `job` is caught and dropped (the pool would
/// abort the process otherwise); a `job` that must report one catches it
/// itself.
pub fn spawn(job: impl FnOnce() + Send + 'static) {
    pool().spawn(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    });
}

fn pool() -> &'static rayon_core::ThreadPool {
    static POOL: std::sync::OnceLock<rayon_core::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon_core::ThreadPoolBuilder::new()
            .num_threads(workers())
            // Queries run here whole, and one may run inside another's wait
            // for a part: more room than the default 2 MiB, which costs
            // address space, not memory.
            .stack_size(16 << 20)
            .thread_name(|i| format!("sextant-query-{i}"))
            .build()
            .unwrap_or_else(|e| panic!("cannot start the query worker threads: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_a_few_per_worker_and_never_empty() {
        let w = workers();
        assert_eq!(part_len(0, 16), 16);
        assert_eq!(part_len(10, 0), 10usize.div_ceil(w * 4).max(1));
        assert_eq!(part_len(100_000, 16), 100_000usize.div_ceil(w * 4));
        assert_eq!(part_len(100, 64), 64);
    }

    #[test]
    fn parts_run_once_each_and_come_back_in_order() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let data: Vec<u64> = (0..1000).collect();
        let sums = map_parts(7, |i| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            data.iter().skip(i).step_by(7).sum::<u64>()
        });
        assert_eq!(calls.into_inner(), 7);
        assert_eq!(sums.len(), 7);
        for (i, s) in sums.iter().enumerate() {
            assert_eq!(*s, (i as u64..1000).step_by(7).sum::<u64>());
        }
        assert_eq!(sums.iter().sum::<u64>(), 999 * 1000 / 2);
        assert!(map_parts(0, |i| i).is_empty());
        assert_eq!(map_parts(1, |i| i + 5), vec![5]);
    }

    #[test]
    fn a_part_that_panics_panics_the_caller_after_the_others_ran() {
        let done = std::sync::atomic::AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map_parts(4, |i| {
                if i == 2 {
                    panic!("part two");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
        }));
        let payload = r.expect_err("panics");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"part two"));
        assert_eq!(done.into_inner(), 3);
        // The pool still works.
        assert_eq!(map_parts(3, |i| i * 2), vec![0, 2, 4]);
    }
}
