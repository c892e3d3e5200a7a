//! The integer model file (`.qnt`) and the model it loads into.
//!
//! # Format (version 1)
//! The shared envelope (see `container.rs`) with magic `CMPQNT01`. The header (JSON):
//! - `spec`, `input`: the architecture and the input it was exported for (compared on load);
//! - `fold_batchnorm`: whether each conv's BatchNorm is folded into its weights and bias;
//! - `weights`: per conv / linear layer, in payload order: `layer`, the tensor `path`, `bits`
//!   (2, 4 or 8), `rows` (output channels) x `cols` (fan-in), `transposed` (a linear layer,
//!   stored `[out, in]` while burn holds `[in, out]`);
//! - `floats`: paths of the tensors kept as `f32` (biases, a folded conv's bias in its
//!   BatchNorm's `beta`, BatchNorm when not folded), in payload order;
//! - `activations`: per quantized point, `bits`, `scale`, `zero_point` (affine, unsigned:
//!   `x = (q - zero_point) * scale`).
//!
//! The payload: per weight, `rows` `f32` scales (symmetric: zero point 0), then the levels
//! row-major, `-qmax..=qmax` with `qmax = 2^(bits-1) - 1`: 8 bits as `i8`; 4 bits two per byte
//! as `level + 8`, low nibble first; 2 bits four per byte as `level + 2`, lowest bits first;
//! each tensor padded to a whole byte. Then each float tensor's `f32` values.
//!
//! Loading (`quantized_model.rs`) dequantizes the weights to `f32` (`level * scale`) for the
//! simulation, which runs the float kernels with activations rounded to their grids at every
//! point (the specification), and builds the integer program (`integer.rs`) that measurement
//! runs where the architecture allows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use burn::prelude::*;
use models::params::{self, HostTensor};
use models::{ForwardHook, InputShape, Model, ModelFileError, ModelSpec, Tap};
use serde::{Deserialize, Serialize};

use crate::config::{weight_layers, BITS};
use crate::container::{self, f32s, Payload};
use crate::fake::{channel_scales, qmax_symmetric, weight_levels, ActivationGrid};
use crate::quantizer::FakeQuant;

pub const MAGIC: &[u8; 8] = b"CMPQNT01";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightEntry {
    pub layer: String,
    pub path: String,
    pub bits: u32,
    pub rows: usize,
    pub cols: usize,
    pub transposed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub spec: ModelSpec,
    pub input: InputShape,
    pub fold_batchnorm: bool,
    pub weights: Vec<WeightEntry>,
    pub floats: Vec<String>,
    pub activations: BTreeMap<String, ActivationGrid>,
    /// The model's input preprocessing (files before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<data::Preprocessing>,
}

/// One quantized weight tensor: per-row scales and integer levels.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    pub scales: Vec<f32>,
    /// Row-major `[rows, cols]`.
    pub levels: Vec<i8>,
}

/// A decoded `.qnt` file.
#[derive(Debug, Clone, PartialEq)]
pub struct IntFile {
    pub header: Header,
    /// In `header.weights` order.
    pub weights: Vec<QuantizedWeight>,
    /// In `header.floats` order.
    pub floats: Vec<Vec<f32>>,
}

/// The first activation grid a model cannot compute with: bits other than 2, 4 or 8, a scale
/// that is not a positive finite number, a zero point off the grid's levels.
fn bad_grid(grids: &BTreeMap<String, ActivationGrid>) -> Option<String> {
    grids.iter().find_map(|(point, g)| {
        let usable = BITS.contains(&g.bits)
            && g.scale.is_finite()
            && g.scale > 0.0
            && g.zero_point as f32 <= crate::fake::qmax_unsigned(g.bits);
        let bad = !usable;
        bad.then(|| {
            format!(
                "activation grid {point:?}: {} bits, scale {}, zero point {}; grids have 2, 4 \
                 or 8 bits, a positive scale and a zero point among their levels",
                g.bits, g.scale, g.zero_point
            )
        })
    })
}

fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

fn pack(levels: &[i8], bits: u32) -> Vec<u8> {
    if bits == 8 {
        return levels.iter().map(|&l| l as u8).collect();
    }
    let offset = 1i8 << (bits - 1);
    let per_byte = 8 / bits as usize;
    let mut out = vec![0u8; packed_len(levels.len(), bits)];
    for (i, &l) in levels.iter().enumerate() {
        out[i / per_byte] |= ((l + offset) as u8) << ((i % per_byte) * bits as usize);
    }
    out
}

fn unpack(bytes: &[u8], n: usize, bits: u32) -> Result<Vec<i8>, String> {
    let qmax = qmax_symmetric(bits) as i8;
    let levels: Vec<i8> = if bits == 8 {
        bytes.iter().map(|&b| b as i8).collect()
    } else {
        let offset = 1i8 << (bits - 1);
        let per_byte = 8 / bits as usize;
        let mask = (1u8 << bits) - 1;
        (0..n)
            .map(|i| {
                ((bytes[i / per_byte] >> ((i % per_byte) * bits as usize)) & mask) as i8 - offset
            })
            .collect()
    };
    match levels.iter().find(|l| l.abs() > qmax) {
        Some(l) => Err(format!("level {l} outside -{qmax}..={qmax} of {bits} bits")),
        None => Ok(levels),
    }
}

impl IntFile {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        for (entry, w) in self.header.weights.iter().zip(&self.weights) {
            w.scales
                .iter()
                .for_each(|s| payload.extend(s.to_le_bytes()));
            payload.extend(pack(&w.levels, entry.bits));
        }
        for values in &self.floats {
            values.iter().for_each(|v| payload.extend(v.to_le_bytes()));
        }
        container::seal(MAGIC, &self.header, &payload)
    }

    /// Decodes a file, sizing every tensor from the model its spec builds for `input`.
    pub fn from_bytes(
        bytes: &[u8],
        path: &Path,
        input: &InputShape,
        device: &Device,
    ) -> Result<(Self, Model), ModelFileError> {
        let (header, payload): (Header, _) =
            container::open(MAGIC, "an integer model file (.qnt)", bytes, path)?;
        let mismatch = |message: String| ModelFileError::Mismatch {
            path: path.to_path_buf(),
            message,
        };
        if let Some(message) = bad_grid(&header.activations) {
            return Err(mismatch(message));
        }
        let (model, shapes) = container::build((&header.spec, &header.input), input, device, path)?;
        let mut payload = Payload::new(payload);
        let mut weights = Vec::new();
        for entry in &header.weights {
            let shape = shapes
                .get(&entry.path)
                .ok_or_else(|| mismatch(format!("the model has no tensor {:?}", entry.path)))?;
            let (rows, cols) = match (entry.transposed, shape.as_slice()) {
                (true, [d_in, d_out]) => (*d_out, *d_in),
                (false, [out, rest @ ..]) if !rest.is_empty() => (*out, rest.iter().product()),
                _ => return Err(mismatch(format!("{:?} is not a weight matrix", entry.path))),
            };
            if (entry.rows, entry.cols) != (rows, cols) || !BITS.contains(&entry.bits) {
                return Err(mismatch(format!(
                    "{:?}: {} bits, [{}, {}]; the model needs 2, 4 or 8 bits, [{rows}, {cols}]",
                    entry.path, entry.bits, entry.rows, entry.cols
                )));
            }
            let scales = f32s(payload.take(4 * rows).map_err(mismatch)?);
            if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(mismatch(format!("{:?}: weight scale {s}", entry.path)));
            }
            let packed = payload
                .take(packed_len(rows * cols, entry.bits))
                .map_err(mismatch)?;
            let levels = unpack(packed, rows * cols, entry.bits)
                .map_err(|e| mismatch(format!("{:?}: {e}", entry.path)))?;
            weights.push(QuantizedWeight { scales, levels });
        }
        let mut floats = Vec::new();
        for tensor in &header.floats {
            let shape = shapes
                .get(tensor)
                .ok_or_else(|| mismatch(format!("the model has no tensor {tensor:?}")))?;
            let n: usize = shape.iter().product();
            floats.push(f32s(payload.take(4 * n).map_err(mismatch)?));
        }
        payload.finish().map_err(mismatch)?;
        Ok((
            Self {
                header,
                weights,
                floats,
            },
            model,
        ))
    }
}

/// The BatchNorm folded into the conv whose weight is `path` (`x.conv.weight` -> `x.bn`).
pub(crate) fn folded_batchnorm(path: &str) -> Option<String> {
    path.strip_suffix(".conv.weight").map(|p| format!("{p}.bn"))
}

/// What one forward pass hands a quantizer: each layer's weights and bias as it computes them
/// (folded, when folding), quantized the way [`FakeQuant`] quantizes them.
struct Recorder<'q> {
    inner: &'q FakeQuant,
    weights: Mutex<BTreeMap<String, QuantizedWeight>>,
    biases: Mutex<BTreeMap<String, Vec<f32>>>,
}

impl ForwardHook for Recorder<'_> {
    fn fold_batchnorm(&self) -> bool {
        self.inner.fold_batchnorm()
    }

    fn weight(&self, layer: &str, w: Tensor<2>) -> Tensor<2> {
        if let Some(&bits) = self.inner.bits.get(layer) {
            let scales = channel_scales(w.clone(), bits);
            let levels = weight_levels(w.clone(), scales.clone(), bits);
            let weight = QuantizedWeight {
                scales: HostTensor::from_tensor(scales).values,
                levels: HostTensor::from_tensor(levels)
                    .values
                    .iter()
                    .map(|&l| l as i8)
                    .collect(),
            };
            let mut weights = self.weights.lock().unwrap_or_else(|e| e.into_inner());
            weights.insert(layer.to_string(), weight);
        }
        w
    }

    fn bias(&self, layer: &str, b: Tensor<1>) -> Tensor<1> {
        let mut biases = self.biases.lock().unwrap_or_else(|e| e.into_inner());
        biases.insert(layer.to_string(), HostTensor::from_tensor(b.clone()).values);
        b
    }
}

/// The integer file of `model` as `quantizer` computes it: every conv and linear layer's
/// weights quantized per channel (folded with BatchNorm when folding), activation grids as
/// observed.
pub fn export(model: &Model, quantizer: &FakeQuant, input: &InputShape) -> Result<IntFile, String> {
    let recorder = Recorder {
        inner: quantizer,
        weights: Mutex::new(BTreeMap::new()),
        biases: Mutex::new(BTreeMap::new()),
    };
    let device = model.device();
    let zeros = Tensor::<4>::zeros([1, input.channels, input.height, input.width], &device);
    model.forward_tapped(zeros, &mut Tap::hooked(&recorder, false));
    let recorded = recorder
        .weights
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let biases = recorder
        .biases
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let fold = quantizer.fold_batchnorm();
    let shapes = params::shapes(model);
    let mut entries = Vec::new();
    let mut weights = Vec::new();
    let mut covered = BTreeSet::new();
    let mut folded_biases = BTreeMap::new();
    for (layer, path) in weight_layers(model) {
        let Some(&bits) = quantizer.bits.get(&layer) else {
            continue;
        };
        let weight = recorded
            .get(&layer)
            .ok_or_else(|| format!("layer {layer} was not reached by the forward pass"))?;
        let shape = &shapes[&path];
        let transposed = shape.len() == 2;
        let rows = if transposed { shape[1] } else { shape[0] };
        entries.push(WeightEntry {
            cols: weight.levels.len() / rows.max(1),
            layer: layer.clone(),
            path: path.clone(),
            bits,
            rows,
            transposed,
        });
        weights.push(weight.clone());
        covered.insert(path.clone());
        if let (true, Some(bn)) = (fold, folded_batchnorm(&path)) {
            for name in ["gamma", "running_mean", "running_var"] {
                covered.insert(format!("{bn}.{name}"));
            }
            let bias = biases
                .get(&layer)
                .ok_or_else(|| format!("layer {layer}'s folded bias was not recorded"))?;
            folded_biases.insert(format!("{bn}.beta"), bias.clone());
        }
    }
    let kept = params::values(model, |p| !covered.contains(p));
    let mut floats = Vec::new();
    let mut paths = Vec::new();
    for (path, tensor) in kept {
        floats.push(folded_biases.remove(&path).unwrap_or(tensor.values));
        paths.push(path);
    }
    Ok(IntFile {
        header: Header {
            spec: model.spec(),
            input: *input,
            fold_batchnorm: fold,
            weights: entries,
            floats: paths,
            activations: quantizer.grids(),
            preprocessing: None,
        },
        weights,
        floats,
    })
}
