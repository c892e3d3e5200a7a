//! Conv + BatchNorm, the unit every CNN here is made of.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::tap::{LayerRef, Tap};

/// A bias-free convolution followed by BatchNorm (the bias would be cancelled by BN's mean).
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    /// A `kernel x kernel` convolution with the given stride and symmetric padding.
    pub fn new(
        [c_in, c_out]: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Self {
        let conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .with_bias(false)
            .init(device);
        Self {
            conv,
            bn: BatchNormConfig::new(c_out).init(device),
        }
    }

    /// # Shapes
    /// - input: `[batch, c_in, h, w]`
    /// - output: `[batch, c_out, h', w']` where `h' = (h + 2 * padding - kernel) / stride + 1`
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap, name: &str) -> Tensor<4> {
        let x = self.conv.forward(x);
        let x = tap.probe(&format!("{name}.conv"), x, LayerRef::Conv(&self.conv));
        let x = self.bn.forward(x);
        let x = tap.probe(&format!("{name}.bn"), x, LayerRef::BatchNorm(&self.bn));
        x
    }

    /// Spatial output size `[h, w]` for an input of `size` pixels.
    pub fn out_size(&self, size: [usize; 2]) -> [usize; 2] {
        let [k, _] = self.conv.kernel_size;
        let [s, _] = self.conv.stride;
        let pad = match self.conv.padding {
            PaddingConfig2d::Explicit(top, ..) => top,
            _ => 0,
        };
        size.map(|n| (n + 2 * pad).saturating_sub(k) / s + 1)
    }

    /// Multiply-accumulates for one sample with an input of `size` pixels.
    pub fn macs(&self, size: [usize; 2]) -> u64 {
        let [c_out, c_in_per_group, k0, k1] = crate::dims(&self.conv.weight);
        let [h, w] = self.out_size(size);
        (h * w * c_out * c_in_per_group * k0 * k1) as u64
    }
}
