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

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::flex::{contiguous_f32, flex_f32, rewritten_f32, to_vec_f32};

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

/// burn's `batch_norm_train(x, gamma, beta, epsilon)` as one fused kernel with its backward,
/// when it applies (flex with autodiff, f32, at least one value per channel); otherwise `None`,
/// for the caller to use burn's.
///
/// # Shapes
/// - x: `[batch, channels, ...]`
/// - gamma, beta: `[channels]`
/// - output: as x; mean, variance: `[channels]`
pub fn batch_norm_train<const D: usize>(
    x: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
) -> Option<BatchNormTrain<D>> {
    let dims = x.dims();
    let applies = D >= 2
        && dims.iter().all(|&d| d > 0)
        && x.dtype() == DType::F32
        && gamma.dtype() == DType::F32
        && beta.dtype() == DType::F32
        && x.device().is_autodiff();
    if !applies {
        return None;
    }
    let x_p = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let gamma_p = gamma.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let beta_p = beta.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let (output, mean, variance) = tracked(x_p, gamma_p, beta_p, epsilon);
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
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let state = ops.state;
        let layout = Layout::of(&state.x);
        let x = contiguous_f32(&state.x);
        // Per channel: the sum of the output's gradient (beta's gradient) and of the gradient
        // times the normalised input (gamma's).
        let sums: Vec<(f64, f64)> = {
            let grad = contiguous_f32(&grad);
            (0..layout.channels)
                .into_par_iter()
                .map(|c| {
                    let (mean, inv_std) = (state.mean[c], state.inv_std[c]);
                    let mut sum_grad = 0.0f64;
                    let mut sum_grad_normalised = 0.0f64;
                    for (xs, gs) in layout.planes(&x, c).zip(layout.planes(&grad, c)) {
                        let [a, b] = lane_sums(xs, gs, |xv, gv| [gv, gv * (xv - mean) * inv_std]);
                        sum_grad += a as f64;
                        sum_grad_normalised += b as f64;
                    }
                    (sum_grad, sum_grad_normalised)
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
                        let (mean, inv_std) = (state.mean[c], state.inv_std[c]);
                        let scale = state.gamma[c] * inv_std;
                        let mean_grad = (sums[c].0 / count) as f32;
                        let mean_grad_normalised = (sums[c].1 / count) as f32;
                        for (g, &xv) in gs.iter_mut().zip(xs) {
                            let normalised = (xv - mean) * inv_std;
                            *g = scale * (*g - mean_grad - normalised * mean_grad_normalised);
                        }
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
}

/// The forward as a node of burn's autodiff graph: (output, mean, variance).
fn tracked(
    x: FloatTensor<Autodiff<Flex>>,
    gamma: FloatTensor<Autodiff<Flex>>,
    beta: FloatTensor<Autodiff<Flex>>,
    epsilon: f64,
) -> (FloatTensor<Autodiff<Flex>>, FlexTensor, FlexTensor) {
    let (x, x_node) = x.into_parts();
    let (gamma, gamma_node) = gamma.into_parts();
    let (beta, beta_node) = beta.into_parts();
    let gamma = to_vec_f32(&gamma);
    let beta = to_vec_f32(&beta);
    let (output, mean, variance, inv_std) = forward(&x, &gamma, &beta, epsilon);
    let channels = mean.len();
    let (mean_t, variance_t) = (
        flex_f32(mean.clone(), [channels]),
        flex_f32(variance, [channels]),
    );
    let output = match BatchNormBackward
        .prepare::<NoCheckpointing>([x_node, gamma_node, beta_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                x,
                gamma,
                mean,
                inv_std,
            },
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    (output, mean_t, variance_t)
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

/// (output, mean, variance, 1 / sqrt(variance + epsilon)).
fn forward(
    x: &FlexTensor,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (FlexTensor, Vec<f32>, Vec<f32>, Vec<f32>) {
    let layout = Layout::of(x);
    let values = contiguous_f32(x);
    let count = layout.count();
    let (mean, variance): (Vec<f32>, Vec<f32>) = (0..layout.channels)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = layout
                .planes(&values, c)
                .map(|p| lane_sums(p, p, |v, _| [v])[0] as f64)
                .sum();
            let mean = (sum / count) as f32;
            let squares: f64 = layout
                .planes(&values, c)
                .map(|p| lane_sums(p, p, |v, _| [(v - mean) * (v - mean)])[0] as f64)
                .sum();
            (mean, (squares / count) as f32)
        })
        .unzip();
    let inv_std: Vec<f32> = variance
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();
    let mut output = vec![0.0f32; values.len()];
    output
        .par_chunks_mut(layout.plane)
        .zip(values.par_chunks(layout.plane))
        .enumerate()
        .for_each(|(i, (out, xs))| {
            let c = i % layout.channels;
            let scale = gamma[c] * inv_std[c];
            let shift = beta[c] - mean[c] * scale;
            for (o, &xv) in out.iter_mut().zip(xs) {
                *o = xv * scale + shift;
            }
        });
    let shape = x.layout().shape().clone();
    let output = flex_f32(output, shape);
    (output, mean, variance, inv_std)
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

    #[test]
    fn forward_and_gradients_match_burns() {
        let device = Device::flex().autodiff();
        let (x, gamma, beta) = inputs(&device);
        let weights = Tensor::<4>::random([5, 3, 6, 4], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let (x, gamma, beta) = (
                x.clone().require_grad(),
                gamma.clone().require_grad(),
                beta.clone().require_grad(),
            );
            let (output, mean, variance) = if ours {
                let r = batch_norm_train(&x, &gamma, &beta, 1e-5).expect("flex autodiff f32");
                (r.output, r.mean, r.variance)
            } else {
                let r = burns(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                (r.output, r.mean, r.variance)
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            [
                output.into_data(),
                mean.into_data(),
                variance.into_data(),
                x.grad(&grads).unwrap().into_data(),
                gamma.grad(&grads).unwrap().into_data(),
                beta.grad(&grads).unwrap().into_data(),
            ]
        };
        let names = [
            "output",
            "mean",
            "variance",
            "x grad",
            "gamma grad",
            "beta grad",
        ];
        assert_all_close(&names, &run(true), &run(false), 2e-5);
    }

    #[test]
    fn without_autodiff_the_inputs_come_back() {
        let (x, gamma, beta) = inputs(&Device::flex());
        assert!(batch_norm_train(&x, &gamma, &beta, 1e-5).is_none());
    }
}
