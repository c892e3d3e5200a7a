//! Multi-layer perceptron, as in Hinton, Vinyals & Dean 2015 ("Distilling the Knowledge in a
//! Neural Network"): 784-1200-1200-10 with dropout is their MNIST teacher.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::tap::{LayerRef, Tap};

#[derive(Module, Debug)]
pub struct Mlp {
    pub input_dropout: Dropout,
    /// Hidden layers then the classifier; `layers[i].weight` is `[d_in, d_out]`.
    pub layers: Vec<Linear>,
    pub dropout: Dropout,
}

impl Mlp {
    pub fn new(
        d_input: usize,
        hidden: &[usize],
        classes: usize,
        dropout: f64,
        input_dropout: f64,
        device: &Device,
    ) -> Self {
        let widths: Vec<usize> = std::iter::once(d_input)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        Self {
            input_dropout: DropoutConfig::new(input_dropout).init(),
            layers: widths
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// # Shapes
    /// - input: `[batch, channels, h, w]` (flattened to `[batch, channels * h * w]`)
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        let mut x = self.input_dropout.forward(x.flatten::<2>(1, 3));
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x); // [batch, width_i]
            if i < last {
                x = relu(x);
            }
            tap.offer(&format!("layers.{i}"), &x, LayerRef::Linear(layer));
            if i < last {
                x = self.dropout.forward(x);
            }
        }
        x
    }

    /// Tap points: the output of each hidden layer (after ReLU, before dropout).
    pub fn taps(&self) -> Vec<String> {
        (0..self.layers.len() - 1)
            .map(|i| format!("layers.{i}"))
            .collect()
    }

    pub fn macs(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| l.weight.dims().iter().product::<usize>() as u64)
            .sum()
    }
}
