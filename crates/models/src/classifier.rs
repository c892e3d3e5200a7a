//! What measurement needs of a model: logits for images, and its size. Implemented by
//! [`Model`] and by exported models (an integer export is measured from its own file).

use burn::prelude::*;

use crate::{InputShape, Model, Quantizer, Tap};

pub trait Classifier: Sync {
    /// The architecture's name, as configs write it.
    fn kind(&self) -> &str;

    /// # Shapes
    /// - input: `[batch, channels, height, width]`, normalised pixels
    /// - output: `[batch, classes]` logits
    fn classify(&self, images: Tensor<4>) -> Tensor<2>;

    /// Parameters (and buffers) the model holds.
    fn num_params(&self) -> usize;

    /// Multiply-accumulates of one forward pass for one sample.
    fn macs(&self, input: &InputShape) -> u64;
}

impl Classifier for Model {
    fn kind(&self) -> &str {
        Model::kind(self)
    }

    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn num_params(&self) -> usize {
        burn::module::Module::num_params(self)
    }

    fn macs(&self, input: &InputShape) -> u64 {
        Model::macs(self, input)
    }
}

/// A model seen through a quantizer (fake-quantized weights and activations): what a QAT
/// stage evaluates. Its passes never update observers.
pub struct QuantizedView<'a> {
    pub model: &'a Model,
    pub quantizer: &'a dyn Quantizer,
}

impl Classifier for QuantizedView<'_> {
    fn kind(&self) -> &str {
        self.model.kind()
    }

    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        let mut tap = Tap::quantized(self.quantizer, false);
        self.model.forward_tapped(images, &mut tap)
    }

    fn num_params(&self) -> usize {
        burn::module::Module::num_params(self.model)
    }

    fn macs(&self, input: &InputShape) -> u64 {
        self.model.macs(input)
    }
}
