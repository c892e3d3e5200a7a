//! The training convolution at real widths (VGG's and ResNet's 3x3 layers of 16-512
//! channels): the pixel-major kernels of inference (`conv_nhwc.rs`) for the forward pass and
//! the input's gradient, one product per kernel row for the weight's gradient.
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
//!   channels swapped, through the same kernels;
//! - weight gradient: with the output's gradient laid over the padded width ("virtual"
//!   pixels, zero, where windows run past a row's end, as the direct kernel computes them),
//!   the windows starting at kernel row `ky` are rows `c` floats apart in the padded copy, so
//!   `dW[:, ky] = dY · windows_ky` is one product over the whole batch per kernel row.
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
use crate::flex::{contiguous_f32, flex_f32, rewritten_f32};
use crate::gemm::{matmul, Matrix, MatrixMut};
use crate::pixels::{grown, pad_image, ConvWeights, Pixels};
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
    /// `weight` (`[n, c, k, k]`, burn's layout) at stride 1 and `pad`, for inputs of `input`
    /// pixels; `None` where [`PackedConv`] does not run (no AVX-512).
    fn new(weight: &[f32], shape: [usize; 4], pad: usize, input: [usize; 2]) -> Option<Self> {
        let [n, _, k, _] = shape;
        let (scale, shift) = (vec![1.0f32; n], vec![0.0f32; n]);
        let layer = ConvWeights {
            weight,
            shape,
            window: [k, 1, pad],
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

    /// One sample, already padded, into `out` (`[n][oh][ow]`, channel-major); `scratch` holds
    /// the pixel-major output between the two. With `stats`, the output's per-channel
    /// statistics too, gathered from `scratch` while it is in cache.
    fn run(
        &self,
        padded: &[f32],
        scratch: &mut Vec<f32>,
        out: &mut [f32],
        stats: bool,
    ) -> Option<SampleStats> {
        let layout =
            self.conv
                .run_padded(padded, (self.output, self.pitch), self.winograd, scratch);
        let sample_stats = stats.then(|| SampleStats::of(scratch, layout));
        to_planes(scratch, layout, out);
        sample_stats
    }
}

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

/// Whether these kernels compute `g` (stride 1, a square kernel, padding below it, enough
/// input channels, not turned off by [`CONV_PATH_ENV`]); [`tracked`] may still hand it back
/// (no AVX-512). Strided layers stay on im2col: stride 2 here (the direct kernel forward, the
/// weight gradient over every window of the padded rows, twice the real ones, the input
/// gradient by im2col's adjoint) was no faster on ResNet-20 and 2-13% slower on ResNet-18
/// (`SPEED_SETUPS=replicas cargo test -p runner --bench speed`, 2026-12-06).
pub(crate) fn applies(g: &Geometry) -> bool {
    let [kh, kw] = g.kernel;
    !im2col_asked()
        && g.stride == [1, 1]
        && kh == kw
        && g.padding[0] == g.padding[1]
        && g.padding[0] < kh
        && g.c_in >= MIN_CHANNELS
}

#[derive(Debug, Clone)]
struct State {
    geometry: Geometry,
    /// The whole batch padded, pixel-major, with zeros after it for the last windows.
    padded: Arc<Vec<f32>>,
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
            grads.register::<Flex>(node.id, input_grad(grad, &weight, &g));
        }
    }
}

/// `dW` (`[c_out][c_in][k][k]`) from the output's gradient (`[batch][c_out][oh][ow]`) and
/// the padded batch (`[batch][hp][wp][c_in]`, `wp` the pitch, then zeros).
fn weight_grad(grad: &[f32], padded: &[f32], [hp, wp]: [usize; 2], g: &Geometry) -> Vec<f32> {
    let (c, n, k) = (g.c_in, g.c_out, g.kernel[0]);
    let (oh, ow) = (g.out_h, g.out_w);
    let rows = g.batch * hp * wp;
    // The gradient over every window of the padded batch, zero at the virtual ones, in a
    // buffer kept from step to step (a fresh one is zeroed, then faulted in, each time).
    let mut kept = SPREAD.with(|kept| kept.take());
    let spread = grown(&mut kept, n * rows);
    spread
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(co, dst)| {
            for (b, image) in dst.chunks_exact_mut(hp * wp).enumerate() {
                let src = &grad[(b * n + co) * oh * ow..][..oh * ow];
                let (real, virtual_rows) = image.split_at_mut(oh * wp);
                for (row, src) in real.chunks_exact_mut(wp).zip(src.chunks_exact(ow)) {
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
            matmul(
                MatrixMut::row_major(&mut product, n, k * c),
                Matrix::row_major(spread, n, rows),
                Matrix::strided(&padded[ky * wp * c..], rows, k * c, c, 1),
            );
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
        k - 1 - g.padding[0],
        [g.out_h, g.out_w],
    )
    .expect("packed for the forward pass on this CPU");
    debug_assert_eq!(pass.output, [g.height, g.width]);
    let [oh, ow] = pass.input;
    // One sample of `dX` into `dx`, from `grad` or, where that is `None`, from `dx`'s own
    // values (the same sample's output gradient): padded into the thread's buffer first.
    let run = |grad: Option<&[f32]>, dx: &mut [f32]| {
        SCRATCH.with_borrow_mut(|(scratch, padded)| {
            let padded = grown(padded, pass.read_len());
            pass.pad_sample(grad.unwrap_or(dx), padded);
            pass.run(padded, scratch, dx, false);
        })
    };
    let x_sample = c * g.height * g.width;
    if n == c && [oh, ow] == [g.height, g.width] {
        return rewritten_f32(grad, |values| {
            values.par_chunks_mut(x_sample).for_each(|dx| run(None, dx))
        });
    }
    let grad = contiguous_f32(&grad);
    let mut x_grad = vec![0.0f32; g.batch * x_sample];
    x_grad
        .par_chunks_mut(x_sample)
        .zip(grad.par_chunks(n * oh * ow))
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
    let pass = Pass::new(weight, shape, g.padding[0], [g.height, g.width])?;
    let (plane, out_plane) = (g.c_in * g.height * g.width, g.c_out * g.out_h * g.out_w);
    let mut output = vec![0.0f32; g.batch * out_plane];
    output
        .par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(b, out)| {
            SCRATCH.with_borrow_mut(|(scratch, padded)| {
                let padded = grown(padded, pass.read_len());
                pass.pad_sample(&x[b * plane..][..plane], padded);
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
    let pass = Pass::new(&weight_values, shape, pad, [g.height, g.width])?;
    let x_values = contiguous_f32(&x_inner);
    let (hp, wp) = (pass.padded[0], pass.pitch);
    let sample = pass.sample_len();
    // Zeros after the last image, for the weight gradient's windows past its end (and the
    // forward's reads past its last row).
    let tail = ((k - 1) * wp + k) * g.c_in;
    let mut padded = vec![0.0f32; g.batch * sample + tail];
    let plane = g.c_in * g.height * g.width;
    padded[..g.batch * sample]
        .par_chunks_mut(sample)
        .enumerate()
        .for_each(|(b, dst)| {
            let src = &x_values[b * plane..][..plane];
            pad_planes(src, [g.c_in, g.height, g.width], pad, [hp, wp], dst);
        });
    let out_plane = g.c_out * g.out_h * g.out_w;
    let mut output = vec![0.0f32; g.batch * out_plane];
    let samples: Vec<Option<SampleStats>> = output
        .par_chunks_mut(out_plane)
        .enumerate()
        .map(|(b, out)| {
            SCRATCH.with_borrow_mut(|(scratch, _)| {
                let sample = &padded[b * sample..][..pass.read_len()];
                pass.run(sample, scratch, out, stats)
            })
        })
        .collect();
    let stats = samples
        .into_iter()
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
