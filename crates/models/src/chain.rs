//! The float inference program of a chain CNN (LeNet-5, VGG): its convolutions on pixel-major
//! images through `kernels::PackedConv` (windows read in place, BatchNorm and ReLU on the tile),
//! max-pooling on the same layout, and the fully connected layers packed once
//! (`kernels::PackedStack`), the first one's inputs reordered from the model's channel-major
//! flattening to the pixel-major one, so no image is ever transposed back.
//!
//! It computes the model's function up to float rounding (the convolution sums in window order
//! and BatchNorm folded into a scale and shift, where burn unfolds and normalises); tests bound
//! the difference. A model it cannot take (another architecture, parameters off flex or not
//! f32, a pooling or convolution it does not cover, a CPU without AVX-512) gets `None`, and
//! [`crate::Inference`] runs the model itself.

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::TensorData;
use kernels::{ConvWeights, PackedConv, PackedStack, Pixels};
use rayon::prelude::*;

use crate::conv_bn::ConvBn;
use crate::Model;

/// One step on a sample's pixels.
#[derive(Debug, Clone)]
enum Step {
    Conv(PackedConv),
    /// `[kernel, stride]`, no padding.
    Pool([usize; 2]),
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct ConvChain {
    /// The input's channels.
    channels: usize,
    steps: Vec<Step>,
    fc: PackedStack,
    /// The first fully connected layer's inputs (what the convolutions must leave).
    features: usize,
}

use kernels::flex_values as values;

impl ConvChain {
    pub(crate) fn new(model: &Model) -> Option<Self> {
        let (convs, fc): (Vec<(&ConvBn, Option<&MaxPool2d>)>, Vec<&Linear>) = match model {
            Model::LeNet5(m) => (
                vec![(&m.conv1, Some(&m.pool)), (&m.conv2, Some(&m.pool))],
                vec![&m.fc1, &m.fc2, &m.fc3],
            ),
            Model::Vgg(m) => {
                let convs = m.stages.iter().flat_map(|stage| {
                    let last = stage.len().saturating_sub(1);
                    stage
                        .iter()
                        .enumerate()
                        .map(move |(i, conv)| (conv, (i == last).then_some(&m.pool)))
                });
                (convs.collect(), m.fc.iter().collect())
            }
            _ => return None,
        };
        let mut steps = Vec::new();
        for (conv, pool) in convs {
            steps.push(Step::Conv(packed_conv(conv)?));
            if let Some(pool) = pool {
                steps.push(Step::Pool(pool_window(pool)?));
            }
        }
        let Some(Step::Conv(first)) = steps.first() else {
            return None;
        };
        let channels = first.c();
        let last_channels = steps.iter().rev().find_map(|s| match s {
            Step::Conv(conv) => Some(conv.n()),
            Step::Pool(_) => None,
        })?;
        let [features, _] = crate::dims(&fc.first()?.weight);
        if !features.is_multiple_of(last_channels) {
            return None;
        }
        let mut layers: Vec<Linear> = fc.iter().map(|&l| l.clone()).collect();
        layers[0] = pixel_major(fc[0], last_channels)?;
        let fc = PackedStack::new(&layers)?;
        Some(Self {
            channels,
            steps,
            fc,
            features,
        })
    }

    /// The logits, or `None` when `images` are not f32 on flex without autodiff, or of
    /// another shape than the layers chain to (the caller runs the model).
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, classes]`
    pub(crate) fn forward(&self, images: &Tensor<4>) -> Option<Tensor<2>> {
        let [batch, c, h, w] = images.dims();
        if c != self.channels || self.leaves([h, w]) != Some(self.features) {
            return None;
        }
        let device = images.device();
        let x = values(images.clone())?;
        let per_sample = c * h * w;
        let mut features = vec![0.0f32; batch * self.features];
        if batch > 0 {
            let tasks = rayon::current_num_threads().clamp(1, batch);
            let per_task = batch.div_ceil(tasks);
            features
                .par_chunks_mut(per_task * self.features)
                .zip(x.par_chunks(per_task * per_sample))
                .for_each(|(out, x)| self.samples(x, [c, h, w], out));
        }
        let features =
            Tensor::<2>::from_data(TensorData::new(features, [batch, self.features]), &device);
        self.fc.forward(&features)
    }

    /// What the convolutions and pools leave of an `[h, w]` input, flattened (`None` when a
    /// window does not fit).
    fn leaves(&self, [mut h, mut w]: [usize; 2]) -> Option<usize> {
        let mut c = self.channels;
        for step in &self.steps {
            match step {
                Step::Conv(conv) => {
                    [h, w] = conv.output([h, w]);
                    c = conv.n();
                }
                Step::Pool([k, s]) => {
                    if h < *k || w < *k {
                        return None;
                    }
                    [h, w] = [(h - k) / s + 1, (w - k) / s + 1];
                }
            }
            if h == 0 || w == 0 {
                return None;
            }
        }
        Some(h * w * c)
    }

    /// The steps on each sample of `x` (`[c][h][w]` each), their features written
    /// pixel-major into `out`.
    fn samples(&self, x: &[f32], [c, h, w]: [usize; 3], out: &mut [f32]) {
        let (mut a, mut b, mut padded) = (Vec::new(), Vec::new(), Vec::new());
        for (sample, features) in x
            .chunks_exact(c * h * w)
            .zip(out.chunks_exact_mut(self.features))
        {
            // Channel-major to pixel-major (a copy when there is one channel).
            if a.len() < c * h * w {
                a.resize(c * h * w, 0.0);
            }
            for (ch, plane) in sample.chunks_exact(h * w).enumerate() {
                for (p, &v) in plane.iter().enumerate() {
                    a[p * c + ch] = v;
                }
            }
            let mut layout = Pixels::dense(h, w, c);
            for step in &self.steps {
                layout = match step {
                    Step::Conv(conv) => conv.forward(&a, layout, &mut padded, &mut b),
                    Step::Pool(window) => kernels::max_pool_pixels(&a, layout, *window, &mut b),
                };
                std::mem::swap(&mut a, &mut b);
            }
            let row = layout.w * layout.c;
            for (y, dst) in features.chunks_exact_mut(row).enumerate() {
                dst.copy_from_slice(&a[y * layout.pitch * layout.c..][..row]);
            }
        }
    }

    /// The kernels a pass runs, for reports.
    pub(crate) fn kernels(&self, batch: usize) -> String {
        format!(
            "packed float (pixel-major convolutions; {})",
            self.fc.kernels(batch).join(", ")
        )
    }
}

/// A convolution and its BatchNorm packed, with the ReLU every chain CNN applies after it.
fn packed_conv(block: &ConvBn) -> Option<PackedConv> {
    let conv: &Conv2d = &block.conv;
    let [n, c, kh, kw] = crate::dims(&conv.weight);
    let square = kh == kw && conv.stride[0] == conv.stride[1];
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == left && left == bottom && bottom == right =>
        {
            top
        }
        PaddingConfig2d::Valid => 0,
        _ => return None,
    };
    if !square || conv.groups != 1 || conv.dilation != [1, 1] {
        return None;
    }
    let weight = values(conv.weight.val())?;
    let bias = match &conv.bias {
        Some(b) => Some(values(b.val())?),
        None => None,
    };
    let (scale, shift) = batch_norm_affine(&block.bn, bias.as_deref())?;
    PackedConv::new(ConvWeights {
        weight: &weight,
        shape: [n, c, kh, kw],
        window: [kh, conv.stride[0], padding],
        scale: &scale,
        shift: &shift,
        relu: true,
    })
}

/// BatchNorm at inference (and the convolution's bias before it) as `y = sum * scale + shift`.
fn batch_norm_affine(bn: &BatchNorm, bias: Option<&[f32]>) -> Option<(Vec<f32>, Vec<f32>)> {
    let gamma = values(bn.gamma.val())?;
    let beta = values(bn.beta.val())?;
    let mean = values(bn.running_mean.value())?;
    let var = values(bn.running_var.value())?;
    let eps = bn.epsilon as f32;
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let shift = (0..scale.len())
        .map(|i| beta[i] + (bias.map_or(0.0, |b| b[i]) - mean[i]) * scale[i])
        .collect();
    Some((scale, shift))
}

/// A max-pool's `[kernel, stride]` when it is square, unpadded, undilated and floors.
fn pool_window(pool: &MaxPool2d) -> Option<[usize; 2]> {
    let [k, k1] = pool.kernel_size;
    let [s, s1] = pool.stride;
    let plain = k == k1
        && s == s1
        && s > 0
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(pool.padding, PaddingConfig2d::Valid);
    plain.then_some([k, s])
}

/// `layer` (`[features, d_out]`, its inputs the channel-major flattening `[c][pixel]` of
/// `channels` channels) with its rows reordered for the pixel-major flattening `[pixel][c]`.
fn pixel_major(layer: &Linear, channels: usize) -> Option<Linear> {
    let [features, d_out] = crate::dims(&layer.weight);
    let weight = values(layer.weight.val())?;
    let pixels = features / channels;
    let mut reordered = vec![0.0f32; weight.len()];
    for ch in 0..channels {
        for p in 0..pixels {
            let from = (ch * pixels + p) * d_out;
            let to = (p * channels + ch) * d_out;
            reordered[to..to + d_out].copy_from_slice(&weight[from..from + d_out]);
        }
    }
    let device = layer.weight.val().device();
    let weight = Tensor::<2>::from_data(TensorData::new(reordered, [features, d_out]), &device);
    let mut copy = layer.clone();
    copy.weight = burn::module::Param::from_tensor(weight);
    Some(copy)
}

#[cfg(test)]
mod tests {
    use burn::module::{Param, RunningState};
    use burn::tensor::{Distribution, Tolerance};

    use super::*;
    use crate::{Classifier, Inference, InputShape, ModelSpec};

    /// Trained-looking BatchNorm statistics and affine (a fresh layer's are the identity).
    fn randomise(bn: &mut BatchNorm, device: &Device) {
        let [c] = crate::dims(&bn.gamma);
        let random = |low: f64, high: f64| {
            Tensor::<1>::random([c], Distribution::Uniform(low, high), device)
        };
        bn.gamma = Param::from_tensor(random(0.5, 1.5));
        bn.beta = Param::from_tensor(random(-0.5, 0.5));
        bn.running_mean = RunningState::new(random(-0.3, 0.3));
        bn.running_var = RunningState::new(random(0.5, 2.0));
    }

    /// LeNet-5 and VGG (their example widths and the project's VGG), grayscale and RGB, through
    /// the chain against the model's own forward pass, batches of 1 and 7.
    #[test]
    fn the_chain_computes_the_models_logits() {
        let device = Device::flex();
        device.seed(5);
        let vgg = ModelSpec::Vgg {
            stages: vec![vec![32, 32], vec![64, 64]],
            fc: vec![256],
            dropout: 0.3,
        };
        let examples = ModelSpec::examples();
        let specs = examples
            .iter()
            .filter(|s| matches!(s, ModelSpec::LeNet5 { .. } | ModelSpec::Vgg { .. }))
            .chain([&vgg]);
        for spec in specs {
            for channels in [1, 3] {
                let input = InputShape {
                    channels,
                    height: 28,
                    width: 28,
                    classes: 10,
                };
                let mut model = Model::new(spec, &input, &device).unwrap();
                match &mut model {
                    Model::LeNet5(m) => {
                        randomise(&mut m.conv1.bn, &device);
                        randomise(&mut m.conv2.bn, &device);
                    }
                    Model::Vgg(m) => m
                        .stages
                        .iter_mut()
                        .flatten()
                        .for_each(|conv| randomise(&mut conv.bn, &device)),
                    _ => unreachable!(),
                }
                let inference = Inference::new(&model);
                assert!(inference.is_packed() == kernels::PackedLinear::available());
                for batch in [1, 7] {
                    let shape = [batch, channels, 28, 28];
                    let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
                    let ours = inference.classify(x.clone()).into_data();
                    let theirs = model.forward(x).into_data();
                    let tolerance = Tolerance::absolute(1e-4).set_relative(1e-4);
                    ours.assert_approx_eq::<f32>(&theirs, tolerance);
                }
                // Another input size than the layers chain to runs the model itself.
                if let Some(chain) = ConvChain::new(&model) {
                    let odd = Tensor::<4>::zeros([1, channels, 36, 36], &device);
                    assert!(chain.forward(&odd).is_none());
                }
            }
        }
    }
}
