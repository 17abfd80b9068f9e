//! Picking vector instructions at run time.
//!
//! The build targets baseline x86-64 (SSE2), where loops vectorise only 4
//! wide. A hot loop is therefore also compiled inside functions with wider
//! instruction sets, and the widest one the CPU has runs: `simd_dispatch!`
//! tries AVX-512, then AVX2 + FMA, then the baseline; `avx2_dispatch!`
//! stops at AVX2 (loops that gain nothing from 512-bit vectors).
//!
//! The loop itself sits in the function the macro compiles (a closure
//! holding it would be compiled on its own, without the features, when
//! the inliner declines it); only small per-element closures are inlined
//! into it. Plain `a * b + c` is never fused into an FMA, so every path
//! gives the same bits. Hand-written kernels (the register blocks of
//! `conv_direct`, the Winograd transforms) ask `has_avx512` and `has_avx2`
//! themselves.
//!
//! `PETAL_NO_AVX512=1`, or `conv_direct::set_avx512_disabled(true)`, keeps
//! everything on AVX2, to compare the two.

use crate::switch::EnvSwitch;

/// Whether the CPU has AVX2 and FMA (detected once, then a cached load).
#[inline(always)]
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Keeps every kernel with an AVX-512 build on AVX2 when on.
pub(super) static NO_AVX512: EnvSwitch = EnvSwitch::new("PETAL_NO_AVX512");

/// Whether the CPU has AVX-512F (and AVX2 + FMA) and `NO_AVX512` is off.
#[inline(always)]
pub(super) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !NO_AVX512.is_on() && is_x86_feature_detected!("avx512f") && has_avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `std::array::from_fn`, always inlined, for arrays of vector registers
/// built inside the hand-written kernels. std's version calls `f` through
/// a wrapper that the inliner may leave out of line, and code out of line
/// has no target features: every intrinsic in `f` then became a call, and
/// a training step took 2.5x as long after an unrelated change moved code
/// between codegen units.
#[inline(always)]
pub(super) fn array_of<T, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut out = [const { std::mem::MaybeUninit::<T>::uninit() }; N];
    for (i, slot) in out.iter_mut().enumerate() {
        slot.write(f(i));
    }
    // SAFETY: every element was written, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { (&out as *const [std::mem::MaybeUninit<T>; N]).cast::<[T; N]>().read() }
}

/// `avx2_dispatch!(run<T: Float>(x: &[T], y: T) -> f64)` calls `run(x, y)`
/// compiled with AVX2 + FMA where the CPU has them, else as built. Used as
/// a function's last expression: it returns from that function.
macro_rules! avx2_dispatch {
    ($run:ident<$($g:ident $(: $bound:path)?),*>($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<$($g $(: $bound)?),*>($($arg: $ty),*) $(-> $ret)? {
                $run($($arg),*)
            }
            if $crate::cpu::simd::has_avx2() {
                // SAFETY: the features were detected.
                return unsafe { avx2($($arg),*) };
            }
        }
        $run($($arg),*)
    }};
}
pub(super) use avx2_dispatch;

/// `avx2_dispatch!` with an AVX-512 build tried first.
macro_rules! simd_dispatch {
    ($run:ident<$($g:ident $(: $bound:path)?),*>($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512<$($g $(: $bound)?),*>($($arg: $ty),*) $(-> $ret)? {
                $run($($arg),*)
            }
            if $crate::cpu::simd::has_avx512() {
                // SAFETY: the features were detected.
                return unsafe { avx512($($arg),*) };
            }
        }
        $crate::cpu::simd::avx2_dispatch!($run<$($g $(: $bound)?),*>($($arg: $ty),*) $(-> $ret)?)
    }};
}
pub(super) use simd_dispatch;
