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

/// Tells the C allocator to keep freed memory for reuse instead of
/// returning it to the OS. Meant for long-running training processes;
/// call it once at start. It changes process-wide malloc settings, so the
/// library never calls it on its own. Returns whether the settings took
/// (false where the C library is not glibc).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation parameters; it is
        // safe to call at any time, from any thread.
        unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_settings() {
        assert_eq!(super::keep_freed_memory(), cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
