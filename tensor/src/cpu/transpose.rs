//! Transposing a matrix of f32 between two buffers, for kernels that run
//! the register block of `conv_direct` on operands laid out the other way
//! round (the weight gradients of F(4x4) and of 1x1 convolutions, whose
//! summed index is a position, not a channel).

/// `dst[c * ld_dst + r] = src[r * ld_src + c]` for `r < rows`, `c < cols`:
/// 8x8 squares through AVX2 registers where they fit, the edges one value
/// at a time.
pub(super) fn transpose(src: &[f32], ld_src: usize, rows: usize, cols: usize, dst: &mut [f32], ld_dst: usize) {
    assert!(rows == 0 || cols == 0 || (src.len() >= (rows - 1) * ld_src + cols && dst.len() >= (cols - 1) * ld_dst + rows));
    #[cfg(target_arch = "x86_64")]
    let (squared_rows, squared_cols) = if super::simd::has_avx2() {
        let (rows8, cols8) = (rows / 8 * 8, cols / 8 * 8);
        for r in (0..rows8).step_by(8) {
            for c in (0..cols8).step_by(8) {
                // SAFETY: AVX2 was detected; the square's rows and columns
                // are inside both slices (checked above).
                unsafe { transpose8x8(src.as_ptr().add(r * ld_src + c), ld_src, dst.as_mut_ptr().add(c * ld_dst + r), ld_dst) };
            }
        }
        (rows8, cols8)
    } else {
        (0, 0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (squared_rows, squared_cols) = (0, 0);
    // The edges: columns right of the squares, then rows below them.
    for r in 0..rows {
        let first = if r < squared_rows { squared_cols } else { 0 };
        for c in first..cols {
            dst[c * ld_dst + r] = src[r * ld_src + c];
        }
    }
}

/// One 8x8 square of `transpose`.
///
/// # Safety
/// The CPU has AVX2; `src` has 8 rows of 8 at stride `ld_src`, `dst` room
/// for 8 rows of 8 at stride `ld_dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8x8(src: *const f32, ld_src: usize, dst: *mut f32, ld_dst: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ld_src)));
    // Pairs, then quads of rows interleaved within 128-bit lanes ...
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[2 * (i / 2)], r[2 * (i / 2) + 1]);
        if i % 2 == 0 { _mm256_unpacklo_ps(a, b) } else { _mm256_unpackhi_ps(a, b) }
    });
    let q: [__m256; 8] = std::array::from_fn(|i| {
        let (base, k) = (4 * (i / 4), i % 4);
        let (a, b) = (t[base + k % 2], t[base + 2 + k % 2]);
        if k < 2 { _mm256_shuffle_ps::<0b01_00_01_00>(a, b) } else { _mm256_shuffle_ps::<0b11_10_11_10>(a, b) }
    });
    // ... then the 128-bit halves of rows 0-3 and 4-7 joined.
    for i in 0..4 {
        let order = [0, 2, 1, 3][i];
        _mm256_storeu_ps(dst.add(i * ld_dst), _mm256_permute2f128_ps::<0x20>(q[order], q[4 + order]));
        _mm256_storeu_ps(dst.add((i + 4) * ld_dst), _mm256_permute2f128_ps::<0x31>(q[order], q[4 + order]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_the_definition() {
        for (rows, cols) in [(8, 8), (16, 32), (13, 30), (3, 5), (0, 4), (40, 17)] {
            let (ld_src, ld_dst) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * ld_src).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; cols.max(1) * ld_dst];
            transpose(&src, ld_src, rows, cols, &mut dst, ld_dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * ld_dst + r], src[r * ld_src + c], "{rows}x{cols} at ({r}, {c})");
                }
            }
            assert!(dst.chunks(ld_dst).all(|row| row[rows..].iter().all(|&v| v == -1.0)), "{rows}x{cols} wrote past its rows");
        }
    }
}
