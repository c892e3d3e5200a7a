//! ResNet-style CNN (He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition"):
//! basic blocks of two 3x3 conv + BatchNorm with a residual add, a 1x1 projection where the
//! width or stride changes, global average pooling, then the classifier.

use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use crate::conv_bn::ConvBn;
use crate::spec::{BlockCounts, ModelSpec, ResnetBlock, StemLayout};
use crate::tap::{LayerRef, Tap};

#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    /// 1x1 conv + BN on the shortcut when the block changes width or resolution.
    pub projection: Option<ConvBn>,
}

impl BasicBlock {
    pub fn new(spec: &ResnetBlock, device: &Device) -> Self {
        let ResnetBlock {
            c_in,
            inner,
            c_out,
            stride,
            projection,
        } = *spec;
        Self {
            conv1: ConvBn::new([c_in, inner], 3, stride, 1, device),
            conv2: ConvBn::new([inner, c_out], 3, 1, 1, device),
            projection: projection.then(|| ConvBn::new([c_in, c_out], 1, stride, 0, device)),
        }
    }

    /// The block's layout, read from its live tensors.
    pub fn layout(&self) -> ResnetBlock {
        let [inner, c_in, _, _] = crate::dims(&self.conv1.conv.weight);
        ResnetBlock {
            c_in,
            inner,
            c_out: crate::dims(&self.conv2.conv.weight)[0],
            stride: self.conv1.conv.stride[0],
            projection: self.projection.is_some(),
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
        let y = self.conv1.forward_relu(x, tap, &format!("{name}.conv1"));
        // The block's inner activation: a point of its own, so quantization covers it too.
        let y = tap.probe(&format!("{name}.conv1.relu"), y, LayerRef::Other);
        let y = self
            .conv2
            .forward_add_relu(y, &shortcut, tap, &format!("{name}.conv2"));
        tap.probe(name, y, LayerRef::Other)
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
    /// torchvision's 3x3 stride-2 max-pool after an ImageNet stem.
    pub stem_pool: Option<MaxPool2d>,
    pub blocks: Vec<BasicBlock>,
    pub fc: Linear,
}

impl ResNet {
    /// `blocks` as [`ModelSpec::resnet_blocks`] lays them out.
    pub fn new(
        in_channels: usize,
        (stem, layout): (usize, StemLayout),
        blocks: &[ResnetBlock],
        classes: usize,
        device: &Device,
    ) -> Self {
        let c_last = blocks.last().map_or(stem, |b| b.c_out);
        let (kernel, stride, padding) = layout.conv();
        Self {
            stem: ConvBn::new([in_channels, stem], kernel, stride, padding, device),
            stem_pool: (layout == StemLayout::Imagenet).then(|| {
                MaxPool2dConfig::new([3, 3])
                    .with_strides([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init()
            }),
            blocks: blocks.iter().map(|b| BasicBlock::new(b, device)).collect(),
            fc: LinearConfig::new(c_last, classes).init(device),
        }
    }

    /// The spec these live tensors make (normalised: explicit lists only where needed).
    pub fn spec(&self) -> ModelSpec {
        let layouts: Vec<ResnetBlock> = self.blocks.iter().map(BasicBlock::layout).collect();
        // Every stage after the first starts with a stride-2 block.
        let mut counts: Vec<usize> = Vec::new();
        for (b, layout) in layouts.iter().enumerate() {
            match counts.last_mut() {
                Some(n) if b == 0 || layout.stride != 2 => *n += 1,
                _ => counts.push(1),
            }
        }
        let mut firsts = Vec::new();
        let mut at = 0;
        for &n in &counts {
            firsts.push(layouts[at].c_out);
            at += n;
        }
        let stem_kernel = crate::dims(&self.stem.conv.weight)[2];
        ModelSpec::Resnet {
            stem: crate::dims(&self.stem.conv.weight)[0],
            stem_layout: match stem_kernel {
                7 => StemLayout::Imagenet,
                _ => StemLayout::Cifar,
            },
            stages: firsts,
            blocks: BlockCounts::of(&counts),
            inner: layouts.iter().map(|b| b.inner).collect(),
            projection: layouts.iter().map(|b| b.projection).collect(),
        }
        .normalized()
    }

    /// # Shapes
    /// - input: `[batch, c, h, w]`
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<2> {
        let x = self.stem.forward_relu(x, tap, "stem"); // [batch, stem, h_0, w_0]
        let x = match &self.stem_pool {
            Some(pool) => crate::pool::max_pool(pool, x), // [batch, stem, h_0 / 2, w_0 / 2]
            None => x,
        };
        let mut x = tap.probe("stem", x, LayerRef::Other);
        for (b, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, tap, &format!("blocks.{b}")); // [batch, width, h_s, w_s]
        }
        let x = x.mean_dim(3).mean_dim(2).flatten::<2>(1, 3); // [batch, width]
        let x = tap.probe("pool", x, LayerRef::Other);
        let x = tap.linear(&self.fc, "fc", x); // [batch, classes]
        let x = tap.probe("fc", x, LayerRef::Linear(&self.fc));
        x
    }

    pub fn macs(&self, size: [usize; 2]) -> u64 {
        let mut total = self.stem.macs(size);
        let mut size = self.stem.out_size(size);
        if self.stem_pool.is_some() {
            size = size.map(|n| (n + 2 - 3) / 2 + 1);
        }
        for block in &self.blocks {
            total += block.macs(size);
            size = block.out_size(size);
        }
        total + crate::dims(&self.fc.weight).iter().product::<usize>() as u64
    }
}
