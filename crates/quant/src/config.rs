//! The `[quant]` section of a stage config.

use std::collections::BTreeMap;

use models::{InputShape, Model, ModelSpec};
use serde::{Deserialize, Serialize};
use technique::{matches, Invalid, ParentShape, TechniqueConfig};

pub use technique::FROM_KEY;

/// Bit widths an integer export can pack.
pub const BITS: [u32; 3] = [2, 4, 8];

/// What the stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Quantization-aware training: fine-tune the parent through fake-quantization.
    #[default]
    Qat,
    /// Post-training quantization: calibrate observers on a few batches, no training.
    Ptq,
    /// Convert every tensor to 16-bit floats, no training.
    Float16,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Qat => "qat",
            Mode::Ptq => "ptq",
            Mode::Float16 => "float16",
        }
    }
}

/// How an activation's range is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObserverKind {
    /// The smallest and largest value ever seen.
    #[serde(rename = "minmax", alias = "min-max")]
    MinMax,
    /// Each batch's minimum and maximum, averaged with `ema_decay` (PyTorch's
    /// moving-average observer): a few outliers do not stretch the grid for good.
    #[default]
    Ema,
    /// Each batch's `percentile` and `100 - percentile` percentiles, averaged with
    /// `ema_decay`: clips the extreme tail.
    Percentile,
}

impl ObserverKind {
    pub fn name(self) -> &'static str {
        match self {
            ObserverKind::MinMax => "minmax",
            ObserverKind::Ema => "ema",
            ObserverKind::Percentile => "percentile",
        }
    }
}

/// `[quant]`: fake-quantization with straight-through gradients, or post-training
/// quantization, exported as an integer model; or a 16-bit float export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Weight bits (per-channel symmetric): 2, 4 or 8.
    #[serde(default = "eight")]
    pub bits: u32,
    /// Activation bits (per-tensor affine): 2, 4 or 8.
    #[serde(default = "eight")]
    pub activation_bits: u32,
    /// Weight bits per layer by name pattern (`*` matches any run of characters), e.g.
    /// `{ conv1 = 8, fc3 = 8 }` keeps the first and last layer at 8 bits. The last pattern
    /// that matches a layer wins.
    #[serde(default)]
    pub layers: BTreeMap<String, u32>,
    #[serde(default)]
    pub observer: ObserverKind,
    /// Weight of the running range in the moving average (`ema`, `percentile`).
    #[serde(default = "ema_decay")]
    pub ema_decay: f64,
    /// The upper percentile the `percentile` observer keeps (the lower is `100 - p`).
    #[serde(default = "percentile")]
    pub percentile: f64,
    /// Training batches the observers see before the first step (and, for PTQ, all they
    /// see). 128 images each.
    #[serde(default = "calibration_batches")]
    pub calibration_batches: usize,
    /// QAT: observers keep learning during the first this many epochs, then freeze.
    #[serde(default = "one")]
    pub freeze_observers_after: usize,
    /// Fold BatchNorm into the preceding convolution (Jacob et al. 2018), as the integer
    /// export computes it.
    #[serde(default = "yes")]
    pub fold_batchnorm: bool,
    /// QAT: BatchNorm trains unfolded, updating its statistics, for this many epochs; then
    /// its statistics freeze and it is folded. 0: folded with the parent's statistics from
    /// the start.
    #[serde(default)]
    pub freeze_bn_after: usize,
    /// Quantize the model's input (the normalised image) too, on a grid of
    /// `activation_bits` observed like every other, so that the first layer runs in integer
    /// arithmetic as well (a "full-integer" model, as ONNX Runtime's static quantization and
    /// TFLite make). Off, the first layer computes in float on its dequantized weights.
    #[serde(default, skip_serializing_if = "is_false")]
    pub quantize_input: bool,
}

/// Left out of the serialised config when off, so configs written before the key existed keep
/// their run identity.
fn is_false(value: &bool) -> bool {
    !value
}

fn eight() -> u32 {
    8
}
fn ema_decay() -> f64 {
    0.9
}
fn percentile() -> f64 {
    99.99
}
fn calibration_batches() -> usize {
    32
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// Images per calibration batch.
pub const CALIBRATION_BATCH: usize = 128;

fn check_bits(key: &str, bits: u32) -> Result<(), Invalid> {
    if BITS.contains(&bits) {
        Ok(())
    } else {
        Err(Invalid::new(key, bits, "must be 2, 4 or 8"))
    }
}

impl TechniqueConfig for QuantConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_bits("quant.bits", self.bits)?;
        check_bits("quant.activation_bits", self.activation_bits)?;
        for (pattern, bits) in &self.layers {
            check_bits(&format!("quant.layers.{pattern:?}"), *bits)?;
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Invalid::new(
                "quant.ema_decay",
                self.ema_decay,
                "must be in [0, 1)",
            ));
        }
        if !(50.0..=100.0).contains(&self.percentile) {
            return Err(Invalid::new(
                "quant.percentile",
                self.percentile,
                "must be in [50, 100]",
            ));
        }
        if self.mode == Mode::Float16 && self.quantize_input {
            return Err(Invalid::new(
                "quant.quantize_input",
                true,
                "applies to integer exports (mode = \"qat\" or \"ptq\"); a 16-bit float \
                 export keeps its input in float",
            ));
        }
        if self.mode != Mode::Float16 && !(1..=10_000).contains(&self.calibration_batches) {
            return Err(Invalid::new(
                "quant.calibration_batches",
                self.calibration_batches,
                "must be in 1..=10000",
            ));
        }
        Ok(())
    }

    fn check(
        &self,
        own: &ModelSpec,
        parents: &[ParentShape],
        input: &InputShape,
    ) -> Result<(), Invalid> {
        let model = technique::from_model(parents, own, input, "a quantizing stage")?;
        let names: Vec<String> = weight_layers(&model).into_keys().collect();
        for pattern in self.layers.keys() {
            if !names.iter().any(|n| matches(pattern, n)) {
                return Err(Invalid::new(
                    &format!("quant.layers.{pattern:?}"),
                    pattern,
                    format!(
                        "matches no layer; the model's layers are {}",
                        names.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_training(&self, epochs: usize) -> Result<(), Invalid> {
        match self.mode {
            Mode::Ptq | Mode::Float16 if epochs != 0 => Err(Invalid::new(
                "train.epochs",
                epochs,
                format!(
                    "must be 0 with quant.mode = \"{}\" (it does not train; use mode = \"qat\" \
                     to fine-tune)",
                    self.mode.name()
                ),
            )),
            Mode::Qat if epochs == 0 => Err(Invalid::new(
                "train.epochs",
                epochs,
                "must be at least 1 with quant.mode = \"qat\" (use mode = \"ptq\" to quantize \
                 without training)",
            )),
            Mode::Qat if self.freeze_observers_after > epochs => Err(Invalid::new(
                "quant.freeze_observers_after",
                self.freeze_observers_after,
                format!("must be at most train.epochs ({epochs})"),
            )),
            Mode::Qat if self.fold_batchnorm && self.freeze_bn_after >= epochs => {
                Err(Invalid::new(
                    "quant.freeze_bn_after",
                    self.freeze_bn_after,
                    format!(
                        "must be below train.epochs ({epochs}), so the last epochs train the \
                         folded model the export computes"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl QuantConfig {
    /// Weight bits of `layer`: the last matching `layers` pattern's, else `bits`.
    pub fn bits_for(&self, layer: &str) -> u32 {
        self.layers
            .iter()
            .filter(|(pattern, _)| matches(pattern, layer))
            .map(|(_, bits)| *bits)
            .next_back()
            .unwrap_or(self.bits)
    }
}

/// The layers with weights a quantizer sees, by the name the forward pass gives them
/// (`conv1`, `stages.0.1`, `blocks.2.conv1`, `fc.0`), with the path of their weight tensor.
/// Shapes are read without initialising anything.
pub fn weight_layers(model: &Model) -> BTreeMap<String, String> {
    models::params::shapes(model)
        .into_iter()
        .filter(|(path, shape)| matches!(shape.len(), 2 | 4) && path.ends_with(".weight"))
        .map(|(path, _)| {
            let layer = path.trim_end_matches(".weight");
            let layer = layer.strip_suffix(".conv").unwrap_or(layer);
            (layer.to_string(), path)
        })
        .collect()
}
