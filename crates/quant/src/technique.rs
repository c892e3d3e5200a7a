//! The `quant` technique: QAT, PTQ and the 16-bit export as one technique on the hooks.

use std::collections::BTreeMap;
use std::fmt::Write;

use burn::prelude::*;
use data::{make_batch, Dataset, Preprocess, SplitMix64};
use measure::evaluate;
use models::{Classifier, ForwardHook, HookedView, InputShape, Model, Tap};
use serde::{Deserialize, Serialize};
use technique::{Artifact, Report, StageContext, Technique, TechniqueError, Trainee};

use crate::config::{weight_layers, Mode, QuantConfig, CALIBRATION_BATCH, FROM_KEY};
use crate::fake::ActivationGrid;
use crate::int_file;
use crate::quantizer::{FakeQuant, QuantizerState};

/// Separates the calibration sample from the training order of the same seed.
const CALIBRATION_STREAM: u64 = 0xca1b_4a7e;

/// The export file names.
pub const INT_FILE: &str = "model.qnt";
pub const HALF_FILE: &str = "model.f16";

/// What a checkpoint keeps.
#[derive(Serialize, Deserialize)]
struct SavedState {
    quantizer: QuantizerState,
    float_accuracy: Option<f64>,
    fake_quant_accuracy: Option<f64>,
}

pub struct Quantization<'a> {
    config: QuantConfig,
    fake: FakeQuant,
    dataset: &'a Dataset,
    prep: Preprocess,
    /// What the exports record about their input.
    preprocessing: data::Preprocessing,
    input: InputShape,
    device: Device,
    eval_batch_size: usize,
    seed: u64,
    log: Vec<String>,
    float_accuracy: Option<f64>,
    fake_quant_accuracy: Option<f64>,
}

fn error(message: impl Into<String>) -> TechniqueError {
    TechniqueError {
        technique: "quant",
        message: message.into(),
    }
}

impl<'a> Quantization<'a> {
    pub fn new(config: &QuantConfig, ctx: &StageContext<'a>) -> Result<Self, TechniqueError> {
        let parent = ctx
            .parent(FROM_KEY)
            .ok_or_else(|| error("needs `from`: the trained model to quantize"))?;
        let layers = weight_layers(&parent.model);
        Ok(Self {
            fake: FakeQuant::new(config, layers.keys()),
            config: config.clone(),
            dataset: ctx.dataset,
            prep: ctx.prep,
            preprocessing: ctx.preprocessing(),
            input: ctx.input,
            device: ctx.device.clone(),
            eval_batch_size: ctx.eval_batch_size,
            seed: ctx.seed,
            log: Vec::new(),
            float_accuracy: None,
            fake_quant_accuracy: None,
        })
    }

    fn quantizes(&self) -> bool {
        self.config.mode != Mode::Float16
    }

    fn accuracy(&self, model: &dyn Classifier) -> f64 {
        evaluate(
            model,
            &self.dataset.test,
            &self.prep,
            self.eval_batch_size,
            &self.device,
        )
        .accuracy
    }

    /// Runs `calibration_batches` training batches (a seeded sample, not augmented) through
    /// the quantizer with its observers learning.
    fn calibrate(&self, model: &Model) -> usize {
        let train = &self.dataset.train;
        let mut order: Vec<usize> = (0..train.len()).collect();
        SplitMix64::for_stream(self.seed, CALIBRATION_STREAM).shuffle(&mut order);
        let wanted = (self.config.calibration_batches * CALIBRATION_BATCH).min(order.len());
        let mut batches = 0;
        for chunk in order[..wanted].chunks(CALIBRATION_BATCH) {
            let batch = make_batch(train, chunk, &self.prep, None, &self.device);
            model.forward_tapped(batch.images, &mut Tap::hooked(&self.fake, true));
            batches += 1;
        }
        batches
    }

    fn bits_summary(&self) -> String {
        let mut by_bits: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        for (layer, bits) in &self.fake.bits {
            by_bits.entry(*bits).or_default().push(layer);
        }
        by_bits
            .iter()
            .map(|(bits, layers)| format!("{bits}-bit: {}", layers.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Technique for Quantization<'_> {
    fn name(&self) -> &'static str {
        "quant"
    }

    fn describe(&self) -> Option<String> {
        let c = &self.config;
        Some(match c.mode {
            Mode::Float16 => "quant: 16-bit float export (no training)".to_string(),
            mode => format!(
                "quant: {} | weights per-channel symmetric ({}) | activations {}-bit per-tensor \
                 affine, {} observer{} | BatchNorm {}",
                if mode == Mode::Qat { "QAT" } else { "PTQ" },
                self.bits_summary(),
                c.activation_bits,
                c.observer.name(),
                if mode == Mode::Qat {
                    format!(", frozen after epoch {}", c.freeze_observers_after)
                } else {
                    format!(", {} calibration batches", c.calibration_batches)
                },
                match (c.fold_batchnorm, mode, c.freeze_bn_after) {
                    (false, ..) => "not folded".to_string(),
                    (true, Mode::Qat, after) if after > 0 => {
                        format!("trained unfolded for {after} epochs, then frozen and folded")
                    }
                    _ => "folded into the convs (parent's statistics, frozen)".to_string(),
                },
            ),
        })
    }

    fn forward_hook(&self) -> Option<&dyn ForwardHook> {
        self.quantizes().then_some(&self.fake as &dyn ForwardHook)
    }

    fn batches_in_order(&self) -> bool {
        // The observers' moving averages depend on the order batches arrive in.
        self.quantizes()
    }

    fn prepare(&mut self, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        if !self.quantizes() {
            return Ok(trainee);
        }
        let c = &self.config;
        self.fake
            .set_fold(c.fold_batchnorm && (c.mode == Mode::Ptq || c.freeze_bn_after == 0));
        self.fake.set_observing(true);
        let model = trainee.model.valid();
        let batches = self.calibrate(&model);
        let points = self.fake.grids().len();
        self.fake
            .set_observing(c.mode == Mode::Qat && c.freeze_observers_after > 0);
        self.log.push(format!(
            "quant: observers calibrated on {batches} batches of {CALIBRATION_BATCH} training \
             images ({points} activation points)"
        ));
        if c.mode == Mode::Ptq {
            // PTQ does not train: the in-memory model is final now.
            let view = HookedView {
                model: &model,
                hook: &self.fake,
            };
            self.fake_quant_accuracy = Some(self.accuracy(&view));
            self.float_accuracy = Some(self.accuracy(&model));
        }
        Ok(trainee)
    }

    fn after_epoch(&mut self, epoch: usize, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        let c = &self.config;
        let done = epoch + 1;
        if c.mode == Mode::Qat && done == c.freeze_observers_after && self.fake.observing() {
            self.fake.set_observing(false);
            self.log
                .push(format!("quant: epoch {done}: activation ranges frozen"));
        }
        if c.mode == Mode::Qat && c.fold_batchnorm && c.freeze_bn_after == done {
            self.fake.set_fold(true);
            self.log.push(format!(
                "quant: epoch {done}: BatchNorm statistics frozen, folded into the convs"
            ));
        }
        Ok(trainee)
    }

    fn metrics(&mut self, model: &Model, accuracy: f64) -> Vec<(String, f64)> {
        if !self.quantizes() {
            return Vec::new();
        }
        let float = self.accuracy(model);
        self.float_accuracy = Some(float);
        self.fake_quant_accuracy = Some(accuracy);
        let mut out = vec![
            ("quant/float_accuracy".to_string(), float),
            ("quant/fake_quant_accuracy".to_string(), accuracy),
        ];
        for (point, grid) in self.fake.grids() {
            let (lo, hi) = grid.limits();
            out.push((format!("quant/activation_min/{point}"), lo as f64));
            out.push((format!("quant/activation_max/{point}"), hi as f64));
            out.push((format!("quant/activation_scale/{point}"), grid.scale as f64));
        }
        if let Ok(file) = int_file::export(model, &self.fake, &self.input) {
            for (entry, weight) in file.header.weights.iter().zip(&file.weights) {
                let mean = weight.scales.iter().map(|&s| s as f64).sum::<f64>()
                    / weight.scales.len().max(1) as f64;
                out.push((format!("quant/weight_scale_mean/{}", entry.layer), mean));
            }
        }
        out
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn state(&self) -> Result<serde_json::Value, TechniqueError> {
        ::technique::save_state(
            "quant",
            &SavedState {
                quantizer: self.fake.state(),
                float_accuracy: self.float_accuracy,
                fake_quant_accuracy: self.fake_quant_accuracy,
            },
        )
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), TechniqueError> {
        let saved: SavedState = ::technique::load_state("quant", state)?;
        self.fake.restore(saved.quantizer);
        self.float_accuracy = saved.float_accuracy;
        self.fake_quant_accuracy = saved.fake_quant_accuracy;
        Ok(())
    }

    fn export(&self, model: &Model) -> Option<Result<Artifact, TechniqueError>> {
        Some(match self.config.mode {
            Mode::Float16 => Ok(Artifact {
                file_name: HALF_FILE.into(),
                bytes: crate::half_file::to_bytes_with(
                    model,
                    &self.input,
                    Some(&self.preprocessing),
                ),
            }),
            _ => int_file::export(model, &self.fake, &self.input)
                .map(|mut file| {
                    file.header.preprocessing = Some(self.preprocessing.clone());
                    file
                })
                .map(|file| Artifact {
                    file_name: INT_FILE.into(),
                    bytes: file.to_bytes(),
                })
                .map_err(error),
        })
    }

    fn report(&self) -> Option<Report> {
        let c = &self.config;
        let grids = self.fake.grids();
        let json = serde_json::json!({
            "mode": c.mode.name(),
            "weight_bits": self.fake.bits,
            "activation_bits": c.activation_bits,
            "observer": c.observer,
            "fold_batchnorm": self.quantizes() && self.fake.fold_batchnorm(),
            "activations": grids,
            "float_accuracy": self.float_accuracy,
            "fake_quant_accuracy": self.fake_quant_accuracy,
        });
        let mut table = String::new();
        if !self.quantizes() {
            let _ = writeln!(
                table,
                "quant (float16): every tensor stored as IEEE half precision ({HALF_FILE}); the \
                 run's accuracy is the file's, widened back to f32"
            );
            return Some(Report { json, table });
        }
        let percent = |a: Option<f64>| a.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a));
        let _ = writeln!(
            table,
            "quant ({}): float {} | fake-quantized in memory {} (the run's accuracy is \
             {INT_FILE}'s, loaded from disk)",
            c.mode.name(),
            percent(self.float_accuracy),
            percent(self.fake_quant_accuracy)
        );
        {
            let _ = writeln!(table, "  weights: {}", self.bits_summary());
            // The name column fits the longest point (`blocks.16.depthwise.relu6`).
            let width = grids.keys().map(|p| p.len()).max().unwrap_or(0).max(22);
            let _ = writeln!(
                table,
                "  {:<width$} {:>5} {:>11} {:>11} {:>11} {:>5}",
                "activation point", "bits", "min", "max", "scale", "zero"
            );
            for (point, grid) in &grids {
                let ActivationGrid {
                    bits,
                    scale,
                    zero_point,
                } = *grid;
                let (lo, hi) = grid.limits();
                let _ = writeln!(
                    table,
                    "  {point:<width$} {bits:>5} {lo:>11.4} {hi:>11.4} {scale:>11.3e} {zero_point:>5}"
                );
            }
        }
        Some(Report { json, table })
    }
}
