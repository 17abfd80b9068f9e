//! The examples that need the whole stack, run as tests so they cannot rot:
//! each example file is compiled here as a module and its core is called
//! (the `tape` and `custom_op` examples are run by `autograd/tests/examples.rs`).

#[allow(dead_code)]
#[path = "../examples/two_moons.rs"]
mod two_moons;

use tensor::Rng;

#[test]
fn two_moons_learns_and_draws_its_boundary() {
    let (model, acc) = two_moons::train(300, 0).unwrap();
    assert!(acc > 0.95, "accuracy {acc} on unseen points");

    let (points, labels) = two_moons::two_moons(50, 0.1, &mut Rng::new(1)).unwrap();
    let img = two_moons::render(&model, &points, &labels, 120).unwrap();
    assert_eq!(img.dimensions(), (120, 75));
    // Both classes are painted: some pixels lean blue, some orange.
    let (blueish, orangeish) = img.pixels().fold((0, 0), |(b, o), p| (b + (p[2] > p[0]) as usize, o + (p[0] > p[2]) as usize));
    assert!(blueish > 1000 && orangeish > 1000, "{blueish} blue-ish and {orangeish} orange-ish pixels");
    let path = std::env::temp_dir().join(format!("petal-two-moons-{}.png", std::process::id()));
    img.save(&path).unwrap();
    assert_eq!(image::open(&path).unwrap().to_rgb8().dimensions(), (120, 75));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn two_moons_data_has_both_classes_in_their_places() {
    let (points, labels) = two_moons::two_moons(100, 0.0, &mut Rng::new(3)).unwrap();
    assert_eq!((points.len(), labels.len()), (200, 100));
    for (xy, label) in points.chunks(2).zip(&labels) {
        // Without noise, the upper moon lies on the unit circle and the lower
        // one on the unit circle centred at (1, 0.5).
        let (cx, cy) = if *label > 0.0 { (0.0, 0.0) } else { (1.0, 0.5) };
        let r = ((xy[0] - cx).powi(2) + (xy[1] - cy).powi(2)).sqrt();
        assert!((r - 1.0).abs() < 1e-5, "point {xy:?} label {label} radius {r}");
    }
    assert_eq!(labels.iter().filter(|l| **l > 0.0).count(), 50);
}
