//! Checking backward rules against finite differences.
//!
//! `check_gradients` turns `f`'s output into a scalar with fixed random
//! weights, `L = sum(w * f(x))`, so every output element matters (a plain
//! sum would hide errors: the sum of a normalised tensor does not depend on
//! its input at all). It then compares the tape's gradient of `L` with
//! central differences `(L(x + h e_j) - L(x - h e_j)) / 2h`, element by
//! element, with `h = eps * max(|x_j|, 1)`. Use f64 inputs and
//! `eps` around 1e-6: the truncation error is O(h²) and the rounding error
//! O(1e-16 / h), both far below 1e-6 relative.

use crate::{no_grad, Var};
use tensor::{Result, Rng, Tensor};

/// The floor of the denominator of the relative error, so that an exactly
/// zero gradient compares as zero error instead of 0/0.
const TINY: f64 = 1e-12;

/// The largest relative error `‖analytic − numeric‖ / max(‖numeric‖, tiny)`
/// over the inputs of `f`, each differentiated as a parameter. The numeric
/// side evaluates `f` under `no_grad`.
///
/// ```
/// use autograd::{check_gradients, Var};
/// use autograd::tensor::{Device, Tensor};
///
/// // f(a, b) = sum over rows of (a @ b) * tanh(a @ b)
/// let a = Tensor::from_vec(vec![0.1f64, -0.4, 0.7, 0.3, 0.2, -0.9], [2, 3], &Device::Cpu)?;
/// let b = Tensor::from_vec(vec![0.5f64, -1.0, 0.25, 0.8, -0.6, 0.1], [3, 2], &Device::Cpu)?;
/// let f = |v: &[Var]| {
///     let ab = v[0].matmul(&v[1])?;
///     ab.mul(&ab.tanh()?)?.sum(&[1], false)
/// };
/// assert!(check_gradients(f, &[a, b], 1e-6)? < 1e-7);
/// # Ok::<(), autograd::tensor::Error>(())
/// ```
pub fn check_gradients(f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor], eps: f64) -> Result<f64> {
    let params: Vec<Var> = inputs.iter().map(|t| Var::param(t.clone())).collect();
    let out = f(&params)?;
    let weights = Tensor::randn(0.0, 1.0, out.shape(), out.dtype(), out.device(), &mut Rng::new(0x5eed))?;
    let loss = out.mul(&Var::constant(weights.clone()))?.sum_all()?;
    drop(out);
    let grads = loss.backward()?;

    let eval = |xs: &[Tensor]| -> Result<f64> {
        no_grad(|| {
            let vars: Vec<Var> = xs.iter().map(|t| Var::constant(t.clone())).collect();
            f(&vars)?.tensor().mul(&weights)?.sum_all()?.to_scalar()
        })
    };

    let mut worst: f64 = 0.0;
    let mut xs = inputs.to_vec();
    for (i, x) in inputs.iter().enumerate() {
        let base = x.to_f64_vec()?;
        let analytic = match grads.get(&params[i]) {
            Some(g) => g.to_f64_vec()?,
            None => vec![0.0; base.len()],
        };
        let with = |j: usize, v: f64| -> Result<Tensor> {
            let mut data = base.clone();
            data[j] = v;
            Tensor::from_vec(data, x.shape(), x.device())?.to_dtype(x.dtype())
        };
        let (mut diff2, mut norm2) = (0.0, 0.0);
        for j in 0..base.len() {
            let h = eps * base[j].abs().max(1.0);
            xs[i] = with(j, base[j] + h)?;
            let plus = eval(&xs)?;
            xs[i] = with(j, base[j] - h)?;
            let minus = eval(&xs)?;
            let numeric = (plus - minus) / (2.0 * h);
            diff2 += (analytic[j] - numeric).powi(2);
            norm2 += numeric * numeric;
        }
        xs[i] = x.clone();
        worst = worst.max(diff2.sqrt() / norm2.sqrt().max(TINY));
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::Device;

    /// The checker itself must catch a wrong rule.
    #[test]
    fn catches_a_wrong_rule() {
        let x = Tensor::from_vec(vec![0.3f64, -1.2, 2.0], 3, &Device::Cpu).unwrap();
        // cos whose rule forgot the minus sign: a plausible slip.
        let wrong_cos = |v: &[Var]| -> Result<Var> {
            let t = v[0].tensor().clone();
            Ok(Var::from_op("wrong_cos", t.cos()?, &[&v[0]], move |g, _| Ok(vec![Some(g.mul(&t.sin()?)?)])))
        };
        let err = check_gradients(wrong_cos, std::slice::from_ref(&x), 1e-6).unwrap();
        assert!(err > 0.5, "missed a sign error: {err}");
        let right = check_gradients(|v| v[0].cos(), &[x], 1e-6).unwrap();
        assert!(right < 1e-8, "{right}");
    }
}
