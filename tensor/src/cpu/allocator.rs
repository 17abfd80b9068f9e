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
use std::alloc::{GlobalAlloc, Layout, System};
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
///
/// The heap grows by 64 MiB beyond each request that does not fit, so
/// that `HugePageHeap` can ask for huge pages over it before it is used.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes glibc's allocation parameters; it is
        // safe to call at any time, from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
                && libc::mallopt(libc::M_TOP_PAD, HEAP_GROWTH as i32) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The system allocator, with the heap backed by transparent huge pages
/// (2 MiB) where the kernel hands them out on request (its `madvise` mode).
///
/// A training step walks its activations, gradients and transform buffers
/// many times over, each pass a few hundred kilobytes to a few megabytes
/// long. On 4 KiB pages such a pass needs a new TLB entry every 1024
/// floats, and each miss walks the page tables; in a virtual machine,
/// which walks two sets of tables (the guest's and the host's), a miss is
/// dear. One 2 MiB page takes the place of 512 small ones.
///
/// Install it in a binary with
/// `#[global_allocator] static HEAP: tensor::cpu::HugePageHeap = tensor::cpu::HugePageHeap;`
/// and call `keep_freed_memory` at start. Each time glibc grows its main
/// heap (by 64 MiB or more, see `keep_freed_memory`), the next allocation
/// asks for huge pages over the new part, before most of it is first
/// touched: a 2 MiB stretch already touched stays on small pages. A large
/// block outside the main heap (without `keep_freed_memory`, glibc maps
/// those on their own) is advised whole. `PETAL_NO_HUGE_PAGES=1` turns
/// the advice off, to compare.
pub struct HugePageHeap;

/// The size of a transparent huge page on x86-64.
const HUGE_PAGE: usize = 2 << 20;

/// How far glibc grows its heap beyond each request. Advising a large
/// stretch at once leaves only the stretch where a request ends, which
/// glibc touches before the advice, on small pages.
const HEAP_GROWTH: usize = 64 << 20;

// SAFETY: every call is passed to `System` unchanged; advising pages only
// changes how the kernel backs memory, never its contents.
unsafe impl GlobalAlloc for HugePageHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = System.alloc(layout);
        advise_huge_pages(block, layout.size());
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = System.alloc_zeroed(layout);
        advise_huge_pages(block, layout.size());
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        System.dealloc(block, layout)
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = System.realloc(block, layout, new_size);
        advise_huge_pages(moved, new_size);
        moved
    }
}

/// Asks for huge pages over the heap grown since the last call, and over a
/// large block mapped outside the heap.
fn advise_huge_pages(block: *mut u8, len: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // The end of the heap advised so far. The heap only grows while
        // `keep_freed_memory` holds (it is never trimmed).
        static ADVISED_UP_TO: AtomicUsize = AtomicUsize::new(0);
        let advise = |from: usize, to: usize| {
            let from = from / HUGE_PAGE * HUGE_PAGE;
            if to > from {
                // SAFETY: MADV_HUGEPAGE changes no contents; ranges that are
                // not mapped are skipped by the kernel (an error we ignore).
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
            }
        };
        if block.is_null() || huge_pages_off() {
            return;
        }
        let start = block as usize;
        // SAFETY: sbrk(0) only reads the current program break (glibc
        // returns its cached value, with no system call).
        let heap_end = unsafe { libc::sbrk(0) } as usize;
        let advised = ADVISED_UP_TO.load(Ordering::Relaxed);
        if heap_end > advised {
            // The heap has grown: advise the new part, including the
            // padding glibc keeps above the top block, before it is used.
            advise(if advised == 0 { start.min(heap_end) } else { advised }, heap_end);
            ADVISED_UP_TO.fetch_max(heap_end, Ordering::Relaxed);
        }
        if len >= HUGE_PAGE && !(start < heap_end && start + len <= heap_end) {
            // A block outside the main heap: one glibc mapped on its own
            // (`keep_freed_memory` not called), fresh, or one from another
            // thread's arena. Its pages not yet touched can still be huge.
            advise(start, start + len);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (block, len);
}

/// Whether `PETAL_NO_HUGE_PAGES=1` turned the advice off (read once).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn huge_pages_off() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not yet read, 1: off, 2: on. Not an `EnvSwitch`: reading the
    // variable through `std::env` allocates, and this runs inside the
    // allocator.
    static STATE: AtomicU8 = AtomicU8::new(0);
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // SAFETY: getenv returns null or a NUL-terminated string that
            // stays valid while the environment is not changed; it is
            // read at once.
            let off = unsafe {
                let value = libc::getenv(c"PETAL_NO_HUGE_PAGES".as_ptr());
                !value.is_null() && std::ffi::CStr::from_ptr(value).to_bytes() == b"1"
            };
            STATE.store(if off { 1 } else { 2 }, Ordering::Relaxed);
            off
        }
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
