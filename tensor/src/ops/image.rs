//! The image ops of a convolutional network: conv2d, pooling, nearest
//! upsampling and group norm, each with the backward kernels that autograd
//! calls. All take and return NCHW tensors.

use crate::backend::BackendStorage;
use crate::backend::{Conv2dParams, GroupNormParams, Pool2dParams};
use crate::storage::dispatch;
use crate::{Error, Result, Shape, Tensor};

fn nchw(op: &'static str, t: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match *t.dims() {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(Error::BadShape { op, shape: t.shape().clone(), msg: "expected 4 dims [N, C, H, W]".into() }),
    }
}

fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

fn expect_shape(op: &'static str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.dims() != want {
        return Err(Error::ShapeMismatch { op, lhs: t.shape().clone(), rhs: Shape::from(want) });
    }
    Ok(())
}

/// The parameters of a convolution of `input_dims` by `weight_dims`, with
/// every shape rule checked.
pub fn conv2d_params(input: &[usize], weight: &[usize], stride: usize, padding: usize) -> Result<Conv2dParams> {
    let (&[n, c, h, w], &[co, ci, kh, kw]) = (input, weight) else {
        return Err(Error::ShapeMismatch { op: "conv2d", lhs: Shape::from(input), rhs: Shape::from(weight) });
    };
    if kh == 0 || kw == 0 {
        return Err(Error::BadShape { op: "conv2d", shape: Shape::from(weight), msg: format!("the kernel is {kh}x{kw}; it must be at least 1x1") });
    }
    if ci != c || stride == 0 || kh > h + 2 * padding || kw > w + 2 * padding {
        return Err(Error::ShapeMismatch { op: "conv2d", lhs: Shape::from(input), rhs: Shape::from(weight) });
    }
    Ok(Conv2dParams { batch: n, in_channels: c, out_channels: co, in_h: h, in_w: w, kernel_h: kh, kernel_w: kw, stride, padding })
}

fn pool_params(op: &'static str, dims: &[usize], kernel: usize, stride: usize) -> Result<Pool2dParams> {
    let &[n, c, h, w] = dims else {
        return Err(Error::BadShape { op, shape: Shape::from(dims), msg: "expected 4 dims [N, C, H, W]".into() });
    };
    if kernel == 0 || stride == 0 || kernel > h || kernel > w {
        return Err(Error::BadShape { op, shape: Shape::from(dims), msg: format!("kernel {kernel} with stride {stride} does not fit") });
    }
    Ok(Pool2dParams { batch: n, channels: c, in_h: h, in_w: w, kernel, stride })
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch): input [N,C,H,W],
    /// weight [O,C,kh,kw], optional bias [O].
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
        same_dtype("conv2d", self, weight)?;
        let p = conv2d_params(self.dims(), weight.dims(), stride, padding)?;
        let (x, w) = (self.contiguous()?, weight.contiguous()?);
        let b = match bias {
            Some(b) => {
                same_dtype("conv2d", self, b)?;
                expect_shape("conv2d bias", b, &[p.out_channels])?;
                Some(b.contiguous()?)
            }
            None => None,
        };
        let out = match &b {
            Some(b) => dispatch!("conv2d", &*x.storage(), &*w.storage(), &*b.storage(), |xs, ws, bs| xs.conv2d(
                x.layout(),
                ws,
                w.layout(),
                Some((bs, b.layout())),
                &p
            )),
            None => dispatch!("conv2d", &*x.storage(), &*w.storage(), |xs, ws| xs.conv2d(x.layout(), ws, w.layout(), None, &p)),
        };
        Ok(Tensor::from_storage(out, [p.batch, p.out_channels, p.out_h(), p.out_w()]))
    }

    /// Gradient of `conv2d` with respect to its input; `self` is the output
    /// gradient.
    pub fn conv2d_backward_input(&self, weight: &Tensor, input_dims: &[usize], stride: usize, padding: usize) -> Result<Tensor> {
        same_dtype("conv2d_backward_input", self, weight)?;
        let p = conv2d_params(input_dims, weight.dims(), stride, padding)?;
        expect_shape("conv2d_backward_input", self, &[p.batch, p.out_channels, p.out_h(), p.out_w()])?;
        let (g, w) = (self.contiguous()?, weight.contiguous()?);
        let out = dispatch!("conv2d_backward_input", &*g.storage(), &*w.storage(), |gs, ws| gs.conv2d_backward_input(g.layout(), ws, w.layout(), &p));
        Ok(Tensor::from_storage(out, input_dims.to_vec()))
    }

    /// Gradient of `conv2d` with respect to its weight; `self` is the input.
    pub fn conv2d_backward_weight(&self, grad_out: &Tensor, weight_dims: &[usize], stride: usize, padding: usize) -> Result<Tensor> {
        same_dtype("conv2d_backward_weight", self, grad_out)?;
        let p = conv2d_params(self.dims(), weight_dims, stride, padding)?;
        expect_shape("conv2d_backward_weight", grad_out, &[p.batch, p.out_channels, p.out_h(), p.out_w()])?;
        let (x, g) = (self.contiguous()?, grad_out.contiguous()?);
        let out = dispatch!("conv2d_backward_weight", &*x.storage(), &*g.storage(), |xs, gs| xs.conv2d_backward_weight(x.layout(), gs, g.layout(), &p));
        Ok(Tensor::from_storage(out, weight_dims.to_vec()))
    }

    pub fn avg_pool2d(&self, kernel: usize, stride: usize) -> Result<Tensor> {
        let p = pool_params("avg_pool2d", self.dims(), kernel, stride)?;
        let x = self.contiguous()?;
        let out = dispatch!("avg_pool2d", &*x.storage(), |s| s.avg_pool2d(x.layout(), &p));
        Ok(Tensor::from_storage(out, [p.batch, p.channels, p.out_h(), p.out_w()]))
    }

    /// `self` is the output gradient; `input_dims` the pooled input's shape.
    pub fn avg_pool2d_backward(&self, input_dims: &[usize], kernel: usize, stride: usize) -> Result<Tensor> {
        let p = pool_params("avg_pool2d_backward", input_dims, kernel, stride)?;
        expect_shape("avg_pool2d_backward", self, &[p.batch, p.channels, p.out_h(), p.out_w()])?;
        let g = self.contiguous()?;
        let out = dispatch!("avg_pool2d_backward", &*g.storage(), |s| s.avg_pool2d_backward(g.layout(), &p));
        Ok(Tensor::from_storage(out, input_dims.to_vec()))
    }

    pub fn max_pool2d(&self, kernel: usize, stride: usize) -> Result<Tensor> {
        let p = pool_params("max_pool2d", self.dims(), kernel, stride)?;
        let x = self.contiguous()?;
        let out = dispatch!("max_pool2d", &*x.storage(), |s| s.max_pool2d(x.layout(), &p));
        Ok(Tensor::from_storage(out, [p.batch, p.channels, p.out_h(), p.out_w()]))
    }

    /// `self` is the pooled input; the gradient goes to each window's first max.
    pub fn max_pool2d_backward(&self, grad_out: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
        same_dtype("max_pool2d_backward", self, grad_out)?;
        let p = pool_params("max_pool2d_backward", self.dims(), kernel, stride)?;
        expect_shape("max_pool2d_backward", grad_out, &[p.batch, p.channels, p.out_h(), p.out_w()])?;
        let (x, g) = (self.contiguous()?, grad_out.contiguous()?);
        let out = dispatch!("max_pool2d_backward", &*x.storage(), &*g.storage(), |xs, gs| xs.max_pool2d_backward(x.layout(), gs, g.layout(), &p));
        Ok(Tensor::from_storage(out, self.shape()))
    }

    /// Repeats each pixel `scale_h` x `scale_w` times.
    pub fn upsample_nearest2d(&self, scale_h: usize, scale_w: usize) -> Result<Tensor> {
        let (n, c, h, w) = nchw("upsample_nearest2d", self)?;
        if scale_h == 0 || scale_w == 0 {
            return Err(Error::BadArgument { op: "upsample_nearest2d", msg: "scale factors must be positive".into() });
        }
        let x = self.contiguous()?;
        let out = dispatch!("upsample_nearest2d", &*x.storage(), |s| s.upsample_nearest2d(x.layout(), (n, c, h, w), (scale_h, scale_w)));
        Ok(Tensor::from_storage(out, [n, c, h * scale_h, w * scale_w]))
    }

    /// `self` is the output gradient; sums each block back onto its pixel.
    pub fn upsample_nearest2d_backward(&self, scale_h: usize, scale_w: usize) -> Result<Tensor> {
        let (n, c, oh, ow) = nchw("upsample_nearest2d_backward", self)?;
        if scale_h == 0 || scale_w == 0 || oh % scale_h != 0 || ow % scale_w != 0 {
            return Err(Error::BadShape {
                op: "upsample_nearest2d_backward",
                shape: self.shape().clone(),
                msg: format!("not divisible by scales {scale_h}x{scale_w}"),
            });
        }
        let (h, w) = (oh / scale_h, ow / scale_w);
        let g = self.contiguous()?;
        let out = dispatch!("upsample_nearest2d_backward", &*g.storage(), |s| s.upsample_nearest2d_backward(g.layout(), (n, c, h, w), (scale_h, scale_w)));
        Ok(Tensor::from_storage(out, [n, c, h, w]))
    }

    /// Group normalisation of [N, C, ...] with per-channel gain and bias.
    /// Returns (y, mean [N, G], rstd [N, G]); the statistics feed the backward.
    pub fn group_norm(&self, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
        self.normalise("group_norm", groups, gamma, beta, eps, false)
    }

    /// `silu(group_norm(x))` in one pass, without the normalised tensor in
    /// between. Returns (y, mean [N, G], rstd [N, G]) like `group_norm`.
    pub fn group_norm_silu(&self, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
        self.normalise("group_norm_silu", groups, gamma, beta, eps, true)
    }

    fn normalise(&self, op: &'static str, groups: usize, gamma: &Tensor, beta: &Tensor, eps: f64, with_silu: bool) -> Result<(Tensor, Tensor, Tensor)> {
        let p = self.group_norm_params(op, groups, eps)?;
        same_dtype(op, self, gamma)?;
        same_dtype(op, self, beta)?;
        expect_shape(if with_silu { "group_norm_silu gamma" } else { "group_norm gamma" }, gamma, &[p.channels])?;
        expect_shape(if with_silu { "group_norm_silu beta" } else { "group_norm beta" }, beta, &[p.channels])?;
        let (x, g, b) = (self.contiguous()?, gamma.contiguous()?, beta.contiguous()?);
        let (y, mean, rstd) = dispatch!("group_norm", (&*x.storage(), &*g.storage(), &*b.storage()), |xs, gs, bs; wrap| {
            let (y, mean, rstd) = if with_silu {
                xs.group_norm_silu(x.layout(), gs, g.layout(), bs, b.layout(), &p)?
            } else {
                xs.group_norm(x.layout(), gs, g.layout(), bs, b.layout(), &p)?
            };
            (wrap(y), wrap(mean), wrap(rstd))
        });
        let stats = [p.batch, p.groups];
        Ok((Tensor::from_storage(y, self.shape()), Tensor::from_storage(mean, stats), Tensor::from_storage(rstd, stats)))
    }

    /// The fused group norm backward; `self` is the normalised input x.
    /// Returns (grad_x, grad_gamma, grad_beta).
    pub fn group_norm_backward(&self, gamma: &Tensor, mean: &Tensor, rstd: &Tensor, grad_y: &Tensor, groups: usize, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
        self.normalise_backward("group_norm_backward", gamma, None, mean, rstd, grad_y, groups, eps)
    }

    /// The backward of `group_norm_silu`; `self` is its input x, `mean` and
    /// `rstd` what its forward returned. Returns (grad_x, grad_gamma, grad_beta).
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_silu_backward(&self, gamma: &Tensor, beta: &Tensor, mean: &Tensor, rstd: &Tensor, grad_y: &Tensor, groups: usize, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
        self.normalise_backward("group_norm_silu_backward", gamma, Some(beta), mean, rstd, grad_y, groups, eps)
    }

    #[allow(clippy::too_many_arguments)]
    fn normalise_backward(
        &self,
        op: &'static str,
        gamma: &Tensor,
        silu_beta: Option<&Tensor>,
        mean: &Tensor,
        rstd: &Tensor,
        grad_y: &Tensor,
        groups: usize,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let p = self.group_norm_params(op, groups, eps)?;
        expect_shape(op, grad_y, self.dims())?;
        expect_shape(if silu_beta.is_some() { "group_norm_silu_backward gamma" } else { "group_norm_backward gamma" }, gamma, &[p.channels])?;
        if let Some(beta) = silu_beta {
            expect_shape("group_norm_silu_backward beta", beta, &[p.channels])?;
        }
        expect_shape(if silu_beta.is_some() { "group_norm_silu_backward mean" } else { "group_norm_backward mean" }, mean, &[p.batch, p.groups])?;
        expect_shape(if silu_beta.is_some() { "group_norm_silu_backward rstd" } else { "group_norm_backward rstd" }, rstd, &[p.batch, p.groups])?;
        // The kernel reads whole buffers from offset 0.
        let (x, g, m, r, gy) = (self.whole()?, gamma.whole()?, mean.whole()?, rstd.whole()?, grad_y.whole()?);
        let beta = silu_beta.map(|b| b.whole()).transpose()?;
        let (dx, dg, db) = match &beta {
            None => dispatch!(
                "group_norm_backward",
                (&*x.storage(), &*g.storage(), &*m.storage(), &*r.storage(), &*gy.storage()),
                |xs, gs, ms, rs, gys; wrap| {
                    let (dx, dg, db) = xs.group_norm_backward(gs, ms, rs, gys, &p)?;
                    (wrap(dx), wrap(dg), wrap(db))
                }
            ),
            Some(b) => {
                dispatch!(
                    "group_norm_silu_backward",
                    (&*x.storage(), &*g.storage(), &*b.storage(), &*m.storage(), &*r.storage(), &*gy.storage()),
                    |xs, gs, bs, ms, rs, gys; wrap| {
                        let (dx, dg, db) = xs.group_norm_silu_backward(gs, bs, ms, rs, gys, &p)?;
                        (wrap(dx), wrap(dg), wrap(db))
                    }
                )
            }
        };
        Ok((Tensor::from_storage(dx, self.shape()), Tensor::from_storage(dg, [p.channels]), Tensor::from_storage(db, [p.channels])))
    }

    /// `silu(group_norm(self * scale + shift))`, with `scale` and `shift`
    /// `[N, C]`: one scale and shift per (image, channel), as a time
    /// embedding modulates a U-Net's features; then times `mask`, where
    /// given (a dropout mask of self's shape, see `Tensor::dropout_mask`).
    /// Backends with a fused kernel never make the modulated tensor, nor
    /// the unmasked output; the others compose the op. Returns (y, mean
    /// [N, G], rstd [N, G]), the statistics those of the modulated tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_silu_modulated(&self, groups: usize, scale: &Tensor, shift: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, mask: Option<&Tensor>) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "group_norm_silu_modulated";
        let p = self.modulated_norm_params(op, groups, scale, shift, gamma, beta, eps, mask)?;
        let (x, s, b, g, bt) = (self.whole()?, scale.whole()?, shift.whole()?, gamma.whole()?, beta.whole()?);
        let fused = match mask.map(|m| m.whole()).transpose()? {
            None => dispatch!(
                "group_norm_silu_modulated",
                (&*x.storage(), &*s.storage(), &*b.storage(), &*g.storage(), &*bt.storage()),
                |xs, ss, bs, gs, bts; wrap| xs.group_norm_silu_modulated(ss, bs, gs, bts, None, &p)?.map(|(y, m, r)| (wrap(y), wrap(m), wrap(r)))
            ),
            Some(mask) => dispatch!(
                "group_norm_silu_modulated",
                (&*x.storage(), &*s.storage(), &*b.storage(), &*g.storage(), &*bt.storage(), &*mask.storage()),
                |xs, ss, bs, gs, bts, ms; wrap| xs.group_norm_silu_modulated(ss, bs, gs, bts, Some(ms), &p)?.map(|(y, m, r)| (wrap(y), wrap(m), wrap(r)))
            ),
        };
        match fused {
            Some((y, mean, rstd)) => {
                let stats = [p.batch, p.groups];
                Ok((Tensor::from_storage(y, self.shape()), Tensor::from_storage(mean, stats), Tensor::from_storage(rstd, stats)))
            }
            None => self.group_norm_silu_modulated_composed(groups, scale, shift, gamma, beta, eps, mask),
        }
    }

    /// `group_norm_silu_modulated` from plain ops: the modulated tensor,
    /// `group_norm_silu`, then the mask.
    #[allow(clippy::too_many_arguments)]
    pub fn group_norm_silu_modulated_composed(&self, groups: usize, scale: &Tensor, shift: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, mask: Option<&Tensor>) -> Result<(Tensor, Tensor, Tensor)> {
        self.modulated_norm_params("group_norm_silu_modulated", groups, scale, shift, gamma, beta, eps, mask)?;
        let (y, mean, rstd) = self.modulate(scale, shift)?.group_norm_silu(groups, gamma, beta, eps)?;
        Ok((mask.map_or(Ok(y.clone()), |m| y.mul(m))?, mean, rstd))
    }

    /// The backward of `group_norm_silu_modulated`; `self` is its input x,
    /// `mean` and `rstd` what its forward returned, `mask` the forward's.
    /// Returns (grad_x, grad_scale, grad_shift, grad_gamma, grad_beta).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn group_norm_silu_modulated_backward(
        &self,
        scale: &Tensor,
        shift: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        grad_y: &Tensor,
        groups: usize,
        eps: f64,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor, Tensor)> {
        let op = "group_norm_silu_modulated_backward";
        let p = self.modulated_norm_params(op, groups, scale, shift, gamma, beta, eps, mask)?;
        expect_shape(op, grad_y, self.dims())?;
        expect_shape("group_norm_silu_modulated_backward mean", mean, &[p.batch, p.groups])?;
        expect_shape("group_norm_silu_modulated_backward rstd", rstd, &[p.batch, p.groups])?;
        // The kernels read whole buffers from offset 0.
        let (x, s, b, g, bt) = (self.whole()?, scale.whole()?, shift.whole()?, gamma.whole()?, beta.whole()?);
        let (m, r, gy) = (mean.whole()?, rstd.whole()?, grad_y.whole()?);
        let fused = match mask.map(|m| m.whole()).transpose()? {
            None => dispatch!(
                "group_norm_silu_modulated_backward",
                (&*x.storage(), &*s.storage(), &*b.storage(), &*g.storage(), &*bt.storage(), &*m.storage(), &*r.storage(), &*gy.storage()),
                |xs, ss, bs, gs, bts, ms, rs, gys; wrap| xs
                    .group_norm_silu_modulated_backward(ss, bs, gs, bts, ms, rs, gys, None, &p)?
                    .map(|(dx, ds, db, dg, dbt)| (wrap(dx), wrap(ds), wrap(db), wrap(dg), wrap(dbt)))
            ),
            Some(mask) => dispatch!(
                "group_norm_silu_modulated_backward",
                (&*x.storage(), &*s.storage(), &*b.storage(), &*g.storage(), &*bt.storage(), &*m.storage(), &*r.storage(), &*gy.storage(), &*mask.storage()),
                |xs, ss, bs, gs, bts, ms, rs, gys, masks; wrap| xs
                    .group_norm_silu_modulated_backward(ss, bs, gs, bts, ms, rs, gys, Some(masks), &p)?
                    .map(|(dx, ds, db, dg, dbt)| (wrap(dx), wrap(ds), wrap(db), wrap(dg), wrap(dbt)))
            ),
        };
        match fused {
            Some((dx, ds, db, dg, dbt)) => {
                let (nc, c) = ([p.batch, p.channels], [p.channels]);
                Ok((
                    Tensor::from_storage(dx, self.shape()),
                    Tensor::from_storage(ds, nc),
                    Tensor::from_storage(db, nc),
                    Tensor::from_storage(dg, c),
                    Tensor::from_storage(dbt, c),
                ))
            }
            None => self.group_norm_silu_modulated_backward_composed(scale, shift, gamma, beta, mean, rstd, grad_y, groups, eps, mask),
        }
    }

    /// `group_norm_silu_modulated_backward` from plain ops: the gradient
    /// times the mask, the modulated tensor z rebuilt,
    /// `group_norm_silu_backward` at z, then the chain rule through `z = x *
    /// scale + shift`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn group_norm_silu_modulated_backward_composed(
        &self,
        scale: &Tensor,
        shift: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        grad_y: &Tensor,
        groups: usize,
        eps: f64,
        mask: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor, Tensor)> {
        let p = self.modulated_norm_params("group_norm_silu_modulated_backward", groups, scale, shift, gamma, beta, eps, mask)?;
        let z = self.modulate(scale, shift)?;
        let grad_y = mask.map_or(Ok(grad_y.clone()), |m| grad_y.mul(m))?;
        let (dz, dgamma, dbeta) = z.group_norm_silu_backward(gamma, beta, mean, rstd, &grad_y, groups, eps)?;
        let per_channel = |t: &Tensor| -> Result<Tensor> { t.reshape([p.batch, p.channels, p.spatial])?.sum(&[2], false) };
        let dx = dz.mul(&scale.reshape(self.per_channel_dims())?)?;
        let (dscale, dshift) = (per_channel(&dz.mul(self)?)?, per_channel(&dz)?);
        Ok((dx, dscale, dshift, dgamma, dbeta))
    }

    /// `[N, C, 1, ...]` for a `[N, C, ...]` self: the shape a per (image,
    /// channel) value broadcasts from.
    fn per_channel_dims(&self) -> Vec<usize> {
        let mut dims = vec![1; self.rank()];
        dims[..2].copy_from_slice(&self.dims()[..2]);
        dims
    }

    /// `self * scale + shift`, scale and shift `[N, C]`.
    fn modulate(&self, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
        let dims = self.per_channel_dims();
        self.mul(&scale.reshape(dims.as_slice())?)?.add(&shift.reshape(dims.as_slice())?)
    }

    /// The checks of the modulated group norm's operands, and its parameters.
    #[allow(clippy::too_many_arguments)]
    fn modulated_norm_params(&self, op: &'static str, groups: usize, scale: &Tensor, shift: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, mask: Option<&Tensor>) -> Result<GroupNormParams> {
        let p = self.group_norm_params(op, groups, eps)?;
        for other in [scale, shift, gamma, beta].into_iter().chain(mask) {
            same_dtype(op, self, other)?;
        }
        if let Some(mask) = mask {
            expect_shape("group_norm_silu_modulated mask", mask, self.dims())?;
        }
        expect_shape("group_norm_silu_modulated scale", scale, &[p.batch, p.channels])?;
        expect_shape("group_norm_silu_modulated shift", shift, &[p.batch, p.channels])?;
        expect_shape("group_norm_silu_modulated gamma", gamma, &[p.channels])?;
        expect_shape("group_norm_silu_modulated beta", beta, &[p.channels])?;
        Ok(p)
    }

    fn group_norm_params(&self, op: &'static str, groups: usize, eps: f64) -> Result<GroupNormParams> {
        if self.rank() < 2 {
            return Err(Error::BadShape { op, shape: self.shape().clone(), msg: "expected [N, C, ...]".into() });
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        if groups == 0 || c % groups != 0 {
            return Err(Error::BadShape { op, shape: self.shape().clone(), msg: format!("{c} channels do not split into {groups} groups") });
        }
        Ok(GroupNormParams { batch: n, channels: c, spatial: self.dims()[2..].iter().product(), groups, eps })
    }
}
