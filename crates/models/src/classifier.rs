//! What measurement needs of a model: logits for images, and its size. Implemented by
//! [`Model`] and by exported models (an integer export is measured from its own file).

use crate::chain::ConvChain;
use burn::prelude::*;

use crate::{ForwardHook, InputShape, Model, Tap};

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

    /// The kernels a pass of `batch` images runs, for reports.
    fn kernels(&self, _batch: usize) -> String {
        "float".to_string()
    }

    /// What this classifier is specified by where it computes it another way (an integer
    /// model's simulation), for reports of how closely it follows it.
    fn specification(&self) -> Option<Box<dyn Classifier + '_>> {
        None
    }
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

/// A model seen through a forward hook (a QAT stage's fake-quantized weights and
/// activations): what a hooked stage evaluates. Its passes never update observers.
pub struct HookedView<'a> {
    pub model: &'a Model,
    pub hook: &'a dyn ForwardHook,
}

impl Classifier for HookedView<'_> {
    fn kind(&self) -> &str {
        self.model.kind()
    }

    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        let mut tap = Tap::hooked(self.hook, false);
        self.model.forward_tapped(images, &mut tap)
    }

    fn num_params(&self) -> usize {
        burn::module::Module::num_params(self.model)
    }

    fn macs(&self, input: &InputShape) -> u64 {
        self.model.macs(input)
    }
}

/// A float model prepared for inference:
/// - an MLP's layers packed once for the CPU kernels (`kernels::PackedStack`, 1.2-1.4x faster
///   than flex's matmul at batch 32 because the weights are streamed in the order the products
///   read them; `cargo test -p runner --bench inference`);
/// - a chain CNN's (LeNet-5, VGG) convolutions on pixel-major images with windows read in place
///   and BatchNorm and ReLU on the tile, its fully connected layers packed (`chain.rs`).
///
/// Any other model, backend, autodiff input or CPU without AVX-512 runs the model itself, so
/// wrapping is always safe. The packed copy is taken when wrapping and the model is borrowed,
/// so it cannot go stale.
pub struct Inference<'a> {
    model: &'a Model,
    packed: Option<kernels::PackedStack>,
    chain: Option<ConvChain>,
}

impl<'a> Inference<'a> {
    pub fn new(model: &'a Model) -> Self {
        let packed = match model {
            Model::Mlp(mlp) => kernels::PackedStack::new(&mlp.layers),
            _ => None,
        };
        Self {
            model,
            packed,
            chain: ConvChain::new(model),
        }
    }

    /// Whether the packed kernels run (else every pass is the model's own).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some() || self.chain.is_some()
    }
}

impl Classifier for Inference<'_> {
    fn kind(&self) -> &str {
        self.model.kind()
    }

    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        // Dropout is the identity outside training, so an MLP's pass is its linear stack.
        let packed = match (&self.packed, &self.chain) {
            (Some(stack), _) => stack.forward(&images.clone().flatten::<2>(1, 3)),
            (_, Some(chain)) => chain.forward(&images),
            _ => None,
        };
        packed.unwrap_or_else(|| self.model.forward(images))
    }

    fn num_params(&self) -> usize {
        Classifier::num_params(self.model)
    }

    fn macs(&self, input: &InputShape) -> u64 {
        self.model.macs(input)
    }

    /// Per packed layer `dense` or `sparse`, else the model's own float layers.
    fn kernels(&self, batch: usize) -> String {
        match (&self.packed, &self.chain) {
            (Some(stack), _) => format!("packed float ({})", stack.kernels(batch).join(", ")),
            (_, Some(chain)) => chain.kernels(batch),
            _ => "float".to_string(),
        }
    }
}
