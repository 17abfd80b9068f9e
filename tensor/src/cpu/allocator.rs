//! Keeping freed memory for reuse, the CPU's counterpart of the CUDA
//! backend's caching allocator.
//!
//! A training step allocates and frees the same large buffers (activations,
//! gradients, unfolded convolution columns) every step. glibc's malloc
//! serves blocks above its mmap threshold (at most 32 MiB) with a fresh
//! `mmap` and gives them back with `munmap` on free, so every step
//! page-faults each of those pages in again: on a flowers64 step, where
//! many activations are 32 MiB or more, that costs about a quarter of the
//! step. Turning mmap off for allocations (heap memory is reused in place)
//! and raising the trim threshold keeps freed memory in the process for the
//! next step; the peak resident size does not grow, since it is set by the
//! largest step anyway.
//!
//! `zeros` allocates the large output buffers of the kernels that add into
//! them, cleared by the whole thread pool rather than by the calling thread
//! alone. Kernels that write every element of their output (the forward
//! convolutions and input gradients of the direct and F(4x4) paths, the
//! group norm) skip the clearing: they write into the spare capacity of a
//! `Vec` as `MaybeUninit` values, and set its length once all is written.

use super::float::Float;
use super::PARALLEL_THRESHOLD;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Tells the C allocator to keep freed memory for reuse instead of
/// returning it to the OS. Meant for long-running training processes;
/// call it once at start. It changes process-wide malloc settings, so the
/// library never calls it on its own. Returns whether the settings took
/// (false where the C library is not glibc).
///
/// It also makes every thread allocate from the one main heap. glibc
/// gives each new thread an arena of its own, and an arena other than the
/// main one grows in heaps of at most 64 MiB: a larger block is mapped
/// and unmapped whatever the settings above say. Work run on a thread of
/// the pool (`run_on_pool`) allocates its activations there, and on a
/// `flowers64` step that had doubled the page faults.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation parameters; it is
        // safe to call at any time, from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// `len` zeros. A large output buffer is zeroed by every thread of the
/// pool, a slice each: `vec![0.0; len]` would have the calling thread
/// alone clear it (memory reused from the heap is not known to be zero),
/// while the pool waits for the kernel that fills it. Small ones come from
/// `vec!`.
pub(crate) fn zeros<T: Float>(len: usize) -> Vec<T> {
    if len < 4 * PARALLEL_THRESHOLD {
        return vec![T::ZERO; len];
    }
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut().par_chunks_mut(PARALLEL_THRESHOLD).for_each(|chunk| chunk.fill(MaybeUninit::new(T::ZERO)));
    // SAFETY: the loop above wrote each of the first `len` elements.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeros_are_zero_at_every_length() {
        for len in [0, 1, 100, 4 * super::PARALLEL_THRESHOLD, 4 * super::PARALLEL_THRESHOLD + 17, 1 << 20] {
            let v = super::zeros::<f32>(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0), "len {len}");
        }
    }

    #[test]
    fn glibc_takes_the_settings() {
        assert_eq!(super::keep_freed_memory(), cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
