//! Where a program's own work runs, relative to the kernels' thread pool.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::float::Float;
use crate::switch::EnvSwitch;

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
///
/// While `f` runs, the pool's other threads stay awake between kernels
/// (see `stay_awake`); `PETAL_POOL_SLEEPS=1` lets them sleep as rayon's
/// threads do elsewhere.
pub fn run_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error only says that the pool exists already; it is used as it is.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build_global();
    let stop = AtomicBool::new(false);
    rayon::scope(|scope| {
        let keeps_awake = !POOL_SLEEPS.is_on() && !KEEPING_AWAKE.swap(true, Ordering::Relaxed);
        // Raised however `f` ends, a panic included: the scope then waits
        // for the waiting threads, and they return as soon as they see it.
        let _stop_on_exit = StopOnDrop { stop: &stop, keeps_awake };
        if keeps_awake {
            let owner = rayon::current_thread_index();
            for _ in 1..rayon::current_num_threads() {
                let stop = &stop;
                scope.spawn(move |_| stay_awake(owner, stop));
            }
        }
        f()
    })
}

static POOL_SLEEPS: EnvSwitch = EnvSwitch::new("PETAL_POOL_SLEEPS");

/// Whether some `run_on_pool` has its threads staying awake already (a
/// nested call leaves that to the outer one).
static KEEPING_AWAKE: AtomicBool = AtomicBool::new(false);

/// How many threads are in `stay_awake` now.
static THREADS_AWAKE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on a thread while it runs `stay_awake`.
    static AWAKE_HERE: Cell<bool> = const { Cell::new(false) };
}

/// How long a waiting thread keeps looking for work without pause, after
/// the last piece it ran.
const SPIN: Duration = Duration::from_millis(2);
/// How long it then sleeps between looks, while the program's own thread
/// does serial work (loading a batch, writing a checkpoint).
const BACKOFF: Duration = Duration::from_micros(200);

/// Runs the pool's pending work on this thread until `stop` is raised.
///
/// Between two kernels, rayon's idle threads spin for some microseconds
/// and then sleep, and the next kernel wakes them through the OS. On a
/// virtual machine a sleeping vCPU halts, and waking it costs a trip
/// through the host's scheduler: tens of microseconds on a quiet host,
/// far more on a busy one, and a small U-Net's sampling step crosses
/// some thirty such gaps. OpenMP's threads (PyTorch's) spin instead, for
/// milliseconds. Here the waiting thread takes work itself, one piece at
/// a time (`rayon::yield_now`), and yields its core to the OS between
/// looks, so other programs' threads still run; after `SPIN` without work
/// it looks only every `BACKOFF`.
fn stay_awake(owner: Option<usize>, stop: &AtomicBool) {
    // The thread running `f` may pop one of these jobs back while it
    // waits for its own; spinning there would hold `f` up until `f`
    // ended. A thread already staying awake (with more than two threads,
    // one may pick up another's job) has nothing to add either.
    if rayon::current_thread_index() == owner || AWAKE_HERE.get() {
        return;
    }
    AWAKE_HERE.set(true);
    THREADS_AWAKE.fetch_add(1, Ordering::Relaxed);
    let mut idle_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::sleep(BACKOFF);
        }
    }
    THREADS_AWAKE.fetch_sub(1, Ordering::Relaxed);
    AWAKE_HERE.set(false);
}

struct StopOnDrop<'a> {
    stop: &'a AtomicBool,
    keeps_awake: bool,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.keeps_awake {
            KEEPING_AWAKE.store(false, Ordering::Relaxed);
        }
    }
}

/// Sums `0..items` in one contiguous run per thread of the pool (fewer
/// when there are fewer items): `partial` sums a run on a thread of its
/// own, and the runs' vectors are then added element by element, left to
/// right. `None` when `items` is 0.
///
/// A weight gradient is such a sum: each thread adds up its share of the
/// batch, then the shares are added. Rayon's own `fold` splits the work
/// where threads happen to steal it, so the same floats would be grouped,
/// and rounded, differently from one call to the next, and a training run
/// would not repeat itself. Here the grouping depends on `items` and the
/// number of threads alone.
pub(crate) fn sum_in_runs<T: Float>(items: usize, partial: impl Fn(std::ops::Range<usize>) -> Vec<T> + Sync) -> Option<Vec<T>> {
    use rayon::prelude::*;
    let runs = rayon::current_num_threads().clamp(1, items.max(1));
    let per_run = items.div_ceil(runs);
    let partials: Vec<Vec<T>> = (0..items.div_ceil(per_run.max(1)))
        .into_par_iter()
        .map(|run| partial(run * per_run..items.min((run + 1) * per_run)))
        .collect();
    partials.into_iter().reduce(|mut total, part| {
        total.iter_mut().zip(&part).for_each(|(t, &p)| *t += p);
        total
    })
}

#[cfg(test)]
mod tests {
    use super::{run_on_pool, sum_in_runs, Ordering, THREADS_AWAKE};
    use rayon::prelude::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// Held by each test that calls `run_on_pool`: only one call at a time
    /// keeps the pool awake, and one test counts the threads doing so.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn the_other_threads_stay_awake_while_the_work_runs_and_stop_after() {
        let _one = one_at_a_time();
        let threads = rayon::current_num_threads();
        if threads < 2 {
            eprintln!("SKIPPED: the pool has one thread, none to keep awake");
        }
        let wait_for = |count: usize| {
            let start = Instant::now();
            while THREADS_AWAKE.load(Ordering::Relaxed) != count && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            THREADS_AWAKE.load(Ordering::Relaxed)
        };
        for round in 0..3 {
            let (awake, sum) = run_on_pool(|| {
                let awake = wait_for(threads - 1);
                // Kernels still finish, the waiting threads taking their share.
                let sum: u64 = (0..1_000_000u64).into_par_iter().map(|i| i % 7).sum();
                // A nested call leaves the waiting to the outer one.
                assert_eq!(run_on_pool(|| THREADS_AWAKE.load(Ordering::Relaxed)), threads - 1);
                (awake, sum)
            });
            assert_eq!(awake, threads - 1, "round {round}: threads awake inside");
            assert_eq!(sum, (0..1_000_000u64).map(|i| i % 7).sum::<u64>());
            assert_eq!(THREADS_AWAKE.load(Ordering::Relaxed), 0, "round {round}: none left awake after");
        }
        // A panic stops them too, and the next call keeps them awake again.
        assert!(std::panic::catch_unwind(|| run_on_pool(|| panic!("inside"))).is_err());
        assert_eq!(THREADS_AWAKE.load(Ordering::Relaxed), 0);
        assert_eq!(run_on_pool(|| wait_for(threads - 1)), threads - 1);
    }

    #[test]
    fn work_runs_on_a_pool_thread_and_kernels_inside_it_finish() {
        let _one = one_at_a_time();
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
    fn runs_cover_every_item_once_in_order() {
        let _one = one_at_a_time();
        for items in [0usize, 1, 2, 3, 7, 8, 33] {
            // Each run marks its items: every one marked exactly once.
            let marks = sum_in_runs(items, |range| {
                let mut marks = vec![0.0f64; items];
                range.for_each(|i| marks[i] += 1.0);
                marks
            });
            assert_eq!(marks.unwrap_or_default(), vec![1.0; items], "{items} items");
        }
        // Floats summed in runs give the same bits on every call.
        let values: Vec<f32> = (0..10_001).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let sum = || sum_in_runs(values.len(), |range| vec![values[range].iter().sum::<f32>()]).unwrap()[0];
        let first = run_on_pool(sum);
        for _ in 0..20 {
            assert_eq!(run_on_pool(sum).to_bits(), first.to_bits());
            assert_eq!(sum().to_bits(), first.to_bits());
        }
    }

    /// Weight gradients are sums over the batch split across threads: on
    /// each path (im2col for 1x1, the direct kernel, Winograd F(4x4)) they
    /// come out with the same bits on every call, on the pool or off it.
    #[test]
    fn weight_gradients_repeat_bit_for_bit() {
        let _one = one_at_a_time();
        use crate::{DType, Device, Rng, Tensor};
        let mut rng = Rng::new(11);
        for (c, o, k, hw, pad) in [(24, 16, 1, 16, 0), (8, 16, 3, 12, 1), (32, 32, 3, 16, 1)] {
            let x = Tensor::randn(0.0, 1.0, [7, c, hw, hw], DType::F32, &Device::Cpu, &mut rng).unwrap();
            let g = Tensor::randn(0.0, 1.0, [7, o, hw, hw], DType::F32, &Device::Cpu, &mut rng).unwrap();
            let dw = || x.conv2d_backward_weight(&g, &[o, c, k, k], 1, pad).unwrap().to_f64_vec().unwrap();
            let first = dw();
            for _ in 0..8 {
                assert_eq!(run_on_pool(dw), first, "{k}x{k}, {c} -> {o} channels, on the pool");
                assert_eq!(dw(), first, "{k}x{k}, {c} -> {o} channels");
            }
        }
    }

    #[test]
    fn a_panic_inside_comes_back_to_the_caller() {
        let _one = one_at_a_time();
        let caught = std::panic::catch_unwind(|| run_on_pool(|| panic!("inside the pool")));
        let message = caught.unwrap_err();
        assert_eq!(message.downcast_ref::<&str>(), Some(&"inside the pool"));
    }
}
