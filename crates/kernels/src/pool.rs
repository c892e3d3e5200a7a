//! 2x2, stride-2 max-pooling with its backward pass.
//!
//! flex pools through a generic 3-D kernel that computes each window's bounds per output and
//! writes 64-bit argmax indices: 17% of a LeNet-5 training step's CPU time (`perf`, issue 13),
//! where PyTorch's oneDNN pooling is about even with the rest of the step. This kernel walks
//! row pairs, keeps the argmax as one byte (which of the window's four positions), and its
//! backward writes each output gradient to that position (windows do not overlap, so no
//! accumulation).
//!
//! Ties and NaN follow flex exactly: the window is scanned row-major, a later value wins only
//! when strictly greater or NaN.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::flex::{contiguous_f32, flex_f32};

/// `x` max-pooled over 2x2 windows with stride 2, when the kernel applies (flex, f32, even
/// height and width); otherwise `None`, for the caller to pool with burn.
///
/// # Shapes
/// - input: `[batch, channels, height, width]`, height and width even
/// - output: `[batch, channels, height / 2, width / 2]`
pub fn max_pool_2x2(x: &Tensor<4>) -> Option<Tensor<4>> {
    let [_, _, height, width] = x.dims();
    if height % 2 != 0 || width % 2 != 0 || height == 0 || width == 0 || x.dtype() != DType::F32 {
        return None;
    }
    if x.device().is_autodiff() {
        let primitive = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        Some(Tensor::from_primitive::<Autodiff<Flex>>(tracked(primitive)))
    } else {
        let primitive = x.clone().try_into_primitive::<Flex>().ok()?;
        Some(Tensor::from_primitive::<Flex>(forward(&primitive).0))
    }
}

/// The pooling as a node of burn's autodiff graph.
fn tracked(x: FloatTensor<Autodiff<Flex>>) -> FloatTensor<Autodiff<Flex>> {
    let (x, node) = x.into_parts();
    let dims = dims4(&x);
    match MaxPool2x2Backward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (output, argmax) = forward(&x);
            prep.finish((Arc::new(argmax), dims), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x).0),
    }
}

#[derive(Debug)]
struct MaxPool2x2Backward;

impl Backward<Flex, 1> for MaxPool2x2Backward {
    /// Which of its window's four positions each output came from, and the input's shape.
    type State = (Arc<Vec<u8>>, [usize; 4]);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = parent {
            let (argmax, dims) = ops.state;
            grads.register::<Flex>(parent.id, scatter(&grad, &argmax, dims));
        }
    }
}

fn dims4(x: &FlexTensor) -> [usize; 4] {
    let shape = x.layout().shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The pooled values, and each output's position in its window (one byte per output: cheaper
/// to always keep than to branch on).
fn forward(x: &FlexTensor) -> (FlexTensor, Vec<u8>) {
    let [batch, channels, height, width] = dims4(x);
    let input = contiguous_f32(x);
    let (out_h, out_w) = (height / 2, width / 2);
    let plane_in = height * width;
    let plane_out = out_h * out_w;
    let mut output = vec![0.0f32; batch * channels * plane_out];
    let mut argmax = vec![0u8; batch * channels * plane_out];
    input
        .par_chunks(plane_in)
        .zip(output.par_chunks_mut(plane_out))
        .zip(argmax.par_chunks_mut(plane_out))
        .for_each(|((plane, out), arg)| {
            let rows = plane.chunks_exact(2 * width);
            for ((pair, out_row), arg_row) in rows
                .zip(out.chunks_exact_mut(out_w))
                .zip(arg.chunks_exact_mut(out_w))
            {
                let (top, bottom) = pair.split_at(width);
                let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                for ((o, a), (top, bottom)) in out_row.iter_mut().zip(arg_row).zip(windows) {
                    let best = pick((top[0], 0), top[1], 1);
                    let best = pick(pick(best, bottom[0], 2), bottom[1], 3);
                    (*o, *a) = best;
                }
            }
        });
    let shape = [batch, channels, out_h, out_w];
    (flex_f32(output, shape), argmax)
}

/// The window's maximum so far and its position, after looking at `value` at position `k`:
/// a later value wins only when strictly greater, or NaN (flex's rule).
#[inline(always)]
fn pick(best: (f32, u8), value: f32, k: u8) -> (f32, u8) {
    if value > best.0 || value.is_nan() {
        (value, k)
    } else {
        best
    }
}

/// The input's gradient: each output's gradient at the position it was pooled from, zero
/// elsewhere.
fn scatter(grad: &FlexTensor, argmax: &[u8], dims: [usize; 4]) -> FlexTensor {
    let [batch, channels, height, width] = dims;
    let grad = contiguous_f32(grad);
    let (out_h, out_w) = (height / 2, width / 2);
    let mut input_grad = vec![0.0f32; batch * channels * height * width];
    input_grad
        .par_chunks_mut(height * width)
        .zip(grad.par_chunks(out_h * out_w))
        .zip(argmax.par_chunks(out_h * out_w))
        .for_each(|((plane, grad), arg)| {
            for oy in 0..out_h {
                for ox in 0..out_w {
                    let k = arg[oy * out_w + ox] as usize;
                    let (dy, dx) = (k / 2, k % 2);
                    plane[(2 * oy + dy) * width + 2 * ox + dx] = grad[oy * out_w + ox];
                }
            }
        });
    flex_f32(input_grad, [batch, channels, height, width])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::Distribution;

    fn input(device: &Device) -> Tensor<4> {
        device.seed(5);
        let x = Tensor::<4>::random([3, 4, 8, 6], Distribution::Normal(0.0, 1.0), device);
        // Ties: a ReLU'd input has many equal zeros, so argmax order matters.
        burn::tensor::activation::relu(x)
    }

    #[test]
    fn values_equal_burns_exactly() {
        let device = Device::flex();
        let x = input(&device);
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let ours = max_pool_2x2(&x).expect("flex f32 even sizes");
        assert_eq!(ours.into_data(), pool.forward(x).into_data());
    }

    #[test]
    fn gradients_equal_burns_exactly() {
        let device = Device::flex().autodiff();
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let weights = Tensor::<4>::random([3, 4, 4, 3], Distribution::Normal(0.0, 1.0), &device);
        let grad_of = |ours: bool| {
            let x = input(&device).require_grad();
            let y = if ours {
                max_pool_2x2(&x).expect("flex autodiff")
            } else {
                pool.forward(x.clone())
            };
            let grads = (y * weights.clone()).sum().backward();
            x.grad(&grads).unwrap().into_data()
        };
        assert_eq!(grad_of(true), grad_of(false));
    }

    #[test]
    fn odd_sizes_are_handed_back() {
        let x = Tensor::<4>::ones([1, 1, 5, 4], &Device::flex());
        assert!(max_pool_2x2(&x).is_none());
    }
}
