//! Checkpoints: round trips, PyTorch-compatible layout, clear errors, and
//! exact resumption of a training run.

use autograd::Var;
use nn::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tensor::{DType, Device, Rng, Tensor};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("petal-nn-ckpt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small conv net with dropout: conv -> norm -> silu -> dropout -> linear.
struct Net {
    conv: Conv2d,
    norm: GroupNorm,
    drop: Dropout,
    fc: Linear,
}

impl Net {
    fn new(s: &ParamStore) -> Net {
        let r = s.root();
        Net {
            conv: Conv2d::new(&r.pp("conv"), 2, 4, 3, Conv2dConfig::padded(1)).unwrap(),
            norm: GroupNorm::new(&r.pp("norm"), 2, 4).unwrap(),
            drop: Dropout::new(0.2).unwrap(),
            fc: Linear::new(&r.pp("fc"), 4 * 4 * 4, 3, true).unwrap(),
        }
    }
}

impl Module for Net {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        let h = self.conv.forward(x, ctx)?;
        let h = SiLU.forward(&self.norm.forward(&h, ctx)?, ctx)?;
        let h = self.drop.forward(&h, ctx)?;
        let n = h.dims()[0];
        self.fc.forward(&h.reshape([n, 64])?, ctx)
    }
}

fn store(seed: u64) -> ParamStore {
    ParamStore::new(Device::Cpu, DType::F32, Rng::new(seed))
}

fn batch(rng: &mut Rng) -> (Var, Var) {
    let x = Tensor::randn(0.0, 1.0, [4, 2, 4, 4], DType::F32, &Device::Cpu, rng).unwrap();
    let y = Tensor::randn(0.0, 1.0, [4, 3], DType::F32, &Device::Cpu, rng).unwrap();
    (Var::constant(x), Var::constant(y))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn save_then_load_gives_identical_outputs() {
    let dir = tmp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    let s = store(1);
    let net = Net::new(&s);
    let (x, _) = batch(&mut Rng::new(9));
    let before = net.forward(&x, &mut Ctx::eval()).unwrap();

    let mut ck = Checkpoint::new(&s);
    ck.set_meta("config", r#"{"preset":"tiny","lr":0.0001}"#);
    ck.set_meta("epoch", 12);
    ck.set_meta("step", 3456);
    ck.set_rng("rng", &Rng { key: u64::MAX, counter: 1 << 40 });
    save_checkpoint(&path, &ck).unwrap();
    assert!(!dir.join("model.safetensors.tmp").exists(), "temporary file left behind");

    let fresh = store(2);
    let net2 = Net::new(&fresh);
    assert_ne!(bits(net2.fc.weight.tensor()), bits(net.fc.weight.tensor()));
    let loaded = load_checkpoint(&path).unwrap();
    assert_eq!(loaded.load_into(&fresh, true).unwrap(), LoadReport::default());
    let after = net2.forward(&x, &mut Ctx::eval()).unwrap();
    assert_eq!(bits(before.tensor()), bits(after.tensor()));

    assert_eq!(loaded.meta("config"), Some(r#"{"preset":"tiny","lr":0.0001}"#));
    assert_eq!(loaded.meta_u64("epoch").unwrap(), Some(12));
    assert_eq!(loaded.meta_u64("step").unwrap(), Some(3456));
    assert_eq!(loaded.rng("rng").unwrap(), Some(Rng { key: u64::MAX, counter: 1 << 40 }));
    assert_eq!(loaded.rng("other").unwrap(), None);
    assert!(loaded.optim.is_none() && loaded.ema.is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn file_layout_is_pytorch_state_dict() {
    let dir = tmp_dir("layout");
    let path = dir.join("ck.safetensors");
    let s = store(1);
    let _net = Net::new(&s);
    let mut opt = Adam::new(&s, AdamConfig::adam(1e-3)).unwrap();
    let ema = Ema::new(&s, 0.999).unwrap();
    let (x, y) = batch(&mut Rng::new(1));
    opt.step(&_net.forward(&x, &mut Ctx::eval()).unwrap().mse(&y).unwrap().backward().unwrap()).unwrap();
    save_checkpoint(&path, &Checkpoint::new(&s).with_optimizer(&opt).with_ema(&ema)).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert!(names.contains(&"conv.weight") && names.contains(&"fc.bias"));
    assert!(names.contains(&"optim.conv.weight.m") && names.contains(&"optim.fc.bias.v"));
    assert!(names.contains(&"ema.norm.weight"));
    assert_eq!(names.len(), 6 * 4);
    let w = st.tensor("conv.weight").unwrap();
    assert_eq!((w.dtype(), w.shape()), (Dtype::F32, &[4usize, 2, 3, 3][..]));
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta.get("optim.step").map(String::as_str), Some("1"));
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A file as `safetensors.torch.save_file(model.state_dict(), path)` writes
/// it, in f16, bf16 or f64: loads into an f32 model with conversion.
#[test]
fn foreign_files_and_dtypes_load_with_conversion() {
    let dir = tmp_dir("foreign");
    let s = store(4);
    let _net = Net::new(&s);
    for dtype in [DType::F64, DType::F16, DType::BF16] {
        let path = dir.join(format!("{dtype}.safetensors"));
        let mut ck = Checkpoint::default();
        for (name, t) in s.tensors() {
            ck.model.insert(name, t.to_dtype(dtype).unwrap());
        }
        save_checkpoint(&path, &ck).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let want_dtype = match dtype {
            DType::F64 => Dtype::F64,
            DType::F16 => Dtype::F16,
            _ => Dtype::BF16,
        };
        assert_eq!(SafeTensors::deserialize(&bytes).unwrap().tensor("fc.weight").unwrap().dtype(), want_dtype);

        let loaded = load_checkpoint(&path).unwrap();
        assert_eq!(loaded.model["fc.weight"].dtype(), dtype);
        let target = store(5);
        let _net2 = Net::new(&target);
        loaded.load_into(&target, true).unwrap();
        for (name, t) in s.tensors() {
            let want = t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!(bits(target.get(&name).unwrap().tensor()), bits(&want), "{name} via {dtype}");
        }
    }

    // Written by another tool: only plain names, no metadata at all.
    let path = dir.join("plain.safetensors");
    let data: Vec<u8> = [1.5f32, -2.0, 0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![3], &data).unwrap();
    std::fs::write(&path, safetensors::serialize([("bias", view)], None).unwrap()).unwrap();
    let tiny = store(0);
    let b = tiny.root().param("bias", [3], Init::Const(0.0)).unwrap();
    load_checkpoint(&path).unwrap().load_into(&tiny, true).unwrap();
    assert_eq!(b.tensor().to_vec::<f32>().unwrap(), vec![1.5, -2.0, 0.25]);

    // A dtype we do not read is an error naming the file and the tensor.
    let path = dir.join("int64.safetensors");
    let data = vec![0u8; 16];
    let view = safetensors::tensor::TensorView::new(Dtype::I64, vec![2], &data).unwrap();
    std::fs::write(&path, safetensors::serialize([("steps", view)], None).unwrap()).unwrap();
    let err = load_checkpoint(&path).err().unwrap().to_string();
    assert!(err.contains("int64.safetensors") && err.contains("steps") && err.contains("I64"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn broken_files_give_errors_naming_the_file() {
    let dir = tmp_dir("broken");
    let s = store(1);
    let _net = Net::new(&s);
    let good = dir.join("good.safetensors");
    save_checkpoint(&good, &Checkpoint::new(&s)).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let missing = dir.join("nowhere.safetensors");
    let err = load_checkpoint(&missing).err().unwrap();
    assert!(matches!(err, NnError::Io { .. }));
    assert!(err.to_string().contains("nowhere.safetensors"), "{err}");

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.safetensors", bytes[..bytes.len() - 10].to_vec()),
        ("header_cut.safetensors", bytes[..20].to_vec()),
        ("tiny.safetensors", vec![1, 2, 3]),
        ("garbage.safetensors", b"this is not a safetensors file at all, just some text".to_vec()),
        ("empty.safetensors", Vec::new()),
        ("extra.safetensors", [bytes.clone(), vec![0; 7]].concat()),
        ("bad_json.safetensors", {
            let mut b = bytes.clone();
            b[8] = b'#';
            b
        }),
    ];
    for (name, content) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let err = load_checkpoint(&path).err().unwrap_or_else(|| panic!("{name} loaded"));
        let msg = err.to_string();
        assert!(matches!(err, NnError::Checkpoint { .. }), "{name}: {msg}");
        assert!(msg.contains(name), "{name}: {msg}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn misnamed_and_misshaped_tensors_are_all_listed() {
    let dir = tmp_dir("misnamed");
    let path = dir.join("renamed.safetensors");
    let s = store(1);
    let _net = Net::new(&s);
    let mut tensors = s.tensors();
    let w = tensors.remove("conv.weight").unwrap();
    tensors.insert("conv.wieght".into(), w);
    tensors.insert("fc.bias".into(), Tensor::zeros([5], DType::F32, &Device::Cpu).unwrap());
    tensors.insert("head.weight".into(), Tensor::zeros([1], DType::F32, &Device::Cpu).unwrap());
    save_checkpoint(&path, &Checkpoint { model: tensors, ..Default::default() }).unwrap();

    let target = store(2);
    let _net2 = Net::new(&target);
    let before = bits(target.get("fc.weight").unwrap().tensor());
    let ck = load_checkpoint(&path).unwrap();
    let err = ck.load_into(&target, true).err().unwrap();
    let msg = err.to_string();
    eprintln!("{msg}");
    for part in ["renamed.safetensors", "missing", "conv.weight", "unexpected", "conv.wieght", "head.weight", "fc.bias", "[3]", "[5]"] {
        assert!(msg.contains(part), "`{part}` not in: {msg}");
    }
    match err {
        NnError::Mismatch { missing, unexpected, misshaped, .. } => {
            assert_eq!(missing, ["conv.weight"]);
            assert_eq!(unexpected, ["conv.wieght", "head.weight"]);
            assert_eq!(misshaped, [("fc.bias".to_string(), vec![3], vec![5])]);
        }
        other => panic!("{other}"),
    }
    // Nothing was written by the failed load.
    assert_eq!(bits(target.get("fc.weight").unwrap().tensor()), before);

    // Non-strict: names may differ (reported), shapes still may not.
    assert!(ck.load_into(&target, false).is_err());
    let mut ck2 = ck.clone();
    ck2.model.remove("fc.bias");
    let report = ck2.load_into(&target, false).unwrap();
    assert_eq!(report.missing, ["conv.weight", "fc.bias"]);
    assert_eq!(report.unexpected, ["conv.wieght", "head.weight"]);
    assert_eq!(bits(target.get("fc.weight").unwrap().tensor()), bits(s.get("fc.weight").unwrap().tensor()));

    // Optimizer and EMA state missing from a file: errors naming it.
    let err = ck.load_optimizer(&mut Adam::new(&target, AdamConfig::default()).unwrap()).err().unwrap().to_string();
    assert!(err.contains("renamed.safetensors") && err.contains("optimizer"), "{err}");
    let err = ck.load_ema(&mut Ema::new(&target, 0.9).unwrap()).err().unwrap().to_string();
    assert!(err.contains("renamed.safetensors") && err.contains("EMA"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A training run: model, optimizer, EMA and the two generators.
struct Run {
    s: ParamStore,
    net: Net,
    opt: Adam,
    ema: Ema,
    ctx: Ctx,
    data: Rng,
}

impl Run {
    fn new(init_seed: u64, cfg: AdamConfig) -> Run {
        let s = store(init_seed);
        let net = Net::new(&s);
        let opt = Adam::new(&s, cfg).unwrap();
        let ema = Ema::new(&s, 0.9).unwrap();
        Run { s, net, opt, ema, ctx: Ctx::train(Rng::new(21)), data: Rng::new(31) }
    }

    /// One step: forward with dropout (drawing from `ctx`), clipping, Adam, EMA.
    fn step(&mut self, sched: &CosineAnnealing, step: u64) {
        let (x, y) = batch(&mut self.data);
        self.opt.set_lr(sched.lr(step));
        let loss = self.net.forward(&x, &mut self.ctx).unwrap().mse(&y).unwrap();
        let mut grads = loss.backward().unwrap();
        clip_grad_norm(&self.s, &mut grads, 1.0).unwrap();
        self.opt.step(&grads).unwrap();
        self.ema.update(&self.s).unwrap();
    }
}

#[test]
fn resumed_training_matches_uninterrupted_bit_for_bit() {
    let dir = tmp_dir("resume");
    let path = dir.join("run.safetensors");
    let sched = CosineAnnealing { base: 1e-2, min: 1e-4, total_steps: 6 };
    let cfg = AdamConfig { weight_decay: 0.01, ..AdamConfig::adamw(1e-2) };

    // Six steps straight.
    let mut straight = Run::new(11, cfg);
    for step in 0..6 {
        straight.step(&sched, step);
    }

    // Three steps, save, then three more in fresh objects.
    let mut first = Run::new(11, cfg);
    for step in 0..3 {
        first.step(&sched, step);
    }
    let mut ck = Checkpoint::new(&first.s).with_optimizer(&first.opt).with_ema(&first.ema);
    ck.set_meta("step", 3);
    ck.set_rng("dropout_rng", &first.ctx.rng);
    ck.set_rng("data_rng", &first.data);
    save_checkpoint(&path, &ck).unwrap();
    drop((first, ck));

    let ck = load_checkpoint(&path).unwrap();
    let mut resumed = Run::new(999, cfg); // different init: everything must come from the file
    ck.load_into(&resumed.s, true).unwrap();
    ck.load_optimizer(&mut resumed.opt).unwrap();
    ck.load_ema(&mut resumed.ema).unwrap();
    resumed.ctx = Ctx::train(ck.rng("dropout_rng").unwrap().unwrap());
    resumed.data = ck.rng("data_rng").unwrap().unwrap();
    for step in ck.meta_u64("step").unwrap().unwrap()..6 {
        resumed.step(&sched, step);
    }

    let (s, s2, ema, ema2, opt, opt2) = (&straight.s, &resumed.s, &straight.ema, &resumed.ema, &straight.opt, &resumed.opt);
    for ((name, a), (_, b)) in s.tensors().iter().zip(s2.tensors().iter()) {
        assert_eq!(bits(a), bits(b), "weights {name}");
    }
    for ((name, a), (_, b)) in ema.named().iter().zip(ema2.named().iter()) {
        assert_eq!(bits(a), bits(b), "ema {name}");
    }
    let (st, st2) = (opt.state(), opt2.state());
    assert_eq!(st.step, st2.step);
    assert_eq!(st.tensors.keys().collect::<Vec<_>>(), st2.tensors.keys().collect::<Vec<_>>());
    for (name, a) in &st.tensors {
        assert_eq!(bits(a), bits(&st2.tensors[name]), "optimizer {name}");
    }
    // And the run did move: the weights differ from their initial values.
    assert_ne!(bits(straight.net.fc.weight.tensor()), bits(Net::new(&store(11)).fc.weight.tensor()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sgd_state_and_per_parameter_steps_round_trip() {
    let dir = tmp_dir("sgd");
    let path = dir.join("sgd.safetensors");
    let s = store(1);
    let net = Net::new(&s);
    let mut sgd = Sgd::new(&s, SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) }).unwrap();
    let (x, y) = batch(&mut Rng::new(3));
    sgd.step(&net.forward(&x, &mut Ctx::eval()).unwrap().mse(&y).unwrap().backward().unwrap()).unwrap();
    save_checkpoint(&path, &Checkpoint::new(&s).with_optimizer(&sgd)).unwrap();
    let ck = load_checkpoint(&path).unwrap();
    assert!(ck.optim.as_ref().unwrap().tensors.contains_key("fc.weight.momentum_buffer"));
    let mut sgd2 = Sgd::new(&s, SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) }).unwrap();
    ck.load_optimizer(&mut sgd2).unwrap();
    assert_eq!(sgd2.state().step, 1);
    // Loading SGD state into Adam: every buffer is unexpected, and the file is named.
    let err = ck.load_optimizer(&mut Adam::new(&s, AdamConfig::default()).unwrap()).err().unwrap().to_string();
    assert!(err.contains("sgd.safetensors") && err.contains("fc.weight.momentum_buffer"), "{err}");

    // Per-parameter Adam steps survive a file.
    let mut st = OptimState { step: 5, ..Default::default() };
    st.param_steps.insert("fc.bias".into(), 2);
    for (name, t) in s.tensors() {
        st.tensors.insert(format!("{name}.m"), t.zeros_like().unwrap());
        st.tensors.insert(format!("{name}.v"), t.zeros_like().unwrap());
    }
    save_checkpoint(&path, &Checkpoint { optim: Some(st), ..Checkpoint::new(&s) }).unwrap();
    let mut adam = Adam::new(&s, AdamConfig::default()).unwrap();
    load_checkpoint(&path).unwrap().load_optimizer(&mut adam).unwrap();
    let st = adam.state();
    assert_eq!((st.step, st.param_steps.clone()), (5, BTreeMap::from([("fc.bias".to_string(), 2)])));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn saving_replaces_an_existing_file_and_rejects_reserved_names() {
    let dir = tmp_dir("replace");
    let path = dir.join("ck.safetensors");
    std::fs::write(&path, b"old contents").unwrap();
    let s = store(1);
    let _net = Net::new(&s);
    save_checkpoint(&path, &Checkpoint::new(&s)).unwrap();
    load_checkpoint(&path).unwrap().load_into(&s, true).unwrap();

    let mut ck = Checkpoint::default();
    ck.model.insert("ema.x".into(), Tensor::zeros([1], DType::F32, &Device::Cpu).unwrap());
    let err = save_checkpoint(dir.join("bad.safetensors"), &ck).err().unwrap().to_string();
    assert!(err.contains("bad.safetensors") && err.contains("ema.x"), "{err}");

    let err = save_checkpoint(dir.join("no_such_dir").join("x.safetensors"), &Checkpoint::new(&s)).err().unwrap().to_string();
    assert!(err.contains("x.safetensors"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A checkpoint with every part a training run writes: weights, Adam state
/// with per-parameter steps, EMA weights, metadata and a generator state.
fn full_checkpoint_bytes() -> Vec<u8> {
    let dir = tmp_dir("fuzz-source");
    let s = store(5);
    let _net = Net::new(&s);
    let opt = Adam::new(&s, AdamConfig::adam(1e-3)).unwrap();
    let ema = Ema::new(&s, 0.9).unwrap();
    let mut ck = Checkpoint::new(&s).with_optimizer(&opt).with_ema(&ema);
    ck.set_meta("step", 3);
    ck.set_rng("train_rng", &Rng::new(9));
    let path = dir.join("full.safetensors");
    save_checkpoint(&path, &ck).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    bytes
}

/// Loads `bytes` as a checkpoint and, if that works, uses every part of it
/// the way a resumed run does. Errors are fine; a panic is a bug.
fn load_and_use(bytes: &[u8], path: &std::path::Path) -> std::result::Result<(), String> {
    std::fs::write(path, bytes).unwrap();
    let ck = load_checkpoint(path).map_err(|e| e.to_string())?;
    let s = store(5);
    let _net = Net::new(&s);
    let mut opt = Adam::new(&s, AdamConfig::adam(1e-3)).unwrap();
    let mut ema = Ema::new(&s, 0.9).unwrap();
    let _ = ck.meta_u64("step");
    let _ = ck.rng("train_rng");
    ck.load_into(&s, true).map_err(|e| e.to_string())?;
    ck.load_optimizer(&mut opt).map_err(|e| e.to_string())?;
    ck.load_ema(&mut ema).map_err(|e| e.to_string())?;
    Ok(())
}

mod corrupted {
    use super::*;
    use proptest::prelude::*;

    /// What to do to a good file.
    #[derive(Debug, Clone)]
    enum Corruption {
        /// Cut the file to this fraction of its length.
        Truncate(f64),
        /// Overwrite bytes at these fractions of the length with these values.
        Overwrite(Vec<(f64, u8)>),
        /// Overwrite bytes of the JSON header only (where damage matters most).
        Header(Vec<(f64, u8)>),
        /// A different 8-byte header length.
        HeaderLength(u64),
    }

    fn corruption() -> impl Strategy<Value = Corruption> {
        let edits = || prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..8);
        prop_oneof![
            (0.0..1.0f64).prop_map(Corruption::Truncate),
            edits().prop_map(Corruption::Overwrite),
            edits().prop_map(Corruption::Header),
            any::<u64>().prop_map(Corruption::HeaderLength),
        ]
    }

    fn apply(good: &[u8], c: &Corruption) -> Vec<u8> {
        let mut b = good.to_vec();
        let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len - 1);
        match c {
            Corruption::Truncate(f) => b.truncate(at(*f, good.len())),
            Corruption::Overwrite(edits) => edits.iter().for_each(|&(f, v)| b[at(f, good.len())] = v),
            Corruption::Header(edits) => edits.iter().for_each(|&(f, v)| b[8 + at(f, header_len)] = v),
            Corruption::HeaderLength(n) => b[..8].copy_from_slice(&n.to_le_bytes()),
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn corrupted_checkpoints_give_errors_never_panics(c in corruption()) {
            let good = full_checkpoint_bytes();
            let bytes = apply(&good, &c);
            let dir = tmp_dir("fuzz");
            let path = dir.join(format!("corrupt-{}.safetensors", std::thread::current().name().unwrap_or("t").replace("::", "-")));
            let outcome = std::panic::catch_unwind(|| load_and_use(&bytes, &path));
            let _ = std::fs::remove_file(&path);
            let result = outcome.map_err(|_| TestCaseError::fail(format!("panicked on {c:?}")))?;
            match (&c, result) {
                // A shorter file or a different header length never loads.
                (Corruption::Truncate(_) | Corruption::HeaderLength(_), Ok(())) if bytes != good => {
                    return Err(TestCaseError::fail(format!("{c:?} loaded")));
                }
                (_, Err(msg)) => prop_assert!(msg.contains("corrupt-"), "the error names the file: {msg}"),
                _ => {}
            }
        }
    }
}

#[test]
fn batch_norm_running_statistics_travel_with_the_weights() {
    let dir = tmp_dir("buffers");
    let s = store(6);
    let bn = BatchNorm2d::new(&s.root().pp("bn"), 2).unwrap();
    let x = Var::constant(Tensor::randn(1.0, 2.0, [3, 2, 2, 2], DType::F32, &Device::Cpu, &mut Rng::new(1)).unwrap());
    bn.forward(&x, &mut Ctx::train(Rng::new(0))).unwrap();
    // The average tracks parameters only, so building one over a store with buffers works.
    let ema = Ema::new(&s, 0.9).unwrap();
    assert_eq!(ema.named().len(), 2);

    let path = dir.join("bn.safetensors");
    save_checkpoint(&path, &Checkpoint::new(&s).with_ema(&ema)).unwrap();
    let target = store(7);
    let bn2 = BatchNorm2d::new(&target.root().pp("bn"), 2).unwrap();
    let loaded = load_checkpoint(&path).unwrap();
    loaded.load_into(&target, true).unwrap();
    assert_eq!(bits(&bn2.running_mean), bits(&bn.running_mean));
    assert_eq!(bits(&bn2.running_var), bits(&bn.running_var));
    assert_ne!(bn.running_mean.to_vec::<f32>().unwrap(), vec![0.0, 0.0], "training moved the running mean");
    let y = |b: &BatchNorm2d| bits(b.forward(&x, &mut Ctx::eval()).unwrap().tensor());
    assert_eq!(y(&bn2), y(&bn));

    // A file without the statistics is missing them, by name.
    let mut partial = Checkpoint::default();
    partial.model = s.tensors().into_iter().filter(|(k, _)| !k.contains("running")).collect();
    let report = partial.load_into(&target, false).unwrap();
    assert_eq!(report.missing, ["bn.running_mean", "bn.running_var"]);
    std::fs::remove_dir_all(dir).unwrap();
}
