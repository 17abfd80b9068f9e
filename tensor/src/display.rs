//! Printing: NumPy's style for small tensors, a summary with `...` for big
//! ones (the first and last three entries of each long dim).

use crate::Tensor;
use std::fmt;

const SUMMARISE_ABOVE: usize = 1000;
const EDGE: usize = 3;

fn format_value(v: f64, integer: bool) -> String {
    if integer {
        format!("{}", v as i64)
    } else if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-4) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

fn write_dim(
    out: &mut String,
    values: &[f64],
    dims: &[usize],
    strides: &[usize],
    offset: usize,
    summarise: bool,
    width: usize,
    integer: bool,
    depth: usize,
) {
    out.push('[');
    let n = dims[0];
    let indices: Vec<Option<usize>> = if summarise && n > 2 * EDGE {
        (0..EDGE).map(Some).chain([None]).chain((n - EDGE..n).map(Some)).collect()
    } else {
        (0..n).map(Some).collect()
    };
    for (pos, idx) in indices.iter().enumerate() {
        if pos > 0 {
            if dims.len() == 1 {
                out.push_str(", ");
            } else {
                out.push_str(",\n");
                if dims.len() > 2 {
                    out.push('\n');
                }
                out.push_str(&" ".repeat(depth + 1 + "tensor(".len()));
            }
        }
        match idx {
            None => out.push_str("..."),
            Some(i) if dims.len() == 1 => {
                let s = format_value(values[offset + i * strides[0]], integer);
                out.push_str(&format!("{s:>width$}"));
            }
            Some(i) => write_dim(out, values, &dims[1..], &strides[1..], offset + i * strides[0], summarise, width, integer, depth + 1),
        }
    }
    out.push(']');
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = match self.to_f64_vec() {
            Ok(v) => v,
            Err(e) => return write!(f, "tensor(<unreadable: {e}>)"),
        };
        let integer = !self.dtype().is_float();
        let body = if self.rank() == 0 {
            format_value(values[0], integer)
        } else {
            let summarise = self.elem_count() > SUMMARISE_ABOVE;
            let width = values.iter().map(|&v| format_value(v, integer).len()).max().unwrap_or(1);
            let mut s = String::new();
            write_dim(&mut s, &values, self.dims(), &self.shape().contiguous_strides(), 0, summarise, width, integer, 0);
            s
        };
        write!(f, "tensor({body}, shape={}, dtype={}, device={})", self.shape(), self.dtype(), self.device())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor[{}; {}; {}]", self.shape(), self.dtype(), self.device())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Device, Tensor};

    #[test]
    fn small_tensors_print_like_numpy() {
        let t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 4.0, 5.0, 6.0], [2, 3], &Device::Cpu).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([[ 1.0000,  2.5000, -3.0000],\n        [ 4.0000,  5.0000,  6.0000]], shape=[2, 3], dtype=f32, device=cpu)"
        );
    }

    #[test]
    fn big_tensors_are_summarised() {
        let t = Tensor::arange(0.0, 5000.0, 1.0, &Device::Cpu).unwrap();
        let s = t.to_string();
        assert!(s.contains("..."), "{s}");
        assert!(s.len() < 200, "{s}");
    }
}
