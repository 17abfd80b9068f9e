//! Batch normalisation of images, as `torch.nn.BatchNorm2d` (eps 1e-5,
//! momentum 0.1, gain 1, bias 0, running mean 0 and variance 1).
//!
//! Training normalises each channel with the statistics of the batch and
//! folds them into running averages; evaluation normalises with those
//! averages, so one image's output no longer depends on the rest of the
//! batch. The averages are buffers (`running_mean`, `running_var`, PyTorch's
//! names), saved in checkpoints with the weights.

use crate::{Ctx, Init, Module, NnError, Path, Result};
use autograd::Var;
use tensor::Tensor;

pub struct BatchNorm2d {
    pub eps: f64,
    /// Weight of the newest batch in the running averages.
    pub momentum: f64,
    /// [channels], initialised to 1
    pub weight: Var,
    /// [channels], initialised to 0
    pub bias: Var,
    pub running_mean: Tensor,
    /// The unbiased variance, as PyTorch keeps it.
    pub running_var: Tensor,
}

impl BatchNorm2d {
    pub fn new(path: &Path, channels: usize) -> Result<BatchNorm2d> {
        if channels == 0 {
            return Err(NnError::bad("BatchNorm2d", "needs at least one channel"));
        }
        let weight = path.param("weight", [channels], Init::Const(1.0))?;
        let bias = path.param("bias", [channels], Init::Const(0.0))?;
        let running_mean = path.buffer("running_mean", [channels], Init::Const(0.0))?;
        let running_var = path.buffer("running_var", [channels], Init::Const(1.0))?;
        Ok(BatchNorm2d { eps: 1e-5, momentum: 0.1, weight, bias, running_mean, running_var })
    }

    fn check_input(&self, x: &Var) -> Result<()> {
        let c = self.weight.dims()[0];
        if x.dims().len() != 4 || x.dims()[1] != c {
            return Err(NnError::bad("BatchNorm2d", format!("expects [N, {c}, H, W], got {:?}", x.dims())));
        }
        Ok(())
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        self.check_input(x)?;
        if ctx.train {
            let (y, mean, var) = x.batch_norm(&self.weight, &self.bias, self.eps)?;
            let d = x.dims();
            let count = (d[0] * d[2] * d[3]) as f64;
            // PyTorch averages the unbiased variance (a batch of one value per
            // channel has none: keep the old average then).
            let unbiased = if count > 1.0 { var.mul_scalar(count / (count - 1.0))? } else { self.running_var.clone() };
            let m = self.momentum;
            self.running_mean.assign(&self.running_mean.mul_scalar(1.0 - m)?.add(&mean.mul_scalar(m)?)?)?;
            self.running_var.assign(&self.running_var.mul_scalar(1.0 - m)?.add(&unbiased.mul_scalar(m)?)?)?;
            return Ok(y);
        }
        // y = x * scale + shift per channel, with scale = weight / sqrt(var + eps)
        // and shift = bias - mean * scale: two passes over x.
        let c = self.weight.dims()[0];
        let rstd = Var::constant(self.running_var.add_scalar(self.eps)?.powf(-0.5)?);
        let scale = self.weight.mul(&rstd)?;
        let shift = self.bias.sub(&Var::constant(self.running_mean.clone()).mul(&scale)?)?;
        Ok(x.mul(&scale.reshape([1, c, 1, 1])?)?.add(&shift.reshape([1, c, 1, 1])?)?)
    }
}
