//! Property tests of `matmul`: random [b.., m, k] @ [b.., k, n] with NumPy
//! batch broadcasting and strided / transposed operands, against a
//! triple-loop f64 reference.
//!
//! Tolerance: a product of k terms has rounding error bounded by about
//! k * eps * sum_p |a_ip| |b_pj|, so each output element is checked against
//! `rtol * sum_p |a_ip||b_pj|` with rtol 1e-5 for f32 and 1e-13 for f64
//! (k <= 128 here).

mod common;

use common::*;
use proptest::prelude::*;
use tensor::{DType, Tensor};

fn dtype_of(f64_: bool) -> DType {
    if f64_ {
        DType::F64
    } else {
        DType::F32
    }
}

/// (product, sum of |terms|) for every output element: the plain triple
/// loop, with each operand's batch index broadcast by hand.
fn matmul_ref(a: &Nd, b: &Nd) -> (Nd, Nd) {
    let (ra, rb) = (a.dims.len(), b.dims.len());
    let (m, k, n) = (a.dims[ra - 2], a.dims[ra - 1], b.dims[rb - 1]);
    assert_eq!(k, b.dims[rb - 2]);
    let batch = broadcast_shapes(&a.dims[..ra - 2], &b.dims[..rb - 2]).unwrap();
    // Flat start of the matrix of `x` used by output batch index `bi`.
    let start = |x: &Nd, bi: &[usize]| {
        let own = &x.dims[..x.dims.len() - 2];
        let extra = bi.len() - own.len();
        let idx: Vec<usize> = own.iter().enumerate().map(|(d, &s)| if s == 1 { 0 } else { bi[extra + d] }).collect();
        let rows_cols: usize = x.dims[x.dims.len() - 2..].iter().product();
        ravel(&idx, own) * rows_cols
    };
    let mut out_dims = batch.clone();
    out_dims.extend([m, n]);
    let (mut out, mut mag) = (Vec::new(), Vec::new());
    for bflat in 0..batch.iter().product() {
        let bi = unravel(bflat, &batch);
        let (sa, sb) = (start(a, &bi), start(b, &bi));
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut abs) = (0.0, 0.0);
                for p in 0..k {
                    let t = a.data[sa + i * k + p] * b.data[sb + p * n + j];
                    acc += t;
                    abs += t.abs();
                }
                out.push(acc);
                mag.push(abs);
            }
        }
    }
    (Nd::new(&out_dims, out), Nd::new(&out_dims, mag))
}

#[track_caller]
fn check(got: &Tensor, a: &Nd, b: &Nd, dtype: DType) {
    let (want, mag) = matmul_ref(a, b);
    assert_eq!(got.dims(), want.dims.as_slice(), "shape");
    let rtol = if dtype == DType::F64 { 1e-13 } else { 1e-5 };
    let g = got.to_f64_vec().unwrap();
    for (i, ((&g, &w), &s)) in g.iter().zip(&want.data).zip(&mag.data).enumerate() {
        let bound = rtol * s + 1e-30;
        assert!((g - w).abs() <= bound, "element {i}: got {g}, want {w}, |diff| {:e} > {rtol:e} * sum|a||b| = {bound:e}", (g - w).abs());
    }
}

/// A view holding `x` ([.., r, c]): strided per `kind`, or, when
/// `transposed`, the `t()` of a tensor stored as [.., c, r].
fn operand(x: &Nd, dtype: DType, kind: u8, transposed: bool) -> Tensor {
    let r = x.dims.len();
    if !transposed {
        return non_contiguous_of(x, dtype, kind);
    }
    let mut order: Vec<usize> = (0..r).collect();
    order.swap(r - 2, r - 1);
    let stored_dims: Vec<usize> = order.iter().map(|&d| x.dims[d]).collect();
    let stored = Nd::from_fn(&stored_dims, |i| {
        let mut j = i.to_vec();
        j.swap(r - 2, r - 1);
        x.at(&j)
    });
    non_contiguous_of(&stored, dtype, kind).t().unwrap()
}

fn random_nd(dims: &[usize], rng: &mut tensor::Rng, dtype: DType) -> Nd {
    let n = dims.iter().product();
    Nd::new(dims, (0..n).map(|_| rng.next_f64() * 4.0 - 2.0).collect()).round(dtype)
}

fn with_matrix(batch: &[usize], r: usize, c: usize) -> Vec<usize> {
    let mut d = batch.to_vec();
    d.extend([r, c]);
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batched_broadcast_matmul_matches_reference(
        batch in shape_rank(0..=3),
        drops in (0..=3usize, 0..=3usize),
        masks in (any::<u8>(), any::<u8>()),
        (m, k, n) in (dim(), dim(), dim()),
        kinds in (0..VIEW_KINDS, 0..VIEW_KINDS),
        transposed in (any::<bool>(), any::<bool>()),
        f64_ in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = dtype_of(f64_);
        let mut rng = tensor::Rng::new(seed);
        let a = random_nd(&with_matrix(&squashed(&batch, drops.0, masks.0), m, k), &mut rng, dtype);
        let b = random_nd(&with_matrix(&squashed(&batch, drops.1, masks.1), k, n), &mut rng, dtype);
        let ta = operand(&a, dtype, kinds.0, transposed.0);
        let tb = operand(&b, dtype, kinds.1, transposed.1);
        check(&ta.matmul(&tb).unwrap(), &a, &b, dtype);
    }

    /// Bigger matrices, where gemm blocks and (for batch 1) threads.
    #[test]
    fn larger_products_match_reference(
        (m, k, n) in (1usize..=70, 1usize..=128, 1usize..=70),
        batch in 1usize..=3,
        transposed in (any::<bool>(), any::<bool>()),
        seed in any::<u64>(),
    ) {
        let mut rng = tensor::Rng::new(seed);
        let a = random_nd(&[batch, m, k], &mut rng, DType::F32);
        let b = random_nd(&[k, n], &mut rng, DType::F32);
        let got = operand(&a, DType::F32, 3, transposed.0).matmul(&operand(&b, DType::F32, 3, transposed.1)).unwrap();
        check(&got, &a, &b, DType::F32);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Products that split into row vectors (m = 1), outer products (k = 1)
    /// and column vectors (n = 1).
    #[test]
    fn degenerate_dims(len in 1usize..=40, other in 1usize..=9, f64_ in any::<bool>(), seed in any::<u64>()) {
        let dtype = dtype_of(f64_);
        let mut rng = tensor::Rng::new(seed);
        for (m, k, n) in [(1, len, other), (len, 1, other), (other, len, 1), (1, 1, 1), (1, len, 1), (len, 1, len)] {
            let a = random_nd(&[m, k], &mut rng, dtype);
            let b = random_nd(&[k, n], &mut rng, dtype);
            for ta in [false, true] {
                for tb in [false, true] {
                    check(&operand(&a, dtype, 0, ta).matmul(&operand(&b, dtype, 2, tb)).unwrap(), &a, &b, dtype);
                }
            }
        }
    }
}

/// Batch dims that cannot collapse to one stride (a permuted batch on one
/// side, a broadcast on the other) take the copying path.
#[test]
fn non_collapsible_batches() {
    let mut rng = tensor::Rng::new(5);
    let a = random_nd(&[3, 2, 4, 5], &mut rng, DType::F32);
    let b = random_nd(&[2, 1, 5, 6], &mut rng, DType::F32);
    // a's batch dims swapped in storage: strides of [3, 2] are not nested.
    let stored = Nd::from_fn(&[2, 3, 4, 5], |i| a.at(&[i[1], i[0], i[2], i[3]]));
    let ta = tensor_of(&stored, DType::F32).permute(&[1, 0, 2, 3]).unwrap();
    let tb = tensor_of(&b, DType::F32).permute(&[1, 0, 2, 3]).unwrap();
    let b_perm = Nd::from_fn(&[1, 2, 5, 6], |i| b.at(&[i[1], i[0], i[2], i[3]]));
    check(&ta.matmul(&tb).unwrap(), &a, &b_perm, DType::F32);
    // [3, 2] batch against a plain [5, 6] matrix.
    let c = random_nd(&[5, 6], &mut rng, DType::F32);
    check(&ta.matmul(&tensor_of(&c, DType::F32)).unwrap(), &a, &c, DType::F32);
}

#[test]
fn matmul_shape_errors() {
    let z = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F32, &CPU).unwrap();
    assert_eq!(err_text(z(&[2, 3]).matmul(&z(&[4, 5]))), "matmul: shapes [2, 3] and [4, 5] are incompatible");
    assert_eq!(err_text(z(&[3]).matmul(&z(&[3, 2]))), "matmul: shapes [3] and [3, 2] are incompatible");
    assert_eq!(err_text(z(&[2, 3]).matmul(&z(&[3]))), "matmul: shapes [2, 3] and [3] are incompatible");
    assert_eq!(err_text(z(&[2, 2, 3]).matmul(&z(&[3, 3, 4]))), "matmul: shapes [2, 2, 3] and [3, 3, 4] are incompatible");
    let f64_ = Tensor::zeros([3, 4], DType::F64, &CPU).unwrap();
    assert_eq!(err_text(z(&[2, 3]).matmul(&f64_)), "matmul: dtypes f32 and f64 differ; convert one with to_dtype");
}
