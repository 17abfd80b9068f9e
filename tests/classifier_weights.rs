//! The committed flower classifier, the yardstick of `ddpm score`: its
//! weights must load into today's network, and on the Oxford Flowers 102
//! validation photos it must still reach the accuracy its file records
//! (at least 70% top-1).
//!
//! Where the photos are found, and what happens without them, is
//! `common::flowers_valid`.

mod common;

use ddpm::classifier::{accuracy, default_weights, Classifier, LabelledImages, INPUT_SIZE};
use ddpm::data::{CorruptPolicy, ImageFolder};
use tensor::Device;

const TARGET: f64 = 0.70;

#[test]
fn committed_classifier_reaches_its_recorded_accuracy() {
    let path = default_weights();
    let model = Classifier::load(&path, &Device::Cpu).unwrap();
    let ck = nn::load_checkpoint(&path).unwrap();
    let recorded: f64 = ck.meta("valid_top1").expect("the weights record their accuracy").parse().unwrap();
    assert!(recorded >= TARGET, "{} records {:.2}% top-1, under the {:.0}% target", path.display(), 100.0 * recorded, 100.0 * TARGET);
    assert!(ck.meta("command").is_some_and(|c| c.contains("classifier")), "the weights record the command that made them");

    let Some(dir) = common::flowers_valid() else { return };
    let valid = LabelledImages::new(ImageFolder::open(&dir, INPUT_SIZE, CorruptPolicy::Fail).unwrap()).unwrap();
    assert_eq!(valid.class_names.len(), model.classes);
    let measured = accuracy(&model, &valid, 128, &Device::Cpu).unwrap();
    // Another CPU may round a few logits differently: allow two images.
    let slack = 2.0 / valid.images.len() as f64;
    assert!((measured - recorded).abs() <= slack, "measured {:.2}% top-1 on {}, the file records {:.2}%", 100.0 * measured, dir.display(), 100.0 * recorded);
}
