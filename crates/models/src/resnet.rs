//! ResNet-style CNN (He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition"):
//! basic blocks of two 3x3 conv + BatchNorm with a residual add, a 1x1 projection where the
//! width or stride changes, global average pooling, then the classifier.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::conv_bn::ConvBn;
use crate::tap::{LayerRef, Tap};

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    /// 1x1 conv + BN on the shortcut when the block changes width or resolution.
    pub projection: Option<ConvBn>,
}

impl BasicBlock {
    pub fn new([c_in, c_out]: [usize; 2], stride: usize, device: &Device) -> Self {
        let projection = (stride != 1 || c_in != c_out)
            .then(|| ConvBn::new([c_in, c_out], 1, stride, 0, device));
        Self {
            conv1: ConvBn::new([c_in, c_out], 3, stride, 1, device),
            conv2: ConvBn::new([c_out, c_out], 3, 1, 1, device),
            projection,
        }
    }

    /// # Shapes
    /// - input: `[batch, c_in, h, w]`
    /// - output: `[batch, c_out, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap, name: &str) -> Tensor<4> {
        let shortcut = match &self.projection {
            Some(projection) => projection.forward(x.clone(), tap, &format!("{name}.projection")),
            None => x.clone(),
        };
        let y = relu(self.conv1.forward(x, tap, &format!("{name}.conv1")));
        let y = self.conv2.forward(y, tap, &format!("{name}.conv2"));
        let y = relu(y + shortcut);
        tap.offer(name, &y, LayerRef::Other);
        y
    }

    pub fn macs(&self, size: [usize; 2]) -> u64 {
        let mid = self.conv1.out_size(size);
        self.conv1.macs(size)
            + self.conv2.macs(mid)
            + self.projection.as_ref().map_or(0, |p| p.macs(size))
    }

    pub fn out_size(&self, size: [usize; 2]) -> [usize; 2] {
        self.conv1.out_size(size)
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub stem: ConvBn,
    pub blocks: Vec<BasicBlock>,
    pub fc: Linear,
}

impl ResNet {
    pub fn new(
        in_channels: usize,
        stem: usize,
        stages: &[usize],
        blocks_per_stage: usize,
        classes: usize,
        device: &Device,
    ) -> Self {
        let mut blocks = Vec::new();
        let mut c_in = stem;
        for (s, &width) in stages.iter().enumerate() {
            for b in 0..blocks_per_stage {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new([c_in, width], stride, device));
                c_in = width;
            }
        }
        Self {
            stem: ConvBn::new([in_channels, stem], 3, 1, 1, device),
            blocks,
            fc: LinearConfig::new(c_in, classes).init(device),
        }
    }

    /// # Shapes
    /// - input: `[batch, c, h, w]`
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        let mut x = relu(self.stem.forward(x, tap, "stem")); // [batch, stem, h, w]
        tap.offer("stem", &x, LayerRef::Other);
        for (b, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, tap, &format!("blocks.{b}")); // [batch, width, h_s, w_s]
        }
        let x = x.mean_dim(3).mean_dim(2).flatten::<2>(1, 3); // [batch, width]
        tap.offer("pool", &x, LayerRef::Other);
        let x = self.fc.forward(x); // [batch, classes]
        tap.offer("fc", &x, LayerRef::Linear(&self.fc));
        x
    }

    /// Tap points: the stem and each block's output.
    pub fn taps(&self) -> Vec<String> {
        std::iter::once("stem".to_string())
            .chain((0..self.blocks.len()).map(|b| format!("blocks.{b}")))
            .collect()
    }

    pub fn macs(&self, size: [usize; 2]) -> u64 {
        let mut total = self.stem.macs(size);
        let mut size = self.stem.out_size(size);
        for block in &self.blocks {
            total += block.macs(size);
            size = block.out_size(size);
        }
        total + self.fc.weight.dims().iter().product::<usize>() as u64
    }
}
