use std::collections::HashMap;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;

use crate::{InputShape, Model, ModelSpec};

fn device() -> Device {
    Device::flex()
}

const MNIST: InputShape = InputShape {
    channels: 1,
    height: 28,
    width: 28,
    classes: 10,
};

fn specs() -> Vec<ModelSpec> {
    ModelSpec::examples()
}

#[test]
fn every_architecture_maps_images_to_logits() {
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        let x = Tensor::<4>::zeros([3, 1, 28, 28], &device());
        assert_eq!(model.forward(x).dims(), [3, 10], "{}", spec.kind());
    }
}

#[test]
fn lenet5_macs_match_the_hand_count() {
    // conv1: 28*28*6*1*25 = 117,600; conv2: 10*10*16*6*25 = 240,000;
    // fc: 400*120 + 120*84 + 84*10 = 58,920.
    let model = Model::new(&specs()[1], &MNIST, &device()).unwrap();
    assert_eq!(model.macs(&MNIST), 117_600 + 240_000 + 58_920);
    // conv 150 + 2,400 (no bias), BN 12 + 32 (plus 44 running statistics, which burn
    // counts as parameters), fc 48,120 + 10,164 + 850.
    assert_eq!(model.num_params(), 61_728 + 44);
}

#[test]
fn input_too_small_for_lenet_is_a_spec_error() {
    let digits = InputShape {
        height: 8,
        width: 8,
        ..MNIST
    };
    let err = Model::new(&specs()[1], &digits, &device()).unwrap_err();
    assert!(err.to_string().contains("at least 12x12"), "{err}");
}

/// Collects every float parameter's dims by path.
#[derive(Default)]
struct Shapes(HashMap<String, Vec<usize>>, Vec<String>);

impl ModuleVisitor for Shapes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.1.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.1.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.insert(self.1.join("."), param.val().dims().to_vec());
    }
}

#[test]
fn channel_groups_name_real_tensors_with_matching_widths() {
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        let mut shapes = Shapes::default();
        match &model {
            Model::Mlp(m) => m.visit(&mut shapes),
            Model::LeNet5(m) => m.visit(&mut shapes),
            Model::Vgg(m) => m.visit(&mut shapes),
            Model::ResNet(m) => m.visit(&mut shapes),
            Model::MobileNetV2(m) => m.visit(&mut shapes),
        }
        let groups = model.channel_groups(&MNIST);
        assert!(!groups.is_empty());
        for group in groups {
            for member in &group.members {
                let dims = shapes.0.get(&member.param).unwrap_or_else(|| {
                    panic!(
                        "{}: no parameter {} in {:?}",
                        spec.kind(),
                        member.param,
                        shapes.0.keys()
                    )
                });
                assert_eq!(
                    dims[member.axis],
                    group.width * member.span,
                    "{} group {} member {}",
                    spec.kind(),
                    group.name,
                    member.param
                );
            }
        }
    }
}

#[test]
fn every_tap_captures_a_per_sample_feature() {
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        let taps = model.taps();
        assert!(!taps.is_empty(), "{}", spec.kind());
        for name in taps {
            let mut tap = crate::Tap::at(&name);
            let x = Tensor::<4>::zeros([3, 1, 28, 28], &device());
            model.forward_tapped(x, &mut tap);
            let found = tap
                .found
                .unwrap_or_else(|| panic!("{}: {name} not captured", spec.kind()));
            assert_eq!(found.dims()[0], 3);
        }
    }
    // LeNet-5's first fully connected layer has 120 units.
    let lenet = Model::new(&specs()[1], &MNIST, &device()).unwrap();
    let mut tap = crate::Tap::at("fc1");
    lenet.forward_tapped(Tensor::zeros([2, 1, 28, 28], &device()), &mut tap);
    assert_eq!(tap.found.unwrap().dims(), [2, 120]);
}

#[test]
fn a_profile_covers_every_layer_and_its_macs_add_up() {
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        let mut tap = crate::Tap::profile();
        let logits = model.forward_tapped(Tensor::zeros([2, 1, 28, 28], &device()), &mut tap);
        let segments = tap.segments.unwrap();
        // The last segment ends at the logits.
        assert_eq!(
            segments.last().unwrap().output,
            logits.dims().to_vec(),
            "{}",
            spec.kind()
        );
        let macs: u64 = segments.iter().map(|s| s.macs).sum();
        assert_eq!(macs, model.macs(&MNIST), "{}", spec.kind());
        let params: usize = segments.iter().map(|s| s.params).sum();
        assert_eq!(params, model.num_params(), "{}", spec.kind());
    }
}

#[test]
fn a_model_describes_itself_with_the_spec_it_was_built_from() {
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        assert_eq!(model.spec(), spec, "{}", spec.kind());
    }
}

#[test]
fn per_block_resnet_widths_round_trip_through_the_spec() {
    // Inner widths narrowed block by block, and stage widths that coincide after pruning
    // while the trained projection stays.
    let spec = ModelSpec::Resnet {
        stem: 8,
        stem_layout: Default::default(),
        stages: vec![8, 8],
        blocks: crate::BlockCounts::Each(2),
        inner: vec![5, 8, 3, 7],
        projection: vec![true, false, true, false],
    };
    let model = Model::new(&spec, &MNIST, &device()).unwrap();
    assert_eq!(model.spec(), spec);
    let rebuilt = Model::new(&model.spec(), &MNIST, &device()).unwrap();
    assert_eq!(rebuilt.num_params(), model.num_params());
    // A block that changes resolution cannot drop its projection.
    let bad = ModelSpec::Resnet {
        stem: 8,
        stem_layout: Default::default(),
        stages: vec![8, 8],
        blocks: crate::BlockCounts::Each(1),
        inner: Vec::new(),
        projection: vec![false, false],
    };
    assert_eq!(bad.validate(&MNIST).unwrap_err().key, "model.projection");
}

#[test]
fn the_footprint_counts_parameters_as_burn_does() {
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        assert_eq!(
            spec.footprint(&MNIST).params,
            model.num_params() as u128,
            "{}",
            spec.kind()
        );
    }
    let absurd = ModelSpec::Mlp {
        hidden: vec![usize::MAX, usize::MAX],
        dropout: 0.0,
        input_dropout: 0.0,
    };
    assert!(absurd.footprint(&MNIST).training_bytes(128) > 1 << 60);
}

#[test]
fn a_quantizer_changes_what_the_forward_pass_continues_with() {
    use burn::tensor::Distribution;
    struct ZeroFc2;
    impl crate::ForwardHook for ZeroFc2 {
        fn activation(&self, point: &str, x: Tensor<2>, _observe: bool) -> Tensor<2> {
            if point == "fc2" {
                x.zeros_like()
            } else {
                x
            }
        }
    }
    let model = Model::new(&specs()[1], &MNIST, &device()).unwrap().valid();
    let x = Tensor::<4>::random([2, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device());
    let plain: Vec<f32> = model.forward(x.clone()).into_data().try_to_vec().unwrap();
    // Zeroing the last hidden layer leaves only the classifier's bias: every row the same.
    let mut tap = crate::Tap::hooked(&ZeroFc2, false);
    let cut: Vec<f32> = model
        .forward_tapped(x, &mut tap)
        .into_data()
        .try_to_vec()
        .unwrap();
    assert_ne!(plain[..10], plain[10..]);
    assert_eq!(cut[..10], cut[10..]);
}

/// A quantizer that only folds BatchNorm: outputs match the plain inference pass.
struct FoldOnly;
impl crate::ForwardHook for FoldOnly {
    fn fold_batchnorm(&self) -> bool {
        true
    }
}

#[test]
fn folding_batchnorm_into_the_conv_keeps_outputs_within_tolerance() {
    use burn::tensor::Distribution;
    for spec in specs().iter().skip(1) {
        device().seed(3);
        let model = Model::new(spec, &MNIST, &device()).unwrap();
        // Non-trivial running statistics and affine parameters, so folding has work to do.
        let model = crate::params::edit(
            model,
            &crate::params::shapes(&Model::new(spec, &MNIST, &device()).unwrap())
                .into_iter()
                .filter(|(path, _)| path.contains(".bn."))
                .enumerate()
                .map(|(i, (path, shape))| {
                    let n: usize = shape.iter().product();
                    let (lo, hi) = if path.ends_with("running_var") {
                        (0.2, 3.0)
                    } else {
                        (-1.0, 1.0)
                    };
                    let values = pseudo_random(n, i as u64 + 7, lo, hi);
                    let host = crate::params::HostTensor { shape, values };
                    (path, crate::params::Edit::Replace(host))
                })
                .collect(),
        )
        .0
        .valid();
        let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device());
        let plain: Vec<f32> = model.forward(x.clone()).into_data().try_to_vec().unwrap();
        let folded: Vec<f32> = model
            .forward_tapped(x, &mut crate::Tap::hooked(&FoldOnly, false))
            .into_data()
            .try_to_vec()
            .unwrap();
        let scale = plain.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        for (a, b) in plain.iter().zip(&folded) {
            assert!((a - b).abs() <= 1e-4 * scale, "{spec:?}: {a} vs {b}");
        }
    }
}

/// Deterministic values in `[lo, hi)` for test tensors.
fn pseudo_random(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// `model` with random BatchNorm parameters and running statistics (fresh ones are 1, 0, 0,
/// 1: slicing them wrongly would go unnoticed), and the channels `removed` names silenced:
/// the producing weights, biases, BN gammas, betas and running means set to zero, so those
/// channels carry exactly zero everywhere.
fn silenced(model: Model, removed: &crate::KeepPlan) -> Model {
    use crate::params::{self, Edit, HostTensor};
    use crate::Role;
    let bn = |p: &str| p.contains(".bn.");
    let mut values = params::values(&model, bn);
    for (i, (path, t)) in values.iter_mut().enumerate() {
        let (lo, hi) = if path.ends_with("running_var") {
            (0.5, 2.0)
        } else {
            (-0.5, 0.5)
        };
        t.values = pseudo_random(t.values.len(), i as u64, lo, hi);
    }
    let groups = model.channel_groups(&MNIST);
    for (name, channels) in removed {
        let group = groups.iter().find(|g| &g.name == name).unwrap();
        for m in &group.members {
            let silence = matches!(
                m.role,
                Role::ConvOut
                    | Role::LinearOut
                    | Role::Bias
                    | Role::BnGamma
                    | Role::BnBeta
                    | Role::BnRunningMean
            );
            if !silence {
                continue;
            }
            let t = values.entry(m.param.clone()).or_insert_with(|| {
                params::values(&model, |p| p == m.param)
                    .remove(&m.param)
                    .unwrap()
            });
            let inner: usize = t.shape[m.axis + 1..].iter().product();
            let outer: usize = t.shape[..m.axis].iter().product();
            let axis = t.shape[m.axis];
            for &c in channels {
                for o in 0..outer {
                    for e in c * m.span..(c + 1) * m.span {
                        let start = (o * axis + e) * inner;
                        t.values[start..start + inner].fill(0.0);
                    }
                }
            }
        }
    }
    let edits = values
        .into_iter()
        .map(|(p, t)| (p, Edit::Replace(HostTensor { ..t })))
        .collect();
    params::edit(model, &edits).0
}

#[test]
fn thinning_keeps_outputs_exactly_when_the_removed_channels_were_silent() {
    let x = Tensor::<4>::from_data(
        TensorData::new(pseudo_random(2 * 28 * 28, 99, -1.0, 1.0), [2, 1, 28, 28]),
        &device(),
    );
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        // Keep every other channel of every group (the first one always).
        let groups = model.channel_groups(&MNIST);
        let keep: crate::KeepPlan = groups
            .iter()
            .map(|g| (g.name.clone(), (0..g.width).step_by(2).collect()))
            .collect();
        let removed: crate::KeepPlan = groups
            .iter()
            .map(|g| (g.name.clone(), (1..g.width).step_by(2).collect()))
            .collect();
        let model = silenced(model, &removed);
        let before = model.forward(x.clone());
        let thinned = crate::thin(&model, &MNIST, &keep).unwrap();
        let after = thinned.forward(x.clone());
        let diff: f32 = (before - after.clone()).abs().max().into_scalar();
        assert!(diff < 1e-4, "{}: outputs moved by {diff}", spec.kind());

        // Widths are what the plan says.
        for g in thinned.channel_groups(&MNIST) {
            assert_eq!(g.width, keep[&g.name].len(), "{} {}", spec.kind(), g.name);
        }
        assert!(thinned.macs(&MNIST) < model.macs(&MNIST));

        // The thinned model saves and reloads with identical outputs.
        let bytes = crate::file::to_bytes(&thinned).unwrap();
        let path = std::path::Path::new("<test>");
        let reloaded = crate::file::from_bytes(&bytes, path, &MNIST, &device()).unwrap();
        assert_eq!(reloaded.spec(), thinned.spec());
        let again: f32 = (reloaded.forward(x.clone()) - after)
            .abs()
            .max()
            .into_scalar();
        assert_eq!(again, 0.0, "{}", spec.kind());
    }
}

#[test]
fn thinning_rejects_plans_that_do_not_fit_the_model() {
    let model = Model::new(&specs()[1], &MNIST, &device()).unwrap();
    let plan = |name: &str, keep: Vec<usize>| crate::KeepPlan::from([(name.to_string(), keep)]);
    let err = crate::thin(&model, &MNIST, &plan("conv9", vec![0])).unwrap_err();
    assert!(err.to_string().contains("conv1, conv2, fc1, fc2"), "{err}");
    let err = crate::thin(&model, &MNIST, &plan("conv1", vec![])).unwrap_err();
    assert!(err.to_string().contains("at least one"), "{err}");
    let err = crate::thin(&model, &MNIST, &plan("conv1", vec![2, 1])).unwrap_err();
    assert!(err.to_string().contains("increasing"), "{err}");
    let err = crate::thin(&model, &MNIST, &plan("conv1", vec![0, 6])).unwrap_err();
    assert!(
        err.to_string().contains("channel 6 does not exist"),
        "{err}"
    );
}

#[test]
fn a_sparse_file_round_trips_with_identical_outputs() {
    use crate::params::{self, Edit, HostTensor};
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        // Zero 90% of every weight (every entry whose index is not a multiple of 10).
        let weights = params::values(&model, |p| p.ends_with("weight"));
        let edits = weights
            .into_iter()
            .map(|(p, t)| {
                let values = t
                    .values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| if i % 10 == 0 { *v } else { 0.0 })
                    .collect();
                (p, Edit::Replace(HostTensor { values, ..t }))
            })
            .collect();
        let model = params::edit(model, &edits).0;
        let sparse = crate::file::sparse::to_bytes(&model).unwrap();
        let dense = crate::file::to_bytes(&model).unwrap();
        assert!(
            sparse.len() * 3 < dense.len(),
            "{}: {} vs {}",
            spec.kind(),
            sparse.len(),
            dense.len()
        );
        let path = std::path::Path::new("<test>");
        let back = crate::file::sparse::from_bytes(&sparse, path, &MNIST, &device()).unwrap();
        assert_eq!(back.spec(), model.spec());
        let x = Tensor::<4>::from_data(
            TensorData::new(pseudo_random(2 * 28 * 28, 7, -1.0, 1.0), [2, 1, 28, 28]),
            &device(),
        );
        let diff: f32 = (back.forward(x.clone()) - model.forward(x))
            .abs()
            .max()
            .into_scalar();
        assert_eq!(diff, 0.0, "{}", spec.kind());

        // A flipped byte is caught by the checksum.
        let mut corrupt = sparse.clone();
        corrupt[sparse.len() / 2] ^= 1;
        let err = crate::file::sparse::from_bytes(&corrupt, path, &MNIST, &device()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}

#[test]
fn max_norm_caps_each_units_incoming_weights_and_leaves_the_rest() {
    let spec: ModelSpec = toml::from_str("kind = \"mlp\"\nhidden = [24]").unwrap();
    let device = device().autodiff();
    device.seed(5);
    let model = Model::new(&spec, &MNIST, &device).unwrap();
    let before = crate::params::values(&model, |_| true);
    // A limit between the smallest and the largest column norm of the first layer.
    let columns = |values: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        (0..cols)
            .map(|c| {
                (0..rows)
                    .map(|r| values[r * cols + c].powi(2))
                    .sum::<f32>()
                    .sqrt()
            })
            .collect()
    };
    let w0 = &before["layers.0.weight"];
    let norms0 = columns(&w0.values, w0.shape[0], w0.shape[1]);
    let (lo, hi) = norms0
        .iter()
        .fold((f32::MAX, 0f32), |(lo, hi), &n| (lo.min(n), hi.max(n)));
    let limit = (lo + hi) / 2.0;
    let after_model = crate::params::max_norm(model, f64::from(limit));
    let after = crate::params::values(&after_model, |_| true);
    let w1 = &after["layers.0.weight"];
    let norms1 = columns(&w1.values, w1.shape[0], w1.shape[1]);
    for (c, (&was, &now)) in norms0.iter().zip(&norms1).enumerate() {
        if was <= limit {
            assert_eq!(
                was, now,
                "column {c} was within the limit and must be untouched"
            );
        } else {
            assert!(
                (now - limit).abs() < 1e-4 * limit,
                "column {c}: {now} vs {limit}"
            );
        }
    }
    // Biases are not constrained; the parameters stay trainable leaves.
    assert_eq!(
        before["layers.0.bias"].values,
        after["layers.0.bias"].values
    );
    let x = Tensor::<4>::ones([2, 1, 28, 28], &device);
    let loss = after_model.forward(x).sum();
    let grads = loss.backward();
    let mut found = 0;
    struct HasGrad<'a>(&'a burn::tensor::Gradients, &'a mut usize);
    impl ModuleVisitor for HasGrad<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.val().grad(self.0).is_some() {
                *self.1 += 1;
            }
        }
    }
    after_model.visit(&mut HasGrad(&grads, &mut found));
    assert_eq!(found, 4, "two weights and two biases are trained");
}

/// The packed inference paths (an MLP's, a chain CNN's) give the model's own logits; other
/// models are passed through untouched.
#[test]
fn inference_wrapper_matches_the_models_forward() {
    use crate::{Classifier, Inference};
    use burn::tensor::Distribution;
    for spec in specs() {
        let model = Model::new(&spec, &MNIST, &device()).unwrap();
        let inference = Inference::new(&model);
        let chain = matches!(model, Model::Mlp(_) | Model::LeNet5(_) | Model::Vgg(_));
        // Packed exactly when the model is an MLP or a chain CNN and the CPU runs the kernels.
        let expected = chain && kernels::PackedLinear::available();
        assert_eq!(inference.is_packed(), expected, "{}", spec.kind());
        for batch in [1, 5, 32] {
            let x = Tensor::<4>::random(
                [batch, 1, 28, 28],
                Distribution::Normal(0.0, 1.0),
                &device(),
            );
            let ours = inference.classify(x.clone()).into_data();
            let theirs = model.forward(x).into_data();
            ours.assert_approx_eq::<f32>(&theirs, burn::tensor::Tolerance::absolute(1e-4));
        }
    }
}

#[test]
fn the_same_weights_give_the_same_model_file() {
    // Two models with equal weights but their own (random) parameter ids.
    let model = Model::new(&specs()[1], &MNIST, &device()).unwrap();
    let twin = model.copy_to(&MNIST, &device()).unwrap();
    let a = crate::file::to_bytes(&model).unwrap();
    let b = crate::file::to_bytes(&twin).unwrap();
    assert!(a == b, "model files of equal weights differ");
    // And the bytes load back to the same weights.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bpk");
    std::fs::write(&path, &a).unwrap();
    let back = crate::file::load(
        &path,
        crate::ModelFormat::Burnpack,
        crate::file::LoadOptions {
            spec: None,
            key_map: &[],
        },
        &MNIST,
        &device(),
    )
    .unwrap();
    assert!(crate::file::to_bytes(&back).unwrap() == a);
}

/// PyTorch parity: `state_dict`s PyTorch itself saved (`fixtures/make_fixtures.py`, torchvision's
/// BasicBlock and ResNet classes with random BatchNorm statistics) load with no `key_map` and
/// compute the logits PyTorch computed for the same input.
#[test]
fn torchvision_resnets_load_as_pytorch_saved_them_and_give_its_logits() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut cases = vec![
        (
            "resnet20",
            "kind = \"resnet\"\nstem = 16\nstages = [16, 32, 64]\nblocks = 3",
        ),
        (
            "resnet-imagenet-stem",
            "kind = \"resnet\"\nstem = 8\nstem_layout = \"imagenet\"\n\
             stages = [8, 16, 16, 32]\nblocks = [1, 2, 1, 1]",
        ),
        (
            "mobilenet-v2-025",
            "kind = \"mobilenet-v2\"\nwidth_mult = 0.25",
        ),
    ];
    // By hand, torchvision's own ResNet-18 (45 MB, not committed): `make_fixtures.py
    // --resnet18` writes /tmp/resnet18.{pt,json}, then PYTORCH_PARITY_RESNET18=1.
    let fixtures = match std::env::var_os("PYTORCH_PARITY_RESNET18") {
        Some(_) => {
            cases = vec![(
                "resnet18",
                "kind = \"resnet\"\nstem = 64\nstem_layout = \"imagenet\"\n\
                 stages = [64, 128, 256, 512]\nblocks = 2",
            )];
            std::path::PathBuf::from("/tmp")
        }
        None => fixtures,
    };
    for (name, spec) in cases {
        let spec: ModelSpec = toml::from_str(spec).unwrap();
        let json = std::fs::read_to_string(fixtures.join(format!("{name}.json"))).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&json).unwrap();
        let size = |k: &str| expected[k].as_u64().unwrap() as usize;
        let (h, w) = (size("height"), size("width"));
        let input = InputShape {
            channels: 3,
            height: h,
            width: w,
            classes: 10,
        };
        let model = crate::file::load(
            &fixtures.join(format!("{name}.pt")),
            crate::ModelFormat::Pytorch,
            crate::file::LoadOptions {
                spec: Some(&spec),
                key_map: &[],
            },
            &input,
            &device(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.spec(), spec, "{name}");
        let x: Vec<f32> = (0..2 * 3 * h * w)
            .map(|i| (0.37 * i as f64).sin() as f32)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(x, [2, 3, h, w]), &device());
        let logits: Vec<f32> = model.forward(x).into_data().try_to_vec::<f32>().unwrap();
        let want: Vec<f32> = expected["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter())
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let worst = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: max |ours - PyTorch's| = {worst:e}");
        assert!(worst <= 1e-4, "{name}: max |ours - PyTorch's| = {worst}");
    }
}
