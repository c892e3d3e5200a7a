//! Quantize-dequantize ("fake quantization") with a straight-through estimator.
//!
//! Weights: per output channel, symmetric: `q = clamp(round(w / s), -qmax, qmax)`,
//! `s = max|w| / qmax` with `qmax = 2^(bits-1) - 1` (127, 7 or 1), zero point 0.
//! Activations: per tensor, affine: `q = clamp(round(x / s) + z, 0, 2^bits - 1)` with the
//! scale and zero point from an observed range that includes 0 (so 0 is exact: ReLU zeros
//! and padding stay zero). Rounding is half to even, as burn's `round`.
//!
//! Gradients: the straight-through estimator (Bengio et al. 2013; Jacob et al. 2018) passes
//! the gradient unchanged where the input lies inside the representable range and zeroes it
//! where the input was clamped.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The largest magnitude of a symmetric signed grid of `bits` bits.
pub fn qmax_symmetric(bits: u32) -> f32 {
    ((1u32 << (bits - 1)) - 1) as f32
}

/// The largest level of an unsigned grid of `bits` bits.
pub fn qmax_unsigned(bits: u32) -> f32 {
    ((1u32 << bits) - 1) as f32
}

/// Smallest scale: an all-zero channel quantizes to zeros instead of dividing by zero.
const MIN_SCALE: f32 = 1e-12;

/// Per-output-channel scales of `w`.
///
/// # Shapes
/// - input: `[out, fan_in]`
/// - output: `[out, 1]`
pub fn channel_scales(w: Tensor<2>, bits: u32) -> Tensor<2> {
    w.abs()
        .max_dim(1)
        .clamp_min(MIN_SCALE)
        .div_scalar(qmax_symmetric(bits))
}

/// The integer levels of `w` on the grid of `scales` (still floats, exactly integral).
///
/// # Shapes
/// - input: `w` `[out, fan_in]`, `scales` `[out, 1]`
/// - output: `[out, fan_in]`
pub fn weight_levels(w: Tensor<2>, scales: Tensor<2>, bits: u32) -> Tensor<2> {
    let qmax = qmax_symmetric(bits);
    (w / scales).round().clamp(-qmax, qmax)
}

/// `dequantized` in the forward pass, `x`'s gradient where `inside` (else zero) in the
/// backward pass. Written so the value is exactly `dequantized` (no `x + (d - x)` rounding).
fn straight_through<const D: usize>(
    x: Tensor<D>,
    dequantized: Tensor<D>,
    inside: Tensor<D, Bool>,
) -> Tensor<D> {
    let passed = x * inside.float(); // gradient 1 inside, 0 outside
    dequantized.detach() + (passed.clone() - passed.detach())
}

/// Per-channel symmetric fake-quantization of a weight matrix. The scale follows the
/// weights but is not differentiated (it is recomputed every step).
///
/// # Shapes
/// - input: `[out, fan_in]`
/// - output: `[out, fan_in]`
pub fn fake_quant_weight(w: Tensor<2>, bits: u32) -> Tensor<2> {
    let scales = channel_scales(w.clone().detach(), bits);
    let dequantized = weight_levels(w.clone().detach(), scales.clone(), bits) * scales.clone();
    // max|w| sets the scale, so every weight is inside the range: the clamp only guards it.
    // `scale * qmax` can round to just below max|w| (scale = max|w| / qmax in f32), which would
    // cut the largest weight of a channel off from its gradient: allow a few ulps.
    let limit = scales.mul_scalar(qmax_symmetric(bits) * (1.0 + 1e-6));
    let inside = w.clone().abs().lower_equal(limit.expand(w.dims()));
    straight_through(w, dequantized, inside)
}

/// A per-tensor affine grid: `x ~ (q - zero_point) * scale`, `q` in `0..=2^bits - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActivationGrid {
    pub bits: u32,
    pub scale: f32,
    pub zero_point: u32,
}

impl ActivationGrid {
    /// The grid covering `[min, max]` stretched to include 0.
    pub fn from_range(min: f32, max: f32, bits: u32) -> Self {
        let levels = qmax_unsigned(bits);
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = ((hi - lo) / levels).max(MIN_SCALE);
        let zero_point = (-lo / scale).round_ties_even().clamp(0.0, levels) as u32;
        Self {
            bits,
            scale,
            zero_point,
        }
    }

    /// The smallest and largest representable value.
    pub fn limits(&self) -> (f32, f32) {
        let z = self.zero_point as f32;
        (
            (0.0 - z) * self.scale,
            (qmax_unsigned(self.bits) - z) * self.scale,
        )
    }

    /// Fake-quantizes `x` on this grid.
    ///
    /// # Shapes
    /// - input: any; output: the same
    pub fn fake_quant<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let z = self.zero_point as f32;
        let levels = x
            .clone()
            .detach()
            .div_scalar(self.scale)
            .round()
            .add_scalar(z)
            .clamp(0.0, qmax_unsigned(self.bits));
        let dequantized = levels.sub_scalar(z).mul_scalar(self.scale);
        let (lo, hi) = self.limits();
        let inside = x
            .clone()
            .greater_equal_elem(lo)
            .bool_and(x.clone().lower_equal_elem(hi));
        straight_through(x, dequantized, inside)
    }
}
