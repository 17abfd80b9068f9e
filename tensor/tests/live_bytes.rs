//! `live_bytes()` counts the bytes of every storage alive. The counter is
//! global, so this file holds a single test: no other test thread creates
//! tensors while it runs.

use tensor::{live_bytes, peak_bytes, reset_peak_bytes, DType, Device, Tensor};

#[test]
fn live_bytes_follow_storages_not_views() {
    let cpu = Device::Cpu;
    let before = live_bytes();
    reset_peak_bytes();

    let t = Tensor::zeros([1000, 250], DType::F32, &cpu).unwrap();
    assert_eq!(live_bytes(), before + 1_000_000, "a [1000, 250] f32 tensor holds 1e6 bytes");

    // Views and clones share the storage: no new bytes.
    let views = [t.clone(), t.narrow(0, 10, 20).unwrap(), t.t().unwrap(), t.reshape([250, 1000]).unwrap(), t.unsqueeze(0).unwrap()];
    assert_eq!(live_bytes(), before + 1_000_000);

    // A copy, a result and another dtype each hold new storage.
    let c = t.copy().unwrap();
    let h = t.to_dtype(DType::F16).unwrap();
    assert_eq!(live_bytes(), before + 2_000_000 + 500_000);
    let s = t.add_scalar(1.0).unwrap();
    assert_eq!(live_bytes(), before + 3_500_000);
    assert!(peak_bytes() >= before + 3_500_000);

    drop((c, h, s));
    assert_eq!(live_bytes(), before + 1_000_000);
    // The storage outlives the tensor while a view holds it.
    drop(t);
    assert_eq!(live_bytes(), before + 1_000_000);
    drop(views);
    assert_eq!(live_bytes(), before, "every byte is returned once the last view is dropped");
    assert!(peak_bytes() >= before + 3_500_000, "the peak remembers the high-water mark");
    reset_peak_bytes();
    assert_eq!(peak_bytes(), before);
}
