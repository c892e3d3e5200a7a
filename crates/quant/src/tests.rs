use std::path::Path;

use burn::prelude::*;
use burn::tensor::Distribution;
use models::{Classifier, ForwardHook, HookedView, InputShape, Model, ModelSpec, Tap};

use crate::config::QuantConfig;
use crate::fake::{channel_scales, fake_quant_weight, qmax_symmetric, ActivationGrid};
use crate::int_file::{self, IntFile};
use crate::quantized_model::QuantizedModel;
use crate::quantizer::{percentiles, FakeQuant};

/// The device's random generator is one per process, and the tests here seed it and draw
/// their models and data from it: they run one at a time, so that each one's data is what its
/// seed says. Run in parallel, their draws interleaved and the data changed from run to run,
/// and with it which values land on rounding ties (a rare mismatch between the integer file
/// and its simulation, or ONNX Runtime, at a half level).
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn device() -> Device {
    Device::flex()
}

const MNIST: InputShape = InputShape {
    channels: 1,
    height: 28,
    width: 28,
    classes: 10,
};

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn config(toml: &str) -> QuantConfig {
    toml::from_str(toml).unwrap()
}

#[test]
fn the_straight_through_gradient_is_the_identity_inside_the_range_and_zero_outside() {
    let _rng = one_at_a_time();
    let d = device().autodiff();
    // A grid over [-1, 3]: -2 and 5 are clamped, the rest inside.
    let grid = ActivationGrid::from_range(-1.0, 3.0, 8);
    let (lo, hi) = grid.limits();
    let x = Tensor::<1>::from_floats([-2.0, lo, -0.3, 0.0, 1.234, hi, 5.0], &d).require_grad();
    let grads = grid.fake_quant(x.clone()).sum().backward();
    let grad = host(x.grad(&grads).unwrap());
    assert_eq!(grad, vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);

    // Weights: the scale comes from max|w|, so every weight is inside and passes its gradient,
    // the largest of each channel included (scale * qmax may round just below it): many draws.
    for seed in 0..50 {
        d.seed(seed);
        let w = Tensor::<2>::random([4, 9], Distribution::Normal(0.0, 1.0), &d).require_grad();
        let grads = (fake_quant_weight(w.clone(), 4) * 3.0).sum().backward();
        let grad = host(w.grad(&grads).unwrap());
        assert!(grad.iter().all(|&g| g == 3.0), "seed {seed}: {grad:?}");
    }
}

#[test]
fn quantize_then_dequantize_errs_by_at_most_half_a_step() {
    let _rng = one_at_a_time();
    for bits in [2, 4, 8] {
        let w = Tensor::<2>::random([8, 50], Distribution::Normal(0.0, 0.3), &device());
        let scales = host(channel_scales(w.clone(), bits));
        let error = host((fake_quant_weight(w.clone(), bits) - w).abs());
        for (i, e) in error.iter().enumerate() {
            let half = scales[i / 50] / 2.0;
            assert!(*e <= half * (1.0 + 1e-5), "{bits} bits: {e} > {half}");
        }
        let grid = ActivationGrid::from_range(-0.7, 2.5, bits);
        let (lo, hi) = grid.limits();
        let x = Tensor::<1>::random(
            [1000],
            Distribution::Uniform(lo as f64, hi as f64),
            &device(),
        );
        let error = host((grid.fake_quant(x.clone()) - x).abs());
        let worst = error.iter().fold(0f32, |m, e| m.max(*e));
        assert!(worst <= grid.scale / 2.0 * (1.0 + 1e-5), "{bits}: {worst}");
    }
}

#[test]
fn activation_grids_represent_zero_exactly() {
    let _rng = one_at_a_time();
    for (min, max) in [(-0.37, 5.1), (0.2, 3.0), (-4.0, -1.0)] {
        let grid = ActivationGrid::from_range(min, max, 8);
        let zero = host(grid.fake_quant(Tensor::<1>::zeros([1], &device())));
        assert_eq!(zero, vec![0.0], "{min}..{max}");
    }
}

#[test]
fn per_channel_scales_are_per_channel() {
    let _rng = one_at_a_time();
    // Rows of very different magnitude each get their own scale: max|row| / qmax.
    let rows = [[0.01f32, -0.02, 0.005], [3.0, -7.0, 1.0], [0.0, 0.0, 0.0]];
    let w = Tensor::<2>::from_floats(rows, &device());
    let scales = host(channel_scales(w.clone(), 8));
    assert_eq!(scales[0], 0.02 / 127.0);
    assert_eq!(scales[1], 7.0 / 127.0);
    // The small row keeps its resolution: a per-tensor scale would round it all to zero.
    let q = host(fake_quant_weight(w, 8));
    assert!(q[..3].iter().all(|v| *v != 0.0));
    assert_eq!(q[6..], [0.0, 0.0, 0.0]);
    assert_eq!(qmax_symmetric(2), 1.0);
}

#[test]
fn percentiles_pick_the_tails() {
    let _rng = one_at_a_time();
    let mut values: Vec<f32> = (0..=1000).map(|i| i as f32).collect();
    assert_eq!(percentiles(&mut values, 99.0), (10.0, 990.0));
    assert_eq!(percentiles(&mut [], 99.0), (0.0, 0.0));
}

fn lenet() -> Model {
    let spec: ModelSpec = toml::from_str("kind = \"lenet5\"").unwrap();
    device().seed(5);
    Model::new(&spec, &MNIST, &device()).unwrap()
}

/// A LeNet-5 quantizer with the given settings, calibrated on random images.
fn calibrated(model: &Model, toml: &str) -> FakeQuant {
    let quant = FakeQuant::new(&config(toml), crate::config::weight_layers(model).keys());
    quant.set_fold(true);
    for _ in 0..3 {
        let x = Tensor::<4>::random([8, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device());
        model.forward_tapped(x, &mut Tap::hooked(&quant, true));
    }
    quant
}

#[test]
fn an_exported_file_round_trips_bit_for_bit_and_computes_what_the_quantizer_computed() {
    let _rng = one_at_a_time();
    let model = lenet();
    for toml in ["bits = 8", "bits = 4\nlayers = { conv1 = 8 }", "bits = 2"] {
        let quant = calibrated(&model, toml);
        let bytes = int_file::export(&model, &quant, &MNIST).unwrap().to_bytes();
        let path = Path::new("test.qnt");
        let (decoded, _) = IntFile::from_bytes(&bytes, path, &MNIST, &device()).unwrap();
        assert_eq!(decoded.to_bytes(), bytes, "{toml}");

        let loaded = QuantizedModel::from_bytes(&bytes, path, &MNIST, &device()).unwrap();
        let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device());
        let in_memory = host(
            HookedView {
                model: &model,
                hook: &quant,
            }
            .classify(x.clone()),
        );
        let from_file = host(loaded.classify(x));
        assert_eq!(in_memory, from_file, "{toml}");
    }
}

#[test]
fn low_bit_files_are_smaller() {
    let _rng = one_at_a_time();
    let model = lenet();
    let size = |toml: &str| {
        let quant = calibrated(&model, toml);
        int_file::export(&model, &quant, &MNIST)
            .unwrap()
            .to_bytes()
            .len()
    };
    let float = models::file::to_bytes(&model).unwrap().len();
    let (b8, b4, b2) = (size("bits = 8"), size("bits = 4"), size("bits = 2"));
    assert!(b8 * 100 <= float * 27, "{b8} of {float}");
    assert!(b4 * 100 <= float * 15, "{b4} of {float}");
    assert!(b2 < b4 && b4 < b8);
    let half = crate::half_file::to_bytes(&model, &MNIST).len();
    assert!(half * 100 <= float * 52, "{half} of {float}");
}

#[test]
fn a_half_file_loads_the_rounded_weights() {
    let _rng = one_at_a_time();
    let model = lenet();
    let bytes = crate::half_file::to_bytes(&model, &MNIST);
    let loaded =
        crate::half_file::from_bytes(&bytes, Path::new("m.f16"), &MNIST, &device()).unwrap();
    let original = models::params::values(&model, |_| true);
    let widened = models::params::values(&loaded, |_| true);
    for (path, t) in &original {
        for (a, b) in t.values.iter().zip(&widened[path].values) {
            assert_eq!(half::f16::from_f32(*a).to_f32(), *b, "{path}");
        }
    }
}

#[test]
fn corrupt_or_truncated_exports_are_clear_errors() {
    let _rng = one_at_a_time();
    let model = lenet();
    let quant = calibrated(&model, "bits = 8");
    let good = int_file::export(&model, &quant, &MNIST).unwrap().to_bytes();
    let half = crate::half_file::to_bytes(&model, &MNIST);
    let path = Path::new("m.qnt");
    let load = |bytes: &[u8]| QuantizedModel::from_bytes(bytes, path, &MNIST, &device()).err();
    let load_half =
        |bytes: &[u8]| crate::half_file::from_bytes(bytes, path, &MNIST, &device()).err();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    for (name, error) in [
        ("flipped", load(&flipped)),
        ("truncated", load(&good[..good.len() - 100])),
        ("empty", load(&[])),
        ("half as int", load(&half)),
        ("half truncated", load_half(&half[..half.len() / 2])),
    ] {
        let message = error.unwrap_or_else(|| panic!("{name} loaded")).to_string();
        assert!(
            message.contains("checksum") || message.contains("not "),
            "{name}: {message}"
        );
    }
    // Grids and scales a sealed file may still hold: refused by name, before anything runs.
    let file = int_file::export(&model, &quant, &MNIST).unwrap();
    let grid = "activation grid \"fc1\"";
    let mut cases = Vec::new();
    for (bits, scale, zero_point, expected) in [
        (3, 0.1, 0, grid),
        (8, -0.1, 0, grid),
        (8, f32::INFINITY, 0, "unreadable"),
        (8, f32::NAN, 0, "unreadable"),
        (4, 0.1, 16, grid),
    ] {
        let mut bad = file.clone();
        let g = bad.header.activations.get_mut("fc1").unwrap();
        *g = ActivationGrid {
            bits,
            scale,
            zero_point,
        };
        cases.push((bad.to_bytes(), expected));
    }
    let mut bad = file.clone();
    bad.weights[0].scales[0] = 0.0;
    cases.push((bad.to_bytes(), "weight scale 0"));
    for (bytes, expected) in cases {
        let message = load(&bytes).expect("refused").to_string();
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // Another dataset's input: refused by the identity stored in the file.
    let cifar = InputShape {
        channels: 3,
        height: 32,
        width: 32,
        classes: 10,
    };
    let message = QuantizedModel::from_bytes(&good, path, &cifar, &device())
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("exported for input"), "{message}");
}

#[test]
fn bits_follow_the_last_matching_layer_pattern() {
    let _rng = one_at_a_time();
    let c = config("bits = 4\nlayers = { \"fc*\" = 8, fc3 = 2 }");
    assert_eq!(c.bits_for("conv1"), 4);
    assert_eq!(c.bits_for("fc1"), 8);
    assert_eq!(c.bits_for("fc3"), 2);
}

#[test]
fn observers_learn_only_from_passes_that_ask_and_only_until_frozen() {
    let _rng = one_at_a_time();
    let model = lenet();
    let quant = calibrated(&model, "bits = 8");
    let before = quant.state();
    let big = Tensor::<4>::ones([2, 1, 28, 28], &device()) * 50.0;
    model.forward_tapped(big.clone(), &mut Tap::hooked(&quant, false));
    assert_eq!(
        quant.state(),
        before,
        "an evaluation pass changed the ranges"
    );
    quant.set_observing(false);
    model.forward_tapped(big.clone(), &mut Tap::hooked(&quant, true));
    assert_eq!(
        quant.state().ranges,
        before.ranges,
        "a frozen observer learned"
    );
    quant.set_observing(true);
    model.forward_tapped(big, &mut Tap::hooked(&quant, true));
    assert_ne!(quant.state().ranges, before.ranges);
    assert!(quant.fold_batchnorm());
}

#[test]
fn relu6_points_take_the_clip_as_their_grid_and_the_file_keeps_it() {
    let _rng = one_at_a_time();
    const RGB: InputShape = InputShape {
        channels: 3,
        height: 16,
        width: 16,
        classes: 10,
    };
    let spec: ModelSpec = toml::from_str("kind = \"mobilenet-v2\"\nwidth_mult = 0.25").unwrap();
    device().seed(6);
    let model = Model::new(&spec, &RGB, &device()).unwrap();
    let quant = FakeQuant::new(
        &config("bits = 8"),
        crate::config::weight_layers(&model).keys(),
    );
    quant.set_fold(true);
    // Small inputs: no observed activation comes near 6, yet the grid still ends there.
    let x = Tensor::<4>::random([4, 3, 16, 16], Distribution::Normal(0.0, 0.1), &device());
    model.forward_tapped(x.clone(), &mut Tap::hooked(&quant, true));
    let grids = quant.grids();
    let relu6 = ActivationGrid::from_range(0.0, 6.0, 8);
    let clipped: Vec<&String> = grids
        .keys()
        .filter(|p| p.ends_with(".relu6") || *p == "stem" || *p == "head")
        .collect();
    // The stem, the head, 16 expansions and 17 depthwise convolutions.
    assert_eq!(clipped.len(), 2 + 16 + 17, "{:?}", grids.keys());
    for point in clipped {
        assert_eq!(grids[point], relu6, "{point}");
    }
    assert_eq!(relu6.limits(), (0.0, 6.0));
    // A block's output (after its residual add) is not clipped: its grid is observed.
    assert_ne!(grids["blocks.2"], relu6);

    let bytes = int_file::export(&model, &quant, &RGB).unwrap().to_bytes();
    let loaded = QuantizedModel::from_bytes(&bytes, Path::new("m.qnt"), &RGB, &device()).unwrap();
    let in_memory = host(
        HookedView {
            model: &model,
            hook: &quant,
        }
        .classify(x.clone()),
    );
    assert_eq!(in_memory, host(loaded.classify(x)));
}

/// At most one logit in 20 of `ours` differs from `theirs` by more than `tolerance`, and none
/// by more than one level (`step`) of the output grid.
fn assert_within_a_level(ours: &[f32], theirs: &[f32], tolerance: f32, step: f32, what: &str) {
    let off: Vec<f32> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .filter(|d| *d > tolerance)
        .collect();
    assert!(
        off.len() * 20 <= ours.len(),
        "{what}: {} of {} logits differ",
        off.len(),
        ours.len()
    );
    assert!(
        off.iter().all(|d| *d <= 1.01 * step),
        "{what}: {off:?} (one level is {step})"
    );
}

/// Every architecture's integer file, exported as QDQ, computes in ONNX Runtime what the file
/// computes here, at every weight and activation width, BatchNorm folded or not.
#[test]
fn qdq_exports_compute_what_the_integer_file_computes_in_onnx_runtime() {
    let _rng = one_at_a_time();
    const RGB: InputShape = InputShape {
        channels: 3,
        height: 32,
        width: 32,
        classes: 10,
    };
    let specs = ModelSpec::examples();
    let settings = [
        ("bits = 8", true),
        ("bits = 8", false),
        ("bits = 4\nactivation_bits = 4", true),
        ("bits = 2\nactivation_bits = 2", true),
        ("bits = 4\nlayers = { fc = 8, classifier = 8 }", false),
        ("bits = 8\nquantize_input = true", true),
    ];
    let dir = tempfile::tempdir().unwrap();
    for spec in specs {
        device().seed(7);
        let model = Model::new(&spec, &RGB, &device()).unwrap();
        for (toml, fold) in settings {
            let quant = FakeQuant::new(&config(toml), crate::config::weight_layers(&model).keys());
            quant.set_fold(fold);
            for _ in 0..2 {
                let x =
                    Tensor::<4>::random([8, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device());
                model.forward_tapped(x, &mut Tap::hooked(&quant, true));
            }
            let path = dir.path().join("m.qnt");
            std::fs::write(
                &path,
                int_file::export(&model, &quant, &RGB).unwrap().to_bytes(),
            )
            .unwrap();
            let loaded =
                QuantizedModel::from_bytes(&std::fs::read(&path).unwrap(), &path, &RGB, &device())
                    .unwrap();
            let x = Tensor::<4>::random([16, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device());
            let ours = host(loaded.classify(x.clone()));
            let source = crate::onnx::source(&path, &RGB).unwrap();
            let graph = dir.path().join("m.onnx");
            std::fs::write(
                &graph,
                onnx::export(&source, &onnx::Options::default()).unwrap(),
            )
            .unwrap();
            let input: Vec<u8> = host(x).iter().flat_map(|v| v.to_le_bytes()).collect();
            let (_, theirs) =
                onnx::runtime::run(&graph, &input, onnx::runtime::Session::default()).unwrap();
            // The logits are on the last point's grid: ONNX Runtime rounds `x / scale` where
            // burn rounds the same quotient, so a value a hair from a half level may land one
            // level over; nothing else may differ.
            let step = source
                .activations
                .values()
                .map(|g| g.scale)
                .fold(0.0, f32::max);
            let what = format!("{} {toml:?} fold {fold}", spec.kind());
            assert_within_a_level(&ours, &theirs, 1e-4, step, &what);
        }
    }
}

/// The integer program computes what the simulation (the file's specification) computes, on
/// both kernel paths, for every architecture at every width, BatchNorm folded or not.
#[test]
fn integer_programs_compute_what_the_simulation_computes() {
    let _rng = one_at_a_time();
    use kernels::Int8Path;

    use crate::integer::IntegerModel;

    const RGB: InputShape = InputShape {
        channels: 3,
        height: 32,
        width: 32,
        classes: 10,
    };
    // One channel: a quantized input's first convolution reads its windows' rows padded to
    // four bytes instead of each pixel padded to four channels.
    const GRAY: InputShape = InputShape {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    let settings = [
        ("bits = 8", true),
        ("bits = 8", false),
        ("bits = 4\nactivation_bits = 4", true),
        ("bits = 2\nactivation_bits = 2", true),
        ("bits = 4\nlayers = { fc = 8 }", false),
        ("bits = 8\nquantize_input = true", true),
        (
            "bits = 4\nactivation_bits = 4\nquantize_input = true",
            false,
        ),
    ];
    let path = Path::new("m.qnt");
    let cases = ModelSpec::examples()
        .into_iter()
        .flat_map(|spec| [(spec.clone(), RGB), (spec, GRAY)]);
    for (spec, input) in cases {
        device().seed(11);
        let model = Model::new(&spec, &input, &device()).unwrap();
        let [c, h, w] = [input.channels, input.height, input.width];
        for (toml, fold) in settings {
            if input == GRAY && !toml.contains("quantize_input") {
                continue;
            }
            let what = format!("{} {c}x{h}x{w} {toml:?} fold {fold}", spec.kind());
            let quant = FakeQuant::new(&config(toml), crate::config::weight_layers(&model).keys());
            quant.set_fold(fold);
            for _ in 0..2 {
                let x =
                    Tensor::<4>::random([8, c, h, w], Distribution::Normal(0.0, 1.0), &device());
                model.forward_tapped(x, &mut Tap::hooked(&quant, true));
            }
            let bytes = int_file::export(&model, &quant, &input).unwrap().to_bytes();
            let loaded = QuantizedModel::from_bytes(&bytes, path, &input, &device()).unwrap();
            let integer = match &loaded.integer {
                Ok(integer) => integer,
                Err(why) => panic!("{what}: {why}"),
            };
            let quantized_input = toml.contains("quantize_input");
            assert_eq!(
                integer.kernels().contains("float"),
                !quantized_input,
                "{what}"
            );
            let (file, _) = IntFile::from_bytes(&bytes, path, &input, &device()).unwrap();
            let portable =
                IntegerModel::new(&loaded.model, &file, &input, Int8Path::Portable).unwrap();
            let empty = integer.forward(Tensor::<4>::zeros([0, c, h, w], &device()));
            assert_eq!(empty.dims(), [0, 10], "{what}: an empty batch");
            let x = Tensor::<4>::random([24, c, h, w], Distribution::Normal(0.0, 1.0), &device());
            let simulated = host(loaded.simulate(x.clone()));
            let ours = host(integer.forward(x.clone()));
            assert_eq!(
                ours,
                host(portable.forward(x)),
                "{what}: VNNI against portable"
            );
            let step = file
                .header
                .activations
                .values()
                .map(|g| g.scale)
                .fold(0.0, f32::max);
            assert_within_a_level(&ours, &simulated, 0.0, step, &what);
        }
    }
}

/// A layer whose `i32` sums could overflow is not run in integer (here the first, its input
/// quantized): the file falls back to its simulation and says why.
#[test]
fn a_fan_in_too_large_for_exact_sums_runs_as_the_simulation() {
    let _rng = one_at_a_time();
    let input = InputShape {
        channels: 3,
        height: 120,
        width: 120,
        classes: 10,
    };
    let spec: ModelSpec = toml::from_str("kind = \"mlp\"\nhidden = [8]").unwrap();
    device().seed(3);
    let model = Model::new(&spec, &input, &device()).unwrap();
    let toml = "bits = 8\nquantize_input = true";
    let quant = FakeQuant::new(&config(toml), crate::config::weight_layers(&model).keys());
    let x = Tensor::<4>::random([2, 3, 120, 120], Distribution::Normal(0.0, 1.0), &device());
    model.forward_tapped(x.clone(), &mut Tap::hooked(&quant, true));
    let bytes = int_file::export(&model, &quant, &input).unwrap().to_bytes();
    let loaded = QuantizedModel::from_bytes(&bytes, Path::new("m.qnt"), &input, &device()).unwrap();
    let why = loaded.integer.as_ref().err().expect("simulated");
    assert!(why.contains("43200") && why.contains("overflow"), "{why}");
    assert!(loaded.kernels(1).contains("simulated"));
    assert_eq!(host(loaded.classify(x.clone())), host(loaded.simulate(x)));
}
