//! Work split across the machine's cores on one pool of long-lived threads,
//! shared by the storage reader and the PromQL evaluator.
//!
//! A query's parts used to run on threads started for it: each new thread
//! faulted in a fresh stack and allocator heap, and gave them back when it
//! ended, which on a loaded two-core machine cost as much as the work of a
//! small query. The pool's threads and their heaps outlive the queries.
//!
//! A thread that runs out of work looks for more, yielding its core to any
//! other thread that wants it, for [`IDLE_SPIN`] before it sleeps. On a
//! virtual machine, a core whose threads all sleep is halted, and waking a
//! thread there takes tens of microseconds (measured here: 88 µs for a
//! round trip between two threads idle for 200 µs, 1.6 µs between busy
//! ones), which a small query paid at every step: the request's thread, the
//! thread that evaluates it, the one that shares its parts.

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

/// Runs `work(i)` for each `i` in `0..parts` and returns the results in
/// order of `i`. The calling thread runs parts itself, from the last one
/// down, while idle pool threads take them from the first one up, until
/// none is left: a call never waits on a busy pool, a part may itself call
/// `map_parts`, and the threads work at opposite ends of what the parts
/// cover (neighbouring parts read neighbouring series, which share pages).
/// Blocks until every part has run; a part that panics makes this panic
/// with its payload once the others are done.
pub fn map_parts<T: Send, F: Fn(usize) -> T + Sync>(parts: usize, work: F) -> Vec<T> {
    if parts <= 1 || workers() < 2 {
        return (0..parts).map(&work).collect();
    }
    assert!(u32::try_from(parts).is_ok(), "a call of more than 2^32 parts");
    let slots: Vec<Slot<T>> = (0..parts).map(|_| Slot(std::cell::UnsafeCell::new(None))).collect();
    let call = Call {
        work: &work,
        slots: &slots,
    };
    let task = Arc::new(Task {
        run: run_part::<T, F>,
        call: &call as *const Call<'_, T, F> as *const (),
        parts,
        unclaimed: AtomicU64::new(parts as u64),
        done: AtomicUsize::new(0),
        waiter: std::thread::current(),
        panic: Mutex::new(None),
    });
    let pool = pool();
    // The caller takes a part too: only as many threads as are left are
    // woken, fewer those that are looking for work already.
    pool.push(Work::Parts(task.clone()), (parts - 1).min(workers()));
    while task.run_next(Take::Last) {}
    // Leave no finished task for a worker to find.
    pool.queue
        .lock()
        .retain(|w| !matches!(w, Work::Parts(t) if Arc::ptr_eq(t, &task)));
    // The parts others took end soon, mostly: wait for them awake first.
    awake_while(|| task.done.load(Ordering::Acquire) < parts);
    while task.done.load(Ordering::Acquire) < parts {
        std::thread::park();
    }
    if let Some(p) = task.panic.lock().take() {
        std::panic::resume_unwind(p);
    }
    slots
        .into_iter()
        .map(|s| {
            s.0.into_inner()
                .unwrap_or_else(|| unreachable!("every part ran before the call returns"))
        })
        .collect()
}

/// Runs `job` on one of the pool's threads and returns at once. A query run
/// this way reads its parts with that thread taking a share, instead of a
/// thread outside the pool handing every part over and sleeping until they
/// are done: one thread fewer to wake for each query. A panic in `job` is
/// caught and dropped; `job` that must report one catches it itself.
pub fn spawn(job: impl FnOnce() + Send + 'static) {
    pool().push(Work::Job(Box::new(job)), 1);
}

/// How long a pool thread out of work looks for more before it sleeps.
pub const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// Yields the core, awake, while `waiting` holds, for at most [`IDLE_SPIN`].
fn awake_while(waiting: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while waiting() && t.elapsed() < IDLE_SPIN {
        std::thread::yield_now();
    }
}

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One result of a `map_parts` call, written by the one thread that claimed
/// its part.
struct Slot<T>(std::cell::UnsafeCell<Option<T>>);

/// What a `map_parts` call shares with the threads that help it; it lives on
/// the caller's stack, which does not return before every part is done.
struct Call<'a, T, F> {
    work: &'a F,
    slots: &'a [Slot<T>],
}

/// Runs part `i` of the call behind `call`.
///
/// # Safety
/// `call` points to a live `Call<T, F>`, and `i` was claimed by this thread
/// alone (so its slot has no other writer or reader until the call ends).
unsafe fn run_part<T: Send, F: Fn(usize) -> T + Sync>(call: *const (), i: usize) {
    let call = unsafe { &*(call as *const Call<'_, T, F>) };
    let v = (call.work)(i);
    unsafe { *call.slots[i].0.get() = Some(v) };
}

/// A `map_parts` call as the pool sees it. Threads claim parts by moving
/// the ends of `unclaimed`; only a thread that claimed a part touches the
/// call, and the call ends only after `done` reaches `parts`, so the pointer
/// is never used after its frame is gone. A thread that finds the parts all
/// claimed touches only the counters, which the `Arc` keeps alive.
struct Task {
    run: unsafe fn(*const (), usize),
    call: *const (),
    parts: usize,
    /// The parts not yet claimed, `first << 32 | end`.
    unclaimed: AtomicU64,
    done: AtomicUsize,
    waiter: std::thread::Thread,
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

// SAFETY: `call` points to a `Call` whose closure is `Sync` and whose slots
// are written by one thread each (`T: Send`), see `Task`.
unsafe impl Send for Task {}
unsafe impl Sync for Task {}

impl Task {
    /// Claims the first or the last unclaimed part.
    fn claim(&self, take: Take) -> Option<usize> {
        let mut cur = self.unclaimed.load(Ordering::Relaxed);
        loop {
            let (first, end) = (cur >> 32, cur & 0xffff_ffff);
            if first >= end {
                return None;
            }
            let (next, i) = match take {
                Take::First => ((first + 1) << 32 | end, first),
                Take::Last => (first << 32 | (end - 1), end - 1),
            };
            match self
                .unclaimed
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(i as usize),
                Err(now) => cur = now,
            }
        }
    }

    /// Whether every part is claimed.
    fn all_claimed(&self) -> bool {
        let cur = self.unclaimed.load(Ordering::Relaxed);
        cur >> 32 >= cur & 0xffff_ffff
    }

    /// Claims and runs a part; false once every part is claimed.
    fn run_next(&self, take: Take) -> bool {
        let Some(i) = self.claim(take) else {
            return false;
        };
        // SAFETY: `i` is ours alone and the call waits for it (see `Task`).
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (self.run)(self.call, i) }));
        if let Err(p) = r {
            self.panic.lock().get_or_insert(p);
        }
        if self.done.fetch_add(1, Ordering::AcqRel) + 1 == self.parts {
            self.waiter.unpark();
        }
        true
    }
}

/// Which end of a call's unclaimed parts a thread takes.
#[derive(Clone, Copy)]
enum Take {
    First,
    Last,
}

enum Work {
    Parts(Arc<Task>),
    Job(Box<dyn FnOnce() + Send>),
}

/// The pool: work waiting for a thread, and the threads' wake-up. A thread
/// out of work watches `pushed` for [`IDLE_SPIN`], yielding between looks,
/// then sleeps on `ready`.
struct Pool {
    queue: Mutex<VecDeque<Work>>,
    ready: Condvar,
    /// Counts the work ever queued: what a looking thread watches.
    pushed: AtomicUsize,
    /// Threads looking for work, not sleeping.
    looking: AtomicUsize,
}

impl Pool {
    /// Queues `work` and wakes up to `wake` sleeping threads for it, fewer
    /// those looking for work already. A thread stops looking (and counts
    /// itself out of `looking`) before it takes the lock to check the queue
    /// one last time and sleep, so work queued under the lock is either
    /// seen by that check or finds it asleep and wakes it.
    fn push(&self, work: Work, wake: usize) {
        self.queue.lock().push_back(work);
        self.pushed.fetch_add(1, Ordering::SeqCst);
        for _ in 0..wake.saturating_sub(self.looking.load(Ordering::SeqCst)) {
            self.ready.notify_one();
        }
    }

    /// Waits, awake, up to [`IDLE_SPIN`] for work to be queued after
    /// `seen` was read.
    fn look_for_work(&self, seen: usize) {
        self.looking.fetch_add(1, Ordering::SeqCst);
        awake_while(|| self.pushed.load(Ordering::SeqCst) == seen);
        self.looking.fetch_sub(1, Ordering::SeqCst);
    }
}

fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<&'static Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            pushed: AtomicUsize::new(0),
            looking: AtomicUsize::new(0),
        }));
        for i in 0..workers() {
            std::thread::Builder::new()
                .name(format!("sextant-query-{i}"))
                // Queries recurse over their expression: more room than the
                // default 2 MiB, which costs address space, not memory.
                .stack_size(16 << 20)
                .spawn(move || worker(pool))
                .unwrap_or_else(|e| panic!("cannot start the query worker threads: {e}"));
        }
        pool
    })
}

fn worker(pool: &'static Pool) {
    // Whether the thread has looked for work since it last found some.
    let mut looked = false;
    loop {
        let work = {
            let mut q = pool.queue.lock();
            loop {
                match q.front() {
                    None if !looked => {
                        looked = true;
                        let seen = pool.pushed.load(Ordering::SeqCst);
                        drop(q);
                        pool.look_for_work(seen);
                        q = pool.queue.lock();
                    }
                    None => pool.ready.wait(&mut q),
                    Some(Work::Parts(t)) if t.all_claimed() => {
                        q.pop_front();
                    }
                    Some(Work::Parts(t)) => break Work::Parts(t.clone()),
                    Some(Work::Job(_)) => break q.pop_front().unwrap_or_else(|| unreachable!("the front was a job")),
                }
            }
        };
        looked = false;
        match work {
            Work::Parts(t) => while t.run_next(Take::First) {},
            Work::Job(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        }
    }
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
    fn work_is_taken_by_threads_looking_for_it_and_by_sleeping_ones() {
        let (tx, rx) = std::sync::mpsc::channel();
        for round in 0..40 {
            // Alternately while the threads still look for work after the
            // last job, and after they have gone to sleep.
            if round % 2 == 1 {
                std::thread::sleep(IDLE_SPIN * 10);
            }
            let tx = tx.clone();
            spawn(move || tx.send(round).expect("send"));
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the job ran");
            assert_eq!(got, round);
            // And parts of a call from outside the pool, split between the
            // caller and the pool.
            let sums = map_parts(6, |i| (0..=i as u64).sum::<u64>());
            assert_eq!(sums, vec![0, 1, 3, 6, 10, 15]);
        }
    }

    #[test]
    fn parts_may_split_again_and_jobs_may_split_without_waiting_on_a_busy_pool() {
        // Every pool thread busy with a job that splits its work, each part
        // of which splits again: the callers run what no thread takes.
        let (tx, rx) = std::sync::mpsc::channel();
        for j in 0..workers() * 2 {
            let tx = tx.clone();
            spawn(move || {
                let v = map_parts(4, |i| {
                    map_parts(3, |k| (j * 100 + i * 10 + k) as u64).iter().sum::<u64>()
                });
                tx.send((j, v)).expect("send");
            });
        }
        let mut got: Vec<(usize, Vec<u64>)> = (0..workers() * 2)
            .map(|_| {
                rx.recv_timeout(std::time::Duration::from_secs(10))
                    .expect("every job ends")
            })
            .collect();
        got.sort();
        for (j, v) in got {
            let want: Vec<u64> = (0..4)
                .map(|i| (0..3).map(|k| (j * 100 + i * 10 + k) as u64).sum())
                .collect();
            assert_eq!(v, want);
        }
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
