//! Looking at the tape: a text listing and a Graphviz export.
//!
//! Both list the values reachable from a `Var` in id order (the Wengert
//! list, see `tape.rs`), renumbered `v0, v1, ...`. After `backward` the
//! tape is gone and only the final value remains.

use crate::var::{Var, VarId};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Every value reachable from `root`, leaves included, sorted by id.
fn reachable(root: &Var) -> Vec<(Var, Vec<Var>)> {
    let mut seen = HashSet::new();
    let mut stack = vec![root.clone()];
    let mut out = Vec::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v.id()) {
            continue;
        }
        let inputs = v.node().map(|n| n.inputs()).unwrap_or_default();
        stack.extend(inputs.iter().cloned());
        out.push((v, inputs));
    }
    out.sort_by_key(|(v, _)| v.id());
    out
}

fn kind(v: &Var) -> &'static str {
    match (v.node(), v.requires_grad()) {
        (Some(n), _) => n.op(),
        (None, true) => "param",
        (None, false) => "constant",
    }
}

fn names(list: &[(Var, Vec<Var>)]) -> HashMap<VarId, String> {
    list.iter().enumerate().map(|(i, (v, _))| (v.id(), format!("v{i}"))).collect()
}

/// The name (`v0, v1, ...`) `tape_summary` gives each value behind `root`.
pub(crate) fn tape_names(root: &Var) -> HashMap<VarId, String> {
    names(&reachable(root))
}

impl Var {
    /// The tape behind this value, one line per value in execution order:
    /// `v2 = conv2d(v0 [2, 3, 8, 8], v1 [4, 3, 3, 3]) -> [2, 4, 8, 8]`.
    ///
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// let x = Var::param(Tensor::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu)?);
    /// let y = x.tanh()?.sum_all()?;
    /// assert_eq!(y.tape_summary(), "v0 = param [2]\nv1 = tanh(v0 [2]) -> [2]\nv2 = sum(v1 [2]) -> []\n");
    /// # Ok::<(), autograd::tensor::Error>(())
    /// ```
    pub fn tape_summary(&self) -> String {
        let list = reachable(self);
        let names = names(&list);
        let mut s = String::new();
        for (v, inputs) in &list {
            let name = &names[&v.id()];
            if v.node().is_none() {
                let _ = writeln!(s, "{name} = {} {:?}", kind(v), v.dims());
            } else {
                let args: Vec<String> = inputs.iter().map(|i| format!("{} {:?}", names[&i.id()], i.dims())).collect();
                let _ = writeln!(s, "{name} = {}({}) -> {:?}", kind(v), args.join(", "), v.dims());
            }
        }
        s
    }

    /// The tape as a Graphviz digraph (`dot -Tsvg`): boxes for leaves
    /// (parameters filled, constants dashed), ellipses for ops, edges from
    /// inputs to results.
    ///
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// let a = Var::param(Tensor::from_vec(vec![1.0f32], 1, &Device::Cpu)?);
    /// let b = Var::constant(Tensor::from_vec(vec![2.0f32], 1, &Device::Cpu)?);
    /// let dot = a.mul(&b)?.to_dot();
    /// assert!(dot.contains("v0 -> v2;") && dot.contains("v1 -> v2;"));
    /// std::fs::write(std::env::temp_dir().join("petal-doc-tape.dot"), dot)?; // then: dot -Tsvg
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_dot(&self) -> String {
        let list = reachable(self);
        let names = names(&list);
        let mut s = String::from("digraph tape {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n");
        for (v, _) in &list {
            let style = match (v.node(), v.requires_grad()) {
                (Some(_), _) => "shape=ellipse",
                (None, true) => "shape=box, style=filled, fillcolor=lightblue",
                (None, false) => "shape=box, style=dashed",
            };
            let _ = writeln!(s, "  {} [label=\"{}\\n{:?}\", {style}];", names[&v.id()], kind(v), v.dims());
        }
        for (v, inputs) in &list {
            for i in inputs {
                let _ = writeln!(s, "  {} -> {};", names[&i.id()], names[&v.id()]);
            }
        }
        s.push_str("}\n");
        s
    }
}
