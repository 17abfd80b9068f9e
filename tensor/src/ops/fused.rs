//! Inference convolutions with their neighbours folded in.
//!
//! In a U-Net residual block the convolutions are surrounded by cheap ops:
//! a group norm and a SiLU before each one, a per-channel scale and shift
//! after the first, a residual add after the second. Each of those reads
//! and writes a whole activation tensor, and once the convolutions
//! themselves are fast, those passes over memory are a third of a sampling
//! step on a CPU. Without a tape nothing needs the intermediate tensors, so
//! all of them can ride along with passes the convolution makes anyway:
//!
//! - a group norm followed by SiLU is, per (image, channel), `silu(x * a +
//!   b)` once its statistics are known; the convolution applies it while
//!   it copies its input into the padded layout it reads from;
//! - the bias and a residual are added where the output is written, and
//!   the output's per-channel sums (for the next group norm's statistics)
//!   are taken there too, while the values are in cache.
//!
//! - filters that a backend's kernel would rearrange on every call (the
//!   CPU's Winograd transform) are rearranged once and kept with the
//!   weights' storage until the weights are next written, which over the
//!   hundreds of steps of a sampling run is never.
//!
//! Nothing here is differentiable: these ops are for sampling and
//! evaluation, and for the parts of a training step that need no saved
//! intermediate (autograd's `conv2d_add`: a convolution with its residual
//! added as it writes). A backend without a fused kernel gets the same
//! result composed from plain ops.

use crate::backend::{BackendStorage, ConvFusion};
use crate::ops::image::conv2d_params;
use crate::storage::{DerivedKey, Storage};
use crate::{DType, Error, Result, Shape, Tensor};

/// What `Tensor::conv2d_fused` folds around a convolution. The default is a
/// plain convolution without bias.
#[derive(Clone, Copy, Default)]
pub struct Fusion<'a> {
    /// `[Cout]`, added to the output.
    pub bias: Option<&'a Tensor>,
    /// `(scale, shift)`, each `[N, Cin]`: the convolution reads `x * scale +
    /// shift` instead of `x`, channel by channel.
    pub input_affine: Option<(&'a Tensor, &'a Tensor)>,
    /// SiLU on the input, after `input_affine`.
    pub input_silu: bool,
    /// `[N, Cout, OH, OW]`, added to the output after the bias.
    pub residual: Option<&'a Tensor>,
    /// Also return the output's `channel_moments`.
    pub moments: bool,
    /// Rearrange the filters for this call only, instead of keeping the
    /// rearranged copy with the weights: in training the weights change
    /// every step, and the copy would only hold memory until the
    /// optimizer's write drops it.
    pub transient_weight: bool,
}

impl Tensor {
    /// `conv2d(silu(x * scale + shift), weight) + bias + residual`, with each
    /// part present only if asked for in `f`, and optionally the output's
    /// per-channel moments. The zero padding is applied after the input
    /// transform, as it would be to a tensor computed first.
    pub fn conv2d_fused(&self, weight: &Tensor, stride: usize, padding: usize, f: &Fusion) -> Result<(Tensor, Option<Tensor>)> {
        let p = conv2d_params(self.dims(), weight.dims(), stride, padding)?;
        let out_dims = [p.batch, p.out_channels, p.out_h(), p.out_w()];
        let affine_dims = [p.batch, p.in_channels];
        let bias_dims = [p.out_channels];
        let mut operands = vec![("conv2d_fused weight", weight, None)];
        operands.extend(f.bias.map(|b| ("conv2d_fused bias", b, Some(&bias_dims[..]))));
        if let Some((scale, shift)) = f.input_affine {
            operands.push(("conv2d_fused input scale", scale, Some(&affine_dims[..])));
            operands.push(("conv2d_fused input shift", shift, Some(&affine_dims[..])));
        }
        operands.extend(f.residual.map(|r| ("conv2d_fused residual", r, Some(&out_dims[..]))));
        for &(op, t, dims) in &operands {
            if t.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: t.dtype() });
            }
            if t.device() != self.device() {
                return Err(Error::DeviceMismatch { op, lhs: self.device().to_string(), rhs: t.device().to_string() });
            }
            if let Some(dims) = dims.filter(|&d| d != t.dims()) {
                return Err(Error::ShapeMismatch { op, lhs: Shape::from(dims), rhs: t.shape().clone() });
            }
        }

        let contiguous = |t: Option<&Tensor>| t.map(Tensor::contiguous).transpose();
        let (x, w) = (self.contiguous()?, weight.contiguous()?);
        let bias = contiguous(f.bias)?;
        let (scale, shift) = (contiguous(f.input_affine.map(|a| a.0))?, contiguous(f.input_affine.map(|a| a.1))?);
        let residual = contiguous(f.residual)?;

        let guards = [Some(&x), Some(&w), bias.as_ref(), scale.as_ref(), shift.as_ref(), residual.as_ref()].map(|t| t.map(|t| (t.storage(), t.layout())));
        // Every operand was checked to be on x's device, so each guard holds
        // the same variant.
        macro_rules! fused_on {
            ($variant:ident) => {{
                let pick = |i: usize| {
                    guards[i].as_ref().map(|(g, layout)| match &**g {
                        Storage::$variant(s) => (s, *layout),
                        _ => unreachable!("devices checked above"),
                    })
                };
                let ((xs, xl), (ws, wl)) = (pick(0).expect("x"), pick(1).expect("weight"));
                let prepared = match ws.conv_weight_arrangement(&p).filter(|_| !f.transient_weight) {
                    Some(kind) => {
                        let key = DerivedKey { kind, offset: wl.offset(), dims: wl.dims().to_vec() };
                        let read = &guards[1].as_ref().expect("weight").0;
                        Some(w.storage_cell().derived(read, key, || Ok(Storage::$variant(ws.prepare_conv_weight(wl, &p)?)))?)
                    }
                    None => None,
                };
                let fusion = ConvFusion {
                    bias: pick(2),
                    input_affine: pick(3).zip(pick(4)),
                    input_silu: f.input_silu,
                    residual: pick(5),
                    moments: f.moments,
                    prepared_weight: prepared.as_deref().map(|s| match s {
                        Storage::$variant(s) => s,
                        _ => unreachable!("prepared from the weight's storage"),
                    }),
                };
                xs.conv2d_fused(xl, ws, wl, &fusion, &p)?.map(|(out, m)| (Storage::$variant(out), m.map(Storage::$variant)))
            }};
        }
        let fused = match &*guards[0].as_ref().expect("x").0 {
            Storage::Cpu(_) => fused_on!(Cpu),
            Storage::Cuda(_) => fused_on!(Cuda),
        };
        drop(guards);
        if let Some((out, moments)) = fused {
            let moments = moments.map(|m| Tensor::from_storage(m, [p.batch, p.out_channels, 2]));
            return Ok((Tensor::from_storage(out, out_dims), moments));
        }
        x.conv2d_composed(&w, stride, padding, &Fusion { bias: bias.as_ref(), input_affine: scale.as_ref().zip(shift.as_ref()), residual: residual.as_ref(), ..*f })
    }

    /// `conv2d_fused` from plain ops, for backends without a fused kernel
    /// (and as the reference the fused kernels are tested against).
    pub(crate) fn conv2d_composed(&self, weight: &Tensor, stride: usize, padding: usize, f: &Fusion) -> Result<(Tensor, Option<Tensor>)> {
        let (n, c) = (self.dims()[0], self.dims()[1]);
        let mut x = self.clone();
        if let Some((scale, shift)) = f.input_affine {
            x = x.mul(&scale.reshape([n, c, 1, 1])?)?.add(&shift.reshape([n, c, 1, 1])?)?;
        }
        if f.input_silu {
            x = x.silu()?;
        }
        let mut y = x.conv2d(weight, f.bias, stride, padding)?;
        if let Some(residual) = f.residual {
            y = y.add(residual)?;
        }
        let moments = if f.moments { Some(y.channel_moments()?) } else { None };
        Ok((y, moments))
    }

    /// Per (image, channel) of an `[N, C, H, W]` tensor: the sum and the
    /// sum of squares over H and W, as `[N, C, 2]` f64 (the statistics a
    /// group norm needs, for any grouping of the channels).
    pub fn channel_moments(&self) -> Result<Tensor> {
        let &[n, c, h, w] = self.dims() else {
            return Err(Error::BadShape { op: "channel_moments", shape: self.shape().clone(), msg: "expected 4 dims [N, C, H, W]".into() });
        };
        let x = self.contiguous()?;
        let fast = match &*x.storage() {
            Storage::Cpu(s) => s.channel_moments(x.layout(), (n, c, h * w))?.map(Storage::Cpu),
            Storage::Cuda(s) => s.channel_moments(x.layout(), (n, c, h * w))?.map(Storage::Cuda),
        };
        if let Some(moments) = fast {
            return Ok(Tensor::from_storage(moments, [n, c, 2]));
        }
        let x = x.to_dtype(DType::F64)?.reshape([n, c, h * w])?;
        let sums = x.sum(&[2], true)?;
        let squares = x.sqr()?.sum(&[2], true)?;
        Tensor::cat(&[&sums, &squares], 2)
    }
}
