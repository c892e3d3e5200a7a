//! VGG-style CNN (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks"): stages of 3x3
//! conv + BatchNorm + ReLU, a 2x2 max-pool after each stage, then fully connected layers.

use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;

use crate::conv_bn::ConvBn;
use crate::linear_stack;
use crate::tap::{LayerRef, Tap};

#[derive(Module, Debug)]
pub struct Vgg {
    /// `stages[s][i]` is the i-th conv of stage s.
    pub stages: Vec<Vec<ConvBn>>,
    pub pool: MaxPool2d,
    /// Hidden fully connected layers then the classifier.
    pub fc: Vec<Linear>,
    pub dropout: Dropout,
}

impl Vgg {
    pub fn new(
        in_channels: usize,
        [h, w]: [usize; 2],
        stage_widths: &[Vec<usize>],
        fc_widths: &[usize],
        dropout: f64,
        classes: usize,
        device: &Device,
    ) -> Self {
        let mut c_in = in_channels;
        let mut stages = Vec::new();
        for widths in stage_widths {
            let mut stage = Vec::new();
            for &c_out in widths {
                stage.push(ConvBn::new([c_in, c_out], 3, 1, 1, device));
                c_in = c_out;
            }
            stages.push(stage);
        }
        let shrink = 1 << stage_widths.len();
        let flat = c_in * (h / shrink) * (w / shrink);
        let widths: Vec<usize> = std::iter::once(flat)
            .chain(fc_widths.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        Self {
            stages,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc: linear_stack::build(&widths, device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// # Shapes
    /// - input: `[batch, c, h, w]`
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, mut x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        for (s, stage) in self.stages.iter().enumerate() {
            for (i, conv) in stage.iter().enumerate() {
                x = conv.forward_relu(x, tap, &format!("stages.{s}.{i}")); // [batch, c_out, h_s, w_s]
                x = tap.probe(&format!("stages.{s}.{i}.relu"), x, LayerRef::Other);
            }
            x = crate::pool::max_pool(&self.pool, x); // [batch, c_out, h_s / 2, w_s / 2]
            x = tap.probe(&format!("stages.{s}"), x, LayerRef::Other);
        }
        let x = x.flatten::<2>(1, 3); // [batch, c * h_s * w_s]
        linear_stack::forward(&self.fc, &self.dropout, x, tap, "fc")
    }

    pub fn macs(&self, mut size: [usize; 2]) -> u64 {
        let mut total = 0;
        for stage in &self.stages {
            for conv in stage {
                total += conv.macs(size);
                size = conv.out_size(size);
            }
            size = size.map(|n| n / 2);
        }
        total + linear_stack::macs(&self.fc)
    }
}
