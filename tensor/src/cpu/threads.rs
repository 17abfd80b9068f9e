//! Where a program's own work runs, relative to the kernels' thread pool.

/// Runs `f` on one of the thread pool's own threads and returns what it
/// returns; a panic in `f` comes back as a panic here.
///
/// Every CPU kernel above a few thousand elements splits its work over
/// rayon's pool. Called from a thread outside the pool (a program's main
/// thread), a kernel hands all of its work to the pool, puts the caller to
/// sleep and wakes it when the pool is done: two trips through the OS
/// scheduler per kernel, while the caller's core idles. A sampling step of
/// a small U-Net runs a few hundred kernels of some tens of microseconds
/// each, and those hand-offs cost a tenth of its time. Called from a pool
/// thread, a kernel starts on that thread at once and the other threads
/// steal parts of it, as an OpenMP program's main thread works in its
/// own team.
///
/// Meant for a program's main work: the `ddpm` command runs everything
/// inside it. If nothing has built the global pool yet, this builds it
/// with the main thread's 8 MiB stacks. Work in `f` must not block on a
/// thread outside the pool that itself waits for the pool: with a pool of
/// one thread, that thread would be the one blocked.
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error only says that the pool exists already; it is used as it is.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::run_on_pool;
    use rayon::prelude::*;

    #[test]
    fn work_runs_on_a_pool_thread_and_kernels_inside_it_finish() {
        assert_eq!(rayon::current_thread_index(), None, "the test harness's threads are outside the pool");
        let (index, sum) = run_on_pool(|| {
            // A parallel loop from inside, as every kernel makes.
            let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i * i).sum();
            (rayon::current_thread_index(), sum)
        });
        assert!(index.is_some());
        assert_eq!(sum, (0..100_000u64).map(|i| i * i).sum::<u64>());
        // Nested: already on the pool, it runs in place.
        assert_eq!(run_on_pool(|| run_on_pool(|| 7)), 7);
    }

    #[test]
    fn a_panic_inside_comes_back_to_the_caller() {
        let caught = std::panic::catch_unwind(|| run_on_pool(|| panic!("inside the pool")));
        let message = caught.unwrap_err();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"inside the pool"));
    }
}
