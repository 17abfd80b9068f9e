//! Elementwise ops and their rules.
//!
//! Unary rules multiply the output gradient by the local derivative, saving
//! whichever of input `x` or output `y` makes that cheapest (`exp`, `tanh`,
//! `sigmoid`, `sqrt` reuse `y`). Binary ops broadcast, so each input's share
//! is summed back to its own shape with `sum_to`: a value stretched over
//! many positions collects the gradient of all of them.

use crate::var::Var;
use tensor::{Error, Result, Rng, Tensor, UnaryOp};

/// A one-input op whose rule maps the output gradient to the input gradient.
fn unary(x: &Var, op: &'static str, out: Tensor, rule: impl FnOnce(&Tensor) -> Result<Tensor> + Send + 'static) -> Var {
    Var::from_op(op, out, &[x], move |g, _| Ok(vec![Some(rule(g)?)]))
}

fn scalar_like(t: &Tensor, v: f64) -> Result<Tensor> {
    Tensor::scalar(v, t.dtype(), t.device())
}

#[allow(clippy::should_implement_trait)]
impl Var {
    // ---- binary, broadcasting ----------------------------------------------

    /// d(a+b) = da + db
    ///
    /// A bias `[3]` broadcast over a batch `[2, 3]` gets the sum of the
    /// gradients of every row it was added to:
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// let x = Var::constant(Tensor::from_vec(vec![1.0f32; 6], [2, 3], &Device::Cpu)?);
    /// let bias = Var::param(Tensor::from_vec(vec![0.0f32; 3], 3, &Device::Cpu)?);
    /// let grads = x.add(&bias)?.sum_all()?.backward()?;
    /// assert_eq!(grads.get(&bias).unwrap().to_vec::<f32>()?, vec![2.0, 2.0, 2.0]);
    /// # Ok::<(), autograd::tensor::Error>(())
    /// ```
    pub fn add(&self, rhs: &Var) -> Result<Var> {
        let out = self.tensor().add(rhs.tensor())?;
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        Ok(Var::from_op("add", out, &[self, rhs], move |g, need| {
            Ok(vec![need[0].then(|| g.sum_to(&sa)).transpose()?, need[1].then(|| g.sum_to(&sb)).transpose()?])
        }))
    }

    /// d(a-b) = da - db
    pub fn sub(&self, rhs: &Var) -> Result<Var> {
        let out = self.tensor().sub(rhs.tensor())?;
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        Ok(Var::from_op("sub", out, &[self, rhs], move |g, need| {
            Ok(vec![need[0].then(|| g.sum_to(&sa)).transpose()?, need[1].then(|| g.sum_to(&sb)?.neg()).transpose()?])
        }))
    }

    /// d(ab) = b da + a db
    pub fn mul(&self, rhs: &Var) -> Result<Var> {
        let out = self.tensor().mul(rhs.tensor())?;
        let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
        Ok(Var::from_op("mul", out, &[self, rhs], move |g, need| {
            Ok(vec![need[0].then(|| g.mul(&b)?.sum_to(a.shape())).transpose()?, need[1].then(|| g.mul(&a)?.sum_to(b.shape())).transpose()?])
        }))
    }

    /// d(a/b) = da / b - (a/b) db / b
    pub fn div(&self, rhs: &Var) -> Result<Var> {
        let out = self.tensor().div(rhs.tensor())?;
        let (sa, b, y) = (self.shape().clone(), rhs.tensor().clone(), out.clone());
        Ok(Var::from_op("div", out, &[self, rhs], move |g, need| {
            let g_over_b = g.div(&b)?;
            let gb = if need[1] { Some(g_over_b.mul(&y)?.neg()?.sum_to(b.shape())?) } else { None };
            Ok(vec![need[0].then(|| g_over_b.sum_to(&sa)).transpose()?, gb])
        }))
    }

    // ---- with a scalar ---------------------------------------------------------

    pub fn add_scalar(&self, s: f64) -> Result<Var> {
        Ok(unary(self, "add_scalar", self.tensor().add_scalar(s)?, |g| Ok(g.clone())))
    }

    pub fn mul_scalar(&self, s: f64) -> Result<Var> {
        Ok(unary(self, "mul_scalar", self.tensor().mul_scalar(s)?, move |g| g.mul_scalar(s)))
    }

    /// `self * mul + add`
    pub fn affine(&self, mul: f64, add: f64) -> Result<Var> {
        Ok(unary(self, "affine", self.tensor().affine(mul, add)?, move |g| g.mul_scalar(mul)))
    }

    // ---- unary -----------------------------------------------------------------

    pub fn neg(&self) -> Result<Var> {
        Ok(unary(self, "neg", self.tensor().neg()?, |g| g.neg()))
    }

    /// d exp(x) = exp(x) dx: reuses the output.
    pub fn exp(&self) -> Result<Var> {
        let y = self.tensor().exp()?;
        let saved = y.clone();
        Ok(unary(self, "exp", y, move |g| g.mul(&saved)))
    }

    pub fn log(&self) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "log", x.log()?, move |g| g.div(&x)))
    }

    /// d sqrt(x) = dx / (2 sqrt(x))
    pub fn sqrt(&self) -> Result<Var> {
        let y = self.tensor().sqrt()?;
        let saved = y.clone();
        Ok(unary(self, "sqrt", y, move |g| g.div(&saved)?.mul_scalar(0.5)))
    }

    pub fn sqr(&self) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "sqr", x.sqr()?, move |g| g.mul(&x)?.mul_scalar(2.0)))
    }

    /// d tanh(x) = (1 - y^2) dx
    pub fn tanh(&self) -> Result<Var> {
        let y = self.tensor().tanh()?;
        let saved = y.clone();
        Ok(unary(self, "tanh", y, move |g| g.mul(&saved.sqr()?.affine(-1.0, 1.0)?)))
    }

    /// d sigmoid(x) = y (1 - y) dx
    pub fn sigmoid(&self) -> Result<Var> {
        let y = self.tensor().sigmoid()?;
        let saved = y.clone();
        Ok(unary(self, "sigmoid", y, move |g| g.mul(&saved.affine(-1.0, 1.0)?.mul(&saved)?)))
    }

    /// silu(x) = x sigmoid(x); its derivative is one fused kernel (`Tensor::silu_backward`).
    pub fn silu(&self) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "silu", x.silu()?, move |g| x.silu_backward(g)))
    }

    /// The gradient passes where x > 0 (`Step`); at exactly 0 it is 0.
    pub fn relu(&self) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "relu", x.relu()?, move |g| g.mul(&x.unary(UnaryOp::Step)?)))
    }

    /// d|x| = sign(x) dx, with sign(0) = 0.
    pub fn abs(&self) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "abs", x.abs()?, move |g| {
            let sign = x.unary(UnaryOp::Step)?.sub(&x.neg()?.unary(UnaryOp::Step)?)?;
            g.mul(&sign)
        }))
    }

    pub fn sin(&self) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "sin", x.sin()?, move |g| g.mul(&x.cos()?)))
    }

    pub fn cos(&self) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "cos", x.cos()?, move |g| g.mul(&x.sin()?)?.neg()))
    }

    /// d x^e = e x^(e-1) dx
    pub fn powf(&self, e: f64) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "powf", x.powf(e)?, move |g| g.mul(&x.powf(e - 1.0)?.mul_scalar(e)?)))
    }

    /// The gradient passes where lo <= x <= hi.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Var> {
        let x = self.tensor().clone();
        Ok(unary(self, "clamp", x.clamp(lo, hi)?, move |g| {
            let inside = x.ge(&scalar_like(&x, lo)?)?.mul(&x.le(&scalar_like(&x, hi)?)?)?;
            g.mul(&inside)
        }))
    }

    /// Inverted dropout: zeroes each element with probability `p` and scales
    /// the survivors by 1/(1-p), so the expected output equals the input.
    /// The mask (drawn from `rng`, advancing it) is saved and the gradient
    /// goes through the same mask. `p == 0` returns `self` unchanged; the
    /// caller decides whether it is training.
    pub fn dropout(&self, p: f64, rng: &mut Rng) -> Result<Var> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::BadArgument { op: "dropout", msg: format!("probability {p} is outside [0, 1]") });
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let (out, mask) = self.tensor().dropout(p, rng)?;
        Ok(unary(self, "dropout", out, move |g| g.mul(&mask)))
    }
}

// ---- dtype conversion ----------------------------------------------------------

impl Var {
    /// The same values as `dtype`: the differentiable cast that mixed
    /// precision is built on (f32 master weights cast to f16/bf16 for the
    /// compute, half activations cast back to f32 for the loss). The rule
    /// casts the gradient back to the input's dtype, so an f32 parameter
    /// always receives an f32 gradient.
    ///
    /// Casting to the dtype a value already has returns it unchanged (no
    /// copy, no node). A cast to an integer dtype is not differentiable: its
    /// result is a constant.
    pub fn to_dtype(&self, dtype: tensor::DType) -> Result<Var> {
        let from = self.dtype();
        if from == dtype {
            return Ok(self.clone());
        }
        let out = self.tensor().to_dtype(dtype)?;
        if !dtype.is_float() || !from.is_float() {
            return Ok(Var::constant(out));
        }
        Ok(unary(self, "to_dtype", out, move |g| g.to_dtype(from)))
    }
}
