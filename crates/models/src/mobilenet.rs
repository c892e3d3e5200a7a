//! MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen 2018) in torchvision's layout: a 3x3
//! stride-2 stem, 17 inverted residual blocks (1x1 expansion, 3x3 depthwise, linear 1x1
//! projection, a residual add where shape is kept), a 1x1 head to 1280 channels, global average
//! pooling, dropout and the classifier. ReLU6 after every convolution except the projections.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::conv_bn::ConvBn;
use crate::spec::{MobileBlock, ModelSpec};
use crate::tap::{LayerRef, Tap};

/// ReLU6's clip: its output range, which quantization takes as the grid of every point
/// after one (see `Tap::probe_clipped`).
const RELU6: (f32, f32) = (0.0, 6.0);

/// `min(max(x, 0), 6)`.
fn relu6(x: Tensor<4>) -> Tensor<4> {
    let (lo, hi) = RELU6;
    kernels::clamp(x, lo, hi).unwrap_or_else(|x| x.clamp(lo, hi))
}

#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// The 1x1 expansion (absent in the first block, whose expansion ratio is 1).
    pub expand: Option<ConvBn>,
    /// The 3x3 depthwise convolution (one filter per channel).
    pub depthwise: ConvBn,
    /// The linear 1x1 projection (no activation after it).
    pub project: ConvBn,
    /// Whether the block adds its input to its output (stride 1 and the same width, decided
    /// at the unpruned widths, as torchvision does).
    pub residual: bool,
}

impl InvertedResidual {
    fn new(block: &MobileBlock, device: &Device) -> Self {
        let hidden = block.hidden;
        Self {
            expand: block
                .expand
                .then(|| ConvBn::new([block.c_in, hidden], 1, 1, 0, device)),
            depthwise: ConvBn::depthwise(hidden, block.stride, device),
            project: ConvBn::new([hidden, block.c_out], 1, 1, 0, device),
            residual: block.residual,
        }
    }

    /// # Shapes
    /// - input: `[batch, c_in, h, w]`
    /// - output: `[batch, c_out, h / stride, w / stride]`
    fn forward(&self, x: Tensor<4>, tap: &mut Tap, name: &str) -> Tensor<4> {
        let shortcut = self.residual.then(|| x.clone());
        let y = match &self.expand {
            Some(expand) => {
                let y = relu6(expand.forward(x, tap, &format!("{name}.expand")));
                tap.probe_clipped(&format!("{name}.expand.relu6"), y, RELU6)
            }
            None => x,
        }; // [batch, hidden, h, w]
        let y = relu6(self.depthwise.forward(y, tap, &format!("{name}.depthwise")));
        let y = tap.probe_clipped(&format!("{name}.depthwise.relu6"), y, RELU6);
        let y = self.project.forward(y, tap, &format!("{name}.project")); // [batch, c_out, ..]
        let y = match shortcut {
            Some(s) => y + s,
            None => y,
        };
        tap.probe(name, y, LayerRef::Other)
    }

    fn macs(&self, size: [usize; 2]) -> u64 {
        let expand = self.expand.as_ref().map_or(0, |e| e.macs(size));
        let mid = self.depthwise.out_size(size);
        expand + self.depthwise.macs(size) + self.project.macs(mid)
    }
}

#[derive(Module, Debug)]
pub struct MobileNetV2 {
    /// The width multiplier the spec named (the widths themselves are the tensors').
    pub width_mult: f64,
    pub stem: ConvBn,
    pub blocks: Vec<InvertedResidual>,
    pub head: ConvBn,
    pub dropout: Dropout,
    pub classifier: Linear,
}

impl MobileNetV2 {
    pub fn new(in_channels: usize, spec: &ModelSpec, classes: usize, device: &Device) -> Self {
        let widths = spec.mobilenet_widths();
        let blocks = spec.mobilenet_blocks();
        let dropout = match spec {
            ModelSpec::MobilenetV2 { dropout, .. } => *dropout,
            _ => 0.0,
        };
        Self {
            width_mult: match spec {
                ModelSpec::MobilenetV2 { width_mult, .. } => *width_mult,
                _ => 1.0,
            },
            stem: ConvBn::new([in_channels, widths.stem], 3, 2, 1, device),
            blocks: blocks
                .iter()
                .map(|b| InvertedResidual::new(b, device))
                .collect(),
            head: ConvBn::new(
                [blocks.last().map_or(widths.stem, |b| b.c_out), widths.head],
                1,
                1,
                0,
                device,
            ),
            dropout: DropoutConfig::new(dropout).init(),
            classifier: LinearConfig::new(widths.head, classes).init(device),
        }
    }

    /// The spec these live tensors make.
    pub fn spec(&self) -> ModelSpec {
        let width = |c: &ConvBn| crate::dims(&c.conv.weight)[0];
        ModelSpec::MobilenetV2 {
            width_mult: self.width_mult,
            dropout: self.dropout.prob,
            widths: Some(crate::spec::MobileWidths {
                stem: width(&self.stem),
                hidden: self.blocks.iter().map(|b| width(&b.depthwise)).collect(),
                out: self.blocks.iter().map(|b| width(&b.project)).collect(),
                head: width(&self.head),
            }),
        }
        .normalized()
    }

    /// # Shapes
    /// - input: `[batch, c, h, w]`
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        let x = relu6(self.stem.forward(x, tap, "stem")); // [batch, stem, h / 2, w / 2]
        let mut x = tap.probe_clipped("stem", x, RELU6);
        for (b, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, tap, &format!("blocks.{b}")); // [batch, c_b, h_b, w_b]
        }
        let x = relu6(self.head.forward(x, tap, "head")); // [batch, head, h', w']
        let x = tap.probe_clipped("head", x, RELU6);
        let x = x.mean_dim(3).mean_dim(2).flatten::<2>(1, 3); // [batch, head]
        let x = crate::dropout::forward(&self.dropout, x);
        let x = tap.linear(&self.classifier, "classifier", x); // [batch, classes]
        tap.probe("classifier", x, LayerRef::Linear(&self.classifier))
    }

    pub fn macs(&self, size: [usize; 2]) -> u64 {
        let mut total = self.stem.macs(size);
        let mut size = self.stem.out_size(size);
        for block in &self.blocks {
            total += block.macs(size);
            size = block.depthwise.out_size(size);
        }
        total
            + self.head.macs(size)
            + crate::dims(&self.classifier.weight)
                .iter()
                .product::<usize>() as u64
    }
}
