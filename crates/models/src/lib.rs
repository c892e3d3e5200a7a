//! Models built from width specs: MLP, LeNet-5, a VGG-style and a ResNet-style CNN. Each model
//! reports its MACs and its prunable channel groups, so later stages (pruning, quantization)
//! work on any of them without special cases.

mod conv_bn;
mod groups;
mod lenet;
pub mod loss;
mod mlp;
mod model;
mod resnet;
mod spec;
mod tap;
mod vgg;

pub use conv_bn::ConvBn;
pub use groups::{ChannelGroup, GroupMember};
pub use lenet::LeNet5;
pub use mlp::Mlp;
pub use model::Model;
pub use resnet::{BasicBlock, ResNet};
pub use spec::{InputShape, ModelSpec, SpecError};
pub use tap::{LayerRef, Segment, Tap};
pub use vgg::Vgg;

#[cfg(test)]
mod tests;
