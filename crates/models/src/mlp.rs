//! Multi-layer perceptron, as in Hinton, Vinyals & Dean 2015 ("Distilling the Knowledge in a
//! Neural Network"): 784-1200-1200-10 with dropout is their MNIST teacher.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;

use crate::linear_stack;
use crate::tap::Tap;

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
            layers: linear_stack::build(&widths, device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// # Shapes
    /// - input: `[batch, channels, h, w]` (flattened to `[batch, channels * h * w]`)
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        let x = crate::dropout::forward(&self.input_dropout, x.flatten::<2>(1, 3));
        linear_stack::forward(&self.layers, &self.dropout, x, tap, "layers")
    }

    pub fn macs(&self) -> u64 {
        linear_stack::macs(&self.layers)
    }
}
