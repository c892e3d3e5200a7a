//! The training convolution at real widths (VGG's and ResNet's 3x3 layers of 16-512
//! channels, and their 3x3 stride-2 layers of up to 128 input channels): the pixel-major
//! kernels of inference (`conv_nhwc.rs`) for the forward pass and the input's gradient, a
//! kernel of its own for the weight's gradient.
//!
//! im2col (`conv.rs`) writes every input value `kernel²` times and reads it back: at VGG's
//! 28x28 32 -> 32 layer and batch 128 the columns are 115 MB, written in the forward pass,
//! kept, and read again by the weight's gradient; a fresh mapping of that size faults in every
//! page each step. Here the batch is transposed once into a zero-padded pixel-major copy
//! (`[batch][hp][pitch][c]`, 1/9 of that at 3x3; a row's right padding stored as the next
//! row's left one), which every pass reads in place:
//!
//! - forward: each sample through [`PackedConv`] (the direct kernel, or Winograd's F(2x2,
//!   3x3) for wide 3x3 layers), its pixel-major output transposed back to channel-major;
//! - input gradient (stride 1): the convolution of the output's gradient, padded by
//!   `kernel - 1 - padding`, with the kernel turned 180 degrees and its input and output
//!   channels swapped, through the same kernels; at stride 2, im2col's adjoint (per sample
//!   `Wᵀ · dY` folded back onto the input), which needs only the weights;
//! - weight gradient: a kernel of its own (`conv_weight_grad.rs`) for kernel rows of up to
//!   384 floats (3x3 layers of up to 128 channels, 1x1 of up to 384), reading the padded copy and the output's gradient in place and
//!   visiting only real output pixels. Wider layers: with the output's gradient laid over
//!   the padded width ("virtual" pixels, zero, where windows run past a row's end, as the
//!   direct kernel computes them), the windows starting at kernel row `ky` are rows `c`
//!   floats apart in the padded copy, so `dW[:, ky] = dY · windows_ky` is one `gemm` product
//!   over the whole batch per kernel row.
//!
//! Sums run in a fixed order (each sample on one thread, each weight-gradient product on one),
//! so results do not depend on the thread count. They differ from im2col's by float rounding.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use rayon::prelude::*;

use crate::channel_stats::{ChannelStats, SampleStats};
use crate::conv_geometry::Geometry;
use crate::conv_nhwc::PackedConv;
use crate::conv_weight_grad;
use crate::flex::{contiguous_f32, flex_f32, rewritten_f32};
use crate::gemm::{matmul, Matrix, MatrixMut};
use crate::pixels::{grown, pad_image, ConvWeights, Pixels};
use crate::recycle::{written_in_chunks, Recycled};
use crate::transpose::transpose;

/// Fewest input channels for these kernels. LeNet-5's 1- and 6-channel layers stay on im2col,
/// which already trains it ahead of PyTorch; 8 itself was not tuned. ResNet-20's 16-channel
/// layers are faster here: with the threshold at 32 its replica step took 367 ms against 224
/// (`cargo test -p runner --bench speed`, 2026-12-06).
pub(crate) const MIN_CHANNELS: usize = 8;

/// One direction of a layer packed for [`PackedConv`], with the padded layout it reads.
struct Pass {
    conv: PackedConv,
    /// Zero padding on every side of the input.
    pad: usize,
    /// The padded image's `[height, width]` in pixels, as the kernels read it.
    padded: [usize; 2],
    /// Pixels per stored row of the padded image: `padded[1] - pad` (see [`Pass::new`]).
    pitch: usize,
    winograd: bool,
    /// The input's and the output's `[height, width]`.
    input: [usize; 2],
    output: [usize; 2],
}

impl Pass {
    /// `weight` (`[n, c, k, k]`, burn's layout) at `stride` and `pad`, for inputs of `input`
    /// pixels; `None` where [`PackedConv`] does not run (no AVX-512).
    fn new(
        weight: &[f32],
        shape: [usize; 4],
        [stride, pad]: [usize; 2],
        input: [usize; 2],
    ) -> Option<Self> {
        let [n, _, k, _] = shape;
        let (scale, shift) = (vec![1.0f32; n], vec![0.0f32; n]);
        let layer = ConvWeights {
            weight,
            shape,
            window: [k, stride, pad],
            scale: &scale,
            shift: &shift,
            relu: false,
        };
        let conv = PackedConv::for_image(layer, input)?;
        let (padded, winograd) = conv.padded_size(input);
        let output = conv.output(input);
        // A row's right padding is stored as the next row's left one: the kernels read the
        // `pad` pixels past a row's end from there (zero), and every pass computes and stores
        // `pad` fewer pixels per row that no output keeps (at ResNet's 3x3 layers 8 pixels
        // wide, 9 where a row with both paddings is 10; the weight gradient's windows per
        // sample 90 instead of 100).
        let pitch = padded[1] - pad;
        Some(Self {
            conv,
            pad,
            padded,
            pitch,
            winograd,
            input,
            output,
        })
    }

    /// Floats of one padded sample as stored: `padded[0]` rows of `pitch` pixels.
    fn sample_len(&self) -> usize {
        self.padded[0] * self.pitch * self.conv.c()
    }

    /// Floats the kernels read from the start of a padded sample: its stored rows and the
    /// `pad` pixels past the last one (zero; the next sample's top padding in a batch).
    fn read_len(&self) -> usize {
        self.sample_len() + self.pad * self.conv.c()
    }

    /// One sample, channel-major (`[c][h][w]`), padded into `dst` (at least
    /// [`Self::read_len`] floats: every one of them written).
    fn pad_sample(&self, x: &[f32], dst: &mut [f32]) {
        let [h, w] = self.input;
        let (stored, past) = dst.split_at_mut(self.sample_len());
        pad_planes(
            x,
            [self.conv.c(), h, w],
            self.pad,
            [self.padded[0], self.pitch],
            stored,
        );
        past.fill(0.0);
    }

    /// Samples per call of [`Self::run`]: one for the direct kernel; for Winograd enough for
    /// its products to run over [`WINOGRAD_GROUP_BLOCKS`] blocks, but no more than each of the
    /// pool's threads gets of `batch`.
    fn group(&self, batch: usize) -> usize {
        if !self.winograd {
            return 1;
        }
        let [oh, ow] = self.output;
        let blocks = (oh.div_ceil(2) * ow.div_ceil(2)).max(1);
        let share = batch.div_ceil(rayon::current_num_threads()).max(1);
        WINOGRAD_GROUP_BLOCKS.div_ceil(blocks).clamp(1, share)
    }

    /// Samples already padded, [`Self::sample_len`] floats apart in `padded` (the last one's
    /// [`Self::read_len`] there), into `out` (`[count][n][oh][ow]`, channel-major; its length
    /// gives the count); `scratch` holds the pixel-major outputs between the two. With
    /// `stats`, each sample's per-channel statistics too, gathered from `scratch` while it is
    /// in cache.
    fn run(
        &self,
        padded: &[f32],
        scratch: &mut Vec<f32>,
        out: &mut [f32],
        stats: bool,
    ) -> Vec<Option<SampleStats>> {
        let plane = self.conv.n() * self.output[0] * self.output[1];
        let count = out.len() / plane;
        let finish = |x: &[f32], layout: Pixels, out: &mut [f32]| {
            let sample_stats = stats.then(|| SampleStats::of(x, layout));
            to_planes(x, layout, out);
            sample_stats
        };
        let size = (self.output, self.pitch);
        if self.winograd && count > 1 {
            let images = (count, self.sample_len());
            let layout = self.conv.run_winograd_many(padded, images, size, scratch);
            let len = layout.len();
            return out
                .chunks_exact_mut(plane)
                .enumerate()
                .map(|(i, out)| finish(&scratch[i * len..][..len], layout, out))
                .collect();
        }
        out.chunks_exact_mut(plane)
            .enumerate()
            .map(|(i, out)| {
                let sample = &padded[i * self.sample_len()..];
                let layout = self.conv.run_padded(sample, size, self.winograd, scratch);
                finish(scratch, layout, out)
            })
            .collect()
    }

    /// Channel-major samples (`[count][c][h][w]`, the count `samples` gives) padded one after
    /// another into `dst`, as [`Self::run`] reads them.
    fn pad_samples<'a>(&self, samples: &[f32], dst: &'a mut Vec<f32>) -> &'a [f32] {
        let plane = self.conv.c() * self.input[0] * self.input[1];
        let count = samples.len() / plane;
        let dst = grown(
            dst,
            count.saturating_sub(1) * self.sample_len() + self.read_len(),
        );
        for (i, x) in samples.chunks_exact(plane).enumerate() {
            // Each sample's zeros past its end are the next one's top padding.
            self.pad_sample(x, &mut dst[i * self.sample_len()..][..self.read_len()]);
        }
        dst
    }
}

/// Blocks Winograd's products run over per call in training ([`Pass::group`]): at ResNet-18's
/// 7x7 layers an image has 16, and the products read their transformed weights (16 MB at 512
/// channels) once per call.
const WINOGRAD_GROUP_BLOCKS: usize = 128;

/// One channel-major sample (`[c][h][w]`) into `dst`, pixel-major with `pad` zeros before each
/// row and column and zeros after them up to `[hp, pitch]` (every value of `dst` written).
fn pad_planes(x: &[f32], [c, h, w]: [usize; 3], pad: usize, size: [usize; 2], dst: &mut [f32]) {
    pad_image(dst, [h, w, c], pad, size, |y, pixels| {
        // Channels by pixels of this row into pixels by channels.
        transpose(&x[y * w..], h * w, pixels, c, [c, w])
    });
}

/// A pixel-major output laid out as `layout` says into `dst`, channel-major (`[c][h][w]`).
fn to_planes(x: &[f32], layout: Pixels, dst: &mut [f32]) {
    let Pixels { h, w, c, pitch } = layout;
    for y in 0..h {
        transpose(&x[y * pitch * c..], c, &mut dst[y * w..], h * w, [w, c]);
    }
}

thread_local! {
    /// Each thread's pixel-major output and padded sample, kept from call to call.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

thread_local! {
    /// Each thread's copy of one kernel row's windows ([`WindowRows`]).
    static WINDOWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    /// The weight gradient's spread output gradient, kept from step to step (taken while in
    /// use, so a nested call would start its own).
    static SPREAD: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Set to `im2col` to train every convolution through im2col and `gemm` (`conv.rs`), to
/// compare the two in one build.
pub const CONV_PATH_ENV: &str = "COMPRESS_CONV";

/// Whether [`CONV_PATH_ENV`] asks for im2col (read once per process).
fn im2col_asked() -> bool {
    static ASKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| {
        std::env::var(CONV_PATH_ENV).is_ok_and(|path| path.eq_ignore_ascii_case("im2col"))
    })
}

/// Whether these kernels compute `g` (a square kernel, padding below it, enough input
/// channels, not turned off by [`CONV_PATH_ENV`]; stride 1, or a 3x3 stride-2 layer whose
/// weight gradient `conv_weight_grad.rs` computes); [`tracked`] may still hand it back (no
/// AVX-512). Stride 2 here had been no faster on ResNet-20 and 2-13% slower on ResNet-18 while
/// the weight gradient ran through `gemm` over every window of the padded rows, four times
/// the real ones at stride 2 (2026-12-06); with the weight gradient's kernel, which reads only
/// the real ones, ResNet-20's 16 -> 32 layer went from 17.4 to 11.7 ms forward and backward
/// and 32 -> 64 from 11.1 to 8.8 (`cargo test -p kernels --bench conv_train`, 1 thread,
/// 2026-12-07). 1x1 stride-2 projections stay on im2col, ahead of PyTorch's already.
pub(crate) fn applies(g: &Geometry) -> bool {
    let [kh, kw] = g.kernel;
    let strided = g.stride == [2, 2] && kh == 3 && conv_weight_grad::takes(kh, g.c_in, g.c_out);
    !im2col_asked()
        && (g.stride == [1, 1] || strided)
        && kh == kw
        && g.padding[0] == g.padding[1]
        && g.padding[0] < kh
        && g.c_in >= MIN_CHANNELS
}

#[derive(Debug, Clone)]
struct State {
    geometry: Geometry,
    /// The whole batch padded, pixel-major, with zeros after it for the last windows.
    padded: Arc<Recycled>,
    /// The padded image's stored `[height, pitch]`.
    size: [usize; 2],
    weight: Arc<Vec<f32>>,
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 2> for ConvBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, w_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let State {
            geometry: g,
            padded,
            size,
            weight,
        } = ops.state;
        if let Some(node) = w_node {
            let weight_grad = weight_grad(&contiguous_f32(&grad), &padded, size, &g);
            let shape = [g.c_out, g.c_in, g.kernel[0], g.kernel[1]];
            grads.register::<Flex>(node.id, flex_f32(weight_grad, shape));
        }
        if let Some(node) = x_node {
            let x_grad = match g.stride {
                [1, 1] => input_grad(grad, &weight, &g),
                // Strided: im2col's adjoint, which needs only the weights.
                _ => flex_f32(
                    crate::conv::input_grad_folded(&contiguous_f32(&grad), &weight, &g),
                    [g.batch, g.c_in, g.height, g.width],
                ),
            };
            grads.register::<Flex>(node.id, x_grad);
        }
    }
}

/// `dW` (`[c_out][c_in][k][k]`) from the output's gradient (`[batch][c_out][oh][ow]`) and
/// the padded batch (`[batch][hp][wp][c_in]`, `wp` the pitch, then zeros): through
/// `conv_weight_grad.rs` where that runs, else through `gemm`.
fn weight_grad(grad: &[f32], padded: &[f32], [hp, wp]: [usize; 2], g: &Geometry) -> Vec<f32> {
    if let Some(weight_grad) = conv_weight_grad::weight_grad(grad, padded, [hp, wp], g) {
        return weight_grad;
    }
    // The products below read every window of the padded rows, as at stride 1.
    assert_eq!(
        g.stride,
        [1, 1],
        "a strided layer the weight gradient's kernel takes"
    );
    let (c, n, k) = (g.c_in, g.c_out, g.kernel[0]);
    let (oh, ow) = (g.out_h, g.out_w);
    let windows = WindowRows::new(g, [hp, wp]);
    let (image_rows, pitch) = (windows.image_rows, windows.pitch);
    let rows = g.batch * image_rows * pitch;
    // The gradient over every window the products read, zero at the virtual ones, in a
    // buffer kept from step to step (a fresh one is zeroed, then faulted in, each time).
    let mut kept = SPREAD.with(|kept| kept.take());
    let spread = grown(&mut kept, n * rows);
    spread
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(co, dst)| {
            for (b, image) in dst.chunks_exact_mut(image_rows * pitch).enumerate() {
                let src = &grad[(b * n + co) * oh * ow..][..oh * ow];
                let (real, virtual_rows) = image.split_at_mut(oh * pitch);
                for (row, src) in real.chunks_exact_mut(pitch).zip(src.chunks_exact(ow)) {
                    row[..ow].copy_from_slice(src);
                    row[ow..].fill(0.0);
                }
                virtual_rows.fill(0.0);
            }
        });
    let spread = &*spread;
    // Per kernel row: `[n][k * c]`, entry `(o, kx * c + ci)`.
    let per_row: Vec<Vec<f32>> = (0..k)
        .into_par_iter()
        .map(|ky| {
            let mut product = vec![0.0f32; n * k * c];
            let mut multiply = |windows: &[f32]| {
                matmul(
                    MatrixMut::row_major(&mut product, n, k * c),
                    Matrix::row_major(spread, n, rows),
                    Matrix::strided(windows, rows, k * c, c, 1),
                )
            };
            match windows.compact {
                false => multiply(&padded[ky * wp * c..]),
                true => WINDOWS.with_borrow_mut(|copy| {
                    multiply(windows.copied(padded, [hp, wp], ky, g, copy))
                }),
            }
            product
        })
        .collect();
    SPREAD.with(|slot| slot.set(kept));
    let mut weight_grad = vec![0.0f32; n * c * k * k];
    for (o, dst) in weight_grad.chunks_exact_mut(c * k * k).enumerate() {
        for (ky, product) in per_row.iter().enumerate() {
            let row = &product[o * k * c..][..k * c];
            for kx in 0..k {
                for ci in 0..c {
                    dst[(ci * k + ky) * k + kx] = row[kx * c + ci];
                }
            }
        }
    }
    weight_grad
}

/// The rows of windows the weight gradient's products run over, per sample: the padded batch
/// itself (`hp` rows of `wp` pixels per sample, those past the output's `oh` rows virtual),
/// or, where those virtual rows are many (small images: ResNet-18's 7x7 layers run on 10x9
/// Winograd blocks for 49 outputs), each kernel row's windows copied out sample by sample:
/// the `oh` rows they start on, `width + padding` pixels each (a row's right padding read
/// from the next row's left one, as in the padded batch).
struct WindowRows {
    compact: bool,
    image_rows: usize,
    pitch: usize,
}

impl WindowRows {
    fn new(g: &Geometry, [hp, wp]: [usize; 2]) -> Self {
        let (oh, pitch) = (g.out_h, g.width + g.padding[0]);
        // Per kernel row and sample: `2 * c_out * kernel * c_in` operations per window left
        // out, `c_in` floats copied per window kept.
        let saved = 2 * g.c_out * g.kernel[0] * (hp * wp - oh * pitch);
        let compact = saved >= COMPACT_MIN_FLOPS_PER_COPY * oh * pitch;
        match compact {
            true => Self {
                compact,
                image_rows: oh,
                pitch,
            },
            false => Self {
                compact,
                image_rows: hp,
                pitch: wp,
            },
        }
    }

    /// Kernel row `ky`'s windows copied out of `padded` (`[batch][hp][wp][c]`) into `copy`,
    /// with the zeros the last windows read past the end.
    fn copied<'a>(
        &self,
        padded: &[f32],
        [hp, wp]: [usize; 2],
        ky: usize,
        g: &Geometry,
        copy: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        let (c, k) = (g.c_in, g.kernel[0]);
        let row = self.pitch * c;
        let image = self.image_rows * row;
        let copy = grown(copy, g.batch * image + (k - 1) * c);
        let (images, tail) = copy.split_at_mut(g.batch * image);
        for (b, dst) in images.chunks_exact_mut(image).enumerate() {
            let src = &padded[(b * hp + ky) * wp * c..];
            for (y, dst) in dst.chunks_exact_mut(row).enumerate() {
                dst.copy_from_slice(&src[y * wp * c..][..row]);
            }
        }
        tail.fill(0.0);
        copy
    }
}

/// Floating-point operations the weight gradient must save per float copied for
/// [`WindowRows`] to copy its windows out. Measured per layer (`cargo test -p kernels --bench
/// conv_train`, 1 thread, 2026-12-07), copying against not: ResNet-18's 512 -> 512 at 7x7
/// (1,865 operations per float) 166-172 -> 141-146 ms, 256 -> 256 at 14x14 (219) 97-100 ->
/// 94-95, ResNet-20's 64 -> 64 at 8x8 (96) 10.9-11.1 -> 10.2; even at 128 -> 128, 28x28 (55)
/// and 32 -> 32, 16x16 (24); slower at 16 -> 16, 32x32 (6: 16.2 -> 17.6) and 64 -> 64,
/// 56x56 (14: 144 -> 152).
const COMPACT_MIN_FLOPS_PER_COPY: usize = 80;

/// `dX` (`[batch][c_in][h][w]`): the output's gradient convolved with the kernel turned 180
/// degrees, input and output channels swapped, padded by `k - 1 - padding`.
///
/// Where the two are of one size (a layer of as many output channels as input ones), each
/// sample of `dX` overwrites the same sample of `grad`, which was copied into its padded
/// buffer first: no fresh buffer of the batch's size (zeroed by `calloc`, then written).
fn input_grad(grad: FlexTensor, weight: &[f32], g: &Geometry) -> FlexTensor {
    let (c, n, k) = (g.c_in, g.c_out, g.kernel[0]);
    let mut turned = vec![0.0f32; c * n * k * k];
    for o in 0..n {
        for ci in 0..c {
            let src = &weight[(o * c + ci) * k * k..][..k * k];
            let dst = &mut turned[(ci * n + o) * k * k..][..k * k];
            for (d, &s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = s;
            }
        }
    }
    let pass = Pass::new(
        &turned,
        [c, n, k, k],
        [1, k - 1 - g.padding[0]],
        [g.out_h, g.out_w],
    )
    .expect("packed for the forward pass on this CPU");
    debug_assert_eq!(pass.output, [g.height, g.width]);
    let [oh, ow] = pass.input;
    let group = pass.group(g.batch);
    // A group of samples of `dX` into `dx`, from `grad` or, where that is `None`, from `dx`'s
    // own values (the same samples' output gradient): padded into the thread's buffer first.
    let run = |grad: Option<&[f32]>, dx: &mut [f32]| {
        SCRATCH.with_borrow_mut(|(scratch, padded)| {
            let padded = pass.pad_samples(grad.unwrap_or(dx), padded);
            pass.run(padded, scratch, dx, false);
        })
    };
    let x_sample = c * g.height * g.width;
    if n == c && [oh, ow] == [g.height, g.width] {
        return rewritten_f32(grad, |values| {
            values
                .par_chunks_mut(group * x_sample)
                .for_each(|dx| run(None, dx))
        });
    }
    let grad = contiguous_f32(&grad);
    let mut x_grad = vec![0.0f32; g.batch * x_sample];
    x_grad
        .par_chunks_mut(group * x_sample)
        .zip(grad.par_chunks(group * n * oh * ow))
        .for_each(|(dx, grad)| run(Some(grad), dx));
    flex_f32(x_grad, [g.batch, c, g.height, g.width])
}

/// Fewest output pixels (batch times pixels per sample) for which a convolution without
/// autodiff runs [`forward`]: below it, packing the weights at each call costs more than the
/// kernels save over im2col (ResNet-18's 7x7 layers at batch 1 took 1.7x as long; ResNet-20
/// 1.2x with 64 and 256 pixels). Measured from there, not tuned finely.
pub(crate) const INFERENCE_MIN_PIXELS: usize = 1024;

/// The convolution without autodiff (`[batch][c_out][oh][ow]`), each sample padded in a
/// buffer of its thread's, or `None` where [`PackedConv`] does not run on this CPU: the
/// inference of models that run burn's graph (ResNets, MobileNetV2), whose 3x3 layers im2col
/// unfolded per sample.
pub(crate) fn forward(x: &[f32], weight: &[f32], g: &Geometry) -> Option<Vec<f32>> {
    let shape = [g.c_out, g.c_in, g.kernel[0], g.kernel[1]];
    let pass = Pass::new(
        weight,
        shape,
        [g.stride[0], g.padding[0]],
        [g.height, g.width],
    )?;
    let (plane, out_plane) = (g.c_in * g.height * g.width, g.c_out * g.out_h * g.out_w);
    let group = pass.group(g.batch);
    let (output, _) = written_in_chunks(g.batch * out_plane, group * out_plane, |j, out| {
        SCRATCH.with_borrow_mut(|(scratch, padded)| {
            let count = out.len() / out_plane;
            let padded = pass.pad_samples(&x[j * group * plane..][..count * plane], padded);
            pass.run(padded, scratch, out, false);
        })
    });
    Some(output)
}

/// The convolution as a node of burn's autodiff graph, with its output's per-channel
/// statistics where `stats` asks for them, or `None` where [`PackedConv`] does not run on this
/// CPU.
pub(crate) fn tracked(
    x: &FloatTensor<Autodiff<Flex>>,
    weight: &FloatTensor<Autodiff<Flex>>,
    g: Geometry,
    stats: bool,
) -> Option<(FloatTensor<Autodiff<Flex>>, Option<ChannelStats>)> {
    let (k, pad) = (g.kernel[0], g.padding[0]);
    let (x_inner, x_node) = x.clone().into_parts();
    let (weight_inner, w_node) = weight.clone().into_parts();
    let weight_values = contiguous_f32(&weight_inner).into_owned();
    let shape = [g.c_out, g.c_in, k, k];
    let pass = Pass::new(
        &weight_values,
        shape,
        [g.stride[0], pad],
        [g.height, g.width],
    )?;
    let x_values = contiguous_f32(&x_inner);
    let (hp, wp) = (pass.padded[0], pass.pitch);
    let sample = pass.sample_len();
    // Zeros after the last image, for the weight gradient's windows past its end (and the
    // forward's reads past its last row).
    let tail = ((k - 1) * wp + k) * g.c_in;
    // Every value is written below: the batch by `pad_planes`, then the tail.
    let mut padded = Recycled::take(g.batch * sample + tail);
    padded[g.batch * sample..].fill(0.0);
    let plane = g.c_in * g.height * g.width;
    padded[..g.batch * sample]
        .par_chunks_mut(sample)
        .enumerate()
        .for_each(|(b, dst)| {
            let src = &x_values[b * plane..][..plane];
            pad_planes(src, [g.c_in, g.height, g.width], pad, [hp, wp], dst);
        });
    let out_plane = g.c_out * g.out_h * g.out_w;
    let group = pass.group(g.batch);
    let (output, samples) = written_in_chunks(g.batch * out_plane, group * out_plane, |j, out| {
        SCRATCH.with_borrow_mut(|(scratch, _)| {
            let count = out.len() / out_plane;
            let first = j * group * sample;
            let samples = &padded[first..][..(count - 1) * sample + pass.read_len()];
            pass.run(samples, scratch, out, stats)
        })
    });
    let stats = samples
        .into_iter()
        .flatten()
        .collect::<Option<Vec<_>>>()
        .map(|samples| ChannelStats::combined(&samples, g.out_h * g.out_w));
    let output = flex_f32(output, [g.batch, g.c_out, g.out_h, g.out_w]);
    let output = match ConvBackward
        .prepare::<NoCheckpointing>([x_node, w_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                geometry: g,
                padded: Arc::new(padded),
                size: [hp, wp],
                weight: Arc::new(weight_values),
            },
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some((output, stats))
}
