//! A `.qnt` file loaded for measurement: its simulation (the float model with dequantized
//! weights, every activation rounded to its grid: the file's specification) and, where the
//! architecture allows, its integer program ([`IntegerModel`]), which is what runs.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use kernels::Int8Path;
use models::params::{self, Edit, HostTensor};
use models::{Classifier, ForwardHook, InputShape, Model, ModelFileError, Tap};

use crate::fake::ActivationGrid;
use crate::int_file::{folded_batchnorm, IntFile};
use crate::integer::IntegerModel;

/// BatchNorm that passes its input through unchanged but for its bias: `gamma = 1`,
/// `mean = 0`, and the variance with `sqrt(var + eps) == 1` exactly in `f32`, so a folded
/// conv keeps its exported weights bit for bit.
fn identity_variance(epsilon: f32) -> f32 {
    let mut var = 1.0f32 - epsilon;
    for _ in 0..8 {
        let sum = var + epsilon;
        if sum == 1.0 && sum.sqrt() == 1.0 {
            break;
        }
        var = if sum > 1.0 {
            f32::from_bits(var.to_bits() - 1)
        } else {
            f32::from_bits(var.to_bits() + 1)
        };
    }
    var
}

/// An integer model loaded from its file: run in integer arithmetic where its architecture
/// allows ([`IntegerModel`]), else simulated (weights dequantized, activations rounded to their
/// grids on the float kernels).
pub struct QuantizedModel {
    /// The float model underneath: dequantized weights.
    pub model: Model,
    pub fold_batchnorm: bool,
    pub activations: BTreeMap<String, ActivationGrid>,
    /// Stored weight bits per layer (for reports).
    pub bits: BTreeMap<String, u32>,
    /// The integer program, or why the model is simulated instead.
    pub integer: Result<Box<IntegerModel>, String>,
}

impl QuantizedModel {
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        input: &InputShape,
        device: &Device,
    ) -> Result<Self, ModelFileError> {
        let (file, model) = IntFile::from_bytes(bytes, path, input, device)?;
        let header = &file.header;
        let shapes = params::shapes(&model);
        let mut edits: BTreeMap<String, Edit> = BTreeMap::new();
        for (entry, w) in header.weights.iter().zip(&file.weights) {
            let (rows, cols) = (entry.rows, entry.cols);
            let mut values: Vec<f32> = w
                .levels
                .iter()
                .enumerate()
                .map(|(i, &l)| l as f32 * w.scales[i / cols])
                .collect();
            if entry.transposed {
                values = (0..rows * cols)
                    .map(|i| values[(i % rows) * cols + i / rows])
                    .collect();
            }
            let shape = shapes[&entry.path].clone();
            edits.insert(
                entry.path.clone(),
                Edit::Replace(HostTensor { shape, values }),
            );
            if header.fold_batchnorm {
                if let Some(bn) = folded_batchnorm(&entry.path) {
                    let var = identity_variance(BN_EPSILON);
                    for (name, value) in
                        [("gamma", 1.0), ("running_mean", 0.0), ("running_var", var)]
                    {
                        let path = format!("{bn}.{name}");
                        let shape = vec![rows];
                        let values = vec![value; rows];
                        edits.insert(path, Edit::Replace(HostTensor { shape, values }));
                    }
                }
            }
        }
        for (tensor, values) in header.floats.iter().zip(&file.floats) {
            let shape = shapes[tensor].clone();
            let values = values.clone();
            edits.insert(tensor.clone(), Edit::Replace(HostTensor { shape, values }));
        }
        let missing: Vec<&String> = shapes.keys().filter(|p| !edits.contains_key(*p)).collect();
        if !missing.is_empty() {
            return Err(ModelFileError::Mismatch {
                path: path.to_path_buf(),
                message: format!("no values for {missing:?}"),
            });
        }
        let (model, _) = params::edit(model, &edits);
        let integer = IntegerModel::new(&model, &file, input, Int8Path::detect()).map(Box::new);
        Ok(Self {
            integer,
            model,
            fold_batchnorm: header.fold_batchnorm,
            activations: header.activations.clone(),
            bits: header
                .weights
                .iter()
                .map(|w| (w.layer.clone(), w.bits))
                .collect(),
        })
    }
}

impl QuantizedModel {
    /// The file's specification: the float model with its dequantized weights and every
    /// activation rounded to its grid.
    ///
    /// # Shapes
    /// - input: `[batch, channels, height, width]`, normalised pixels
    /// - output: `[batch, classes]` logits
    pub fn simulate(&self, images: Tensor<4>) -> Tensor<2> {
        self.model
            .forward_tapped(images, &mut Tap::hooked(self, false))
    }
}

/// A quantized model run as its simulation.
struct Simulation<'m>(&'m QuantizedModel);

impl Classifier for Simulation<'_> {
    fn kind(&self) -> &str {
        self.0.kind()
    }

    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        self.0.simulate(images)
    }

    fn num_params(&self) -> usize {
        self.0.num_params()
    }

    fn macs(&self, input: &InputShape) -> u64 {
        self.0.macs(input)
    }

    fn kernels(&self, _batch: usize) -> String {
        "float (integer arithmetic simulated)".to_string()
    }
}

/// burn's BatchNorm epsilon (the models use the default).
const BN_EPSILON: f32 = 1e-5;

impl ForwardHook for QuantizedModel {
    fn fold_batchnorm(&self) -> bool {
        self.fold_batchnorm
    }

    fn activation(&self, point: &str, x: Tensor<2>, _observe: bool) -> Tensor<2> {
        match self.activations.get(point) {
            Some(grid) => grid.fake_quant(x),
            None => x,
        }
    }
}

impl Classifier for QuantizedModel {
    fn kind(&self) -> &str {
        self.model.kind()
    }

    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        match &self.integer {
            Ok(integer) => integer.forward(images),
            Err(_) => self.simulate(images),
        }
    }

    fn kernels(&self, _batch: usize) -> String {
        match &self.integer {
            Ok(integer) => integer.kernels(),
            Err(_) => "float (integer arithmetic simulated)".to_string(),
        }
    }

    fn specification(&self) -> Option<Box<dyn Classifier + '_>> {
        self.integer
            .is_ok()
            .then(|| Box::new(Simulation(self)) as Box<dyn Classifier>)
    }

    fn num_params(&self) -> usize {
        burn::module::Module::num_params(&self.model)
    }

    fn macs(&self, input: &InputShape) -> u64 {
        self.model.macs(input)
    }
}
