//! Random numbers: uniform and normal fills, and the dropout mask fused
//! with its product. Element i of every draw is a pure function of (key,
//! counter start + i) through `rng.rs`'s Philox, so the CPU and the GPU
//! produce the same values, and a split of the work across threads changes
//! nothing.
//!
//! CUDA twin: `cuda/random.rs` (launches) and `cuda/random.cu` (kernels).

use super::elementwise::{build, map1, zip_slice};
#[cfg(target_arch = "x86_64")]
use super::simd::array_of;
use super::simd::{has_avx2, has_avx512};
use super::float::Float;
use super::strided::contiguous_slice;
use super::{CpuStorage, PARALLEL_THRESHOLD};
use crate::{rng, DType, Layout, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;

impl CpuStorage {
    pub(super) fn from_f64_fn(n: usize, dtype: DType, f: impl Fn(u64) -> f64 + Sync) -> Result<Self> {
        if dtype == DType::F32 {
            // The working dtype: round each value as it is made, instead of
            // filling an f64 vector and casting it (the same values).
            return Ok(CpuStorage::F32(build(n, |start, out| {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(f((start + i) as u64) as f32);
                }
            })));
        }
        let vals: Vec<f64> = if n >= PARALLEL_THRESHOLD {
            (0..n as u64).into_par_iter().map(&f).collect()
        } else {
            (0..n as u64).map(&f).collect()
        };
        CpuStorage::F64(vals).cast(dtype)
    }

    /// Rounding a draw just under `hi` to a narrow dtype can give `hi`
    /// itself (bf16 does for about one draw in 500 from [0, 1)), which
    /// [lo, hi) excludes: such values step down to the next value of the
    /// dtype, unless that falls below `lo` (a range narrower than one step).
    /// `cuda/random.cu` applies the same rule.
    pub(crate) fn keep_below(&mut self, lo: f64, hi: f64) {
        if lo.is_nan() || hi.is_nan() || hi <= lo {
            return;
        }
        fn fix<T: Copy>(v: &mut [T], lo: f64, hi: f64, to_f64: impl Fn(T) -> f64, down: impl Fn(T) -> T) {
            for x in v.iter_mut().filter(|x| to_f64(**x) >= hi) {
                let d = down(*x);
                if to_f64(d) >= lo {
                    *x = d;
                }
            }
        }
        // One step down in a 16-bit float's order (the same for f16 and bf16).
        fn down16(bits: u16) -> u16 {
            if bits & 0x7fff == 0 {
                0x8001 // from +-0 to the negative value nearest zero
            } else if bits & 0x8000 == 0 {
                bits - 1
            } else {
                bits + 1
            }
        }
        match self {
            CpuStorage::F32(v) => fix(v, lo, hi, |x| x as f64, f32::next_down),
            CpuStorage::F64(v) => fix(v, lo, hi, |x| x, f64::next_down),
            CpuStorage::F16(v) => fix(v, lo, hi, |x| x.to_f64(), |x| f16::from_bits(down16(x.to_bits()))),
            CpuStorage::BF16(v) => fix(v, lo, hi, |x| x.to_f64(), |x| bf16::from_bits(down16(x.to_bits()))),
            CpuStorage::U32(_) => {}
        }
    }

    /// Uniform [lo, hi) values: element i is `rng::uniform_at(key, start, i)`.
    pub(super) fn uniform(n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<Self> {
        let mut values = Self::from_f64_fn(n, dtype, |i| rng::uniform_at(key, start, i, lo, hi))?;
        values.keep_below(lo, hi);
        Ok(values)
    }

    /// Normal values: element i is `mean + std * rng::normal_at(key, start, i)`.
    pub(super) fn normal(n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<Self> {
        Self::from_f64_fn(n, dtype, |i| mean + std * rng::normal_at(key, start, i))
    }
}

/// Inverted dropout in one pass: `mask[i]` is `scale` where element i is
/// kept, else 0, and `out = x * mask`. Element i is kept when its uniform
/// draw `rng::uniform_at(key, start, i, 0, 1)` is below `keep`; that draw
/// is `w / 2^32` for the Philox word w, so the test is done on w against
/// the exact threshold, with no float draw at all.
pub fn dropout<T: Float>(x: &[T], xl: &Layout, keep: f64, scale: f64, key: u64, start: u64) -> (Vec<T>, Vec<T>) {
    let x: std::borrow::Cow<[T]> = if xl.is_contiguous() { contiguous_slice(x, xl).into() } else { map1(x, xl, |x| x).into() };
    let mask: Vec<T> = dropout_mask(x.len(), keep, scale, key, start);
    let out = build(x.len(), |s, out| {
        let e = s + out.len();
        zip_slice(&x[s..e], &mask[s..e], out, |x, m| x * m)
    });
    (out, mask)
}

/// The mask of `dropout` alone, for `n` elements.
pub fn dropout_mask<T: Float>(n: usize, keep: f64, scale: f64, key: u64, start: u64) -> Vec<T> {
    let (threshold, scale) = (crate::rng::keep_threshold(keep), T::from_f64(scale));
    build(n, |s, out| keep_mask(out, key, start.wrapping_add(s as u64), threshold, scale))
}

/// `out[i] = scale` if word 0 of `philox4x32(key, start + i)` is below
/// `threshold`, else 0: the dropout mask, `N` counters at a time so the
/// Philox rounds vectorise (32x32->64-bit multiplies map onto `vpmuludq`):
/// 16 with AVX-512, whose registers hold 8 of the 64-bit products where
/// AVX2's hold 4; 8 otherwise. Integer arithmetic, so the same bits.
#[inline(always)]
fn keep_mask<T: Float>(out: &mut [MaybeUninit<T>], key: u64, start: u64, threshold: u64, scale: T) {
    #[inline(always)]
    fn run<T: Float, const N: usize>(out: &mut [MaybeUninit<T>], key: u64, start: u64, threshold: u64, scale: T, words: impl Fn(u64, u64) -> [u32; N]) {
        for (j, chunk) in out.chunks_mut(N).enumerate() {
            let words = words(key, start.wrapping_add((N * j) as u64));
            for (o, &w) in chunk.iter_mut().zip(&words) {
                o.write(if (w as u64) < threshold { scale } else { T::ZERO });
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<T: Float>(out: &mut [MaybeUninit<T>], key: u64, start: u64, threshold: u64, scale: T) {
            // SAFETY (of the call inside): this function's own feature is AVX-512F.
            run::<T, 16>(out, key, start, threshold, scale, |key, first| unsafe { philox_word0_avx512(key, first) })
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<T: Float>(out: &mut [MaybeUninit<T>], key: u64, start: u64, threshold: u64, scale: T) {
            // SAFETY (of the call inside): this function's own features include AVX2.
            run::<T, 8>(out, key, start, threshold, scale, |key, first| unsafe { philox_word0_avx2(key, first) })
        }
        if has_avx512() {
            // SAFETY: the features were detected.
            return unsafe { avx512(out, key, start, threshold, scale) };
        }
        if has_avx2() {
            // SAFETY: the features were detected.
            return unsafe { avx2(out, key, start, threshold, scale) };
        }
    }
    run::<T, 8>(out, key, start, threshold, scale, philox_word0::<8>)
}

/// Word 0 of `rng::philox4x32(key, first + j)` for j in 0..N: the same
/// Philox 4x32-10, written lane by lane so that it vectorises (the test
/// `philox_lanes_match_scalar` checks it against the scalar one).
#[inline(always)]
fn philox_word0<const N: usize>(key: u64, first: u64) -> [u32; N] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut c0, mut c1, mut c2, mut c3) = ([0u32; N], [0u32; N], [0u32; N], [0u32; N]);
    for j in 0..N {
        let c = first.wrapping_add(j as u64);
        c0[j] = c as u32;
        c1[j] = (c >> 32) as u32;
    }
    let (mut k0, mut k1) = (key as u32, (key >> 32) as u32);
    for _ in 0..10 {
        for j in 0..N {
            let p0 = M0 * c0[j] as u64;
            let p1 = M1 * c2[j] as u64;
            c0[j] = ((p1 >> 32) as u32) ^ c1[j] ^ k0;
            c1[j] = p1 as u32;
            c2[j] = ((p0 >> 32) as u32) ^ c3[j] ^ k1;
            c3[j] = p0 as u32;
        }
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    c0
}

/// The vector operations Philox's rounds need, for `N` counters in two
/// vectors of 64-bit lanes of one instruction set. Each lane holds one
/// counter's 32-bit word in its low half; the high half is whatever it
/// happens to be, because nothing reads it: `vpmuludq` multiplies the low
/// halves only, and only the low halves are kept at the end. So a 32x32 ->
/// 64-bit product is one multiply, its high word one shift, and a round
/// needs no blends. `philox_word0_in` is written once over this and
/// compiled inside an AVX-512 and an AVX2 function, where every call
/// inlines.
///
/// # Safety
/// Every method needs its instruction set; call them only from functions
/// compiled with it.
#[cfg(target_arch = "x86_64")]
unsafe trait PhiloxLanes<const N: usize> {
    type V: Copy;
    /// `x` in every lane.
    unsafe fn splat(x: u32) -> Self::V;
    /// Counters `first + half * N / 2 + lane`, as 64-bit integers.
    unsafe fn counters(first: u64, half: usize) -> Self::V;
    /// Each lane's low word times `m`'s: the whole 64-bit product.
    unsafe fn mul_wide(a: Self::V, m: Self::V) -> Self::V;
    /// Each lane's high word, moved to its low half.
    unsafe fn high(v: Self::V) -> Self::V;
    unsafe fn xor3(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// The low words of `a`'s lanes, then of `b`'s.
    unsafe fn store_low(a: Self::V, b: Self::V, out: &mut [u32; N]);
}

#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
// SAFETY: each method is one or a few AVX-512F intrinsics.
unsafe impl PhiloxLanes<16> for Avx512 {
    type V = std::arch::x86_64::__m512i;
    #[inline(always)]
    unsafe fn splat(x: u32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_set1_epi64(x as i64) }
    }
    #[inline(always)]
    unsafe fn counters(first: u64, half: usize) -> Self::V {
        use std::arch::x86_64::*;
        unsafe { _mm512_add_epi64(_mm512_set1_epi64(first.wrapping_add(8 * half as u64) as i64), _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7)) }
    }
    #[inline(always)]
    unsafe fn mul_wide(a: Self::V, m: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_mul_epu32(a, m) }
    }
    #[inline(always)]
    unsafe fn high(v: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_srli_epi64::<32>(v) }
    }
    #[inline(always)]
    unsafe fn xor3(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        // 0x96: the truth table of a ^ b ^ c.
        unsafe { std::arch::x86_64::_mm512_ternarylogic_epi64::<0x96>(a, b, c) }
    }
    #[inline(always)]
    unsafe fn store_low(a: Self::V, b: Self::V, out: &mut [u32; 16]) {
        use std::arch::x86_64::*;
        // `vpmovqd`: each 64-bit lane narrowed to its low word.
        unsafe {
            _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm512_cvtepi64_epi32(a));
            _mm256_storeu_si256(out.as_mut_ptr().add(8).cast(), _mm512_cvtepi64_epi32(b));
        }
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
// SAFETY: each method is one or a few AVX2 intrinsics.
unsafe impl PhiloxLanes<8> for Avx2 {
    type V = std::arch::x86_64::__m256i;
    #[inline(always)]
    unsafe fn splat(x: u32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_set1_epi64x(x as i64) }
    }
    #[inline(always)]
    unsafe fn counters(first: u64, half: usize) -> Self::V {
        use std::arch::x86_64::*;
        unsafe { _mm256_add_epi64(_mm256_set1_epi64x(first.wrapping_add(4 * half as u64) as i64), _mm256_setr_epi64x(0, 1, 2, 3)) }
    }
    #[inline(always)]
    unsafe fn mul_wide(a: Self::V, m: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_mul_epu32(a, m) }
    }
    #[inline(always)]
    unsafe fn high(v: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_srli_epi64::<32>(v) }
    }
    #[inline(always)]
    unsafe fn xor3(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        use std::arch::x86_64::*;
        unsafe { _mm256_xor_si256(_mm256_xor_si256(a, b), c) }
    }
    #[inline(always)]
    unsafe fn store_low(a: Self::V, b: Self::V, out: &mut [u32; 8]) {
        use std::arch::x86_64::*;
        unsafe {
            // The even words of a and b, per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6 ...
            let (a, b) = (_mm256_castsi256_ps(a), _mm256_castsi256_ps(b));
            let even = _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
            // ...then the 64-bit pairs in order: a0 a2 a4 a6 b0 b2 b4 b6.
            _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm256_permute4x64_epi64::<0b11_01_10_00>(even));
        }
    }
}

/// `philox_word0::<N>` on two vectors of `N / 2` counters each (see
/// `PhiloxLanes` for the layout). Left to itself the compiler kept the
/// counters in 32-bit lanes and paid for each product's halves with a
/// third multiply and blends.
///
/// Word 0 alone needs less than the full rounds: in the first, `c2` and
/// `c3` are zero, so `c2`'s product is too; in the last, only `c0 =
/// hi(c2 * M1) ^ c1 ^ k0` is kept.
///
/// # Safety
/// The CPU has `S`'s instruction set, and the caller is compiled with it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn philox_word0_in<S: PhiloxLanes<N>, const N: usize>(key: u64, first: u64) -> [u32; N] {
    const M0: u32 = 0xD251_1F53;
    const M1: u32 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let mut out = [0u32; N];
    // SAFETY: the caller has S's instruction set.
    unsafe {
        let (m0, m1) = (S::splat(M0), S::splat(M1));
        let (mut k0, mut k1) = (key as u32, (key >> 32) as u32);
        // Round 1 from (counter low word, counter high word, 0, 0). The
        // pairs are built with `array_of`, not `[_; 2]::map`, whose closure
        // went out of line, compiled without the vector instructions.
        let start: [S::V; 2] = array_of(|h| S::counters(first, h));
        let p0: [S::V; 2] = array_of(|h| S::mul_wide(start[h], m0));
        let zero = S::splat(0);
        let (kv0, kv1) = (S::splat(k0), S::splat(k1));
        let mut c0: [S::V; 2] = array_of(|h| S::xor3(S::high(start[h]), kv0, zero));
        let mut c1 = [zero; 2];
        let mut c2: [S::V; 2] = array_of(|h| S::xor3(S::high(p0[h]), kv1, zero));
        let mut c3 = p0;
        // Rounds 2 to 9.
        for _ in 1..9 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
            let (kv0, kv1) = (S::splat(k0), S::splat(k1));
            for h in 0..2 {
                let (p0, p1) = (S::mul_wide(c0[h], m0), S::mul_wide(c2[h], m1));
                c0[h] = S::xor3(S::high(p1), c1[h], kv0);
                c1[h] = p1;
                c2[h] = S::xor3(S::high(p0), c3[h], kv1);
                c3[h] = p0;
            }
        }
        // Round 10, word 0 only.
        let kv0 = S::splat(k0.wrapping_add(W0));
        let word0: [S::V; 2] = array_of(|h| S::xor3(S::high(S::mul_wide(c2[h], m1)), c1[h], kv0));
        S::store_low(word0[0], word0[1], &mut out);
    }
    out
}

/// `philox_word0_in` on AVX-512 registers.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn philox_word0_avx512(key: u64, first: u64) -> [u32; 16] {
    // SAFETY: this function is compiled with AVX-512F, which the caller checked.
    unsafe { philox_word0_in::<Avx512, 16>(key, first) }
}

/// `philox_word0_in` on AVX2 registers.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn philox_word0_avx2(key: u64, first: u64) -> [u32; 8] {
    // SAFETY: this function is compiled with AVX2, which the caller checked.
    unsafe { philox_word0_in::<Avx2, 8>(key, first) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_lanes_match_scalar() {
        fn check<const N: usize>(key: u64, first: u64) {
            for (j, &w) in philox_word0::<N>(key, first).iter().enumerate() {
                assert_eq!(w, crate::rng::philox4x32(key, first.wrapping_add(j as u64))[0], "{N} lanes, lane {j}");
            }
        }
        for (key, first) in [(0, 0), (7, 5), (u64::MAX, u64::MAX - 3), (0x1234_5678_9abc, 1 << 32), (3, u32::MAX as u64 - 7)] {
            check::<8>(key, first);
            check::<16>(key, first);
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                // SAFETY: the feature was detected.
                let words = unsafe { philox_word0_avx2(key, first) };
                assert_eq!(words, philox_word0::<8>(key, first), "AVX2 lanes of ({key}, {first})");
            }
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was detected.
                let words = unsafe { philox_word0_avx512(key, first) };
                assert_eq!(words, philox_word0::<16>(key, first), "AVX-512 lanes of ({key}, {first})");
            } else {
                eprintln!("philox_lanes_match_scalar: this CPU has no AVX-512F; only the portable lanes were checked");
            }
        }
    }

    #[test]
    fn dropout_matches_bernoulli_draws() {
        let n = 1000;
        let x: Vec<f32> = (0..n).map(|i| i as f32 - 300.0).collect();
        let l = Layout::contiguous(crate::Shape::from(n));
        let (out, mask) = dropout(&x, &l, 0.9, 1.0 / 0.9, 42, 17);
        for i in 0..n {
            let kept = crate::rng::uniform_at(42, 17, i as u64, 0.0, 1.0) < 0.9;
            assert_eq!(mask[i], if kept { (1.0 / 0.9) as f32 } else { 0.0 });
            assert_eq!(out[i], x[i] * mask[i]);
        }
    }
}
