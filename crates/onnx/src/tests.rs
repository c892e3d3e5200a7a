//! Every architecture's graph against its model's forward pass, in ONNX Runtime.

use burn::prelude::*;
use burn::tensor::Distribution;
use models::params::{self, Edit, HostTensor};
use models::{InputShape, Model, ModelSpec};

use crate::{export, runtime, Options, Precision, Source};

const RGB: InputShape = InputShape {
    channels: 3,
    height: 32,
    width: 32,
    classes: 10,
};

/// One small model of every kind (both ResNet stems).
fn specs() -> Vec<ModelSpec> {
    ModelSpec::examples()
}

/// A model of `spec` with random BatchNorm parameters and statistics (fresh ones are the
/// identity, which would hide a graph that mixes them up).
fn model(spec: &ModelSpec, input: &InputShape) -> Model {
    let device = Device::flex();
    device.seed(5);
    let model = Model::new(spec, input, &device).unwrap();
    let edits = params::values(&model, |p| p.contains(".bn."))
        .into_iter()
        .map(|(path, t)| {
            let (lo, hi) = match path.ends_with("running_var") {
                true => (0.5, 2.0),
                false => (-0.5, 0.5),
            };
            let random =
                Tensor::<1>::random([t.values.len()], Distribution::Uniform(lo, hi), &device);
            let values = host(random.reshape([1, t.values.len()]));
            (
                path,
                Edit::Replace(HostTensor {
                    shape: t.shape,
                    values,
                }),
            )
        })
        .collect();
    params::edit(model, &edits).0
}

fn inputs(input: &InputShape, batch: usize) -> Tensor<4> {
    let device = Device::flex();
    device.seed(9);
    let dims = [batch, input.channels, input.height, input.width];
    Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

/// ONNX Runtime's logits for `x` through the graph of `source`.
fn onnx_logits(source: &Source, x: &Tensor<4>) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, export(source, &Options::default()).unwrap()).unwrap();
    let values: Vec<f32> = x
        .clone()
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    runtime::run(&path, &bytes, runtime::Session::default())
        .unwrap()
        .1
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_architecture_computes_its_models_logits_in_onnx_runtime() {
    for spec in specs() {
        let model = model(&spec, &RGB);
        let x = inputs(&RGB, 4);
        let ours = host(model.forward(x.clone()));
        for precision in [Precision::F32, Precision::F16] {
            // The f16 graph is compared with the model whose weights it rounded.
            let rounded = match precision {
                Precision::F32 => model.clone(),
                Precision::F16 => {
                    let edits = params::values(&model, |_| true)
                        .into_iter()
                        .map(|(path, mut t)| {
                            t.values
                                .iter_mut()
                                .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
                            (path, Edit::Replace(t))
                        })
                        .collect();
                    params::edit(model.clone(), &edits).0
                }
            };
            let expected = match precision {
                Precision::F32 => ours.clone(),
                Precision::F16 => host(rounded.forward(x.clone())),
            };
            let source = Source::float(&model, RGB, precision, None, "test".into());
            let theirs = onnx_logits(&source, &x);
            let diff = max_difference(&expected, &theirs);
            assert!(
                diff < 1e-4,
                "{} {precision:?}: logits differ by {diff}",
                spec.kind()
            );
        }
    }
}

/// A raw-pixel graph normalises `uint8` pixels `[batch, h, w, c]` as our data pipeline does:
/// its logits are the float graph's on `(pixel / 255 - mean) / std`.
#[test]
fn a_raw_pixel_graph_normalises_as_the_pipeline_does() {
    let spec = &specs()[2];
    let model = model(spec, &RGB);
    let preprocessing = data::Preprocessing {
        channels: 3,
        height: 32,
        width: 32,
        resize: "bilinear".into(),
        mean: vec![0.5, 0.4, 0.3],
        std: vec![0.2, 0.25, 0.3],
        class_names: (0..10).map(|c| format!("class {c}")).collect(),
    };
    let source = Source::float(
        &model,
        RGB,
        Precision::F32,
        Some(preprocessing.clone()),
        "t".into(),
    );
    let (batch, pixels) = (3, 32 * 32 * 3);
    let raw: Vec<u8> = (0..batch * pixels)
        .map(|i| (i * 7919 % 256) as u8)
        .collect();
    // NHWC pixels to the normalised NCHW input our pipeline makes.
    let mut normalised = vec![0f32; raw.len()];
    for (i, &p) in raw.iter().enumerate() {
        let (n, rest) = (i / pixels, i % pixels);
        let (y, x, c) = (rest / 96, rest / 3 % 32, rest % 3);
        let v = (p as f32 / 255.0 - preprocessing.mean[c]) / preprocessing.std[c];
        normalised[n * pixels + c * 1024 + y * 32 + x] = v;
    }
    let x = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(normalised, [batch, 3, 32, 32]),
        &Device::flex(),
    );
    let expected = host(model.forward(x));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.onnx");
    let options = Options { raw_input: true };
    std::fs::write(&path, export(&source, &options).unwrap()).unwrap();
    let (checked, logits) = runtime::run(&path, &raw, runtime::Session::default()).unwrap();
    assert_eq!(
        (checked.input.as_str(), checked.dtype.as_str()),
        (crate::RAW_INPUT, "uint8")
    );
    assert_eq!(checked.shape, vec![32, 32, 3]);
    assert_eq!(
        checked.metadata["mean"],
        "[0.5,0.4000000059604645,0.30000001192092896]"
    );
    assert!(checked.metadata["class_names"].starts_with("[\"class 0\""));
    let diff = max_difference(&expected, &logits);
    assert!(diff < 1e-4, "logits differ by {diff}");

    // Without recorded preprocessing there is nothing to normalise with.
    let bare = Source {
        preprocessing: None,
        ..source
    };
    let err = export(&bare, &options).unwrap_err().to_string();
    assert!(err.contains("records no preprocessing"), "{err}");
}

/// A grid for a point the architecture does not have (a file and an exporter out of step) is
/// an error naming it, not a graph that silently skips it.
#[test]
fn a_grid_for_a_point_the_graph_lacks_is_refused() {
    let spec = &specs()[1];
    let model = model(spec, &RGB);
    let mut source = Source::float(&model, RGB, Precision::F32, None, "t".into());
    let grid = crate::Grid {
        bits: 8,
        scale: 0.1,
        zero_point: 0,
    };
    source.activations.insert("fc1".into(), grid);
    assert!(export(&source, &Options::default()).is_ok());
    source.activations.insert("conv9".into(), grid);
    let err = export(&source, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv9") && err.contains("lenet5"), "{err}");
}

/// A model past protobuf's 2 GiB is refused before anything is built (its tensors are
/// counted from their shapes).
#[test]
fn a_model_over_two_gibibytes_is_refused() {
    let model = model(&specs()[0], &RGB);
    let mut source = Source::float(&model, RGB, Precision::F32, None, "t".into());
    let huge = HostTensor {
        shape: vec![1 << 20, 1 << 9],
        values: Vec::new(),
    };
    source.tensors.insert("layers.0.weight".into(), huge);
    let err = export(&source, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 2 GiB"), "{err}");
}
