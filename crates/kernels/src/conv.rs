//! 2-D convolution (no bias, no groups, no dilation) as im2col and matrix products, with its
//! backward.
//!
//! flex convolves the small-channel layers of our CNNs (LeNet-5's 1->6 and 6->16, 5x5) through
//! a direct loop: 30% of a LeNet-5 training step's CPU time, four times oneDNN's (issue 13).
//! Here the input is unfolded once into columns, laid out `[c_in * kh * kw][batch][out_h *
//! out_w]`, and every product runs in the `gemm` crate (the kernels flex's own matmul uses):
//! - forward: per sample, `out_b = W · cols_b` (`[c_out, K] x [K, P]`); at inference each
//!   sample is unfolded on its own into a buffer its thread keeps (`forward_by_sample`), so
//!   the columns stay in cache and no call maps fresh pages; in training the whole batch is
//!   unfolded once, because the weight's gradient reads it all again;
//! - weight gradient: one product over the whole batch, `dW = dY · colsᵀ` with the output's
//!   gradient first regrouped channel-major (`[c_out, batch * P]`);
//! - input gradient (only when the input needs one): per sample `dcols_b = Wᵀ · dY_b`, folded
//!   back onto the input (col2im).
//!
//! Results are deterministic: each output element is summed by one product in a fixed order,
//! whatever the thread count (samples run in parallel, each product on one thread).

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

use crate::channel_stats::ChannelStats;
use crate::conv_geometry::Geometry;
use crate::flex::{contiguous_f32, flex_f32};
use crate::gemm::{matmul, Matrix, MatrixMut};
use crate::pixels::grown;
use crate::recycle::Recycled;
use crate::{conv_phased, conv_train};

/// `conv2d(x, weight, None, stride, padding)` (dilation 1, one group) through im2col and
/// `gemm`, when it applies (flex with or without autodiff, f32, a non-empty output);
/// otherwise `None`, for the caller to use burn's.
///
/// # Shapes
/// - x: `[batch, c_in, h, w]`
/// - weight: `[c_out, c_in, kh, kw]`
/// - output: `[batch, c_out, (h + 2 * padding[0] - kh) / stride[0] + 1, (w + 2 * padding[1] -
///   kw) / stride[1] + 1]`
pub fn conv2d(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<Tensor<4>> {
    convolved(x, weight, stride, padding, false).map(|(output, _)| output)
}

/// [`conv2d`], with its output's per-channel statistics where the kernel that ran gathered
/// them on the way (the pixel-major training convolution does), for
/// [`crate::batch_norm_train`] to use instead of reading the output twice more.
///
/// # Shapes
/// - as [`conv2d`]; the statistics: `c_out` channels
pub fn conv2d_with_stats(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<(Tensor<4>, Option<ChannelStats>)> {
    convolved(x, weight, stride, padding, true)
}

/// [`conv2d`], with the statistics where `stats` asks for them and the kernel gathers them.
fn convolved(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
    stats: bool,
) -> Option<(Tensor<4>, Option<ChannelStats>)> {
    let geometry = Geometry::new(x.dims(), weight.dims(), stride, padding);
    let applies = geometry.is_some()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.device() == weight.device();
    let geometry = geometry.filter(|_| applies)?;
    if x.device().is_autodiff() {
        if conv_phased::applies(&geometry) {
            return conv_phased::conv2d(x, weight, padding).map(|output| (output, None));
        }
        let x_p = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        let w_p = weight.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        let (output, stats) = match conv_train::applies(&geometry) {
            true => conv_train::tracked(&x_p, &w_p, geometry, stats)
                .unwrap_or_else(|| (tracked(x_p, w_p, geometry), None)),
            false => (tracked(x_p, w_p, geometry), None),
        };
        Some((Tensor::from_primitive::<Autodiff<Flex>>(output), stats))
    } else {
        let x_p = x.clone().try_into_primitive::<Flex>().ok()?;
        let w_p = weight.clone().try_into_primitive::<Flex>().ok()?;
        let (x, weight) = (contiguous_f32(&x_p), contiguous_f32(&w_p));
        // Pointwise layers read their input as it lies; the others unfold it, where the
        // pixel-major kernels read windows in place but pack the weights first (each call,
        // which pays back only over enough output pixels).
        let packs = geometry.batch * geometry.p() >= conv_train::INFERENCE_MIN_PIXELS;
        if packs && conv_train::applies(&geometry) && !geometry.is_pointwise() {
            if let Some(output) = conv_train::forward(&x, &weight, &geometry) {
                let shape = [
                    geometry.batch,
                    geometry.c_out,
                    geometry.out_h,
                    geometry.out_w,
                ];
                return Some((
                    Tensor::from_primitive::<Flex>(flex_f32(output, shape)),
                    None,
                ));
            }
        }
        let output = match geometry.is_pointwise() {
            // Each sample's input already is its unfolded matrix: no copy.
            true => forward(
                &x,
                (geometry.k() * geometry.p(), geometry.p()),
                &weight,
                &geometry,
            ),
            false => forward_by_sample(&x, &weight, &geometry),
        };
        Some((Tensor::from_primitive::<Flex>(output), None))
    }
}

/// For kernel offset `offset` along an axis of `size` input values: the first and
/// one-past-last output index whose input index `o * stride + offset - padding` lies inside
/// the input. Shared with the depthwise kernel.
pub(crate) fn valid_outputs(
    offset: usize,
    size: usize,
    out: usize,
    stride: usize,
    pad: usize,
) -> (usize, usize) {
    let first = pad.saturating_sub(offset).div_ceil(stride);
    // o * stride + offset < size + pad
    let end = if size + pad > offset {
        ((size + pad - offset - 1) / stride + 1).min(out)
    } else {
        0
    };
    (first.min(end), end)
}

/// The input unfolded: row `(ci, ky, kx)`, column `(b, oy, ox)` holds
/// `x[b, ci, oy * sh + ky - ph, ox * sw + kx - pw]` (zero in the padding).
fn im2col(x: &[f32], g: &Geometry) -> Recycled {
    let (n, p) = (g.n(), g.p());
    let [kh, kw] = g.kernel;
    // Every value is written below (`unfold_row` writes its padding's zeros too).
    let mut cols = Recycled::take(g.k() * n);
    cols.par_chunks_mut(n).enumerate().for_each(|(row, out)| {
        let (ci, ky, kx) = (row / (kh * kw), (row / kw) % kh, row % kw);
        for b in 0..g.batch {
            let plane = &x[(b * g.c_in + ci) * g.height * g.width..][..g.height * g.width];
            unfold_row(plane, g, [ky, kx], &mut out[b * p..][..p]);
        }
    });
    cols
}

/// One sample's input unfolded into `cols` (`[K][P]`, every value written), a buffer reused
/// from call to call.
fn unfold_sample(x: &[f32], g: &Geometry, cols: &mut [f32]) {
    let [kh, kw] = g.kernel;
    for (row, out) in cols.chunks_exact_mut(g.p()).enumerate() {
        let (ci, ky, kx) = (row / (kh * kw), (row / kw) % kh, row % kw);
        let plane = &x[ci * g.height * g.width..][..g.height * g.width];
        unfold_row(plane, g, [ky, kx], out);
    }
}

/// Row `(ky, kx)` of one input channel's unfolding: `out[oy * out_w + ox]` is
/// `plane[oy * sh + ky - ph][ox * sw + kx - pw]`, zero in the padding (every value written).
fn unfold_row(plane: &[f32], g: &Geometry, [ky, kx]: [usize; 2], out: &mut [f32]) {
    let (oy0, oy1) = valid_outputs(ky, g.height, g.out_h, g.stride[0], g.padding[0]);
    let (ox0, ox1) = valid_outputs(kx, g.width, g.out_w, g.stride[1], g.padding[1]);
    out[..oy0 * g.out_w].fill(0.0);
    out[oy1 * g.out_w..].fill(0.0);
    for oy in oy0..oy1 {
        let iy = oy * g.stride[0] + ky - g.padding[0];
        let row_in = &plane[iy * g.width..][..g.width];
        let row_out = &mut out[oy * g.out_w..][..g.out_w];
        row_out[..ox0].fill(0.0);
        row_out[ox1..].fill(0.0);
        let ix0 = ox0 * g.stride[1] + kx - g.padding[1];
        let outs = &mut row_out[ox0..ox1];
        match g.stride[1] {
            1 => outs.copy_from_slice(&row_in[ix0..ix0 + outs.len()]),
            // Every other value: pairs (the last may be a single value past the row's end)
            // compile to shuffles, where an index times the stride was a load per value
            // (ResNet's stride-2 layers).
            2 => {
                // Eight outputs from the fifteen values they are read from at a time, as
                // arrays (shuffles), where the row holds them; the rest one by one.
                let src = &row_in[ix0..];
                let whole = (outs.len() / 8).min((src.len() + 1) / 16);
                let (blocks, rest) = outs.split_at_mut(whole * 8);
                for (q, o) in blocks.chunks_exact_mut(8).enumerate() {
                    let s: &[f32; 15] = src[16 * q..][..15].try_into().expect("15 values");
                    let o: &mut [f32; 8] = o.try_into().expect("8 outputs");
                    for j in 0..8 {
                        o[j] = s[2 * j];
                    }
                }
                let left = src.get(16 * whole..).unwrap_or_default();
                for (o, pair) in rest.iter_mut().zip(left.chunks(2)) {
                    *o = pair[0];
                }
            }
            stride => {
                for (o, ox) in outs.iter_mut().zip(0..) {
                    *o = row_in[ix0 + ox * stride];
                }
            }
        }
    }
}

thread_local! {
    /// Each thread's unfolding buffer for inference (and for one sample's unfolded gradient in
    /// training), kept from call to call: a fresh one per call is a fresh mapping whose first
    /// writes fault in every page, and one for a whole batch outgrows the caches (VGG's first
    /// 32-channel layer at batch 32: 29 MB).
    static UNFOLDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Inference through im2col: each sample unfolded into its thread's buffer, which stays in
/// cache for its product, instead of the whole batch unfolded first.
fn forward_by_sample(x: &[f32], weight: &[f32], g: &Geometry) -> FlexTensor {
    let (k, p) = (g.k(), g.p());
    let sample = g.c_in * g.height * g.width;
    let mut output = vec![0.0f32; g.batch * g.c_out * p];
    output
        .par_chunks_mut(g.c_out * p)
        .enumerate()
        .for_each(|(b, out)| {
            // `matmul` runs on this thread alone, so nothing else borrows the buffer meanwhile.
            UNFOLDED.with_borrow_mut(|cols| {
                cols.resize(k * p, 0.0);
                unfold_sample(&x[b * sample..][..sample], g, cols);
                matmul(
                    MatrixMut::row_major(out, g.c_out, p),
                    Matrix::row_major(weight, g.c_out, k),
                    Matrix::row_major(cols, k, p),
                )
            })
        });
    flex_f32(output, [g.batch, g.c_out, g.out_h, g.out_w])
}

/// Adds each column of `dcols` (one sample's, `[K][P]`) back onto the input position it was
/// read from: the adjoint of `im2col`, for one sample.
fn col2im(dcols: &[f32], g: &Geometry, dx: &mut [f32]) {
    let p = g.p();
    let [kh, kw] = g.kernel;
    for (ci, plane) in dx.chunks_mut(g.height * g.width).enumerate() {
        for ky in 0..kh {
            let (oy0, oy1) = valid_outputs(ky, g.height, g.out_h, g.stride[0], g.padding[0]);
            for kx in 0..kw {
                let (ox0, ox1) = valid_outputs(kx, g.width, g.out_w, g.stride[1], g.padding[1]);
                let row = &dcols[((ci * kh + ky) * kw + kx) * p..][..p];
                for oy in oy0..oy1 {
                    let iy = oy * g.stride[0] + ky - g.padding[0];
                    let ix0 = ox0 * g.stride[1] + kx - g.padding[1];
                    let src = &row[oy * g.out_w..][ox0..ox1];
                    let dst = &mut plane[iy * g.width..][..g.width];
                    if g.stride[1] == 1 {
                        for (d, &s) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (i, &s) in src.iter().enumerate() {
                            dst[ix0 + i * g.stride[1]] += s;
                        }
                    }
                }
            }
        }
    }
}

/// Samples per product where a convolution's samples are gathered into one (see
/// [`forward`]): two tasks at batch 32.
const SAMPLES_PER_PRODUCT: usize = 16;

/// Output pixels per sample below which [`forward`] gathers samples into one product. On
/// MobileNetV2 at 32x32, batch 32, one thread (`SPEED_ONLY=mobilenet SPEED_PARTS=infer cargo
/// test -p runner --bench speed`, 2026-12-06): 1x1 and 2x2 gathered, 3,340 -> 3,600
/// images/s against one product per pixel; 4x4 gathered too, even; 8x8 too, 3,440.
const GATHERED_MAX_PIXELS: usize = 16;

/// The convolution from each sample's unfolded input: `out_b = W · cols_b`, where `cols_b`
/// (`[K, P]`) starts at `b * sample_offset` in `unfolded` with its rows `row_stride` apart:
/// `(P, N)` in im2col's layout, `(K * P, P)` for a pointwise convolution's input as it lies.
fn forward(
    unfolded: &[f32],
    (sample_offset, row_stride): (usize, usize),
    weight: &[f32],
    g: &Geometry,
) -> FlexTensor {
    let (k, p) = (g.k(), g.p());
    let mut output = vec![0.0f32; g.batch * g.c_out * p];
    if p < GATHERED_MAX_PIXELS && g.batch > 1 {
        // Few pixels per sample (MobileNetV2's pointwise layers at 2x2, its last blocks and
        // head at 1x1 on 32x32 images): a group of samples' inputs gathered side by side into one `[K, S * P]`
        // matrix, so one product streams the weights once per group instead of once per
        // sample, over a row long enough to use the whole register tile. Groups have a fixed
        // size, so sums do not depend on the threads.
        output
            .par_chunks_mut(SAMPLES_PER_PRODUCT * g.c_out * p)
            .enumerate()
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(gathered, product), (group, out)| {
                    let first = group * SAMPLES_PER_PRODUCT;
                    let samples = out.len() / (g.c_out * p);
                    let n = samples * p;
                    gathered.resize(k * n, 0.0);
                    for (row, dst) in gathered.chunks_exact_mut(n).enumerate() {
                        for (s, dst) in dst.chunks_exact_mut(p).enumerate() {
                            let from = (first + s) * sample_offset + row * row_stride;
                            dst.copy_from_slice(&unfolded[from..][..p]);
                        }
                    }
                    product.resize(g.c_out * n, 0.0);
                    matmul(
                        MatrixMut::row_major(product, g.c_out, n),
                        Matrix::row_major(weight, g.c_out, k),
                        Matrix::row_major(gathered, k, n),
                    );
                    for (c, row) in product.chunks_exact(n).enumerate() {
                        for (s, src) in row.chunks_exact(p).enumerate() {
                            out[(s * g.c_out + c) * p..][..p].copy_from_slice(src);
                        }
                    }
                },
            );
        return flex_f32(output, [g.batch, g.c_out, g.out_h, g.out_w]);
    }
    output
        .par_chunks_mut(g.c_out * p)
        .enumerate()
        .for_each(|(b, out)| {
            matmul(
                MatrixMut::row_major(out, g.c_out, p),
                Matrix::row_major(weight, g.c_out, k),
                Matrix::strided(&unfolded[b * sample_offset..], k, p, row_stride, 1),
            )
        });
    flex_f32(output, [g.batch, g.c_out, g.out_h, g.out_w])
}

#[derive(Debug, Clone)]
struct State {
    geometry: Geometry,
    /// The unfolded input (for the weight's gradient).
    cols: Arc<Recycled>,
    /// The weight (for the input's gradient).
    weight: Arc<Vec<f32>>,
}

#[derive(Debug)]
struct Conv2dBackward;

impl Backward<Flex, 2> for Conv2dBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let grad = contiguous_f32(&grad);
        let g = ops.state.geometry;
        let (k, n, p) = (g.k(), g.n(), g.p());
        if let Some(node) = w_node {
            let cols = &ops.state.cols;
            // dY regrouped channel-major, `[c_out][batch * P]`, so the whole batch is one
            // product (and one fixed summation order) over its columns.
            let mut grad_t = vec![0.0f32; g.c_out * n];
            grad_t.par_chunks_mut(n).enumerate().for_each(|(co, row)| {
                for (b, dst) in row.chunks_mut(p).enumerate() {
                    dst.copy_from_slice(&grad[(b * g.c_out + co) * p..][..p]);
                }
            });
            let mut weight_grad = vec![0.0f32; g.c_out * k];
            matmul(
                MatrixMut::row_major(&mut weight_grad, g.c_out, k),
                Matrix::row_major(&grad_t, g.c_out, n),
                Matrix::strided(cols, n, k, 1, n),
            );
            let shape = [g.c_out, g.c_in, g.kernel[0], g.kernel[1]];
            grads.register::<Flex>(node.id, flex_f32(weight_grad, shape));
        }
        if let Some(node) = x_node {
            let x_grad = input_grad_folded(&grad, &ops.state.weight, &g);
            let shape = [g.batch, g.c_in, g.height, g.width];
            grads.register::<Flex>(node.id, flex_f32(x_grad, shape));
        }
    }
}

/// `dX` (`[batch][c_in][h][w]`) from the output's gradient (`[batch][c_out][oh][ow]`) and
/// the weight (`[c_out][c_in][kh][kw]`): per sample `dcols = Wᵀ · dY`, folded back onto the
/// input (col2im). Also the strided pixel-major layers' (`conv_train.rs`).
pub(crate) fn input_grad_folded(grad: &[f32], weight: &[f32], g: &Geometry) -> Vec<f32> {
    let (k, p) = (g.k(), g.p());
    let plane = g.c_in * g.height * g.width;
    let mut x_grad = vec![0.0f32; g.batch * plane];
    x_grad
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(b, dx)| {
            // `matmul` overwrites every value and runs on this thread alone.
            UNFOLDED.with_borrow_mut(|dcols| {
                let dcols = grown(dcols, k * p);
                matmul(
                    MatrixMut::row_major(dcols, k, p),
                    Matrix::strided(weight, k, g.c_out, 1, k),
                    Matrix::row_major(&grad[b * g.c_out * p..][..g.c_out * p], g.c_out, p),
                );
                col2im(dcols, g, dx);
            })
        });
    x_grad
}

/// The convolution as a node of burn's autodiff graph.
fn tracked(
    x: FloatTensor<Autodiff<Flex>>,
    weight: FloatTensor<Autodiff<Flex>>,
    geometry: Geometry,
) -> FloatTensor<Autodiff<Flex>> {
    let (x, x_node) = x.into_parts();
    let (weight, w_node) = weight.into_parts();
    let cols = im2col(&contiguous_f32(&x), &geometry);
    let weight = contiguous_f32(&weight).into_owned();
    let output = forward(&cols, geometry.im2col_layout(), &weight, &geometry);
    match Conv2dBackward
        .prepare::<NoCheckpointing>([x_node, w_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                geometry,
                cols: Arc::new(cols),
                weight: Arc::new(weight),
            },
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::assert_all_close;
    use burn::tensor::module::conv2d as burns;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tolerance};

    /// Ours against burn's: values, and gradients of the input and the weight.
    fn compare(x_dims: [usize; 4], w_dims: [usize; 4], stride: [usize; 2], padding: [usize; 2]) {
        let device = Device::flex().autodiff();
        device.seed(11);
        let x = Tensor::<4>::random(x_dims, Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random(w_dims, Distribution::Normal(0.0, 0.5), &device);
        // Drawn once and shared by both runs: tests running at once draw from the same
        // generator, so two draws "with the same seed" may differ.
        let y_dims = conv2d(&x, &w, stride, padding).expect("flex f32").dims();
        let weights = Tensor::<4>::random(y_dims, Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
            let y = if ours {
                conv2d(&x, &w, stride, padding).expect("flex f32")
            } else {
                let options = ConvOptions::new(stride, padding, [1, 1], 1);
                burns(x.clone(), w.clone(), None, options)
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            [
                y.into_data(),
                x.grad(&grads).unwrap().into_data(),
                w.grad(&grads).unwrap().into_data(),
            ]
        };
        println!("{x_dims:?} {w_dims:?} stride {stride:?} padding {padding:?}");
        let names = ["output", "x grad", "weight grad"];
        assert_all_close(&names, &run(true), &run(false), 1e-4);
    }

    #[test]
    fn lenet_layers_match_burns() {
        compare([3, 1, 12, 12], [6, 1, 5, 5], [1, 1], [2, 2]);
        compare([3, 6, 7, 7], [16, 6, 5, 5], [1, 1], [0, 0]);
    }

    #[test]
    fn strides_and_padding_match_burns() {
        compare([2, 3, 9, 8], [4, 3, 3, 3], [2, 2], [1, 1]);
        // Rows of whole blocks of eight strided outputs, one ending on the row's last value.
        compare([2, 3, 32, 32], [4, 3, 3, 3], [2, 2], [1, 1]);
        compare([1, 2, 16, 34], [3, 2, 3, 3], [2, 2], [0, 0]);
        compare([2, 2, 7, 9], [3, 2, 1, 1], [2, 1], [0, 0]);
        compare([1, 2, 3, 3], [2, 2, 3, 3], [1, 1], [2, 2]);
        // Through the input's phases (`conv_phased.rs`): a 7x7 stem and a 5x5 kernel at
        // stride 2 over 3 channels; an odd padded size stays on im2col.
        compare([2, 3, 12, 10], [5, 3, 7, 7], [2, 2], [3, 3]);
        compare([2, 3, 10, 10], [4, 3, 5, 5], [2, 2], [2, 2]);
        compare([2, 3, 9, 9], [4, 3, 5, 5], [2, 2], [2, 2]);
    }

    /// The pixel-major kernels of `conv_train.rs` (at least `MIN_CHANNELS` inputs, stride 1):
    /// the direct kernel, Winograd (32 x 64 channel pairs and more), odd sizes, 5x5 and 1x1.
    #[test]
    fn real_widths_match_burns() {
        compare([3, 8, 9, 7], [12, 8, 3, 3], [1, 1], [1, 1]);
        compare([2, 32, 10, 10], [64, 32, 3, 3], [1, 1], [1, 1]);
        compare([2, 64, 7, 9], [40, 64, 3, 3], [1, 1], [1, 1]);
        compare([2, 16, 11, 8], [17, 16, 3, 3], [1, 1], [0, 0]);
        compare([2, 8, 9, 9], [20, 8, 5, 5], [1, 1], [2, 2]);
        compare([2, 8, 6, 6], [24, 8, 1, 1], [1, 1], [0, 0]);
        // Rows of more than a tile (12 pixels) of one- and two-register panels: the 3x3
        // stride-1 kernel that loads each input value once (`direct.rs`, `Kernel3x3`).
        compare([2, 16, 14, 16], [16, 16, 3, 3], [1, 1], [1, 1]);
        compare([2, 8, 5, 27], [24, 8, 3, 3], [1, 1], [1, 1]);
        // As many output channels as input ones at the input's size (ResNet's stride-1
        // layers): the input's gradient is written over the output's.
        compare([2, 16, 8, 8], [16, 16, 3, 3], [1, 1], [1, 1]);
        compare([3, 8, 5, 7], [8, 8, 3, 3], [1, 1], [1, 1]);
        // Small images in groups of samples (2 threads: groups of 3 and 2), Winograd's
        // products over all of a group's blocks; the weight gradient from each kernel row's
        // windows copied out (`WindowRows`), here and at 64 -> 40 above.
        compare([5, 48, 7, 7], [48, 48, 3, 3], [1, 1], [1, 1]);
        compare([5, 32, 6, 6], [80, 32, 3, 3], [1, 1], [1, 1]);
        // The weight gradient's own kernel (`conv_weight_grad.rs`) over groups of samples
        // (here 4, then 1) and output channels past its tiles of 8 (20 = 8 + 8 + 4 alone).
        compare([5, 16, 8, 8], [20, 16, 3, 3], [1, 1], [1, 1]);
        // Its narrower tiles, at 1x1 (MobileNetV2's pointwise layers): rows of 1, 2, 4 and 5
        // registers, leftover channels at 4, and at 1 register channels that make no whole
        // tile (through `gemm`).
        compare([2, 16, 5, 6], [48, 16, 1, 1], [1, 1], [0, 0]);
        compare([2, 32, 4, 4], [24, 32, 1, 1], [1, 1], [0, 0]);
        compare([2, 64, 3, 5], [13, 64, 1, 1], [1, 1], [0, 0]);
        compare([2, 80, 3, 3], [8, 80, 1, 1], [1, 1], [0, 0]);
        compare([2, 16, 4, 4], [20, 16, 1, 1], [1, 1], [0, 0]);
        // One output pixel, one output channel, a 7x7 kernel past a 5x5 image.
        compare([3, 8, 3, 3], [5, 8, 3, 3], [1, 1], [0, 0]);
        compare([2, 9, 5, 6], [1, 9, 3, 3], [1, 1], [1, 1]);
        compare([1, 8, 5, 5], [4, 8, 7, 7], [1, 1], [3, 3]);
        // ResNet's 3x3 downsampling at an odd size (pixel-major, the input gradient through
        // im2col's adjoint); 1x1 downsampling, stride 3 and 8 channels at stride 2 stay on
        // im2col.
        compare([2, 16, 9, 8], [32, 16, 3, 3], [2, 2], [1, 1]);
        compare([3, 32, 8, 8], [20, 32, 3, 3], [2, 2], [1, 1]);
        compare([2, 8, 9, 8], [16, 8, 3, 3], [2, 2], [1, 1]);
        compare([2, 16, 8, 8], [32, 16, 1, 1], [2, 2], [0, 0]);
        compare([1, 8, 11, 10], [12, 8, 3, 3], [3, 3], [1, 1]);
    }

    /// The buffers kept for the backward are taken unzeroed from a pool (`recycle.rs`): with
    /// the pool holding NaN, every value they are read at must have been written (the
    /// pixel-major padded batch with its tail, im2col's unfolding with its padding). On a
    /// one-thread pool too, where outputs are appended chunk by chunk (`written_in_chunks`).
    #[test]
    fn recycled_buffers_are_written_before_they_are_read() {
        let cases = || {
            crate::recycle::poison_pool();
            compare([3, 16, 8, 8], [16, 16, 3, 3], [1, 1], [1, 1]);
            crate::recycle::poison_pool();
            compare([5, 48, 7, 7], [48, 48, 3, 3], [1, 1], [1, 1]);
            crate::recycle::poison_pool();
            compare([2, 16, 9, 8], [32, 16, 3, 3], [2, 2], [1, 1]);
        };
        cases();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a pool");
        one.install(cases);
    }

    /// Each backward against central differences of `sum(y * r)`: the convolution is linear
    /// in each input, so a difference over a step of 0.5 is exact up to rounding. Both paths
    /// (im2col below `MIN_CHANNELS` input channels, the pixel-major kernels above).
    #[test]
    fn gradients_match_finite_differences() {
        for (x_dims, w_dims, stride, padding) in [
            ([2, 3, 6, 5], [4, 3, 3, 3], [2, 2], [1, 1]),
            ([2, 8, 6, 5], [6, 8, 3, 3], [1, 1], [1, 1]),
            ([1, 32, 6, 6], [64, 32, 3, 3], [1, 1], [1, 1]),
            ([2, 8, 5, 6], [8, 8, 3, 3], [1, 1], [1, 1]),
            ([2, 16, 7, 6], [8, 16, 3, 3], [2, 2], [1, 1]),
        ] {
            finite_differences(x_dims, w_dims, stride, padding);
        }
    }

    fn finite_differences(
        x_dims: [usize; 4],
        w_dims: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) {
        let device = Device::flex().autodiff();
        device.seed(5);
        let x = Tensor::<4>::random(x_dims, Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random(w_dims, Distribution::Normal(0.0, 0.5), &device);
        let y_dims = conv2d(&x, &w, stride, padding).expect("flex f32").dims();
        let r = Tensor::<4>::random(y_dims, Distribution::Normal(0.0, 1.0), &device);
        let loss = |x: &Tensor<4>, w: &Tensor<4>| {
            let y = conv2d(x, w, stride, padding).expect("flex f32");
            (y * r.clone()).sum().into_scalar::<f32>() as f64
        };
        let (xg, wg) = (x.clone().require_grad(), w.clone().require_grad());
        let y = conv2d(&xg, &wg, stride, padding).expect("flex f32");
        let grads = (y * r.clone()).sum().backward();
        let analytic = [
            xg.grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
            wg.grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        ];
        let h = 0.5f32;
        for (which, (tensor, grad)) in [&x, &w].into_iter().zip(&analytic).enumerate() {
            let values = tensor.to_data().try_to_vec::<f32>().unwrap();
            let dims = tensor.dims();
            // Every 7th element: corners, borders and the interior.
            for i in (0..values.len()).step_by(7) {
                let moved = |delta: f32| {
                    let mut v = values.clone();
                    v[i] += delta;
                    Tensor::<4>::from_data(TensorData::new(v, dims), &device)
                };
                let (plus, minus) = match which {
                    0 => (loss(&moved(h), &w), loss(&moved(-h), &w)),
                    _ => (loss(&x, &moved(h)), loss(&x, &moved(-h))),
                };
                let numeric = (plus - minus) / (2.0 * h as f64);
                let tolerance = 1e-3 * (1.0 + numeric.abs());
                assert!(
                    (numeric - grad[i] as f64).abs() < tolerance,
                    "{x_dims:?} {w_dims:?}: d/d{}[{i}] is {} by differences, {} by backward",
                    ["x", "w"][which],
                    numeric,
                    grad[i]
                );
            }
        }
    }

    /// Inference (no autodiff): a 3x3 convolution through im2col and a 1x1 one read in place.
    #[test]
    fn inference_matches_burns() {
        let device = Device::flex();
        device.seed(4);
        // im2col (3 channels), the input as it lies (pointwise), the pixel-major kernels
        // (8 and 64 channels, the direct kernel and Winograd).
        for (x_dims, w_dims, padding) in [
            ([2, 3, 8, 8], [5, 3, 3, 3], [1, 1]),
            ([2, 3, 8, 8], [7, 3, 1, 1], [0, 0]),
            ([3, 8, 9, 7], [12, 8, 3, 3], [1, 1]),
            ([2, 64, 8, 8], [64, 64, 3, 3], [1, 1]),
            ([2, 16, 6, 6], [20, 16, 5, 5], [0, 0]),
            // One or a few output pixels per sample and many samples (one group; two, the
            // second short): samples gathered into one product per group, read in place
            // (pointwise) and unfolded.
            ([5, 24, 1, 1], [40, 24, 1, 1], [0, 0]),
            ([20, 24, 2, 2], [40, 24, 1, 1], [0, 0]),
            ([40, 3, 4, 4], [6, 3, 3, 3], [0, 0]),
            ([40, 3, 4, 4], [6, 3, 3, 3], [1, 1]),
            ([3, 4, 3, 3], [6, 4, 3, 3], [0, 0]),
        ] {
            let x = Tensor::<4>::random(x_dims, Distribution::Normal(0.0, 1.0), &device);
            let w = Tensor::<4>::random(w_dims, Distribution::Normal(0.0, 1.0), &device);
            let ours = conv2d(&x, &w, [1, 1], padding).expect("flex f32");
            let theirs = burns(x, w, None, ConvOptions::new([1, 1], padding, [1, 1], 1));
            // The 64-channel layer sums 576 products of unit normals (outputs up to about
            // ±80) and Winograd's transforms round a few times more: over seeds 0-999 its
            // largest difference from burn's was 1.45e-4 (the seed is the device's, which
            // tests running beside this one draw from too).
            ours.into_data()
                .assert_approx_eq::<f32>(&theirs.into_data(), Tolerance::absolute(4e-4));
        }
    }

    /// Inference unfolds each sample into a buffer its thread keeps: a padded convolution
    /// after one that filled the buffer with values must still read zeros in its padding.
    #[test]
    fn a_reused_unfolding_buffer_leaves_nothing_behind() {
        let device = Device::flex();
        device.seed(8);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let x = Tensor::<4>::random([3, 4, 9, 9], Distribution::Normal(1.0, 1.0), &device);
        // Unpadded first (every buffer value written from the input), then padded ones that
        // need zeros where the first left values, then the first again.
        let cases = [
            ([6, 4, 3, 3], [1, 1], [0, 0]),
            ([6, 4, 3, 3], [2, 2], [1, 1]),
            ([5, 4, 5, 5], [1, 1], [2, 2]),
            ([6, 4, 3, 3], [1, 1], [0, 0]),
        ];
        for (w_dims, stride, padding) in cases {
            let w = Tensor::<4>::random(w_dims, Distribution::Normal(0.0, 1.0), &device);
            let ours = pool.install(|| conv2d(&x, &w, stride, padding).expect("flex f32"));
            let theirs = burns(
                x.clone(),
                w,
                None,
                ConvOptions::new(stride, padding, [1, 1], 1),
            );
            ours.into_data()
                .assert_approx_eq::<f32>(&theirs.into_data(), Tolerance::absolute(1e-4));
        }
    }

    #[test]
    fn a_kernel_larger_than_the_padded_input_is_handed_back() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([1, 1, 2, 2], &device);
        let w = Tensor::<4>::ones([1, 1, 5, 5], &device);
        assert!(conv2d(&x, &w, [1, 1], [1, 1]).is_none());
    }
}
