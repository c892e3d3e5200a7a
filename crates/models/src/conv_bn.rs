//! Conv + BatchNorm, the unit every CNN here is made of.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use kernels::{BatchNormThen, ChannelStats};

use crate::tap::{ForwardHook, LayerRef, Tap};

/// `kernel` (`[c_out, c_in, k, k]`) through the quantizer, which sees it as `[c_out, fan_in]`.
fn quantized_kernel(q: &dyn ForwardHook, name: &str, kernel: Tensor<4>) -> Tensor<4> {
    let dims = kernel.dims();
    q.weight(name, kernel.flatten::<2>(1, 3)).reshape(dims)
}

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

    /// A 3x3 depthwise convolution (one filter per channel, `groups = channels`, padding 1)
    /// and its BatchNorm. On flex it runs through `kernels::depthwise_conv2d`.
    pub fn depthwise(channels: usize, stride: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([channels, channels], [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_groups(channels)
            .with_bias(false)
            .init(device);
        Self {
            conv,
            bn: BatchNormConfig::new(channels).init(device),
        }
    }

    /// # Shapes
    /// - input: `[batch, c_in, h, w]`
    /// - output: `[batch, c_out, h', w']` where `h' = (h + 2 * padding - kernel) / stride + 1`
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap, name: &str) -> Tensor<4> {
        self.forward_then(x, tap, name, BatchNormThen::Plain)
    }

    /// `relu(self.forward(x, tap, name))`. In training on flex, where the tap passes the
    /// BatchNorm's point by, the ReLU runs inside BatchNorm's kernel (its passes and its
    /// backward's): one pass over the activation fewer each way.
    ///
    /// # Shapes
    /// - input: `[batch, c_in, h, w]`
    /// - output: `[batch, c_out, h', w']`, as [`Self::forward`]
    pub fn forward_relu(&self, x: Tensor<4>, tap: &mut Tap, name: &str) -> Tensor<4> {
        self.forward_then(x, tap, name, BatchNormThen::Relu)
    }

    /// `relu(self.forward(x, tap, name) + residual)`, a residual block's end: in training on
    /// flex, where the tap passes the BatchNorm's point by, the add and the ReLU run inside
    /// BatchNorm's kernel.
    ///
    /// # Shapes
    /// - input: `[batch, c_in, h, w]`
    /// - residual, output: `[batch, c_out, h', w']`, as [`Self::forward`]'s output
    pub fn forward_add_relu(
        &self,
        x: Tensor<4>,
        residual: &Tensor<4>,
        tap: &mut Tap,
        name: &str,
    ) -> Tensor<4> {
        self.forward_then(x, tap, name, BatchNormThen::AddRelu(residual))
    }

    /// [`Self::forward`], then what `then` says.
    fn forward_then(
        &self,
        x: Tensor<4>,
        tap: &mut Tap,
        name: &str,
        then: BatchNormThen<4>,
    ) -> Tensor<4> {
        // Statistics gathered by the convolution, for BatchNorm (only where no hook can
        // change the activation between the two).
        let (x, stats) = match tap.hook() {
            None => self.convolve(x),
            Some(q) if q.fold_batchnorm() => {
                // One convolution with BatchNorm folded in, as an integer model runs it: the
                // ".conv" point then already holds what BatchNorm would have produced.
                let (weight, bias) = self.folded();
                let bias = q.bias(name, bias);
                let kernel = quantized_kernel(q, name, weight);
                (conv2d(x, kernel, Some(bias), self.options()), None)
            }
            Some(q) => {
                let kernel = quantized_kernel(q, name, self.conv.weight.val());
                (conv2d(x, kernel, None, self.options()), None)
            }
        };
        let x = tap.probe(&format!("{name}.conv"), x, LayerRef::Conv(&self.conv));
        let bn_point = format!("{name}.bn");
        let fuses = !matches!(then, BatchNormThen::Plain) && tap.passes(&bn_point);
        if fuses {
            return batch_norm(&self.bn, x, then, stats.as_ref());
        }
        let x = match tap.hook() {
            Some(q) if q.fold_batchnorm() => x,
            _ => batch_norm(&self.bn, x, BatchNormThen::Plain, stats.as_ref()),
        };
        let x = tap.probe(&bn_point, x, LayerRef::BatchNorm(&self.bn));
        followed(x, then)
    }

    /// The kernel and bias of one convolution computing conv + BatchNorm from the running
    /// statistics: `w' = w * s`, `b' = beta - mean * s` with `s = gamma / sqrt(var + eps)`
    /// per output channel. Differentiable in the kernel, gamma and beta.
    ///
    /// # Shapes
    /// - output: (`[c_out, c_in, k, k]`, `[c_out]`)
    pub fn folded(&self) -> (Tensor<4>, Tensor<1>) {
        let bn = &self.bn;
        let device = self.conv.weight.val().device();
        let mean = bn.running_mean.value().to_device(&device);
        let var = bn.running_var.value().to_device(&device);
        let scale = bn.gamma.val() / var.add_scalar(bn.epsilon).sqrt(); // [c_out]
        let [c_out, ..] = crate::dims(&self.conv.weight);
        let weight = self.conv.weight.val() * scale.clone().reshape([c_out, 1, 1, 1]);
        let bias = bn.beta.val() - mean * scale;
        (weight, bias)
    }

    /// `self.conv.forward(x)`, through `kernels::conv2d_with_stats` (with its backward; the
    /// output's per-channel statistics too where its kernel gathers them) or
    /// `kernels::depthwise_conv2d` (one filter per channel) on flex where the convolution is
    /// one they compute; elsewhere burn's.
    ///
    /// # Shapes
    /// - input: `[batch, c_in, h, w]`
    /// - output: `[batch, c_out, h', w']`
    fn convolve(&self, x: Tensor<4>) -> (Tensor<4>, Option<ChannelStats>) {
        let options = self.options();
        let symmetric = matches!(
            self.conv.padding,
            PaddingConfig2d::Explicit(top, left, bottom, right)
                if top == left && left == bottom && bottom == right
        );
        let plain = symmetric && self.conv.bias.is_none() && options.dilation == [1, 1];
        let [c_out, per_group, ..] = crate::dims(&self.conv.weight);
        let depthwise = options.groups == c_out && per_group == 1;
        if !plain || !(options.groups == 1 || depthwise) {
            return (self.conv.forward(x), None);
        }
        let padding = options.padding.map(|(before, _)| before);
        let weight = self.conv.weight.val();
        let ours = if depthwise {
            kernels::depthwise_conv2d(&x, &weight, options.stride, padding).map(|y| (y, None))
        } else {
            kernels::conv2d_with_stats(&x, &weight, options.stride, padding)
        };
        ours.unwrap_or_else(|| (self.conv.forward(x), None))
    }

    fn options(&self) -> ConvOptions<2> {
        let pad = match self.conv.padding {
            PaddingConfig2d::Explicit(top, ..) => top,
            _ => 0,
        };
        ConvOptions::new(
            self.conv.stride,
            [pad, pad],
            self.conv.dilation,
            self.conv.groups,
        )
    }

    /// `[kernel, stride, padding]` of this (square, symmetric) convolution.
    pub fn window(&self) -> [usize; 3] {
        let pad = match self.conv.padding {
            PaddingConfig2d::Explicit(top, ..) => top,
            _ => 0,
        };
        [self.conv.kernel_size[0], self.conv.stride[0], pad]
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

/// `x` then what `then` says, by burn's operations.
fn followed<const D: usize>(x: Tensor<D>, then: BatchNormThen<D>) -> Tensor<D> {
    match then {
        BatchNormThen::Plain => x,
        BatchNormThen::Relu => relu(x),
        BatchNormThen::AddRelu(residual) => relu(x + residual.clone()),
    }
}

/// `bn.forward(x)`, then what `then` says: the training pass through
/// `kernels::batch_norm_train` (one fused kernel and backward on flex, what follows inside it)
/// and the running statistics updated exactly as burn updates them, and inference without
/// autodiff through `kernels::batch_norm_inference` (one pass, burn's values); elsewhere
/// burn's. `stats` are `x`'s own, where the convolution gathered them.
///
/// # Shapes
/// - input, output: `[batch, channels, ...]`; a residual: as the input
fn batch_norm<const D: usize>(
    bn: &BatchNorm,
    x: Tensor<D>,
    then: BatchNormThen<D>,
    stats: Option<&ChannelStats>,
) -> Tensor<D> {
    if !x.device().is_autodiff() {
        // Inference: one pass instead of burn's four, the same values.
        let mean = bn.running_mean.value();
        let variance = bn.running_var.value();
        let params = [&bn.gamma.val(), &bn.beta.val(), &mean, &variance];
        let x =
            kernels::batch_norm_inference(x, params, bn.epsilon).unwrap_or_else(|x| bn.forward(x));
        return followed(x, then);
    }
    if !bn.training.is_enabled() {
        return followed(bn.forward(x), then);
    }
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    let Some(trained) = kernels::batch_norm_train(&x, &gamma, &beta, bn.epsilon, then, stats)
    else {
        return followed(bn.forward(x), then);
    };
    // burn's `BatchNorm::forward_train`, after its `batch_norm_train`.
    let device = trained.output.device();
    let momentum = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - momentum)
        .add(trained.mean.detach().mul_scalar(momentum));
    let running_var = running_var
        .mul_scalar(1.0 - momentum)
        .add(trained.variance.detach().mul_scalar(momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    trained.output
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    /// The block through our kernels against burn's modules called directly: outputs, input and
    /// parameter gradients, and the running statistics it leaves.
    /// What follows the block's BatchNorm in a comparison.
    #[derive(Clone, Copy)]
    enum Follows {
        Nothing,
        Relu,
        AddRelu,
    }

    /// `forward`, `forward_relu` or `forward_add_relu` against burn's modules, add and ReLU:
    /// outputs, input, parameter and residual gradients, and the running statistics.
    fn compare(follows: Follows) {
        let device = Device::flex().autodiff();
        device.seed(21);
        let block = ConvBn::new([3, 4], 3, 1, 1, &device);
        let x = Tensor::<4>::random([5, 3, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        let residual = Tensor::<4>::random([5, 4, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        let weights = Tensor::<4>::random([5, 4, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let block = block.clone().valid().train(); // fresh leaves and running statistics
            let (x, residual) = (x.clone().require_grad(), residual.clone().require_grad());
            let then = match follows {
                Follows::Nothing => BatchNormThen::Plain,
                Follows::Relu => BatchNormThen::Relu,
                Follows::AddRelu => BatchNormThen::AddRelu(&residual),
            };
            let tap = &mut Tap::none();
            let y = match (ours, follows) {
                (true, Follows::Nothing) => block.forward(x.clone(), tap, "block"),
                (true, Follows::Relu) => block.forward_relu(x.clone(), tap, "block"),
                (true, Follows::AddRelu) => {
                    block.forward_add_relu(x.clone(), &residual, tap, "block")
                }
                (false, _) => followed(block.bn.forward(block.conv.forward(x.clone())), then),
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let residual_grad = match follows {
                Follows::AddRelu => residual.grad(&grads).unwrap().into_data(),
                _ => TensorData::from([0.0f32]),
            };
            [
                y.into_data(),
                x.grad(&grads).unwrap().into_data(),
                block.conv.weight.grad(&grads).unwrap().into_data(),
                block.bn.gamma.grad(&grads).unwrap().into_data(),
                block.bn.beta.grad(&grads).unwrap().into_data(),
                residual_grad,
                block.bn.running_mean.value().into_data(),
                block.bn.running_var.value().into_data(),
            ]
        };
        // The comparison means something only if the kernels ran.
        let y = kernels::conv2d(&x, &block.conv.weight.val(), [1, 1], [1, 1]);
        let then = match follows {
            Follows::Nothing => BatchNormThen::Plain,
            Follows::Relu => BatchNormThen::Relu,
            Follows::AddRelu => BatchNormThen::AddRelu(&residual),
        };
        let trained = kernels::batch_norm_train(
            &y.expect("the convolution kernel applies"),
            &block.bn.gamma.val(),
            &block.bn.beta.val(),
            block.bn.epsilon,
            then,
            None,
        );
        assert!(trained.is_some(), "the BatchNorm kernel applies");
        let (ours, burns) = (run(true), run(false));
        let names = [
            "output",
            "x grad",
            "weight grad",
            "gamma grad",
            "beta grad",
            "residual grad",
            "mean",
            "var",
        ];
        for (name, (a, b)) in names.iter().zip(ours.iter().zip(&burns)) {
            println!("{name}");
            a.assert_approx_eq::<f32>(b, Tolerance::absolute(1e-4));
        }
    }

    #[test]
    fn kernels_compute_what_burns_modules_compute() {
        compare(Follows::Nothing);
    }

    #[test]
    fn with_relu_kernels_compute_what_burns_modules_and_relu_compute() {
        compare(Follows::Relu);
    }

    #[test]
    fn at_a_blocks_end_kernels_compute_what_burns_modules_add_and_relu_compute() {
        compare(Follows::AddRelu);
    }
}
