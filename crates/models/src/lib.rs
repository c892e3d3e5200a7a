//! Models built from width specs: MLP, LeNet-5, a VGG-style and a ResNet-style CNN. Each model
//! reports its MACs and its prunable channel groups, so later stages (pruning, quantization)
//! work on any of them without special cases.

mod chain;
mod classifier;
mod conv_bn;
pub mod dropout;
pub mod file;
mod groups;
mod lenet;
mod linear_stack;
pub mod loss;
mod mlp;
mod mobilenet;
mod model;
pub mod params;
mod pool;
mod resnet;
mod spec;
mod tap;
pub mod thin;
mod vgg;

pub use classifier::{Classifier, HookedView, Inference};
pub use conv_bn::ConvBn;
pub use file::{ModelFileError, ModelFormat};
pub use groups::{ChannelGroup, GroupMember, Role};
pub use lenet::LeNet5;
pub use mlp::Mlp;
pub use mobilenet::{InvertedResidual, MobileNetV2};
pub use model::Model;
pub use resnet::{BasicBlock, ResNet};
pub use spec::{
    make_divisible, BlockCounts, Footprint, InputShape, Invalid, MobileBlock, MobileWidths,
    ModelSpec, ResnetBlock, SpecError, StemLayout,
};
pub use tap::{ForwardHook, LayerRef, Segment, Tap, INPUT_POINT};
pub use thin::{thin, KeepPlan, ThinError};
pub use vgg::Vgg;

/// The dims of a parameter **without initialising it**. Parameters are initialised lazily,
/// on first use, from the device's RNG: reading a shape through the tensor would draw their
/// values at that moment, in that order, and change every run's initial weights.
pub(crate) fn dims<const D: usize>(param: &burn::module::Param<burn::Tensor<D>>) -> [usize; D] {
    param.lazy_shape().dims::<D>()
}

#[cfg(test)]
mod tests;
