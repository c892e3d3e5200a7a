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
    let toml = r#"
        [[m]]
        kind = "mlp"
        hidden = [32, 16]
        dropout = 0.5
        [[m]]
        kind = "lenet5"
        [[m]]
        kind = "vgg"
        stages = [[8], [8, 16]]
        fc = [32]
        [[m]]
        kind = "resnet"
        stem = 8
        stages = [8, 16]
        blocks = 2
    "#;
    #[derive(serde::Deserialize)]
    struct List {
        m: Vec<ModelSpec>,
    }
    toml::from_str::<List>(toml).unwrap().m
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
        stages: vec![8, 8],
        blocks: 2,
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
        stages: vec![8, 8],
        blocks: 1,
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
fn a_probe_transform_changes_what_the_forward_pass_continues_with() {
    use burn::tensor::Distribution;
    let model = Model::new(&specs()[1], &MNIST, &device()).unwrap().valid();
    let x = Tensor::<4>::random([2, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device());
    let plain: Vec<f32> = model.forward(x.clone()).into_data().try_to_vec().unwrap();
    // Zeroing the last hidden layer leaves only the classifier's bias: every row the same.
    let zero_fc2 = |name: &str, x: Tensor<2>| if name == "fc2" { x.zeros_like() } else { x };
    let mut tap = crate::Tap::transforming(&zero_fc2);
    let cut: Vec<f32> = model
        .forward_tapped(x, &mut tap)
        .into_data()
        .try_to_vec()
        .unwrap();
    assert_ne!(plain[..10], plain[10..]);
    assert_eq!(cut[..10], cut[10..]);
}
