//! Group normalisation with a learned per-channel gain and bias, as
//! `torch.nn.GroupNorm` (eps 1e-5, gain 1, bias 0).

use crate::{Ctx, Dropout, Init, Module, NnError, Path, Result};
use autograd::Var;
use tensor::{DType, Tensor};

pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    /// [channels], initialised to 1
    pub weight: Var,
    /// [channels], initialised to 0
    pub bias: Var,
}

impl GroupNorm {
    pub fn new(path: &Path, groups: usize, channels: usize) -> Result<GroupNorm> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(NnError::bad("GroupNorm", format!("{channels} channels do not split into {groups} groups")));
        }
        let weight = path.param("weight", [channels], Init::Const(1.0))?;
        let bias = path.param("bias", [channels], Init::Const(0.0))?;
        Ok(GroupNorm { groups, eps: 1e-5, weight, bias })
    }
}

impl GroupNorm {
    /// `silu(self.forward(x))` in one fused op: a pass over the activations
    /// less each way, and no normalised tensor kept for the backward.
    pub fn forward_silu(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        self.in_stats_dtype(x, |x| x.group_norm_silu(self.groups, &self.weight, &self.bias, self.eps))
    }

    /// `silu(self.forward(x * scale + shift))` in one fused op, `scale`
    /// and `shift` `[N, C]` (one per image and channel, e.g. from a time
    /// embedding), followed by `dropout` where given: the modulated tensor
    /// is never made, in training the dropout's mask is applied as the
    /// output is written, and the backward takes the same two passes as
    /// `forward_silu`'s.
    pub fn forward_silu_modulated(&self, x: &Var, scale: &Var, shift: &Var, dropout: Option<&Dropout>, ctx: &mut Ctx) -> Result<Var> {
        let (scale, shift) = (self.to_stats_dtype(scale)?, self.to_stats_dtype(shift)?);
        let mask = match dropout {
            Some(dropout) => dropout.mask(x.dims(), self.weight.dtype(), x.device(), ctx)?,
            None => None,
        };
        self.in_stats_dtype(x, |x| x.group_norm_silu_modulated(self.groups, &scale, &shift, &self.weight, &self.bias, self.eps, mask.as_ref()))
    }

    /// `norm(x)`, where a half-precision x is normalised in the parameters'
    /// dtype (f32: the statistics need its range and precision) and the
    /// result is cast back to x's dtype.
    fn in_stats_dtype(&self, x: &Var, norm: impl Fn(&Var) -> tensor::Result<Var>) -> Result<Var> {
        let dtype = x.dtype();
        if !self.casts(dtype) {
            return Ok(norm(x)?);
        }
        Ok(norm(&self.to_stats_dtype(x)?)?.to_dtype(dtype)?)
    }

    /// Whether a value of `dtype` is cast to the parameters' dtype to be
    /// normalised: a float of another width.
    fn casts(&self, dtype: DType) -> bool {
        dtype != self.weight.dtype() && dtype.is_float()
    }

    /// `v` in the parameters' dtype where `casts` says so, else `v`.
    fn to_stats_dtype(&self, v: &Var) -> Result<Var> {
        Ok(if self.casts(v.dtype()) { v.to_dtype(self.weight.dtype())? } else { v.clone() })
    }
}

impl GroupNorm {
    /// For inference without a tape: the per (image, channel) `(scale,
    /// shift)`, each `[N, C]` in `dtype`, such that the group norm of an
    /// input z is `z * scale + shift`. It is computed from z's
    /// `channel_moments` ([N, C, 2], over `spatial` positions each), so a
    /// fused convolution can apply the norm as it reads z (`tensor::Fusion`).
    ///
    /// With `modulation = (a, b)`, each [N, C], the moments are those of a
    /// y with `z = y * a + b` (the U-Net's time scale and shift); the
    /// result then maps y itself to the group norm of z, so z is never made.
    pub fn inference_affine(&self, moments: &Tensor, spatial: usize, modulation: Option<(&Tensor, &Tensor)>, dtype: DType) -> Result<(Tensor, Tensor)> {
        let &[n, c, 2] = moments.dims() else {
            return Err(NnError::bad("GroupNorm::inference_affine", format!("expected moments [N, C, 2], got {:?}", moments.dims())));
        };
        let channels = self.weight.dims()[0];
        if c != channels {
            return Err(NnError::bad("GroupNorm::inference_affine", format!("moments of {c} channels for a norm of {channels}")));
        }
        let sums = moments.to_f64_vec()?;
        let (gamma, beta) = (self.weight.tensor().to_f64_vec()?, self.bias.tensor().to_f64_vec()?);
        let (a, b) = match modulation {
            Some((a, b)) if a.dims() == [n, c] && b.dims() == [n, c] => (a.to_f64_vec()?, b.to_f64_vec()?),
            Some((a, b)) => return Err(NnError::bad("GroupNorm::inference_affine", format!("modulation {:?} and {:?} for moments {:?}", a.dims(), b.dims(), moments.dims()))),
            None => (vec![1.0; n * c], vec![0.0; n * c]),
        };
        let (per_group, count) = (c / self.groups, spatial as f64);
        let (mut scale, mut shift) = (vec![0.0; n * c], vec![0.0; n * c]);
        for image in 0..n {
            for group in 0..self.groups {
                let members = image * c + group * per_group..image * c + (group + 1) * per_group;
                // Sum and sum of squares of z = y * a + b, from y's.
                let (mut s, mut q) = (0.0, 0.0);
                for i in members.clone() {
                    let (sy, qy) = (sums[2 * i], sums[2 * i + 1]);
                    s += a[i] * sy + b[i] * count;
                    q += a[i] * a[i] * qy + 2.0 * a[i] * b[i] * sy + b[i] * b[i] * count;
                }
                let len = count * per_group as f64;
                let mean = s / len;
                let rstd = 1.0 / ((q / len - mean * mean).max(0.0) + self.eps).sqrt();
                for i in members {
                    let ch = i - image * c;
                    // norm(z) = z * za + zb, and z = y * a + b.
                    let za = rstd * gamma[ch];
                    let zb = beta[ch] - mean * za;
                    scale[i] = a[i] * za;
                    shift[i] = b[i] * za + zb;
                }
            }
        }
        let device = moments.device();
        let to = |v: Vec<f64>| Tensor::from_vec(v, [n, c], device)?.to_dtype(dtype);
        Ok((to(scale)?, to(shift)?))
    }
}

impl Module for GroupNorm {
    /// x: [N, C, ...], normalised in the parameters' dtype (see `in_stats_dtype`).
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        self.in_stats_dtype(x, |x| x.group_norm(self.groups, &self.weight, &self.bias, self.eps))
    }
}
