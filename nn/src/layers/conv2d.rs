//! 2-D convolution over NCHW images, as `torch.nn.Conv2d` (square kernels).

use super::param_as;
use crate::{Ctx, Init, Module, Path, Result};
use autograd::Var;
use tensor::{DType, Fusion, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig { stride: 1, padding: 0, bias: true }
    }
}

impl Conv2dConfig {
    /// Stride 1, padding `padding`, with bias: the U-Net's convolutions.
    pub fn padded(padding: usize) -> Self {
        Conv2dConfig { padding, ..Default::default() }
    }
}

/// ```
/// use nn::{Conv2d, Conv2dConfig, Ctx, Module, ParamStore};
/// use nn::autograd::{tensor::{DType, Device, Rng, Tensor}, Var};
///
/// let store = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
/// // 3x3 kernel, padding 1: the image keeps its size
/// let conv = Conv2d::new(&store.root(), 3, 8, 3, Conv2dConfig::padded(1))?;
/// let images = Var::constant(Tensor::zeros([2, 3, 16, 16], DType::F32, &Device::Cpu)?);
/// assert_eq!(conv.forward(&images, &mut Ctx::eval())?.dims(), &[2, 8, 16, 16]);
/// # Ok::<(), nn::NnError>(())
/// ```
pub struct Conv2d {
    /// [out, in, k, k]
    pub weight: Var,
    /// [out]
    pub bias: Option<Var>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    /// Weight and bias uniform in ±1/sqrt(in·k·k), as PyTorch.
    pub fn new(path: &Path, in_channels: usize, out_channels: usize, kernel: usize, cfg: Conv2dConfig) -> Result<Conv2d> {
        let fan_in = in_channels * kernel * kernel;
        let weight = path.param("weight", [out_channels, in_channels, kernel, kernel], Init::KaimingUniform { fan_in })?;
        let bias = if cfg.bias {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Some(path.param("bias", [out_channels], Init::Uniform { bound })?)
        } else {
            None
        };
        Ok(Conv2d { weight, bias, stride: cfg.stride, padding: cfg.padding })
    }
}

impl Conv2d {
    /// The weight and bias in `dtype`, cast where they are kept in another.
    fn params_as(&self, dtype: DType) -> Result<(Var, Option<Var>)> {
        let bias = self.bias.as_ref().map(|b| param_as(b, dtype)).transpose()?;
        Ok((param_as(&self.weight, dtype)?, bias))
    }

    /// `forward(x) + residual` in one op, the residual added as the
    /// output is written (see `Var::conv2d_add`).
    pub fn forward_add(&self, x: &Var, residual: &Var) -> Result<Var> {
        let (weight, bias) = self.params_as(x.dtype())?;
        Ok(x.conv2d_add(&weight, bias.as_ref(), self.stride, self.padding, residual)?)
    }

    /// For inference without a tape: this convolution with the work in `f`
    /// folded into it (see `tensor::Fusion`; the layer supplies the bias).
    /// Returns the output and, if `f.moments`, its channel moments.
    pub fn forward_fused(&self, x: &Tensor, f: Fusion) -> Result<(Tensor, Option<Tensor>)> {
        let (weight, bias) = self.params_as(x.dtype())?;
        let f = Fusion { bias: bias.as_ref().map(Var::tensor), ..f };
        Ok(x.conv2d_fused(weight.tensor(), self.stride, self.padding, &f)?)
    }
}

impl Module for Conv2d {
    /// Computes in x's dtype (the parameters are cast to it when it differs).
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        let (weight, bias) = self.params_as(x.dtype())?;
        Ok(x.conv2d(&weight, bias.as_ref(), self.stride, self.padding)?)
    }
}
