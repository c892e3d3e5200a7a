//! The fake-quantizer a QAT or PTQ stage runs every forward pass through, and its observers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use burn::prelude::*;
use models::ForwardHook;
use serde::{Deserialize, Serialize};

use crate::config::{ObserverKind, QuantConfig};
use crate::fake::{fake_quant_weight, ActivationGrid};

/// An observed activation range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub min: f32,
    pub max: f32,
    /// Batches observed.
    pub batches: u64,
}

/// How ranges are learned (from `[quant]`).
#[derive(Debug, Clone, Copy)]
pub struct Observer {
    pub kind: ObserverKind,
    pub decay: f32,
    pub percentile: f64,
}

impl Observer {
    /// The range of one batch: its extremes, or its percentiles.
    ///
    /// # Shapes
    /// - input: `[batch, features]`
    pub fn batch_range(&self, x: Tensor<2>) -> (f32, f32) {
        match self.kind {
            ObserverKind::MinMax | ObserverKind::Ema => (
                x.clone().min().into_scalar::<f32>(),
                x.max().into_scalar::<f32>(),
            ),
            ObserverKind::Percentile => {
                let mut values: Vec<f32> = x
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap_or_default();
                percentiles(&mut values, self.percentile)
            }
        }
    }

    /// `previous` updated with a batch's range.
    pub fn update(&self, previous: Option<Range>, (lo, hi): (f32, f32)) -> Range {
        let Some(p) = previous else {
            return Range {
                min: lo,
                max: hi,
                batches: 1,
            };
        };
        let (min, max) = match self.kind {
            ObserverKind::MinMax => (p.min.min(lo), p.max.max(hi)),
            ObserverKind::Ema | ObserverKind::Percentile => (
                self.decay * p.min + (1.0 - self.decay) * lo,
                self.decay * p.max + (1.0 - self.decay) * hi,
            ),
        };
        Range {
            min,
            max,
            batches: p.batches + 1,
        }
    }
}

/// The `100 - p` and `p` percentiles of `values` (nearest rank; reorders `values`).
pub fn percentiles(values: &mut [f32], p: f64) -> (f32, f32) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let last = values.len() - 1;
    let rank = |q: f64| ((q / 100.0) * last as f64).round() as usize;
    let hi_at = rank(p).min(last);
    let lo_at = rank(100.0 - p).min(last);
    let hi = *values.select_nth_unstable_by(hi_at, f32::total_cmp).1;
    let lo = *values.select_nth_unstable_by(lo_at, f32::total_cmp).1;
    (lo, hi)
}

/// Whether the activation at `point` is quantized: every point but a convolution's raw
/// output and BatchNorm's pre-activation output, which an integer model keeps in its
/// accumulator (the ReLU that follows is fused).
pub fn is_quantized_point(point: &str) -> bool {
    !point.ends_with(".conv") && !point.ends_with(".bn")
}

/// What a checkpoint keeps of the quantizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizerState {
    pub ranges: BTreeMap<String, Range>,
    pub observing: bool,
    pub fold: bool,
}

/// Weights fake-quantized per channel at each layer's bits, activations per tensor on the
/// observed ranges. Observers learn only from passes that ask them to (training and
/// calibration) and only until frozen.
pub struct FakeQuant {
    /// Every weight layer's bits.
    pub bits: BTreeMap<String, u32>,
    pub activation_bits: u32,
    /// Whether the model's input ([`models::INPUT_POINT`]) is quantized too.
    pub quantize_input: bool,
    observer: Observer,
    fold: AtomicBool,
    observing: AtomicBool,
    ranges: Mutex<BTreeMap<String, Range>>,
}

impl FakeQuant {
    /// A quantizer for the layers `layers` (names as the forward pass gives them).
    pub fn new<'a>(config: &QuantConfig, layers: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            bits: layers
                .into_iter()
                .map(|layer| (layer.clone(), config.bits_for(layer)))
                .collect(),
            activation_bits: config.activation_bits,
            quantize_input: config.quantize_input,
            observer: Observer {
                kind: config.observer,
                decay: config.ema_decay as f32,
                percentile: config.percentile,
            },
            fold: AtomicBool::new(false),
            observing: AtomicBool::new(true),
            ranges: Mutex::new(BTreeMap::new()),
        }
    }

    fn ranges(&self) -> MutexGuard<'_, BTreeMap<String, Range>> {
        // A panic elsewhere cannot leave a half-written range: updates are single inserts.
        self.ranges.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_fold(&self, fold: bool) {
        self.fold.store(fold, Ordering::Relaxed);
    }

    pub fn set_observing(&self, observing: bool) {
        self.observing.store(observing, Ordering::Relaxed);
    }

    pub fn observing(&self) -> bool {
        self.observing.load(Ordering::Relaxed)
    }

    /// The activation grids as they stand, by point.
    pub fn grids(&self) -> BTreeMap<String, ActivationGrid> {
        self.ranges()
            .iter()
            .map(|(point, r)| {
                let grid = ActivationGrid::from_range(r.min, r.max, self.activation_bits);
                (point.clone(), grid)
            })
            .collect()
    }

    pub fn state(&self) -> QuantizerState {
        QuantizerState {
            ranges: self.ranges().clone(),
            observing: self.observing(),
            fold: self.fold_batchnorm(),
        }
    }

    pub fn restore(&self, state: QuantizerState) {
        *self.ranges() = state.ranges;
        self.set_observing(state.observing);
        self.set_fold(state.fold);
    }
}

impl ForwardHook for FakeQuant {
    fn fold_batchnorm(&self) -> bool {
        self.fold.load(Ordering::Relaxed)
    }

    fn weight(&self, layer: &str, w: Tensor<2>) -> Tensor<2> {
        match self.bits.get(layer) {
            Some(&bits) => fake_quant_weight(w, bits),
            None => w,
        }
    }

    fn activation(&self, point: &str, x: Tensor<2>, observe: bool) -> Tensor<2> {
        let input_kept = point == models::INPUT_POINT && !self.quantize_input;
        if !is_quantized_point(point) || input_kept {
            return x;
        }
        let mut ranges = self.ranges();
        if observe && self.observing() {
            let batch = self.observer.batch_range(x.clone().detach());
            let updated = self.observer.update(ranges.get(point).copied(), batch);
            ranges.insert(point.to_string(), updated);
        }
        match ranges.get(point) {
            Some(r) => ActivationGrid::from_range(r.min, r.max, self.activation_bits).fake_quant(x),
            // Not observed yet (an evaluation before any calibration): float.
            None => x,
        }
    }

    /// The clip's range is the grid (Jacob et al. 2018 fix ReLU6's at [0, 6]): its top level
    /// is exactly the clip, so the integer model's clamp to its levels is the ReLU6 itself,
    /// and no observed batch can set the grid below the clip and cut off what the float
    /// model passes. It is recorded as the point's range (for the exports) when observing.
    fn clipped_activation(
        &self,
        point: &str,
        x: Tensor<2>,
        observe: bool,
        (lo, hi): (f32, f32),
    ) -> Tensor<2> {
        if !is_quantized_point(point) {
            return x;
        }
        if observe && self.observing() {
            let mut ranges = self.ranges();
            let batches = ranges.get(point).map_or(0, |r| r.batches) + 1;
            let range = Range {
                min: lo,
                max: hi,
                batches,
            };
            ranges.insert(point.to_string(), range);
        }
        ActivationGrid::from_range(lo, hi, self.activation_bits).fake_quant(x)
    }
}
