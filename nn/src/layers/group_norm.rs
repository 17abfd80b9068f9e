//! Group normalisation with a learned per-channel gain and bias, as
//! `torch.nn.GroupNorm` (eps 1e-5, gain 1, bias 0).

use crate::{Ctx, Init, Module, NnError, Path, Result};
use autograd::Var;

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

    /// `norm(x)`, where a half-precision x is normalised in the parameters'
    /// dtype (f32: the statistics need its range and precision) and the
    /// result is cast back to x's dtype.
    fn in_stats_dtype(&self, x: &Var, norm: impl Fn(&Var) -> tensor::Result<Var>) -> Result<Var> {
        let (dtype, stats) = (x.dtype(), self.weight.dtype());
        if dtype == stats || !dtype.is_float() {
            return Ok(norm(x)?);
        }
        Ok(norm(&x.to_dtype(stats)?)?.to_dtype(dtype)?)
    }
}

impl Module for GroupNorm {
    /// x: [N, C, ...], normalised in the parameters' dtype (see `in_stats_dtype`).
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        self.in_stats_dtype(x, |x| x.group_norm(self.groups, &self.weight, &self.bias, self.eps))
    }
}
