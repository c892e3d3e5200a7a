//! BatchNorm in training: the batch's statistics, the normalisation and its backward, fused.
//!
//! burn composes `batch_norm_train` and its backward from general operations: a dimension swap
//! and a copy to reduce over the channel, then one pass per element-wise operation (about
//! twelve passes over the activation in all). That was 16% of a LeNet-5 training step's CPU
//! time (`perf`, issue 13). Here the forward is two reading passes (mean, then variance about
//! it, as burn computes them) and one writing pass (`x * scale + shift`), the backward one
//! reading pass (the two per-channel sums) and one writing pass. Sums accumulate in f64 per
//! channel, so the statistics are at least as accurate as burn's; values agree with burn's to
//! float rounding (tests), not bit for bit.
//!
//! What follows BatchNorm in a CNN can run in the same passes ([`BatchNormThen`]): a ReLU (conv,
//! BatchNorm, ReLU), or a residual block's end, `relu(y + shortcut)`. The writing pass adds
//! and clamps; the backward masks the output's gradient where the output was clamped (for a
//! plain ReLU recomputing the pre-activation from the input it keeps anyway; after an add,
//! from the output, kept), and the masked gradient is also the shortcut's. burn's add and
//! ReLU are a pass over the activation each in the forward, and the ReLU another in the
//! backward; on ResNet-20 the two ReLUs per block were 4.6% of a training step (`perf`,
//! 2026-12-06).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::channel_stats::ChannelStats;
use crate::flex::{contiguous_f32, flex_f32, rewritten_f32, to_vec_f32};
use crate::recycle::written_in_chunks;
use crate::wide::avx512;

/// What BatchNorm's training forward produces: the normalised output and the batch's
/// per-channel mean and (biased) variance, the latter two detached (for the running
/// statistics).
#[derive(Debug)]
pub struct BatchNormTrain<const D: usize> {
    /// `[batch, channels, ...]`, the input's shape.
    pub output: Tensor<D>,
    /// `[channels]`.
    pub mean: Tensor<1>,
    /// `[channels]`, biased (divided by the number of values per channel), as burn's.
    pub variance: Tensor<1>,
}

/// What BatchNorm's kernel applies to the normalised `y` before handing it on, with its
/// gradient.
#[derive(Debug, Clone, Copy)]
pub enum BatchNormThen<'a, const D: usize> {
    /// `y` itself.
    Plain,
    /// `relu(y)`.
    Relu,
    /// `relu(y + residual)`, `residual` of the input's shape: a residual block's end.
    AddRelu(&'a Tensor<D>),
}

/// burn's `batch_norm_train(x, gamma, beta, epsilon)` as one fused kernel with its backward,
/// then `then`, when it applies (flex with autodiff, f32, at least one value per channel,
/// a residual like `x`); otherwise `None`, for the caller to use burn's. ReLUs keep NaN, as
/// burn's does; mean and variance are the batch's whatever follows. `stats`, where given
/// (from [`crate::conv2d_with_stats`] on the convolution that produced `x`), are those of `x`:
/// the forward then skips its two reading passes (statistics of another count or width are
/// not used).
///
/// # Shapes
/// - x: `[batch, channels, ...]`; a residual: as x
/// - gamma, beta: `[channels]`
/// - output: as x; mean, variance: `[channels]`
pub fn batch_norm_train<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
    then: BatchNormThen<D>,
    stats: Option<&ChannelStats>,
) -> Option<BatchNormTrain<D>> {
    let dims = x.dims();
    let residual_fits = match then {
        BatchNormThen::AddRelu(r) => {
            r.dims() == dims && r.dtype() == DType::F32 && r.device() == x.device()
        }
        BatchNormThen::Plain | BatchNormThen::Relu => true,
    };
    let applies = D >= 2
        && dims.iter().all(|&d| d > 0)
        && x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && beta.dtype() == DType::F32
        && x.device().is_autodiff()
        && residual_fits;
    if !applies {
        return None;
    }
    let x_p = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let gamma_p = gamma.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let beta_p = beta.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let (relu, residual) = match then {
        BatchNormThen::Plain => (false, None),
        BatchNormThen::Relu => (true, None),
        BatchNormThen::AddRelu(r) => (
            true,
            Some(r.clone().try_into_primitive::<Autodiff<Flex>>().ok()?),
        ),
    };
    let (output, mean, variance) =
        tracked(x_p, (gamma_p, beta_p), (epsilon, stats), (relu, residual));
    let detached =
        |t: FlexTensor| Tensor::from_primitive::<Autodiff<Flex>>(<Autodiff<Flex>>::from_inner(t));
    Some(BatchNormTrain {
        output: Tensor::from_primitive::<Autodiff<Flex>>(output),
        mean: detached(mean),
        variance: detached(variance),
    })
}

/// The layout BatchNorm reduces over: `batch` blocks of `channels` planes of `plane` values.
#[derive(Debug, Clone, Copy)]
struct Layout {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Layout {
    fn of(x: &FlexTensor) -> Self {
        let shape = x.layout().shape();
        Layout {
            batch: shape[0],
            channels: shape[1],
            plane: shape[2..].iter().product(),
        }
    }

    fn count(&self) -> f64 {
        (self.batch * self.plane) as f64
    }

    /// The planes of channel `c`, one per sample.
    fn planes<'a>(&self, values: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        let (channels, plane) = (self.channels, self.plane);
        (0..self.batch).map(move |b| &values[(b * channels + c) * plane..][..plane])
    }
}

#[derive(Debug, Clone)]
struct State {
    x: FlexTensor,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    clamp: Clamp,
}

/// Where the backward finds which outputs a ReLU clamped.
#[derive(Debug, Clone)]
enum Clamp {
    /// No ReLU.
    Not,
    /// `x * scale + shift <= 0`, recomputed from the input.
    Recomputed,
    /// `output <= 0` (a residual was added before the ReLU), the output kept.
    Output(FlexTensor),
}

impl State {
    /// Channel `c`'s affine: the output before any ReLU is `x * scale + shift` (the forward's
    /// own expression, so the recomputed mask is the forward's exactly).
    fn affine(&self, c: usize) -> (f32, f32) {
        affine(self.gamma[c], self.beta[c], self.mean[c], self.inv_std[c])
    }
}

/// `(scale, shift)` of one channel's normalisation and affine.
#[inline(always)]
fn affine(gamma: f32, beta: f32, mean: f32, inv_std: f32) -> (f32, f32) {
    let scale = gamma * inv_std;
    (scale, beta - mean * scale)
}

/// The output's gradient `g` at an input `x` whose output before any ReLU was `x * scale +
/// shift`: zero where a ReLU clamped it (`relu`), else `g`.
#[inline(always)]
fn through_relu(relu: bool, (scale, shift): (f32, f32), x: f32, g: f32) -> f32 {
    if relu && x * scale + shift <= 0.0 {
        0.0
    } else {
        g
    }
}

/// One channel's constants for the input's gradient.
struct ChannelGrad {
    mean: f32,
    inv_std: f32,
    /// The forward's `(scale, shift)`: the scale, `gamma * inv_std`, is also the input
    /// gradient's; both give the ReLU's mask.
    affine: (f32, f32),
    mean_grad: f32,
    mean_grad_normalised: f32,
}

impl ChannelGrad {
    /// The input's gradient over one plane, written over the output's gradient `gs` (through
    /// the recomputed ReLU when `RELU`).
    #[inline(always)]
    fn input_grad<const RELU: bool>(&self, gs: &mut [f32], xs: &[f32]) {
        for (g, &xv) in gs.iter_mut().zip(xs) {
            let normalised = (xv - self.mean) * self.inv_std;
            let gv = through_relu(RELU, self.affine, xv, *g);
            *g = self.affine.0 * (gv - self.mean_grad - normalised * self.mean_grad_normalised);
        }
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        normalisation_backward(ops, grad, grads);
    }
}

/// The backward of `relu(batch_norm(x) + residual)`: a fourth parent, the residual.
#[derive(Debug)]
struct ResidualBatchNormBackward;

impl Backward<Flex, 4> for ResidualBatchNormBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let mut grad = grads.consume::<Flex>(&ops.node);
        if let Clamp::Output(output) = &ops.state.clamp {
            // The gradient through the ReLU, which is also the residual's (the add passes it
            // on unchanged); the input's below then goes to a buffer of its own.
            let output = contiguous_f32(output);
            grad = rewritten_f32(grad, |values| {
                values
                    .par_chunks_mut(1 << 14)
                    .zip(output.par_chunks(1 << 14))
                    .for_each(|(gs, ys)| {
                        avx512(|| {
                            for (g, &y) in gs.iter_mut().zip(ys) {
                                // Zero where the ReLU clamped (NaN passes, as burn's).
                                if y <= 0.0 {
                                    *g = 0.0;
                                }
                            }
                        })
                    })
            });
        }
        if let Some(node) = &ops.parents[3] {
            grads.register::<Flex>(node.id, grad.clone());
        }
        normalisation_backward(ops, grad, grads);
    }
}

/// BatchNorm's backward from the output's gradient `grad` (through a ReLU recomputed from the
/// input where the state says so), registering the gradients of the first three parents: the
/// input, gamma and beta.
fn normalisation_backward<const N: usize>(
    ops: Ops<State, N>,
    grad: FlexTensor,
    grads: &mut Gradients,
) {
    let [x_node, gamma_node, beta_node] = std::array::from_fn(|i| ops.parents[i].clone());
    let state = ops.state;
    let relu = matches!(state.clamp, Clamp::Recomputed);
    let layout = Layout::of(&state.x);
    let x = contiguous_f32(&state.x);
    // Per channel: the sum of the output's gradient (beta's gradient) and of the gradient
    // times the normalised input (gamma's).
    // Each pass runs compiled for AVX-512 (`wide.rs`): with baseline SSE this backward was
    // 17.7% of a 1-thread ResNet-20 step, 11.2% with AVX-512 (`perf`, 2026-12-07).
    let sums: Vec<(f64, f64)> = {
        let grad = contiguous_f32(&grad);
        (0..layout.channels)
            .into_par_iter()
            .map(|c| {
                avx512(|| {
                    let (mean, inv_std) = (state.mean[c], state.inv_std[c]);
                    let affine = state.affine(c);
                    let mut sum_grad = 0.0f64;
                    let mut sum_grad_normalised = 0.0f64;
                    for (xs, gs) in layout.planes(&x, c).zip(layout.planes(&grad, c)) {
                        // The flag picks a loop, as in the input's gradient below.
                        let [a, b] = match relu {
                            true => lane_sums(xs, gs, |xv, gv| {
                                let gv = through_relu(true, affine, xv, gv);
                                [gv, gv * (xv - mean) * inv_std]
                            }),
                            false => lane_sums(xs, gs, |xv, gv| [gv, gv * (xv - mean) * inv_std]),
                        };
                        sum_grad += a as f64;
                        sum_grad_normalised += b as f64;
                    }
                    (sum_grad, sum_grad_normalised)
                })
            })
            .collect()
    };
    if let Some(node) = x_node {
        let count = layout.count();
        // Each value of dx needs only dy at the same position, so dx overwrites dy's own
        // storage (a fresh 8 MB buffer per ResNet-20 layer otherwise); a copy where
        // something else still holds it.
        let x_grad = rewritten_f32(grad, |values| {
            values
                .par_chunks_mut(layout.plane)
                .zip(x.par_chunks(layout.plane))
                .enumerate()
                .for_each(|(i, (gs, xs))| {
                    let c = i % layout.channels;
                    let channel = ChannelGrad {
                        mean: state.mean[c],
                        inv_std: state.inv_std[c],
                        affine: state.affine(c),
                        mean_grad: (sums[c].0 / count) as f32,
                        mean_grad_normalised: (sums[c].1 / count) as f32,
                    };
                    // Two loops, not a flag tested in one: the flag in the loop cost its
                    // vectorisation (this pass took twice as long).
                    avx512(|| match relu {
                        true => channel.input_grad::<true>(gs, xs),
                        false => channel.input_grad::<false>(gs, xs),
                    })
                })
        });
        grads.register::<Flex>(node.id, x_grad);
    }
    if let Some(node) = gamma_node {
        let values = sums.iter().map(|s| s.1 as f32).collect();
        grads.register::<Flex>(node.id, flex_f32(values, [layout.channels]));
    }
    if let Some(node) = beta_node {
        let values = sums.iter().map(|s| s.0 as f32).collect();
        grads.register::<Flex>(node.id, flex_f32(values, [layout.channels]));
    }
}

/// The forward as a node of burn's autodiff graph: (output, mean, variance).
fn tracked(
    x: FloatTensor<Autodiff<Flex>>,
    (gamma, beta): (FloatTensor<Autodiff<Flex>>, FloatTensor<Autodiff<Flex>>),
    (epsilon, stats): (f64, Option<&ChannelStats>),
    (relu, residual): (bool, Option<FloatTensor<Autodiff<Flex>>>),
) -> (FloatTensor<Autodiff<Flex>>, FlexTensor, FlexTensor) {
    let (x, x_node) = x.into_parts();
    let (gamma, gamma_node) = gamma.into_parts();
    let (beta, beta_node) = beta.into_parts();
    let (residual, residual_node) = match residual.map(|r| r.into_parts()) {
        Some((r, node)) => (Some(r), Some(node)),
        None => (None, None),
    };
    let gamma = to_vec_f32(&gamma);
    let beta = to_vec_f32(&beta);
    let residual_values = residual.as_ref().map(contiguous_f32);
    let (output, mean, variance, inv_std) = forward(
        &x,
        (&gamma, &beta),
        (epsilon, stats),
        (relu, residual_values.as_deref()),
    );
    let clamp = match (relu, residual.is_some()) {
        (false, _) => Clamp::Not,
        (true, false) => Clamp::Recomputed,
        (true, true) => Clamp::Output(output.clone()),
    };
    let channels = mean.len();
    let (mean_t, variance_t) = (
        flex_f32(mean.clone(), [channels]),
        flex_f32(variance, [channels]),
    );
    let state = State {
        x,
        gamma,
        beta,
        mean,
        inv_std,
        clamp,
    };
    let output = match residual_node {
        Some(residual_node) => node(
            ResidualBatchNormBackward,
            [x_node, gamma_node, beta_node, residual_node],
            state,
            output,
        ),
        None => node(
            BatchNormBackward,
            [x_node, gamma_node, beta_node],
            state,
            output,
        ),
    };
    (output, mean_t, variance_t)
}

/// `output` as a node of burn's autodiff graph whose backward is `op`'s.
fn node<const N: usize>(
    op: impl Backward<Flex, N, State = State>,
    parents: [NodeGuard; N],
    state: State,
    output: FlexTensor,
) -> FloatTensor<Autodiff<Flex>> {
    match op
        .prepare::<NoCheckpointing>(parents)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// Lanes summed side by side: a single running sum is one dependent add per value (four
/// cycles each), which made these reductions most of BatchNorm's time at VGG's widths.
const LANES: usize = 32;

/// `N` sums over a plane of `f(x[i], y[i])`, each in [`LANES`] running sums (added in a fixed
/// order, so the result does not depend on the thread count).
#[inline(always)]
fn lane_sums<const N: usize>(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> [f32; N]) -> [f32; N] {
    let mut lanes = [[0.0f32; LANES]; N];
    let (x_chunks, y_chunks) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let (x_rest, y_rest) = (x_chunks.remainder(), y_chunks.remainder());
    for (x, y) in x_chunks.zip(y_chunks) {
        for i in 0..LANES {
            let values = f(x[i], y[i]);
            for (lane, v) in lanes.iter_mut().zip(values) {
                lane[i] += v;
            }
        }
    }
    let mut sums = lanes.map(|lane| lane.iter().sum::<f32>());
    for (&x, &y) in x_rest.iter().zip(y_rest) {
        for (sum, v) in sums.iter_mut().zip(f(x, y)) {
            *sum += v;
        }
    }
    sums
}

/// (output, mean, variance, 1 / sqrt(variance + epsilon)); the output plus `residual` (when
/// given), then through a ReLU when `relu`. Mean and variance come from `stats` where those
/// are of this layout.
fn forward(
    x: &FlexTensor,
    (gamma, beta): (&[f32], &[f32]),
    (epsilon, stats): (f64, Option<&ChannelStats>),
    (relu, residual): (bool, Option<&[f32]>),
) -> (FlexTensor, Vec<f32>, Vec<f32>, Vec<f32>) {
    let layout = Layout::of(x);
    let values = contiguous_f32(x);
    let given =
        stats.filter(|s| s.channels() == layout.channels && s.count == layout.batch * layout.plane);
    let (mean, variance): (Vec<f32>, Vec<f32>) = match given {
        Some(stats) => stats.mean_variance(),
        None => statistics(&values, layout),
    };

    let inv_std: Vec<f32> = variance
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let clamped = |y: f32| if y <= 0.0 { 0.0 } else { y };
    // Sample by sample (`written_in_chunks`: on a one-thread pool appended, not zeroed first,
    // which had been a third of this forward's time at ResNet-20's widths, `perf`).
    let sample = layout.channels * layout.plane;
    let (output, _) = written_in_chunks(values.len(), sample, |b, out| {
        for (c, out) in out.chunks_exact_mut(layout.plane).enumerate() {
            let i = b * layout.channels + c;
            let xs = &values[i * layout.plane..][..layout.plane];
            let (scale, shift) = affine(gamma[c], beta[c], mean[c], inv_std[c]);
            // One loop per case, each vectorised on its own (a flag tested per value is not).
            avx512(|| match (relu, residual) {
                (_, Some(residual)) => {
                    let rs = &residual[i * layout.plane..][..layout.plane];
                    for ((o, &xv), &r) in out.iter_mut().zip(xs).zip(rs) {
                        *o = clamped(xv * scale + shift + r);
                    }
                }
                (true, None) => {
                    for (o, &xv) in out.iter_mut().zip(xs) {
                        *o = clamped(xv * scale + shift);
                    }
                }
                (false, None) => {
                    for (o, &xv) in out.iter_mut().zip(xs) {
                        *o = xv * scale + shift;
                    }
                }
            })
        }
    });
    let shape = x.layout().shape().clone();
    let output = flex_f32(output, shape);
    (output, mean, variance, inv_std)
}

/// Per channel `(mean, biased variance)` of `values`: two reading passes, the mean, then the
/// squares about it (as burn computes them).
fn statistics(values: &[f32], layout: Layout) -> (Vec<f32>, Vec<f32>) {
    let count = layout.count();
    (0..layout.channels)
        .into_par_iter()
        .map(|c| {
            avx512(|| {
                let sum: f64 = layout
                    .planes(values, c)
                    .map(|p| lane_sums(p, p, |v, _| [v])[0] as f64)
                    .sum();
                let mean = (sum / count) as f32;
                let squares: f64 = layout
                    .planes(values, c)
                    .map(|p| lane_sums(p, p, |v, _| [(v - mean) * (v - mean)])[0] as f64)
                    .sum();
                (mean, (squares / count) as f32)
            })
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::assert_all_close;
    use burn::tensor::module::batch_norm_train as burns;
    use burn::tensor::Distribution;

    fn inputs(device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
        device.seed(9);
        let x = Tensor::<4>::random([5, 3, 6, 4], Distribution::Normal(0.5, 2.0), device);
        let gamma = Tensor::<1>::random([3], Distribution::Normal(1.0, 0.3), device);
        let beta = Tensor::<1>::random([3], Distribution::Normal(0.0, 0.3), device);
        (x, gamma, beta)
    }

    /// What follows BatchNorm in a comparison: nothing, a ReLU, or a residual then a ReLU.
    #[derive(Clone, Copy, PartialEq)]
    enum Follows {
        Nothing,
        Relu,
        AddRelu,
    }

    /// Ours against burn's `batch_norm_train`, then burn's add and ReLU as `follows` says:
    /// the output, the statistics and every gradient (the residual's too).
    fn compare(follows: Follows) {
        let device = Device::flex().autodiff();
        let (x, gamma, beta) = inputs(&device);
        let residual = Tensor::<4>::random([5, 3, 6, 4], Distribution::Normal(0.0, 1.0), &device);
        let weights = Tensor::<4>::random([5, 3, 6, 4], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let (x, gamma, beta, residual) = (
                x.clone().require_grad(),
                gamma.clone().require_grad(),
                beta.clone().require_grad(),
                residual.clone().require_grad(),
            );
            let (output, mean, variance) = if ours {
                let then = match follows {
                    Follows::Nothing => BatchNormThen::Plain,
                    Follows::Relu => BatchNormThen::Relu,
                    Follows::AddRelu => BatchNormThen::AddRelu(&residual),
                };
                let r = batch_norm_train(&x, &gamma, &beta, 1e-5, then, None)
                    .expect("flex autodiff f32");
                (r.output, r.mean, r.variance)
            } else {
                let r = burns(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                let relu = burn::tensor::activation::relu;
                let output = match follows {
                    Follows::Nothing => r.output,
                    Follows::Relu => relu(r.output),
                    Follows::AddRelu => relu(r.output + residual.clone()),
                };
                (output, r.mean, r.variance)
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            let residual_grad = match follows {
                Follows::AddRelu => residual.grad(&grads).unwrap().into_data(),
                _ => TensorData::from([0.0f32]),
            };
            [
                output.into_data(),
                mean.into_data(),
                variance.into_data(),
                x.grad(&grads).unwrap().into_data(),
                gamma.grad(&grads).unwrap().into_data(),
                beta.grad(&grads).unwrap().into_data(),
                residual_grad,
            ]
        };
        let names = [
            "output",
            "mean",
            "variance",
            "x grad",
            "gamma grad",
            "beta grad",
            "residual grad",
        ];
        let (ours, burns) = (run(true), run(false));
        assert_all_close(&names, &ours, &burns, 2e-5);
        if follows != Follows::Nothing {
            // The test means something only if the ReLU clamped some outputs and not others.
            let output = ours[0].iter::<f32>().collect::<Vec<_>>();
            let zeros = output.iter().filter(|&&v| v == 0.0).count();
            assert!(
                zeros > 0 && zeros < output.len(),
                "{zeros} of {}",
                output.len()
            );
        }
    }

    #[test]
    fn forward_and_gradients_match_burns() {
        compare(Follows::Nothing);
    }

    #[test]
    fn with_relu_forward_and_gradients_match_burns() {
        compare(Follows::Relu);
    }

    #[test]
    fn with_a_residual_and_relu_forward_and_gradients_match_burns() {
        compare(Follows::AddRelu);
    }

    /// A residual of another shape is handed back (the caller adds it with burn's).
    #[test]
    fn a_residual_of_another_shape_is_refused() {
        let device = Device::flex().autodiff();
        let (x, gamma, beta) = inputs(&device);
        let residual = Tensor::<4>::zeros([5, 3, 6, 5], &device);
        let then = BatchNormThen::AddRelu(&residual);
        assert!(batch_norm_train(&x, &gamma, &beta, 1e-5, then, None).is_none());
    }

    #[test]
    fn without_autodiff_the_inputs_come_back() {
        let (x, gamma, beta) = inputs(&Device::flex());
        assert!(batch_norm_train(&x, &gamma, &beta, 1e-5, BatchNormThen::Plain, None).is_none());
    }
}
