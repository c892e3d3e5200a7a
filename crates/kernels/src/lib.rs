//! Hand-written CPU kernels for burn's flex backend, each with its backward pass.
//!
//! A kernel here replaces one burn operation where a profile of our training steps showed
//! flex's general implementation dominating and a specialised loop computes the same
//! function (bit-identical forward values and gradients, ties included). Each entry point
//! takes and returns ordinary tensors: on flex (with or without autodiff) it runs the kernel,
//! on any other backend, dtype or shape it hands the input back so the caller runs burn's
//! operation. The autodiff side is a node in burn's graph (`burn::backend::autodiff`), so
//! gradients flow through it like through any built-in operation.
//!
//! Two kernels are for inference only: [`PackedLinear`] (and [`PackedStack`]), fully connected
//! layers whose weights are packed once for the products at inference batch sizes, and
//! [`SparseLinear`], which keeps only a sparsified layer's nonzero weights (a stack runs it
//! where that pays: large layers, small batches).

mod aligned;
mod amx;
mod batch_norm;
mod batch_norm_inference;
mod channel_stats;
mod clamp;
mod conv;
mod conv_geometry;
mod conv_nhwc;
mod conv_phased;
mod conv_train;
mod conv_weight_grad;
mod depthwise;
mod direct;
mod flex;
mod gemm;
mod int8;
mod linear;
mod max_norm;
mod pixels;
mod planar;
mod pool;
mod pool_window;
mod recycle;
mod sgd;
mod sparse_linear;
mod transpose;
mod wide;
mod winograd;

pub use batch_norm::{batch_norm_train, BatchNormThen, BatchNormTrain};
pub use batch_norm_inference::batch_norm_inference;
pub use channel_stats::ChannelStats;
pub use clamp::{clamp, clamp_inference};
pub use conv::{conv2d, conv2d_with_stats};
pub use conv_nhwc::{PackedConv, WINOGRAD_MAX_BYTES, WINOGRAD_MIN_CHANNEL_PRODUCT};
pub use conv_train::CONV_PATH_ENV;
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_in, DepthwiseLayout};
pub use flex::flex_values;
pub use int8::{
    depthwise_sums, max_pool as max_pool_levels, quantize_to_pixels, window_out, BatchNormAffine,
    Epilogue, Int8Path, OutputGrid, PackedInt8, Rows, INT8_PATH_ENV, MAX_FAN_IN,
};
pub use linear::{PackedLinear, PackedStack};
pub use max_norm::{max_norm_applies, max_norm_columns};
pub use pixels::{max_pool_pixels, ConvWeights, Pixels};
pub use pool::max_pool_2x2;
pub use pool_window::max_pool_window;
pub use sgd::{sgd_applies, sgd_step, SgdStep};
pub use sparse_linear::SparseLinear;
