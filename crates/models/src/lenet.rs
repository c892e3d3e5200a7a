//! LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
//! recognition"), with BatchNorm after each convolution and max-pooling for subsampling.

use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::conv_bn::ConvBn;
use crate::tap::{LayerRef, Tap};

#[derive(Module, Debug)]
pub struct LeNet5 {
    /// 5x5, padding 2: keeps 28x28 MNIST at 28x28 like the original's 32x32 input.
    pub conv1: ConvBn,
    /// 5x5, no padding.
    pub conv2: ConvBn,
    pub pool: MaxPool2d,
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl LeNet5 {
    pub fn new(
        in_channels: usize,
        [h, w]: [usize; 2],
        channels: [usize; 2],
        fc: [usize; 2],
        classes: usize,
        device: &Device,
    ) -> Self {
        let conv1 = ConvBn::new([in_channels, channels[0]], 5, 1, 2, device);
        let conv2 = ConvBn::new([channels[0], channels[1]], 5, 1, 0, device);
        let [fh, fw] = Self::feature_size(&conv1, &conv2, [h, w]);
        Self {
            fc1: LinearConfig::new(channels[1] * fh * fw, fc[0]).init(device),
            fc2: LinearConfig::new(fc[0], fc[1]).init(device),
            fc3: LinearConfig::new(fc[1], classes).init(device),
            conv1,
            conv2,
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    fn feature_size(conv1: &ConvBn, conv2: &ConvBn, size: [usize; 2]) -> [usize; 2] {
        let after1 = conv1.out_size(size).map(|n| n / 2);
        conv2.out_size(after1).map(|n| n / 2)
    }

    /// # Shapes
    /// - input: `[batch, c, h, w]` (`[batch, 1, 28, 28]` for MNIST)
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        let x = self.conv1.forward_relu(x, tap, "conv1"); // [batch, 6, 28, 28]
        let x = crate::pool::max_pool(&self.pool, x); // [batch, 6, 14, 14]
        let x = tap.probe("conv1", x, LayerRef::Other);
        let x = self.conv2.forward_relu(x, tap, "conv2"); // [batch, 16, 10, 10]
        let x = crate::pool::max_pool(&self.pool, x); // [batch, 16, 5, 5]
        let x = tap.probe("conv2", x, LayerRef::Other);
        let x = x.flatten::<2>(1, 3); // [batch, 400]
        let x = relu(tap.linear(&self.fc1, "fc1", x)); // [batch, 120]
        let x = tap.probe("fc1", x, LayerRef::Linear(&self.fc1));
        let x = relu(tap.linear(&self.fc2, "fc2", x)); // [batch, 84]
        let x = tap.probe("fc2", x, LayerRef::Linear(&self.fc2));
        let x = tap.linear(&self.fc3, "fc3", x); // [batch, classes]
        let x = tap.probe("fc3", x, LayerRef::Linear(&self.fc3));
        x
    }

    pub fn macs(&self, size: [usize; 2]) -> u64 {
        let after1 = self.conv1.out_size(size).map(|n| n / 2);
        let linear = [&self.fc1, &self.fc2, &self.fc3]
            .iter()
            .map(|l| crate::dims(&l.weight).iter().product::<usize>() as u64)
            .sum::<u64>();
        self.conv1.macs(size) + self.conv2.macs(after1) + linear
    }
}
