//! The fully connected stack MLPs and VGG heads share: linear layers with ReLU and dropout
//! between them, the last one producing logits. Written once because pruning and QAT both
//! edit it.

use burn::nn::{Dropout, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::tap::{LayerRef, Tap};

/// Linear layers of widths `widths[0] -> widths[1] -> ... -> widths[n]`.
pub(crate) fn build(widths: &[usize], device: &Device) -> Vec<Linear> {
    widths
        .windows(2)
        .map(|w| LinearConfig::new(w[0], w[1]).init(device))
        .collect()
}

/// Runs `layers`, offering each output to `tap` as `{prefix}.{i}` (hidden layers after ReLU,
/// before dropout).
///
/// # Shapes
/// - input: `[batch, layers[0].d_in]`
/// - output: `[batch, layers[n-1].d_out]`
pub(crate) fn forward(
    layers: &[Linear],
    dropout: &Dropout,
    mut x: Tensor<2>,
    tap: &mut Tap,
    prefix: &str,
) -> Tensor<2> {
    let last = layers.len() - 1;
    for (i, layer) in layers.iter().enumerate() {
        x = tap.linear(layer, &format!("{prefix}.{i}"), x); // [batch, width_i]
        if i < last {
            x = relu(x);
        }
        x = tap.probe(&format!("{prefix}.{i}"), x, LayerRef::Linear(layer));
        if i < last {
            x = crate::dropout::forward(dropout, x);
        }
    }
    x
}

pub(crate) fn macs(layers: &[Linear]) -> u64 {
    layers
        .iter()
        .map(|l| crate::dims(&l.weight).iter().product::<usize>() as u64)
        .sum()
}

/// Output widths of the hidden layers (the classifier's excluded).
pub(crate) fn hidden_widths(layers: &[Linear]) -> Vec<usize> {
    layers[..layers.len() - 1]
        .iter()
        .map(|l| crate::dims(&l.weight)[1])
        .collect()
}
