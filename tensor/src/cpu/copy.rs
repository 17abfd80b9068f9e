//! Moving elements: strided gathers and scatters, fills, dtype casts and
//! concatenation.
//!
//! CUDA twin: `cuda/copy.rs` (launches) and `cuda/copy.cu` (kernels).

use super::strided::{contiguous_slice, fill_rows, StridedRows};
use super::{CpuStorage, PARALLEL_THRESHOLD};
use crate::{DType, Layout, Result};
use half::{bf16, f16};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `dst.copy_from_slice(src)` for the short rows of a feature map, copied
/// inline eight values at a time. `copy_from_slice` of a length known only
/// at run time is a call to `memmove`, whose setup outweighs the copy of
/// an 8- or 16-value row: the 3x3 convolutions copy their input a row at a
/// time into zero-padded bands, and on small maps that call was most of
/// the copying.
#[inline(always)]
pub(super) fn copy_row(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "one row length");
    let mut dst8 = dst.chunks_exact_mut(8);
    let mut src8 = src.chunks_exact(8);
    for (d, s) in (&mut dst8).zip(&mut src8) {
        let s: &[f32; 8] = s.try_into().expect("chunks of 8");
        d.copy_from_slice(s);
    }
    let (dst, src) = (dst8.into_remainder(), src8.remainder());
    let four = if src.len() >= 4 { 4 } else { 0 };
    if four == 4 {
        let s: &[f32; 4] = src[..4].try_into().expect("4 values");
        dst[..4].copy_from_slice(s);
    }
    // At most three values, one by one: `copy_from_slice` would be the call.
    #[allow(clippy::manual_memcpy)]
    for i in four..src.len() {
        dst[i] = src[i];
    }
}

/// Gathers a strided layout into a new contiguous vector.
pub(crate) fn gather<T: Copy + Send + Sync + Default>(data: &[T], layout: &Layout) -> Vec<T> {
    if layout.is_contiguous() {
        return contiguous_slice(data, layout).to_vec();
    }
    let rows = StridedRows::new(layout.dims(), &[layout]);
    let mut out = vec![T::default(); layout.elem_count()];
    let (len, stride) = (rows.run_len, rows.run_strides[0]);
    fill_rows(&mut out, len, |r, row| {
        let off = rows.offset(0, r);
        for (i, o) in row.iter_mut().enumerate() {
            *o = data[off + i * stride];
        }
    });
    out
}

/// Writes `src` (seen through `src_layout`) into the positions of `dst`
/// given by `dst_layout`; both layouts have one shape.
pub(super) fn scatter<T: Copy>(dst: &mut [T], dst_layout: &Layout, src: &[T], src_layout: &Layout) {
    let rows = StridedRows::new(dst_layout.dims(), &[dst_layout, src_layout]);
    let (ds, ss) = (rows.run_strides[0], rows.run_strides[1]);
    for r in 0..rows.rows() {
        let (d0, s0) = (rows.offset(0, r), rows.offset(1, r));
        for i in 0..rows.run_len {
            dst[d0 + i * ds] = src[s0 + i * ss];
        }
    }
}

impl CpuStorage {
    /// `n` copies of `value`.
    pub(super) fn filled(n: usize, dtype: DType, value: f64) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::F16 => CpuStorage::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::from_f64(value); n]),
            DType::U32 => CpuStorage::U32(vec![value as u32; n]),
        }
    }

    /// Converts a contiguous whole storage to another dtype.
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        fn conv<S: Copy + Sync, D: Send>(v: &[S], f: impl Fn(S) -> D + Sync + Send) -> Vec<D> {
            if v.len() >= PARALLEL_THRESHOLD {
                v.par_iter().map(|&x| f(x)).collect()
            } else {
                v.iter().map(|&x| f(x)).collect()
            }
        }
        let as_f64: Vec<f64>;
        let src: &[f64] = match self {
            CpuStorage::F64(v) => v,
            CpuStorage::F32(v) => {
                match dtype {
                    DType::F32 => return Ok(self.clone()),
                    DType::F16 => return Ok(CpuStorage::F16(conv(v, f16::from_f32))),
                    DType::BF16 => return Ok(CpuStorage::BF16(conv(v, bf16::from_f32))),
                    _ => {}
                }
                as_f64 = conv(v, |x| x as f64);
                &as_f64
            }
            CpuStorage::F16(v) => {
                if dtype == DType::F32 {
                    return Ok(CpuStorage::F32(conv(v, f16::to_f32)));
                }
                as_f64 = conv(v, f16::to_f64);
                &as_f64
            }
            CpuStorage::BF16(v) => {
                if dtype == DType::F32 {
                    return Ok(CpuStorage::F32(conv(v, bf16::to_f32)));
                }
                as_f64 = conv(v, bf16::to_f64);
                &as_f64
            }
            CpuStorage::U32(v) => {
                as_f64 = conv(v, |x| x as f64);
                &as_f64
            }
        };
        Ok(match dtype {
            DType::F64 => CpuStorage::F64(src.to_vec()),
            DType::F32 => CpuStorage::F32(conv(src, |x| x as f32)),
            DType::F16 => CpuStorage::F16(conv(src, f16::from_f64)),
            DType::BF16 => CpuStorage::BF16(conv(src, bf16::from_f64)),
            DType::U32 => CpuStorage::U32(conv(src, |x| x.max(0.0) as u32)),
        })
    }

    /// Joins `parts` (one dtype, equal dims except `dim`) along `dim` into
    /// a new contiguous storage. Each output element is written once, by
    /// copying whole blocks, instead of into zeros first (see
    /// `elementwise::build` for why that matters here).
    pub(super) fn concat(parts: &[(&CpuStorage, &Layout)], dim: usize) -> Result<Self> {
        fn join<T: Copy + Send + Sync + Default + 'static>(parts: &[(&CpuStorage, &Layout)], dim: usize) -> Vec<T> {
            let dims = parts[0].1.dims();
            let outer: usize = dims[..dim].iter().product();
            let inner: usize = dims[dim + 1..].iter().product();
            let blocks: Vec<(std::borrow::Cow<[T]>, usize)> = parts
                .iter()
                .map(|&(s, l)| {
                    let data = if l.is_contiguous() { super::backend::float_slice::<T>(s, l).into() } else { gather(super::backend::whole_slice::<T>(s), l).into() };
                    (data, l.dims()[dim] * inner)
                })
                .collect();
            // Output row `o` is row `o` of each part, one after another.
            let row: usize = blocks.iter().map(|(_, b)| b).sum();
            let total = row * outer;
            let mut out = Vec::with_capacity(total);
            let write_row = |o: usize, dst: &mut [MaybeUninit<T>]| {
                let mut at = 0;
                for (data, block) in &blocks {
                    let src = &data[o * block..(o + 1) * block];
                    dst[at..at + block].iter_mut().zip(src).for_each(|(d, &v)| {
                        d.write(v);
                    });
                    at += block;
                }
            };
            let dst = &mut out.spare_capacity_mut()[..total];
            if total >= PARALLEL_THRESHOLD && row > 0 {
                let rows_per_task = (PARALLEL_THRESHOLD / row).max(1);
                dst.par_chunks_mut(row).enumerate().with_min_len(rows_per_task).for_each(|(o, dst)| write_row(o, dst));
            } else {
                dst.chunks_mut(row.max(1)).enumerate().for_each(|(o, dst)| write_row(o, dst));
            }
            // SAFETY: each of the `outer` rows of `row` elements was written above.
            unsafe { out.set_len(total) };
            out
        }
        for &(s, _) in &parts[1..] {
            super::check_same("cat", parts[0].0, s)?;
        }
        Ok(match parts[0].0 {
            CpuStorage::F32(_) => CpuStorage::F32(join(parts, dim)),
            CpuStorage::F64(_) => CpuStorage::F64(join(parts, dim)),
            CpuStorage::F16(_) => CpuStorage::F16(join(parts, dim)),
            CpuStorage::BF16(_) => CpuStorage::BF16(join(parts, dim)),
            CpuStorage::U32(_) => CpuStorage::U32(join(parts, dim)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::copy_row;
    use proptest::prelude::*;

    proptest! {
        /// Every length, its runs of 8 and 4 and the last one to three
        /// values, copies exactly `src` and nothing past `dst`'s end.
        #[test]
        fn copy_row_copies_exactly_the_row(src in prop::collection::vec(-1e6f32..1e6, 0..70), pad in 0usize..9) {
            let mut dst = vec![f32::NAN; src.len() + pad];
            copy_row(&mut dst[..src.len()], &src);
            prop_assert_eq!(&dst[..src.len()], &src[..]);
            prop_assert!(dst[src.len()..].iter().all(|v| v.is_nan()));
        }
    }
}
