//! Half-precision matrix products on CUDA accumulate in f32 (cuBLAS
//! `GemmStridedBatchedEx` with compute type 32F), as mixed-precision
//! training needs.
//!
//! The probe: a dot product of K ones. Summed in f16, the running total
//! stops growing at 2048 (2049 is not an f16 value: 2048 + 1 rounds back to
//! 2048); in bf16 it stops at 256. Summed in f32 it reaches K exactly, and K
//! (a multiple of the output spacing) is stored exactly in the half output.
//!
//! Without a GPU each test prints "SKIPPED: no CUDA device" and passes,
//! unless `PETAL_REQUIRE_CUDA=1` is set, in which case it fails.

use tensor::{DType, Device, Tensor};

fn gpu() -> Option<Device> {
    tensor::cuda::device_for_tests().map(Device::Cuda)
}

const HALVES: [DType; 2] = [DType::F16, DType::BF16];

fn ones(shape: &[usize], dtype: DType, dev: &Device) -> Tensor {
    Tensor::ones(shape, dtype, dev).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

#[test]
fn half_matmul_accumulates_in_f32() {
    let Some(dev) = gpu() else { return };
    for dtype in HALVES {
        for k in [4096usize, 8192] {
            let y = ones(&[3, k], dtype, &dev).matmul(&ones(&[k, 2], dtype, &dev)).unwrap();
            assert_eq!(y.dtype(), dtype);
            assert_eq!(values(&y), vec![k as f64; 6], "{dtype} matmul over k = {k}");
            // Batched, and with a transposed operand (cuBLAS op T).
            let a = ones(&[2, 3, k], dtype, &dev);
            let b = ones(&[2, 4, k], dtype, &dev).transpose(1, 2).unwrap();
            assert_eq!(values(&a.matmul(&b).unwrap()), vec![k as f64; 24], "{dtype} batched matmul over k = {k}");
        }
    }
}

#[test]
fn half_conv2d_accumulates_in_f32() {
    let Some(dev) = gpu() else { return };
    for dtype in HALVES {
        // 1x1 (the pointwise path): K = 4096 input channels.
        let y = ones(&[2, 4096, 2, 2], dtype, &dev).conv2d(&ones(&[3, 4096, 1, 1], dtype, &dev), None, 1, 0).unwrap();
        assert_eq!(values(&y), vec![4096.0; 2 * 3 * 4], "{dtype} 1x1 conv");
        // 3x3 (im2col): K = 512 * 9 = 4608 products per output.
        let y = ones(&[2, 512, 3, 3], dtype, &dev).conv2d(&ones(&[2, 512, 3, 3], dtype, &dev), None, 1, 0).unwrap();
        assert_eq!(values(&y), vec![4608.0; 4], "{dtype} 3x3 conv");
        // The weight gradient sums over images and positions: 2 * 64 * 64 = 8192 terms.
        let x = ones(&[2, 4, 64, 64], dtype, &dev);
        let g = ones(&[2, 2, 64, 64], dtype, &dev);
        let dw = x.conv2d_backward_weight(&g, &[2, 4, 1, 1], 1, 0).unwrap();
        assert_eq!(values(&dw), vec![8192.0; 8], "{dtype} conv weight gradient");
    }
}

/// The same products in f16 and f32 agree to f16 precision on random data.
#[test]
fn half_matmul_tracks_f32() {
    let Some(dev) = gpu() else { return };
    let mut rng = tensor::Rng::new(9);
    let a = Tensor::randn(0.0, 1.0, [64, 1024], DType::F32, &dev, &mut rng).unwrap();
    let b = Tensor::randn(0.0, 1.0, [1024, 48], DType::F32, &dev, &mut rng).unwrap();
    let want = values(&a.matmul(&b).unwrap());
    for (dtype, tol) in [(DType::F16, 2e-3), (DType::BF16, 1.5e-2)] {
        let got = values(&a.to_dtype(dtype).unwrap().matmul(&b.to_dtype(dtype).unwrap()).unwrap());
        let num: f64 = got.iter().zip(&want).map(|(x, y)| (x - y).powi(2)).sum();
        let den: f64 = want.iter().map(|y| y * y).sum();
        let rel = (num / den).sqrt();
        assert!(rel < tol, "{dtype}: relative error {rel}");
    }
}
