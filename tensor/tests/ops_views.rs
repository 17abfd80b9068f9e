//! Property tests of the view ops (reshape, permute, transpose, narrow,
//! split, chunk, broadcast_as, squeeze, unsqueeze, flatten_from,
//! contiguous) and of cat/stack, against index-by-index references. Views
//! must share storage with their source; errors must say what went wrong.
//!
//! Every comparison here is exact (tolerance 0): these ops only move values.

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

/// A random permutation of 0..n.
fn permutation(n: usize) -> BoxedStrategy<Vec<usize>> {
    Just((0..n).collect::<Vec<_>>()).prop_shuffle().boxed()
}

/// (shape, values, permutation of its dims)
fn shaped_with_perm() -> BoxedStrategy<(Vec<usize>, Vec<f64>, Vec<usize>)> {
    shaped_values().prop_flat_map(|(d, v)| {
        let r = d.len();
        (Just(d), Just(v), permutation(r))
    })
    .boxed()
}

/// Output dim i is input dim order[i].
fn permute_ref(x: &Nd, order: &[usize]) -> Nd {
    let dims: Vec<usize> = order.iter().map(|&d| x.dims[d]).collect();
    Nd::from_fn(&dims, |j| {
        let mut idx = vec![0; order.len()];
        for (i, &d) in order.iter().enumerate() {
            idx[d] = j[i];
        }
        x.at(&idx)
    })
}

fn narrow_ref(x: &Nd, dim: usize, start: usize, len: usize) -> Nd {
    let mut dims = x.dims.clone();
    dims[dim] = len;
    Nd::from_fn(&dims, |i| {
        let mut j = i.to_vec();
        j[dim] += start;
        x.at(&j)
    })
}

fn cat_ref(pieces: &[Nd], dim: usize) -> Nd {
    let mut dims = pieces[0].dims.clone();
    dims[dim] = pieces.iter().map(|p| p.dims[dim]).sum();
    Nd::from_fn(&dims, |i| {
        let mut j = i.to_vec();
        for p in pieces {
            if j[dim] < p.dims[dim] {
                return p.at(&j);
            }
            j[dim] -= p.dims[dim];
        }
        unreachable!()
    })
}

/// torch.chunk's piece sizes: ceil(size / n) each, the last one smaller,
/// so there may be fewer than n pieces.
fn torch_chunk_sizes(size: usize, n: usize) -> Vec<usize> {
    // torch.chunk gives n empty chunks of an empty dim.
    if size == 0 {
        return vec![0; n];
    }
    let step = size.div_ceil(n);
    let count = size.div_ceil(step);
    (0..count).map(|i| step.min(size - i * step)).collect()
}

#[track_caller]
fn assert_same(t: &Tensor, want: &Nd) {
    assert_tensor_close(t, want, 0.0, 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The helper's views hold the values they claim and have the layouts
    /// they claim (the other tests rely on it).
    #[test]
    fn non_contiguous_helper_builds_strided_views((dims, vals) in shaped_values(), kind in 0..VIEW_KINDS) {
        let x = Nd::new(&dims, vals);
        let t = non_contiguous_of(&x, DType::F32, kind);
        assert_same(&t, &x.round(DType::F32));
        let l = t.layout();
        let has_big_dim = dims.iter().any(|&d| d > 1);
        match kind {
            0 if !dims.is_empty() => prop_assert!(l.offset() > 0),
            2 if has_big_dim => prop_assert!(!t.is_contiguous(), "{:?}", l),
            3 => prop_assert!(t.is_contiguous()),
            _ => {}
        }
        if kind == 1 && dims.iter().filter(|&&d| d > 1).count() >= 2 {
            prop_assert!(!t.is_contiguous());
        }
    }

    #[test]
    fn reshape_keeps_row_major_order(
        (dims, vals, perm) in shaped_with_perm(),
        insert_at in any::<prop::sample::Index>(),
        kind in 0..VIEW_KINDS,
    ) {
        let x = Nd::new(&dims, vals).round(DType::F32);
        let t = non_contiguous_of(&x, DType::F32, kind);
        // Any shape with the same count: the dims shuffled, plus a 1.
        let mut target: Vec<usize> = perm.iter().map(|&d| dims[d]).collect();
        target.insert(insert_at.index(target.len() + 1), 1);
        let r = t.reshape(target.clone()).unwrap();
        assert_same(&r, &Nd::new(&target, x.data.clone()));
        if t.is_contiguous() {
            prop_assert!(r.same_storage(&t), "reshape of a contiguous tensor must be a view");
        }
        let flat = t.reshape(x.data.len()).unwrap();
        assert_same(&flat, &Nd::new(&[x.data.len()], x.data.clone()));
        let msg = err_text(t.reshape(x.data.len() + 1));
        prop_assert_eq!(msg, format!("reshape: shapes {:?} and [{}] are incompatible", dims, x.data.len() + 1));
    }

    #[test]
    fn permute_transpose_t((dims, vals, perm) in shaped_with_perm(), kind in 0..VIEW_KINDS, f64_ in any::<bool>()) {
        let dtype = dtype_of(f64_);
        let x = Nd::new(&dims, vals).round(dtype);
        let t = non_contiguous_of(&x, dtype, kind);
        let p = t.permute(&perm).unwrap();
        prop_assert!(p.same_storage(&t));
        assert_same(&p, &permute_ref(&x, &perm));
        // Permuting back with the inverse restores the original layout.
        let mut inv = vec![0; perm.len()];
        for (i, &d) in perm.iter().enumerate() {
            inv[d] = i;
        }
        let back = p.permute(&inv).unwrap();
        prop_assert_eq!(back.layout(), t.layout());

        let r = dims.len();
        if r >= 2 {
            let (d0, d1) = (perm[0], perm[1]);
            let mut order: Vec<usize> = (0..r).collect();
            order.swap(d0, d1);
            let tr = t.transpose(d0, d1).unwrap();
            prop_assert!(tr.same_storage(&t));
            assert_same(&tr, &permute_ref(&x, &order));
            let mut order: Vec<usize> = (0..r).collect();
            order.swap(r - 2, r - 1);
            assert_same(&t.t().unwrap(), &permute_ref(&x, &order));
        } else {
            prop_assert_eq!(err_text(t.t()), format!("t: needs at least 2 dims (shape {:?})", dims));
        }
    }

    #[test]
    fn narrow_split_chunk(
        (dims, vals) in shaped_values_in(shape_rank(1..=4), -3.0, 3.0),
        picks in (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<prop::sample::Index>()),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        n in 1usize..=8,
        kind in 0..VIEW_KINDS,
    ) {
        let x = Nd::new(&dims, vals).round(DType::F32);
        let t = non_contiguous_of(&x, DType::F32, kind);
        let dim = picks.0.index(dims.len());
        let size = dims[dim];
        let start = picks.1.index(size + 1);
        let len = picks.2.index(size - start + 1);
        let nw = t.narrow(dim, start, len).unwrap();
        prop_assert!(nw.same_storage(&t));
        assert_same(&nw, &narrow_ref(&x, dim, start, len));

        // split at random cut points (sizes may be 0)
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(size + 1)).collect();
        points.push(0);
        points.push(size);
        points.sort_unstable();
        let sizes: Vec<usize> = points.windows(2).map(|w| w[1] - w[0]).collect();
        let pieces = t.split(&sizes, dim).unwrap();
        prop_assert_eq!(pieces.len(), sizes.len());
        for (piece, (&s, &len)) in pieces.iter().zip(points.iter().zip(&sizes)) {
            prop_assert!(piece.same_storage(&t));
            assert_same(piece, &narrow_ref(&x, dim, s, len));
        }

        let chunks = t.chunk(n, dim).unwrap();
        let want_sizes = torch_chunk_sizes(size, n);
        prop_assert_eq!(chunks.iter().map(|c| c.dims()[dim]).collect::<Vec<_>>(), want_sizes.clone(), "chunk({}) of {}", n, size);
        let mut s = 0;
        for (c, len) in chunks.iter().zip(want_sizes) {
            assert_same(c, &narrow_ref(&x, dim, s, len));
            s += len;
        }
    }

    #[test]
    fn broadcast_as_and_expand((out, small, _) in broadcast_pair(), kind in 0..VIEW_KINDS) {
        let n: usize = small.iter().product();
        let x = Nd::new(&small, (0..n).map(|i| i as f64).collect());
        let t = non_contiguous_of(&x, DType::F32, kind);
        let want = Nd::from_fn(&out, |i| x.at_broadcast(i));
        let b = t.broadcast_as(out.clone()).unwrap();
        prop_assert!(b.same_storage(&t));
        assert_same(&b, &want);
        assert_same(&t.expand(out.clone()).unwrap(), &want);
        // Stretched dims have stride 0.
        let extra = out.len() - small.len();
        for (i, &s) in b.layout().strides().iter().enumerate() {
            if i < extra || (small[i - extra] == 1 && out[i] != 1) {
                prop_assert_eq!(s, 0);
            }
        }
    }

    #[test]
    fn squeeze_unsqueeze_flatten((dims, vals) in shaped_values(), at in any::<prop::sample::Index>(), kind in 0..VIEW_KINDS) {
        let x = Nd::new(&dims, vals).round(DType::F32);
        let t = non_contiguous_of(&x, DType::F32, kind);
        let d = at.index(dims.len() + 1);
        let u = t.unsqueeze(d).unwrap();
        let mut want = dims.clone();
        want.insert(d, 1);
        prop_assert!(u.same_storage(&t));
        assert_same(&u, &Nd::new(&want, x.data.clone()));
        let s = u.squeeze(d).unwrap();
        prop_assert!(s.same_storage(&t));
        assert_same(&s, &x);
        // The unsqueezed view still behaves as a layout (ops read it right).
        assert_same(&u.add_scalar(1.0).unwrap(), &Nd::new(&want, x.data.iter().map(|v| v + 1.0).collect()).round(DType::F32));

        if !dims.is_empty() {
            let from = at.index(dims.len());
            let f = t.flatten_from(from).unwrap();
            let mut fd = dims[..from].to_vec();
            fd.push(dims[from..].iter().product());
            assert_same(&f, &Nd::new(&fd, x.data.clone()));
            if let Some(big) = dims.iter().position(|&n| n > 1) {
                let msg = err_text(t.squeeze(big));
                prop_assert_eq!(msg, format!("squeeze: dim {big} has size {}, not 1 (shape {:?})", dims[big], dims));
            }
        }
        prop_assert!(err_text(t.unsqueeze(dims.len() + 1)).contains("out of range"));
    }

    #[test]
    fn contiguous_copies_only_when_needed((dims, vals) in shaped_values(), kind in 0..VIEW_KINDS) {
        let x = Nd::new(&dims, vals).round(DType::F32);
        let t = non_contiguous_of(&x, DType::F32, kind);
        let c = t.contiguous().unwrap();
        prop_assert!(c.is_contiguous());
        assert_same(&c, &x);
        prop_assert_eq!(c.same_storage(&t), t.is_contiguous());
        // copy never shares.
        let k = t.copy().unwrap();
        prop_assert!(!k.same_storage(&t));
        assert_same(&k, &x);
    }

    /// cat along a random dim of 1..=4 pieces, each its own kind of view.
    #[test]
    fn cat_and_stack(
        base in shape_rank(1..=4),
        dim in any::<prop::sample::Index>(),
        lens in prop::collection::vec(1usize..=4, 1..=4),
        kinds in prop::collection::vec(0..VIEW_KINDS, 4),
        f64_ in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = dtype_of(f64_);
        let mut rng = tensor::Rng::new(seed);
        let dim = dim.index(base.len());
        let pieces: Vec<Nd> = lens.iter().map(|&len| {
            let mut d = base.clone();
            d[dim] = len;
            let n = d.iter().product();
            Nd::new(&d, (0..n).map(|_| rng.next_f64()).collect()).round(dtype)
        }).collect();
        let ts: Vec<Tensor> = pieces.iter().zip(&kinds).map(|(p, &k)| non_contiguous_of(p, dtype, k)).collect();
        let refs: Vec<&Tensor> = ts.iter().collect();
        let got = Tensor::cat(&refs, dim).unwrap();
        prop_assert!(got.is_contiguous());
        assert_same(&got, &cat_ref(&pieces, dim));

        // stack: same-shape pieces along a new dim (0..=rank).
        let same: Vec<Tensor> = (0..lens.len()).map(|i| non_contiguous_of(&pieces[0].map(|v| v + i as f64).round(dtype), dtype, kinds[i])).collect();
        let srefs: Vec<&Tensor> = same.iter().collect();
        for sd in [0, dim, base.len()] {
            let got = Tensor::stack(&srefs, sd).unwrap();
            let expanded: Vec<Nd> = (0..lens.len()).map(|i| {
                let p = pieces[0].map(|v| v + i as f64).round(dtype);
                let mut d = p.dims.clone();
                d.insert(sd, 1);
                Nd::new(&d, p.data)
            }).collect();
            assert_same(&got, &cat_ref(&expanded, sd));
        }
    }
}

/// Outputs large enough that the rows are copied in parallel: along the
/// channels of NCHW batches, as the U-Net joins its skips, and along the
/// first and last dims, with a strided piece among them.
#[test]
fn large_cat_matches_the_reference() {
    let mut rng = tensor::Rng::new(7);
    for (dims, dim, lens) in [(vec![5, 0, 19, 23], 1, vec![40, 24, 1]), (vec![0, 7, 65, 33], 0, vec![9, 14]), (vec![3, 11, 29, 0], 3, vec![300, 421])] {
        let pieces: Vec<Nd> = lens.iter().map(|&len| {
            let mut d = dims.clone();
            d[dim] = len;
            let n = d.iter().product();
            Nd::new(&d, (0..n).map(|_| rng.next_f64()).collect()).round(DType::F32)
        }).collect();
        let ts: Vec<Tensor> = pieces.iter().enumerate().map(|(i, p)| non_contiguous_of(p, DType::F32, i as u8 % VIEW_KINDS)).collect();
        let refs: Vec<&Tensor> = ts.iter().collect();
        let got = Tensor::cat(&refs, dim).unwrap();
        assert!(got.elem_count() >= 1 << 16, "large enough to run in parallel");
        assert_same(&got, &cat_ref(&pieces, dim));
    }
}

#[test]
fn view_errors_say_what_is_wrong() {
    let t = Tensor::zeros([2, 3, 4], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(t.permute(&[0, 0, 1])), "permute: [0, 0, 1] is not a permutation of the dims (shape [2, 3, 4])");
    assert_eq!(err_text(t.permute(&[0, 1])), "permute: [0, 1] is not a permutation of the dims (shape [2, 3, 4])");
    assert_eq!(err_text(t.permute(&[0, 1, 3])), "permute: [0, 1, 3] is not a permutation of the dims (shape [2, 3, 4])");
    assert_eq!(err_text(t.narrow(1, 2, 2)), "narrow: range 2..4 exceeds dim 1 (shape [2, 3, 4])");
    assert_eq!(err_text(t.narrow(3, 0, 1)), "narrow: dim 3 out of range for rank 3 (shape [2, 3, 4])");
    assert_eq!(err_text(t.transpose(0, 3)), "transpose: dim 3 out of range for rank 3 (shape [2, 3, 4])");
    assert_eq!(err_text(t.split(&[1, 1], 1)), "split: sizes [1, 1] do not add up to dim 1 (shape [2, 3, 4])");
    assert_eq!(err_text(t.chunk(0, 1)), "chunk: cannot split into 0 chunks");
    assert_eq!(err_text(t.broadcast_as([3, 3, 4])), "broadcast_as: shapes [2, 3, 4] and [3, 3, 4] are incompatible");
    // Broadcasting never drops dims.
    assert_eq!(err_text(t.broadcast_as([3, 4])), "broadcast_as: shapes [2, 3, 4] and [3, 4] are incompatible");

    let u = Tensor::zeros([2, 5, 4], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(Tensor::cat(&[&t, &u], 0)), "cat: shapes [2, 3, 4] and [2, 5, 4] are incompatible");
    let v = Tensor::zeros([2, 3], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(Tensor::cat(&[&t, &v], 0)), "cat: shapes [2, 3, 4] and [2, 3] are incompatible");
    let w = Tensor::zeros([2, 3, 4], DType::F64, &CPU).unwrap();
    assert_eq!(err_text(Tensor::cat(&[&t, &w], 1)), "cat: dtypes f32 and f64 differ; convert one with to_dtype");
    assert_eq!(err_text(Tensor::cat(&[], 0)), "cat: needs at least one tensor");
    assert!(err_text(Tensor::stack(&[&t, &u], 0)).starts_with("cat: shapes"));
}

/// Views of views: a narrow of a permute of a broadcast, read through every
/// layer at once, against the same composition on the reference.
#[test]
fn views_compose() {
    let x = Nd::from_fn(&[3, 1, 5], |i| (i[0] * 10 + i[2]) as f64);
    let t = tensor_of(&x, DType::F32);
    let v = t.broadcast_as([2, 3, 4, 5]).unwrap().permute(&[3, 0, 2, 1]).unwrap().narrow(0, 1, 3).unwrap().narrow(3, 1, 2).unwrap();
    assert!(v.same_storage(&t));
    let want = Nd::from_fn(&[3, 2, 4, 2], |i| x.at(&[i[3] + 1, 0, i[0] + 1]));
    assert_same(&v, &want);
    // Reading the base storage through the view's layout by hand gives the
    // view's values in row-major order.
    let (base, l) = (t.to_f64_vec().unwrap(), v.layout());
    let by_hand: Vec<f64> = (0..v.elem_count()).map(|i| base[strided_index(i, l.dims(), l.strides(), l.offset())]).collect();
    assert_eq!(by_hand, want.data);
    assert_same(&v.contiguous().unwrap(), &want);
    assert_same(&v.reshape([6, 8]).unwrap(), &Nd::new(&[6, 8], want.data.clone()));
}
