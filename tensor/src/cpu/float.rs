//! The numeric element types the CPU kernels are written over.
//!
//! Kernels are generic over `Float`, so one source serves f32 (the working
//! type) and f64 (references and gradient checks).
//!
//! CUDA twin: `cuda/common.cuh` (`Num<T>` and the math helpers every
//! kernel is written over).

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::mem::MaybeUninit;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Float:
    Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + PartialOrd
    + Sum
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;
    const INFINITY: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn max(self, other: Self) -> Self;
    fn min(self, other: Self) -> Self;
    fn is_nan(self) -> bool;
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// `exp`, for the sigmoid family only: f32 uses a branch-free version
    /// (see `exp_f32`) that loops vectorise, where libm's `expf` is a scalar
    /// call; f64 (references, gradient checks) keeps the exact one.
    fn exp_sat(self) -> Self;
    /// The slice itself when `Self` is f32, else `None`: lets a kernel
    /// written with f32 SIMD intrinsics take over from the generic one.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// `as_f32_mut` for a buffer not yet written.
    fn as_f32_uninit_mut(s: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]>;
}

/// exp(x) for f32 with no branch or call, so that a loop over a slice
/// vectorises. Cephes' `expf`: x = n ln2 + r with |r| <= ln2/2, a degree-6
/// polynomial for e^r (about 1 ulp), and 2^n built in the exponent bits.
/// The argument is clamped to [-87, 88] (n stays a normal exponent), so the
/// result saturates near 6e-39 and 1.7e38 instead of reaching 0 or inf:
/// harmless inside 1 / (1 + e^-x), which is the only place it is used.
///
/// Its multiply-adds are fused (`mul_add`): one rounding each, so every
/// path gets the same bits, whether the AVX2 + FMA loops that call it or
/// a CPU without FMA, where `mul_add` is the C library's exact `fmaf`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5 * 2^23 rounds to the nearest integer
    // (`round()` would be a libm call without SSE4.1).
    const ROUND: f32 = 12_582_912.0;
    // Compare-and-select (not max/min, which drop NaN): NaN stays NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x.mul_add(LOG2E, ROUND);
    let n = t - ROUND;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5.000_000_1e-1);
    let e = p.mul_add(r * r, r) + 1.0;
    // t's low mantissa bits hold n (t = 1.5 * 2^23 + n): 2^n comes from
    // integer ops on them. `n as i32` would not vectorise (Rust's
    // saturating float-to-int cast compiles to scalar code).
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    e * f32::from_bits(biased << 23)
}

macro_rules! impl_float {
    ($t:ty, $exp_sat:expr, $as_f32:expr, $as_f32_mut:expr, $as_f32_uninit_mut:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const INFINITY: Self = <$t>::INFINITY;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn exp_sat(self) -> Self {
                $exp_sat(self)
            }
            #[inline(always)]
            fn as_f32(s: &[Self]) -> Option<&[f32]> {
                $as_f32(s)
            }
            #[inline(always)]
            fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32_mut(s)
            }
            #[inline(always)]
            fn as_f32_uninit_mut(s: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]> {
                $as_f32_uninit_mut(s)
            }
        }
    };
}
impl_float!(f32, exp_f32, Some, Some, Some);
impl_float!(f64, f64::exp, |_| None, |_| None, |_| None);
