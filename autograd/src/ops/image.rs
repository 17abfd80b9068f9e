//! Image ops (NCHW). Each rule is one dedicated backward kernel of the
//! tensor crate:
//! - conv2d: `conv2d_backward_input` (a transposed convolution of the
//!   gradient by the weight), `conv2d_backward_weight` (input patches
//!   against the gradient), and for the bias the gradient summed over N, H, W;
//! - pools: `avg_pool2d_backward` spreads each gradient evenly over its
//!   window, `max_pool2d_backward` routes it to the window's (first) maximum;
//! - upsampling: `upsample_nearest2d_backward` sums each block back onto the
//!   pixel it copied;
//! - group norm: the fused `group_norm_backward`, fed with the per-group
//!   mean and 1/std the forward kernel returned (`group_norm_silu` likewise,
//!   with the SiLU folded into both kernels, and `group_norm_silu_modulated`
//!   with a per-channel scale and shift before the norm and a dropout mask
//!   after it too);
//! - batch norm: the same two kernels on the channel-major copy
//!   `[1, C, N*H*W]`, where each channel is one group.

use crate::var::Var;
use tensor::{Result, Tensor};

impl Var {
    /// 2-D convolution: input `[N, C, H, W]`, weight `[O, C, kh, kw]`, bias `[O]`.
    pub fn conv2d(&self, weight: &Var, bias: Option<&Var>, stride: usize, padding: usize) -> Result<Var> {
        let out = self.tensor().conv2d(weight.tensor(), bias.map(|b| b.tensor()), stride, padding)?;
        let grads = conv2d_grads(self.tensor(), weight.tensor(), bias.is_some(), stride, padding);
        Ok(match bias {
            Some(b) => Var::from_op("conv2d", out, &[self, weight, b], grads),
            None => Var::from_op("conv2d", out, &[self, weight], grads),
        })
    }

    /// `conv2d(self, weight, bias) + residual` as one op: the residual is
    /// added as the convolution writes its output (a residual block's last
    /// convolution), which spares the separate add its pass over the
    /// output, same values. The gradients are those of `conv2d` and of the
    /// add: the residual's is the output's.
    pub fn conv2d_add(&self, weight: &Var, bias: Option<&Var>, stride: usize, padding: usize, residual: &Var) -> Result<Var> {
        let f = tensor::Fusion { bias: bias.map(Var::tensor), residual: Some(residual.tensor()), transient_weight: true, ..Default::default() };
        let (out, _) = self.tensor().conv2d_fused(weight.tensor(), stride, padding, &f)?;
        let conv_grads = conv2d_grads(self.tensor(), weight.tensor(), bias.is_some(), stride, padding);
        let rule = move |g: &Tensor, need: &[bool]| {
            let (conv_need, residual_need) = need.split_at(need.len() - 1);
            let mut grads = conv_grads(g, conv_need)?;
            grads.push(residual_need[0].then(|| g.clone()));
            Ok(grads)
        };
        Ok(match bias {
            Some(b) => Var::from_op("conv2d_add", out, &[self, weight, b, residual], rule),
            None => Var::from_op("conv2d_add", out, &[self, weight, residual], rule),
        })
    }

    pub fn avg_pool2d(&self, kernel: usize, stride: usize) -> Result<Var> {
        let out = self.tensor().avg_pool2d(kernel, stride)?;
        let dims = self.dims().to_vec();
        Ok(Var::from_op("avg_pool2d", out, &[self], move |g, _| Ok(vec![Some(g.avg_pool2d_backward(&dims, kernel, stride)?)])))
    }

    pub fn max_pool2d(&self, kernel: usize, stride: usize) -> Result<Var> {
        let out = self.tensor().max_pool2d(kernel, stride)?;
        let x = self.tensor().clone();
        Ok(Var::from_op("max_pool2d", out, &[self], move |g, _| Ok(vec![Some(x.max_pool2d_backward(g, kernel, stride)?)])))
    }

    /// Repeats each pixel `scale_h` x `scale_w` times.
    pub fn upsample_nearest2d(&self, scale_h: usize, scale_w: usize) -> Result<Var> {
        let out = self.tensor().upsample_nearest2d(scale_h, scale_w)?;
        Ok(Var::from_op("upsample_nearest2d", out, &[self], move |g, _| Ok(vec![Some(g.upsample_nearest2d_backward(scale_h, scale_w)?)])))
    }

    /// Group normalisation of `[N, C, ...]` with per-channel `gamma` and
    /// `beta` `[C]`. Saves x, gamma and the `[N, G]` statistics (not the output).
    pub fn group_norm(&self, groups: usize, gamma: &Var, beta: &Var, eps: f64) -> Result<Var> {
        let (y, mean, rstd) = self.tensor().group_norm(groups, gamma.tensor(), beta.tensor(), eps)?;
        let (x, gm) = (self.tensor().clone(), gamma.tensor().clone());
        Ok(Var::from_op("group_norm", y, &[self, gamma, beta], move |g, need| {
            let (dx, dgamma, dbeta) = x.group_norm_backward(&gm, &mean, &rstd, g, groups, eps)?;
            Ok(vec![need[0].then_some(dx), need[1].then_some(dgamma), need[2].then_some(dbeta)])
        }))
    }

    /// `silu(group_norm(x))` as one op: one pass forward and one backward,
    /// and no normalised tensor kept in between (the backward rebuilds it
    /// from x and the statistics).
    pub fn group_norm_silu(&self, groups: usize, gamma: &Var, beta: &Var, eps: f64) -> Result<Var> {
        let (y, mean, rstd) = self.tensor().group_norm_silu(groups, gamma.tensor(), beta.tensor(), eps)?;
        let (x, gm, bt) = (self.tensor().clone(), gamma.tensor().clone(), beta.tensor().clone());
        Ok(Var::from_op("group_norm_silu", y, &[self, gamma, beta], move |g, need| {
            let (dx, dgamma, dbeta) = x.group_norm_silu_backward(&gm, &bt, &mean, &rstd, g, groups, eps)?;
            Ok(vec![need[0].then_some(dx), need[1].then_some(dgamma), need[2].then_some(dbeta)])
        }))
    }

    /// `silu(group_norm(self * scale + shift))` as one op, `scale` and
    /// `shift` `[N, C]` (a time embedding's modulation of the features),
    /// times `mask` where given (a dropout mask, `Tensor::dropout_mask`):
    /// neither the modulated nor the normalised tensor is made or kept; the
    /// backward rebuilds what it needs from x, the modulation and the
    /// statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_silu_modulated(&self, groups: usize, scale: &Var, shift: &Var, gamma: &Var, beta: &Var, eps: f64, mask: Option<&Tensor>) -> Result<Var> {
        let (y, mean, rstd) = self.tensor().group_norm_silu_modulated(groups, scale.tensor(), shift.tensor(), gamma.tensor(), beta.tensor(), eps, mask)?;
        let (x, s, b) = (self.tensor().clone(), scale.tensor().clone(), shift.tensor().clone());
        let (gm, bt, mask) = (gamma.tensor().clone(), beta.tensor().clone(), mask.cloned());
        Ok(Var::from_op("group_norm_silu_modulated", y, &[self, scale, shift, gamma, beta], move |g, need| {
            let (dx, ds, db, dg, dbt) = x.group_norm_silu_modulated_backward(&s, &b, &gm, &bt, &mean, &rstd, g, groups, eps, mask.as_ref())?;
            Ok(vec![need[0].then_some(dx), need[1].then_some(ds), need[2].then_some(db), need[3].then_some(dg), need[4].then_some(dbt)])
        }))
    }

    /// Batch normalisation in training mode: each channel of `[N, C, ...]`
    /// is normalised with the mean and (biased) variance of its values over
    /// the batch and every position, then scaled by `gamma` and shifted by
    /// `beta` `[C]`. Also returns those batch statistics, mean and biased
    /// variance `[C]`, which a layer folds into its running averages.
    ///
    /// Batch norm is group norm of the channel-major layout: permuted to
    /// `[1, C, N*H*W]`, each channel is a group of one image. That reuses
    /// the fused group-norm kernels (and their statistics) at the cost of
    /// one transposing copy each way.
    pub fn batch_norm(&self, gamma: &Var, beta: &Var, eps: f64) -> Result<(Var, Tensor, Tensor)> {
        let dims = self.dims().to_vec();
        if dims.len() < 2 {
            return Err(tensor::Error::BadShape { op: "batch_norm", shape: self.shape().clone(), msg: "needs [N, C, ...]".into() });
        }
        let (n, c) = (dims[0], dims[1]);
        let rest: usize = dims[2..].iter().product();
        let to_channel_major = move |t: &Tensor| -> Result<Tensor> { t.reshape([n, c, rest])?.permute(&[1, 0, 2])?.contiguous()?.reshape([1, c, n * rest]) };
        let x = to_channel_major(self.tensor())?;
        let (y, mean, rstd) = x.group_norm(c, gamma.tensor(), beta.tensor(), eps)?;
        let back = move |t: Tensor| -> Result<Tensor> { t.reshape([c, n, rest])?.permute(&[1, 0, 2])?.contiguous()?.reshape(dims.as_slice()) };
        let y = back(y)?;
        // The statistics are [1, C] (one image of C groups); the layer wants [C].
        // var = 1/rstd² - eps, as the kernel computed rstd = 1/sqrt(var + eps).
        let (batch_mean, batch_var) = (mean.reshape([c])?, rstd.powf(-2.0)?.add_scalar(-eps)?.reshape([c])?);
        let gm = gamma.tensor().clone();
        let out = Var::from_op("batch_norm", y, &[self, gamma, beta], move |g, need| {
            let (dx, dgamma, dbeta) = x.group_norm_backward(&gm, &mean, &rstd, &to_channel_major(g)?, c, eps)?;
            Ok(vec![if need[0] { Some(back(dx)?) } else { None }, need[1].then_some(dgamma), need[2].then_some(dbeta)])
        });
        Ok((out, batch_mean, batch_var))
    }
}

/// The backward rule of a convolution of `x` by `w`: the gradients of the
/// input, the weight and, `with_bias`, the bias, each where `need` asks.
fn conv2d_grads(x: &Tensor, w: &Tensor, with_bias: bool, stride: usize, padding: usize) -> impl Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static {
    let (x, w) = (x.clone(), w.clone());
    move |g: &Tensor, need: &[bool]| {
        let gx = if need[0] { Some(g.conv2d_backward_input(&w, x.dims(), stride, padding)?) } else { None };
        let gw = if need[1] { Some(x.conv2d_backward_weight(g, w.dims(), stride, padding)?) } else { None };
        let mut grads = vec![gx, gw];
        if with_bias {
            grads.push(if need[2] { Some(g.sum(&[0, 2, 3], false)?) } else { None });
        }
        Ok(grads)
    }
}
