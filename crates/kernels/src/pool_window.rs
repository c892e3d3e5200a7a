//! Max-pooling over square windows with stride and padding (ResNet's 3x3, stride-2, padding-1
//! stem pool) with its backward pass.
//!
//! flex pools through its generic 3-D kernel, which works out each window's bounds per output
//! and writes a 64-bit index per output: 7% of a ResNet-18 training step at 224x224 (`perf`,
//! 2026-12-06). Here each output keeps its window position in one byte, and the backward adds
//! each output's gradient at that position.
//!
//! Values and gradients are flex's exactly: a window is scanned row-major over the positions
//! inside the input (padding never wins), a later value wins only when strictly greater or
//! NaN, and the backward adds the gradients of overlapping windows in output order, as flex
//! does.

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

/// One pooling's sizes.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// `[batch, channels, height, width]` of the input.
    dims: [usize; 4],
    kernel: usize,
    stride: usize,
    padding: usize,
    out_h: usize,
    out_w: usize,
}

impl Window {
    fn new(dims: [usize; 4], kernel: usize, stride: usize, padding: usize) -> Option<Self> {
        let [batch, channels, height, width] = dims;
        // Every window holds an input value (padding at most half the window, as PyTorch
        // requires), and a position fits one byte.
        let valid = kernel > 0
            && kernel * kernel <= 256
            && stride > 0
            && 2 * padding <= kernel
            && [batch, channels, height, width].iter().all(|&d| d > 0)
            && height + 2 * padding >= kernel
            && width + 2 * padding >= kernel;
        valid.then(|| Window {
            dims,
            kernel,
            stride,
            padding,
            out_h: (height + 2 * padding - kernel) / stride + 1,
            out_w: (width + 2 * padding - kernel) / stride + 1,
        })
    }

    /// The window rows (or columns) of output `o` inside an input of `size`: `lo..hi`.
    fn inside(&self, o: usize, size: usize) -> (usize, usize) {
        let first = o * self.stride;
        let lo = self.padding.saturating_sub(first);
        let hi = self.kernel.min(size + self.padding - first);
        (lo, hi)
    }

    /// The input position of output `(oy, ox)`'s window element `at`.
    fn position(&self, oy: usize, ox: usize, at: u8) -> usize {
        let (ky, kx) = (at as usize / self.kernel, at as usize % self.kernel);
        let iy = oy * self.stride + ky - self.padding;
        let ix = ox * self.stride + kx - self.padding;
        iy * self.dims[3] + ix
    }
}

/// `x` max-pooled over `kernel x kernel` windows at `stride` with `padding` (as burn's
/// `MaxPool2d`, dilation 1), when the kernel applies (flex, f32, padding at most half the
/// window); otherwise `None`, for the caller to pool with burn.
///
/// # Shapes
/// - input: `[batch, channels, height, width]`
/// - output: `[batch, channels, (height + 2 * padding - kernel) / stride + 1, (width + 2 *
///   padding - kernel) / stride + 1]`
pub fn max_pool_window(
    x: &Tensor<4>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Option<Tensor<4>> {
    let window = Window::new(x.dims(), kernel, stride, padding)?;
    if x.dtype() != DType::F32 {
        return None;
    }
    if x.device().is_autodiff() {
        let primitive = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        Some(Tensor::from_primitive::<Autodiff<Flex>>(tracked(
            primitive, window,
        )))
    } else {
        let primitive = x.clone().try_into_primitive::<Flex>().ok()?;
        Some(Tensor::from_primitive::<Flex>(
            forward(&primitive, &window).0,
        ))
    }
}

fn tracked(x: FloatTensor<Autodiff<Flex>>, window: Window) -> FloatTensor<Autodiff<Flex>> {
    let (x, node) = x.into_parts();
    match MaxPoolBackward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (output, positions) = forward(&x, &window);
            prep.finish((Arc::new(positions), window), output)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&x, &window).0),
    }
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    /// Each output's position in its window, and the pooling's sizes.
    type State = (Arc<Vec<u8>>, Window);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = parent {
            let (positions, window) = ops.state;
            grads.register::<Flex>(parent.id, scatter(&grad, &positions, &window));
        }
    }
}

/// The pooled values, and each output's position in its window.
fn forward(x: &FlexTensor, w: &Window) -> (FlexTensor, Vec<u8>) {
    let [batch, channels, height, width] = w.dims;
    let input = contiguous_f32(x);
    let (plane_in, plane_out) = (height * width, w.out_h * w.out_w);
    let mut output = vec![0.0f32; batch * channels * plane_out];
    let mut positions = vec![0u8; batch * channels * plane_out];
    // Each output column's first window column inside the input, the same on every row.
    let first_columns: Vec<usize> = (0..w.out_w).map(|ox| w.inside(ox, width).0).collect();
    input
        .par_chunks(plane_in)
        .zip(output.par_chunks_mut(plane_out))
        .zip(positions.par_chunks_mut(plane_out))
        .for_each_init(Scratch::default, |scratch, ((plane, out), at)| {
            let rows = out
                .chunks_exact_mut(w.out_w)
                .zip(at.chunks_exact_mut(w.out_w));
            for (oy, row) in rows.enumerate() {
                pool_row(plane, w, oy, &first_columns, scratch, row);
            }
        });
    let shape = [batch, channels, w.out_h, w.out_w];
    (flex_f32(output, shape), positions)
}

/// Output row `oy` of one plane and each output's position in its window.
///
/// Each output starts at minus infinity with the position of its window's first element inside
/// the input, which is what a scan from that element keeps: only a strictly greater value or a
/// NaN replaces it. Then each window row's input row is laid out with a border of minus
/// infinity (which never replaces anything, so it stands for the padding) and split into
/// `stride` phases, so that window column `kx` of every output of the row is one contiguous
/// slice of a phase: the comparisons run over whole rows and vectorise, as selects by mask. One
/// output at a time, with a branch per comparison (mispredicted on most windows), the stem
/// pool of a ResNet-18 at 224x224 was a sixth of its batch-1 inference.
fn pool_row(
    plane: &[f32],
    w: &Window,
    oy: usize,
    first_columns: &[usize],
    scratch: &mut Scratch,
    (out, at): (&mut [f32], &mut [u8]),
) {
    let width = w.dims[3];
    let s = w.stride;
    let (ky0, ky1) = w.inside(oy, w.dims[2]);
    out.fill(f32::NEG_INFINITY);
    // Positions as 32-bit lanes while comparing, so that the selects vectorise with the values.
    let positions = &mut scratch.positions;
    positions.clear();
    positions.extend(
        first_columns
            .iter()
            .map(|&kx0| (ky0 * w.kernel + kx0) as u32),
    );
    // Phase `r` holds padded columns `r, r + s, r + 2s, ...`; every window reads inside.
    let phase_len = (width + 2 * w.padding).div_ceil(s);
    for ky in ky0..ky1 {
        let row = &plane[(oy * w.stride + ky - w.padding) * width..][..width];
        let padded = &mut scratch.padded;
        padded.clear();
        padded.resize(s * phase_len, f32::NEG_INFINITY);
        padded[w.padding..w.padding + width].copy_from_slice(row);
        let phases = &mut scratch.phases;
        phases.resize(s * phase_len, f32::NEG_INFINITY);
        for (r, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
            for (p, &value) in phase.iter_mut().zip(padded[r..].iter().step_by(s)) {
                *p = value;
            }
        }
        for kx in 0..w.kernel {
            let k = (ky * w.kernel + kx) as u32;
            let values = &phases[(kx % s) * phase_len + kx / s..][..w.out_w];
            for ((best, a), &value) in out.iter_mut().zip(positions.iter_mut()).zip(values) {
                let take = (value > *best) as u32 | value.is_nan() as u32;
                let mask = 0u32.wrapping_sub(take);
                *a = (k & mask) | (*a & !mask);
                *best = f32::from_bits((value.to_bits() & mask) | (best.to_bits() & !mask));
            }
        }
    }
    for (a, &p) in at.iter_mut().zip(positions.iter()) {
        *a = p as u8;
    }
}

/// A task's buffers for [`pool_row`], kept from row to row.
#[derive(Default)]
struct Scratch {
    padded: Vec<f32>,
    phases: Vec<f32>,
    positions: Vec<u32>,
}

/// The input's gradient: each output's gradient added at the position it was pooled from,
/// in output order per plane (flex's order, so sums of overlapping windows round alike).
fn scatter(grad: &FlexTensor, positions: &[u8], w: &Window) -> FlexTensor {
    let [batch, channels, height, width] = w.dims;
    let grad = contiguous_f32(grad);
    let plane_out = w.out_h * w.out_w;
    let mut input_grad = vec![0.0f32; batch * channels * height * width];
    input_grad
        .par_chunks_mut(height * width)
        .zip(grad.par_chunks(plane_out))
        .zip(positions.par_chunks(plane_out))
        .for_each(|((plane, grad), at)| {
            for oy in 0..w.out_h {
                for ox in 0..w.out_w {
                    let i = oy * w.out_w + ox;
                    plane[w.position(oy, ox, at[i])] += grad[i];
                }
            }
        });
    flex_f32(input_grad, w.dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::nn::PaddingConfig2d;
    use burn::tensor::TensorData;

    /// burn's pooling of the same window.
    fn burns(kernel: usize, stride: usize, padding: usize) -> burn::nn::pool::MaxPool2d {
        MaxPool2dConfig::new([kernel, kernel])
            .with_strides([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(
                padding, padding, padding, padding,
            ))
            .init()
    }

    /// Values in [-0.5, 0.5) from a hash of their index: not the device's seeded generator,
    /// which tests running beside these draw from too.
    fn values(dims: [usize; 4], salt: u64, device: &Device) -> Tensor<4> {
        let len = dims.iter().product::<usize>() as u64;
        let values: Vec<f32> = (0..len)
            .map(|i| ((i + salt).wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        Tensor::<4>::from_data(TensorData::new(values, dims), device)
    }

    fn input(dims: [usize; 4], device: &Device) -> Tensor<4> {
        // Ties: a ReLU'd input has many equal zeros, and all-negative windows at the border
        // must still not pick the padding.
        burn::tensor::activation::relu(values(dims, 0, device)) - 0.2
    }

    const CASES: [([usize; 4], usize, usize, usize); 5] = [
        ([2, 3, 9, 8], 3, 2, 1),
        ([1, 2, 7, 7], 3, 1, 1),
        ([2, 2, 6, 5], 2, 2, 1),
        ([1, 3, 8, 8], 3, 2, 0),
        ([1, 1, 3, 3], 3, 2, 1),
    ];

    #[test]
    fn values_equal_burns_exactly() {
        let device = Device::flex();
        for (dims, kernel, stride, padding) in CASES {
            let x = input(dims, &device);
            let ours = max_pool_window(&x, kernel, stride, padding).expect("applies");
            let theirs = burns(kernel, stride, padding).forward(x);
            assert_eq!(
                ours.into_data(),
                theirs.into_data(),
                "{dims:?} {kernel} {stride} {padding}"
            );
        }
    }

    #[test]
    fn gradients_equal_burns_exactly() {
        let device = Device::flex().autodiff();
        for (dims, kernel, stride, padding) in CASES {
            let pool = burns(kernel, stride, padding);
            let grad_of = |ours: bool| {
                let x = input(dims, &device).require_grad();
                let y = if ours {
                    max_pool_window(&x, kernel, stride, padding).expect("applies")
                } else {
                    pool.forward(x.clone())
                };
                let weights = values(y.dims(), 7, &device);
                let grads = (y * weights).sum().backward();
                x.grad(&grads).unwrap().into_data()
            };
            assert_eq!(
                grad_of(true),
                grad_of(false),
                "{dims:?} {kernel} {stride} {padding}"
            );
        }
    }

    /// Windows of nothing but minus infinity (the position kept is the first inside the
    /// input) and NaNs (a later NaN wins): values and gradients as burn's.
    #[test]
    fn infinities_and_nans_pool_as_burns() {
        let device = Device::flex().autodiff();
        let dims = [1, 2, 7, 6];
        let x = |device: &Device| {
            let mut v = values(dims, 3, device)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            v[..42].fill(f32::NEG_INFINITY);
            for i in [50, 51, 58, 64, 70] {
                v[i] = f32::NAN;
            }
            Tensor::<4>::from_data(TensorData::new(v, dims), device)
        };
        for (kernel, stride, padding) in [(3, 2, 1), (3, 1, 1), (2, 2, 0)] {
            let run = |ours: bool| {
                let x = x(&device).require_grad();
                let y = if ours {
                    max_pool_window(&x, kernel, stride, padding).expect("applies")
                } else {
                    burns(kernel, stride, padding).forward(x.clone())
                };
                let weights = values(y.dims(), 7, &device);
                let grads = (y.clone() * weights).sum().backward();
                (y.into_data(), x.grad(&grads).unwrap().into_data())
            };
            let (ours, theirs) = (run(true), run(false));
            let bits = |d: &TensorData| -> Vec<u32> {
                d.try_to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(
                bits(&ours.0),
                bits(&theirs.0),
                "values, {kernel} {stride} {padding}"
            );
            assert_eq!(
                bits(&ours.1),
                bits(&theirs.1),
                "grads, {kernel} {stride} {padding}"
            );
        }
    }

    #[test]
    fn windows_it_does_not_cover_are_handed_back() {
        let x = Tensor::<4>::ones([1, 1, 5, 5], &Device::flex());
        assert!(
            max_pool_window(&x, 3, 2, 2).is_none(),
            "padding past half the window"
        );
        assert!(
            max_pool_window(&x, 17, 1, 8).is_none(),
            "positions past a byte"
        );
        assert!(max_pool_window(&x, 3, 0, 1).is_none());
    }
}
