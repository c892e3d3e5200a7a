//! Depthwise 2-D convolution (one filter per channel: `groups = channels`, no bias, no
//! dilation) as direct loops over each channel's plane, with its backward.
//!
//! A depthwise convolution has no reduction over channels, so im2col and a matrix product buy
//! nothing: each output plane is the sum of `kh * kw` shifted copies of one input plane, each
//! scaled by one weight. flex computes it through its general grouped convolution, which
//! treats every channel as a one-channel convolution of its own; MobileNetV2's depthwise layers
//! were then its slowest per MAC. Here:
//! - forward: per (sample, channel) plane, the input copied into a zero-bordered buffer, then
//!   for each output row `kh * kw` scaled adds of whole input rows (contiguous when the stride
//!   is 1, so they vectorise), with no bounds to work out;
//! - input gradient: per plane, the output gradient laid over the padded width (the "flat"
//!   layout of `spread_size`: no per-row work, where MobileNetV2's late rows are 1-4 values),
//!   per kernel offset scaled and added into a zero-bordered plane where it was read from
//!   (each plane owned by one task), whose inside is the gradient;
//! - weight gradient: per channel, the dot products of the laid-out output gradient with the
//!   shifted padded input, over the whole batch, in 16 running sums.
//!
//! Long rows at stride 2 (where the flat layout would compute every other window of each
//! padded row for nothing) and strides that differ by axis run the backward per row, bounded
//! to the input (`input_grad_plane`, `weight_grad_plane`).
//!
//! Layers whose output rows are a few pixels (MobileNetV2's late blocks) run pixel-major
//! instead ([`pixel_major`]), where one pixel's taps vectorise across channels.
//!
//! Results are deterministic: every sum runs in a fixed order on one thread, whatever the
//! thread count (planes and channels run in parallel, never one sum across threads).

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

use crate::conv::valid_outputs;
use crate::flex::{contiguous_f32, flex_f32};

mod pixel_major;

/// Which kernels run a depthwise convolution: those that suit its shape (`Auto`, what
/// [`depthwise_conv2d`] runs), or one kind forced, to compare them (`benches/depthwise.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepthwiseLayout {
    Auto,
    /// One (sample, channel) plane at a time.
    Planes,
    /// One sample's pixels at a time, channels innermost.
    Pixels,
}

impl DepthwiseLayout {
    /// The kernels that run a depthwise convolution of these shapes (`Planes` or `Pixels`;
    /// `Auto` picks by the shape), or `None` where it is not one the kernels compute.
    ///
    /// # Shapes
    /// - x: `[batch, channels, h, w]`
    /// - weight: `[channels, 1, kh, kw]`
    pub fn resolve(
        self,
        x: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let g = Plane::new(x, weight, stride, padding)?;
        Some(match self.runs_pixels(&g) {
            true => Self::Pixels,
            false => Self::Planes,
        })
    }

    /// Whether the pixel-major kernels run `g`.
    fn runs_pixels(self, g: &Plane) -> bool {
        match self {
            Self::Auto => pixel_major::applies(g),
            Self::Planes => false,
            Self::Pixels => true,
        }
    }
}

/// `conv2d(x, weight, None, stride, padding)` with `groups = channels` (dilation 1), by
/// direct loops, when it applies (flex with or without autodiff, f32, one filter per channel,
/// a non-empty output); otherwise `None`, for the caller to use burn's.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`
/// - weight: `[channels, 1, kh, kw]`
/// - output: `[batch, channels, (h + 2 * padding[0] - kh) / stride[0] + 1, (w + 2 *
///   padding[1] - kw) / stride[1] + 1]`
pub fn depthwise_conv2d(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
) -> Option<Tensor<4>> {
    depthwise_conv2d_in(x, weight, stride, padding, DepthwiseLayout::Auto)
}

/// [`depthwise_conv2d`] by the kernels `layout` names.
///
/// # Shapes
/// As [`depthwise_conv2d`].
pub fn depthwise_conv2d_in(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    stride: [usize; 2],
    padding: [usize; 2],
    layout: DepthwiseLayout,
) -> Option<Tensor<4>> {
    let geometry = Plane::new(x.dims(), weight.dims(), stride, padding).map(|g| Plane {
        pixel_major: layout.runs_pixels(&g),
        ..g
    });
    let applies = geometry.is_some()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.device() == weight.device();
    let geometry = geometry.filter(|_| applies)?;
    if x.device().is_autodiff() {
        let x_p = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        let w_p = weight.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        Some(Tensor::from_primitive::<Autodiff<Flex>>(tracked(
            x_p, w_p, geometry,
        )))
    } else {
        let x_p = x.clone().try_into_primitive::<Flex>().ok()?;
        let w_p = weight.clone().try_into_primitive::<Flex>().ok()?;
        let (output, _) = forward(
            &contiguous_f32(&x_p),
            &contiguous_f32(&w_p),
            &geometry,
            false,
        );
        Some(Tensor::from_primitive::<Flex>(output))
    }
}

/// Sizes of one depthwise convolution.
#[derive(Debug, Clone, Copy)]
struct Plane {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    out_h: usize,
    out_w: usize,
    /// Whether [`pixel_major`]'s kernels run it.
    pixel_major: bool,
}

/// One kernel offset's overlap with the input: the output rows and columns whose input lies
/// inside it, and the input index of the first of each.
#[derive(Debug, Clone, Copy)]
struct Overlap {
    rows: (usize, usize),
    cols: (usize, usize),
    first_iy: usize,
    first_ix: usize,
}

impl Plane {
    fn new(
        [batch, channels, height, width]: [usize; 4],
        [w_channels, per_group, kh, kw]: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let padded = [height + 2 * padding[0], width + 2 * padding[1]];
        let valid = w_channels == channels
            && per_group == 1
            && [batch, channels, height, width, kh, kw]
                .iter()
                .all(|&d| d > 0)
            && stride.iter().all(|&s| s > 0)
            && padded[0] >= kh
            && padded[1] >= kw;
        valid.then(|| Plane {
            batch,
            channels,
            height,
            width,
            kernel: [kh, kw],
            stride,
            padding,
            out_h: (padded[0] - kh) / stride[0] + 1,
            out_w: (padded[1] - kw) / stride[1] + 1,
            pixel_major: false,
        })
    }

    fn in_plane(&self) -> usize {
        self.height * self.width
    }

    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Where kernel offset `(ky, kx)` reads inside the input.
    fn overlap(&self, ky: usize, kx: usize) -> Overlap {
        let rows = valid_outputs(ky, self.height, self.out_h, self.stride[0], self.padding[0]);
        let cols = valid_outputs(kx, self.width, self.out_w, self.stride[1], self.padding[1]);
        Overlap {
            rows,
            cols,
            // Only read when the range is non-empty, where these cannot underflow.
            first_iy: (rows.0 * self.stride[0] + ky).saturating_sub(self.padding[0]),
            first_ix: (cols.0 * self.stride[1] + kx).saturating_sub(self.padding[1]),
        }
    }

    /// Calls `visit(output row, input row, output columns, first input column)` for every
    /// output row that kernel offset `(ky, kx)` reads from inside the input.
    fn for_each_row(
        &self,
        ky: usize,
        kx: usize,
        mut visit: impl FnMut(usize, usize, (usize, usize), usize),
    ) {
        let o = self.overlap(ky, kx);
        if o.cols.0 >= o.cols.1 {
            return;
        }
        for (oy, iy) in (o.rows.0..o.rows.1).zip((o.first_iy..).step_by(self.stride[0])) {
            visit(oy, iy, o.cols, o.first_ix);
        }
    }
}

/// One output plane: `out[oy, ox] = Σ_(ky, kx) w[ky, kx] · x[oy·s + ky − p, ox·s + kx − p]`,
/// from the input plane copied into `padded` with its zero border, so every output row is
/// `kh * kw` scaled adds of whole rows with no bounds to work out (at stride 1, contiguous
/// slices that vectorise). Per output element the terms are added in `(ky, kx)` order.
fn forward_plane(x: &[f32], w: &[f32], g: &Plane, padded: &mut Vec<f32>, out: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let [sy, sx] = g.stride;
    let pw = g.width + 2 * g.padding[1];
    pad_into(x, g, padded);
    // Written before it is read: a fresh output's first touch is then a write, which the
    // kernel serves with a zeroed page, instead of a read (mapping the shared zero page) and
    // a write fault that flushes every core's TLB (a fifth of a MobileNetV2's forward pass).
    out.fill(0.0);
    for (oy, row_out) in out.chunks_exact_mut(g.out_w).enumerate() {
        for ky in 0..kh {
            let row_in = &padded[(oy * sy + ky) * pw..][..pw];
            for (kx, &weight) in w[ky * kw..][..kw].iter().enumerate() {
                if sx == 1 {
                    for (o, &i) in row_out.iter_mut().zip(&row_in[kx..kx + g.out_w]) {
                        *o += weight * i;
                    }
                } else {
                    for (o, &i) in row_out.iter_mut().zip(row_in[kx..].iter().step_by(sx)) {
                        *o += weight * i;
                    }
                }
            }
        }
    }
}

/// `x`'s plane with a zero border of the padding's width, into `padded` (reused per task).
fn pad_into(x: &[f32], g: &Plane, padded: &mut Vec<f32>) {
    let [ph, pw] = [g.height + 2 * g.padding[0], g.width + 2 * g.padding[1]];
    padded.clear();
    padded.resize(ph * pw, 0.0);
    for (y, row) in x.chunks_exact(g.width).enumerate() {
        let start = (y + g.padding[0]) * pw + g.padding[1];
        padded[start..start + g.width].copy_from_slice(row);
    }
}

/// Whether the flat backward ([`input_grad_flat`], [`weight_grad_flat`]) runs: one stride
/// for both axes, so that output `(oy, ox)`'s window starts `stride` times `oy * pw + ox`
/// values into the padded plane; at stride 2 and more only for short rows, as the flat layout
/// then also computes the windows between the real ones (twice the work at stride 2).
fn is_flat(g: &Plane) -> bool {
    g.stride[0] == g.stride[1] && (g.stride[0] == 1 || g.out_w <= FLAT_STRIDED_MAX_WIDTH)
}

/// Widest output row that a strided depthwise backward runs flat: MobileNetV2 on 32x32
/// (rows of 1-16) is all flat, at 224x224 its stride-2 layers (rows of 14-112) mostly per row.
/// Not tuned beyond that.
const FLAT_STRIDED_MAX_WIDTH: usize = 16;

/// The padded width, and the length of a spread plane: the output laid over the padded
/// width (`out_h` rows of `pw`, zero past `out_w`), so that index `j = oy * pw + ox` reads
/// the padded plane from `stride * j + ky * pw + kx` on, with no bounds per row: the rows of
/// MobileNetV2's late planes are 1-4 values, where the per-row work of [`input_grad_plane`]
/// and [`weight_grad_plane`] outweighed the arithmetic (a third of its training step).
fn spread_size(g: &Plane) -> (usize, usize) {
    let pw = g.width + 2 * g.padding[1];
    (pw, g.out_h * pw)
}

/// Values of a padded plane that the flat passes index: past the border, the last virtual
/// window's end.
fn flat_padded_len(g: &Plane) -> usize {
    let (pw, len) = spread_size(g);
    let padded = (g.height + 2 * g.padding[0]) * pw;
    padded.max(g.stride[0] * (len - 1) + (g.kernel[0] - 1) * pw + g.kernel[1])
}

/// The output's gradient (`[planes][out_h][out_w]`) spread over the padded width, plane by
/// plane (`[planes][out_h][pw]`, zero past `out_w`): laid out once for both gradients.
fn spread(grad: &[f32], g: &Plane) -> Vec<f32> {
    let (pw, len) = spread_size(g);
    let mut spread = vec![0.0f32; g.batch * g.channels * len];
    spread
        .par_chunks_mut(len)
        .zip(grad.par_chunks(g.out_plane()))
        .with_min_len(planes_per_task(g))
        .for_each(|(plane, dy)| {
            for (row, src) in plane.chunks_exact_mut(pw).zip(dy.chunks_exact(g.out_w)) {
                row[..g.out_w].copy_from_slice(src);
            }
        });
    spread
}

/// The input gradient of one plane by the flat layout (see [`spread_size`]): per kernel
/// offset one scaled add of the plane's spread gradient into a padded plane (`padded`, kept by
/// the caller), whose inside is `dx`.
fn input_grad_flat(spread: &[f32], w: &[f32], g: &Plane, padded: &mut Vec<f32>, dx: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let s = g.stride[0];
    let (pw, _) = spread_size(g);
    padded.clear();
    padded.resize(flat_padded_len(g), 0.0);
    for ky in 0..kh {
        for kx in 0..kw {
            let weight = w[ky * kw + kx];
            let dst = &mut padded[ky * pw + kx..];
            if s == 1 {
                for (d, &v) in dst.iter_mut().zip(spread.iter()) {
                    *d += weight * v;
                }
            } else {
                for (d, &v) in dst.iter_mut().step_by(s).zip(spread.iter()) {
                    *d += weight * v;
                }
            }
        }
    }
    for (y, row) in dx.chunks_exact_mut(g.width).enumerate() {
        let start = (y + g.padding[0]) * pw + g.padding[1];
        row.copy_from_slice(&padded[start..start + g.width]);
    }
}

/// The weight gradient's share of one plane by the flat layout: per kernel offset one dot
/// product of the plane's spread gradient with the padded input (`padded`, kept by the
/// caller).
fn weight_grad_flat(x: &[f32], spread: &[f32], g: &Plane, padded: &mut Vec<f32>, dw: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let s = g.stride[0];
    let (pw, _) = spread_size(g);
    pad_into(x, g, padded);
    padded.resize(flat_padded_len(g), 0.0);
    for ky in 0..kh {
        for kx in 0..kw {
            let from = &padded[ky * pw + kx..];
            dw[ky * kw + kx] += if s == 1 {
                dot_slices(spread, &from[..spread.len()])
            } else {
                dot(spread, from.iter().step_by(s))
            };
        }
    }
}

/// The input gradient of one plane: the adjoint of [`forward_plane`] in `x`.
fn input_grad_plane(dy: &[f32], w: &[f32], g: &Plane, dx: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let sx = g.stride[1];
    for ky in 0..kh {
        for kx in 0..kw {
            let weight = w[ky * kw + kx];
            g.for_each_row(ky, kx, |oy, iy, (ox0, ox1), ix0| {
                let src = &dy[oy * g.out_w..][ox0..ox1];
                let dst = &mut dx[iy * g.width..][..g.width];
                if sx == 1 {
                    for (d, &s) in dst[ix0..ix0 + src.len()].iter_mut().zip(src) {
                        *d += weight * s;
                    }
                } else {
                    for (d, &s) in dst[ix0..].iter_mut().step_by(sx).zip(src) {
                        *d += weight * s;
                    }
                }
            });
        }
    }
}

/// The weight gradient's share of one plane: `dw[ky, kx] += Σ dy[oy, ox] · x[iy, ix]`.
fn weight_grad_plane(x: &[f32], dy: &[f32], g: &Plane, dw: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let sx = g.stride[1];
    for ky in 0..kh {
        for kx in 0..kw {
            let mut sum = 0.0f32;
            g.for_each_row(ky, kx, |oy, iy, (ox0, ox1), ix0| {
                let grad = &dy[oy * g.out_w..][ox0..ox1];
                let row = &x[iy * g.width..][ix0..];
                sum += if sx == 1 {
                    dot(grad, row.iter())
                } else {
                    dot(grad, row.iter().step_by(sx))
                };
            });
            dw[ky * kw + kx] += sum;
        }
    }
}

/// Lanes of [`dot`]'s running sums.
const LANES: usize = 16;

/// `Σ a[i] · b[i]` in [`LANES`] running sums, added together at the end: one running sum is a
/// chain of dependent adds that no compiler may reorder (a MobileNetV2's depthwise weight
/// gradients ran at one multiply-add per add's latency, most of its backward pass).
fn dot<'a>(a: &[f32], b: impl Iterator<Item = &'a f32>) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut b = b;
    let mut blocks = a.chunks_exact(LANES);
    for block in &mut blocks {
        for (lane, &x) in lanes.iter_mut().zip(block) {
            *lane += x * b.next().expect("as long as `a`");
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(blocks.remainder()) {
        *lane += x * b.next().expect("as long as `a`");
    }
    lanes.iter().sum()
}

/// [`dot`] of two slices of one length, in the same order (whole blocks of [`LANES`] that
/// vectorise, where an iterator's `next` per value does not).
fn dot_slices(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_blocks, b_blocks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_rest, b_rest) = (a_blocks.remainder(), b_blocks.remainder());
    for (x, y) in a_blocks.zip(b_blocks) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    for ((lane, &x), &y) in lanes.iter_mut().zip(a_rest).zip(b_rest) {
        *lane += x * y;
    }
    lanes.iter().sum()
}

/// Planes per parallel task: small planes (a MobileNetV2's last blocks are 7x7 at 224 px, 1x1
/// at 32 px) are grouped so that each task does at least ~16k multiply-adds, not one
/// scheduling round trip per few dozen.
fn planes_per_task(g: &Plane) -> usize {
    let work = g.out_plane() * g.kernel[0] * g.kernel[1];
    (16_384 / work.max(1)).max(1)
}

/// The output, and the input as the backward pass reads it when `keep_input` (pixel-major
/// where [`pixel_major`] runs, else `None`: the caller keeps `x`).
fn forward(
    x: &[f32],
    weight: &[f32],
    g: &Plane,
    keep_input: bool,
) -> (FlexTensor, Option<Vec<f32>>) {
    let shape = [g.batch, g.channels, g.out_h, g.out_w];
    if g.pixel_major {
        let (output, x_t) = pixel_major::forward(x, weight, g, keep_input);
        return (flex_f32(output, shape), x_t);
    }
    (flex_f32(forward_planes(x, weight, g), shape), None)
}

/// Every output plane, one task per (sample, channel).
fn forward_planes(x: &[f32], weight: &[f32], g: &Plane) -> Vec<f32> {
    let (taps, in_plane, out_plane) = (g.kernel[0] * g.kernel[1], g.in_plane(), g.out_plane());
    let mut output = vec![0.0f32; g.batch * g.channels * out_plane];
    output
        .par_chunks_mut(out_plane)
        .with_min_len(planes_per_task(g))
        .enumerate()
        .for_each_init(Vec::new, |padded, (plane, out)| {
            let c = plane % g.channels;
            let x = &x[plane * in_plane..][..in_plane];
            forward_plane(x, &weight[c * taps..][..taps], g, padded, out);
        });
    output
}

#[derive(Debug, Clone)]
struct State {
    geometry: Plane,
    /// The input (for the weight's gradient): pixel-major per sample where
    /// `geometry.pixel_major`, else as given.
    x: Arc<Vec<f32>>,
    /// The weight (for the input's gradient).
    weight: Arc<Vec<f32>>,
}

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 2> for DepthwiseBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let grad = contiguous_f32(&grad);
        let g = ops.state.geometry;
        let (x, weight) = (&ops.state.x, &ops.state.weight);
        let want = [x_node.is_some(), w_node.is_some()];
        let (dx, dw) = match g.pixel_major {
            true => pixel_major::backward(&grad, x, weight, &g, want),
            false => backward_planes(&grad, x, weight, &g, want),
        };
        if let (Some(node), Some(dw)) = (w_node, dw) {
            let shape = [g.channels, 1, g.kernel[0], g.kernel[1]];
            grads.register::<Flex>(node.id, flex_f32(dw, shape));
        }
        if let (Some(node), Some(dx)) = (x_node, dx) {
            let shape = [g.batch, g.channels, g.height, g.width];
            grads.register::<Flex>(node.id, flex_f32(dx, shape));
        }
    }
}

/// The gradients of the input (`[batch][channels][h][w]`) and of the weight
/// (`[channels][taps]`), each when asked, plane by plane: per channel over the batch for the
/// weight, per (sample, channel) for the input.
fn backward_planes(
    grad: &[f32],
    x: &[f32],
    weight: &[f32],
    g: &Plane,
    [want_input, want_weight]: [bool; 2],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (taps, in_plane, out_plane) = (g.kernel[0] * g.kernel[1], g.in_plane(), g.out_plane());
    let spread = is_flat(g).then(|| spread(grad, g));
    let spread_len = spread_size(g).1;
    let weight_grad = want_weight.then(|| {
        let mut weight_grad = vec![0.0f32; g.channels * taps];
        weight_grad
            .par_chunks_mut(taps)
            .enumerate()
            .for_each_init(Vec::new, |padded, (c, dw)| {
                for b in 0..g.batch {
                    let plane = b * g.channels + c;
                    let x = &x[plane * in_plane..][..in_plane];
                    match &spread {
                        Some(spread) => {
                            let spread = &spread[plane * spread_len..][..spread_len];
                            weight_grad_flat(x, spread, g, padded, dw);
                        }
                        None => {
                            let dy = &grad[plane * out_plane..][..out_plane];
                            weight_grad_plane(x, dy, g, dw);
                        }
                    }
                }
            });
        weight_grad
    });
    let x_grad = want_input.then(|| {
        let mut x_grad = vec![0.0f32; g.batch * g.channels * in_plane];
        x_grad
            .par_chunks_mut(in_plane)
            .with_min_len(planes_per_task(g))
            .enumerate()
            .for_each_init(Vec::new, |padded, (plane, dx)| {
                let c = plane % g.channels;
                let w = &weight[c * taps..][..taps];
                match &spread {
                    Some(spread) => {
                        let spread = &spread[plane * spread_len..][..spread_len];
                        input_grad_flat(spread, w, g, padded, dx);
                    }
                    None => {
                        let dy = &grad[plane * out_plane..][..out_plane];
                        input_grad_plane(dy, w, g, dx);
                    }
                }
            });
        x_grad
    });
    (x_grad, weight_grad)
}

/// The convolution as a node of burn's autodiff graph.
fn tracked(
    x: FloatTensor<Autodiff<Flex>>,
    weight: FloatTensor<Autodiff<Flex>>,
    geometry: Plane,
) -> FloatTensor<Autodiff<Flex>> {
    let (x, x_node) = x.into_parts();
    let (weight, w_node) = weight.into_parts();
    let x = contiguous_f32(&x).into_owned();
    let weight = contiguous_f32(&weight).into_owned();
    let (output, x_pixels) = forward(&x, &weight, &geometry, true);
    let x = x_pixels.unwrap_or(x);
    match DepthwiseBackward
        .prepare::<NoCheckpointing>([x_node, w_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                geometry,
                x: Arc::new(x),
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
    use burn::tensor::Distribution;

    fn random(dims: [usize; 4], std: f64, seed: u64, device: &Device) -> Tensor<4> {
        device.seed(seed);
        Tensor::<4>::random(dims, Distribution::Normal(0.0, std), device)
    }

    /// `Σ y · r` for the given `r`, and the gradients of the input and the weight.
    fn loss_and_grads(
        (x, w, r): (&Tensor<4>, &Tensor<4>, &Tensor<4>),
        stride: [usize; 2],
        padding: [usize; 2],
        ours: Option<DepthwiseLayout>,
    ) -> [TensorData; 4] {
        let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
        let y = match ours {
            Some(layout) => {
                depthwise_conv2d_in(&x, &w, stride, padding, layout).expect("flex f32 depthwise")
            }
            None => {
                let groups = x.dims()[1];
                let options = ConvOptions::new(stride, padding, [1, 1], groups);
                burns(x.clone(), w.clone(), None, options)
            }
        };
        let loss = (y.clone() * r.clone()).sum();
        let grads = loss.backward();
        [
            y.into_data(),
            x.grad(&grads).unwrap().into_data(),
            w.grad(&grads).unwrap().into_data(),
            loss.into_data(),
        ]
    }

    /// Both layouts against burn's grouped convolution: values, and gradients of input and
    /// weight. Every random tensor is drawn once and shared by all runs (tests running at once
    /// draw from one generator).
    fn compare(x_dims: [usize; 4], kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) {
        let device = Device::flex().autodiff();
        let x = random(x_dims, 1.0, 11, &device);
        let w = random([x_dims[1], 1, kernel[0], kernel[1]], 0.5, 12, &device);
        let y_dims = depthwise_conv2d(&x, &w, stride, padding).unwrap().dims();
        let r = random(y_dims, 1.0, 13, &device);
        println!("{x_dims:?} kernel {kernel:?} stride {stride:?} padding {padding:?}");
        let names = ["output", "x grad", "weight grad", "loss"];
        let burns = loss_and_grads((&x, &w, &r), stride, padding, None);
        for layout in [DepthwiseLayout::Planes, DepthwiseLayout::Pixels] {
            println!("{layout:?}");
            let ours = loss_and_grads((&x, &w, &r), stride, padding, Some(layout));
            assert_all_close(&names, &ours, &burns, 1e-4);
        }
    }

    #[test]
    fn mobilenet_layers_match_burns() {
        compare([2, 8, 9, 9], [3, 3], [1, 1], [1, 1]);
        compare([2, 8, 9, 9], [3, 3], [2, 2], [1, 1]);
        compare([3, 5, 8, 10], [3, 3], [2, 2], [1, 1]);
        // MobileNetV2's late blocks: planes of 2x2 and 1x1, channels past a register block,
        // and more samples than one weight-gradient group.
        compare([9, 40, 2, 2], [3, 3], [1, 1], [1, 1]);
        compare([3, 35, 2, 2], [3, 3], [2, 2], [1, 1]);
        compare([17, 18, 1, 1], [3, 3], [1, 1], [1, 1]);
    }

    #[test]
    fn odd_kernels_strides_and_padding_match_burns() {
        compare([2, 3, 7, 6], [5, 3], [1, 2], [2, 1]);
        compare([1, 4, 3, 3], [3, 3], [1, 1], [2, 2]);
        compare([2, 2, 6, 6], [1, 1], [2, 2], [0, 0]);
        compare([1, 3, 4, 5], [3, 3], [3, 3], [0, 0]);
    }

    /// The backward against central finite differences of the loss, in f64 arithmetic on the
    /// f32 forward: every input and weight entry of small cases, through the per-row backward
    /// (strides that differ by axis) and the flat one (stride 1 and 2, with and without
    /// padding, an odd width).
    #[test]
    fn gradients_match_finite_differences() {
        for layout in [DepthwiseLayout::Planes, DepthwiseLayout::Pixels] {
            for (stride, padding) in [([2, 1], [1, 1]), ([1, 1], [1, 1]), ([2, 2], [1, 1])] {
                finite_differences(stride, padding, layout);
            }
            finite_differences([2, 2], [0, 0], layout);
        }
    }

    fn finite_differences(stride: [usize; 2], padding: [usize; 2], layout: DepthwiseLayout) {
        let conv = |x: &Tensor<4>, w: &Tensor<4>| {
            depthwise_conv2d_in(x, w, stride, padding, layout).expect("flex f32 depthwise")
        };
        let device = Device::flex();
        let x = random([2, 3, 5, 4], 1.0, 21, &device);
        let w = random([3, 1, 3, 3], 0.5, 22, &device);
        let r = random(conv(&x, &w).dims(), 1.0, 23, &device);
        let loss = |x: &[f32], w: &[f32]| -> f64 {
            let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [2, 3, 5, 4]), &device);
            let w = Tensor::<4>::from_data(TensorData::new(w.to_vec(), [3, 1, 3, 3]), &device);
            let y = conv(&x, &w).into_data().try_to_vec::<f32>().unwrap();
            let r = r.clone().into_data().try_to_vec::<f32>().unwrap();
            y.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let autodiff = Device::flex().autodiff();
        let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.clone().into_data(), &autodiff);
        let (x_grad, w_grad) = {
            let (xa, wa) = (on(&x).require_grad(), on(&w).require_grad());
            let grads = (conv(&xa, &wa) * on(&r)).sum().backward();
            (
                xa.grad(&grads).unwrap().into_data(),
                wa.grad(&grads).unwrap().into_data(),
            )
        };
        let xs = x.into_data().try_to_vec::<f32>().unwrap();
        let ws = w.into_data().try_to_vec::<f32>().unwrap();
        let h = 1e-2f32;
        let check = |analytic: Vec<f32>, of_x: bool| {
            for (i, &a) in analytic.iter().enumerate() {
                let nudged = |by: f32| {
                    let (mut x, mut w) = (xs.clone(), ws.clone());
                    let values = if of_x { &mut x } else { &mut w };
                    values[i] += by;
                    loss(&x, &w)
                };
                let numeric = (nudged(h) - nudged(-h)) / (2.0 * h as f64);
                assert!(
                    (numeric - a as f64).abs() < 2e-3,
                    "{} entry {i}: analytic {a}, numeric {numeric}",
                    if of_x { "input" } else { "weight" }
                );
            }
        };
        check(x_grad.try_to_vec::<f32>().unwrap(), true);
        check(w_grad.try_to_vec::<f32>().unwrap(), false);
    }

    #[test]
    fn a_grouped_but_not_depthwise_weight_is_handed_back() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([1, 4, 5, 5], &device);
        let w = Tensor::<4>::ones([4, 2, 3, 3], &device);
        assert!(depthwise_conv2d(&x, &w, [1, 1], [1, 1]).is_none());
    }
}
