//! Depthwise convolution on pixel-major samples (`[pixels][channels]`), for layers whose
//! output rows are a few pixels: MobileNetV2's blocks after the second (8x8 down to 1x1 at
//! 32x32 px, 14x14 down to 7x7 at 224x224, with 144-960 channels).
//!
//! Channel-major, each (sample, channel) plane of those layers is a task of 1-16 outputs whose
//! padding, loops and bookkeeping outweigh its 9-144 multiply-adds: half of a MobileNetV2's
//! batch-32 inference ran at about 1.3 GMAC/s there. Pixel-major, an output pixel is `kh * kw`
//! scaled adds of whole channel rows (hundreds of values that vectorise), each window's bounds
//! are worked out once per pixel for every channel, and the image needs no padded copy. The
//! price is a transpose of each tensor in and out (`transpose.rs`), one read and one write.
//!
//! - forward: per output pixel, the taps whose input lies inside the image, summed in
//!   `(ky, kx)` order into [`BLOCK`] running values per channel block;
//! - input gradient: per output pixel and tap, the output gradient's row scaled by the tap's
//!   weights and added into the input pixel's row;
//! - weight gradient: per group of [`SAMPLES_PER_GROUP`] samples, `Σ dy[p] · x[p + tap]` per
//!   tap and channel over the group's pixels; the groups' sums are added in order, so the
//!   result does not depend on the thread count.

use rayon::prelude::*;

use super::Plane;
use crate::transpose::transpose;

/// Channels per block of running sums held in registers through a pixel's taps.
const BLOCK: usize = 16;

/// Samples whose weight-gradient terms one task sums (in sample order) before the groups are
/// added together in group order.
const SAMPLES_PER_GROUP: usize = 8;

/// Widest output row the pixel-major kernels run. Against planes, one thread
/// (`cargo test -p kernels --bench depthwise`, 2026-12-06): MobileNetV2's layers with rows of
/// 1-14 ran 1.3-12x faster (more, the fewer the pixels); rows of 16 at 32 channels were even
/// (1.12x at inference, 0.96x in training); rows of 56 and 112 were 0.83-0.94x, as planes
/// then have long rows to vectorise and the transposes move more.
const MAX_WIDTH: usize = 14;

/// Fewest channels for the pixel-major kernels: a register block (not measured below it; the
/// models here have 16 and more).
const MIN_CHANNELS: usize = BLOCK;

/// Whether the pixel-major kernels compute `g` by default.
pub(super) fn applies(g: &Plane) -> bool {
    g.out_w <= MAX_WIDTH && g.channels >= MIN_CHANNELS
}

/// Every output pixel's taps whose input lies inside the image, as (tap index, input pixel)
/// in `(ky, kx)` order: worked out once per call, as they are the same for every sample.
struct Windows {
    taps: Vec<(usize, usize)>,
    /// Output pixel `p`'s taps are `taps[starts[p]..starts[p + 1]]`.
    starts: Vec<usize>,
}

impl Windows {
    fn new(g: &Plane) -> Self {
        let [kh, kw] = g.kernel;
        let inside = |o: usize, k: usize, axis: usize, size: usize| {
            (o * g.stride[axis] + k)
                .checked_sub(g.padding[axis])
                .filter(|&i| i < size)
        };
        let mut taps = Vec::with_capacity(g.out_plane() * kh * kw);
        let mut starts = Vec::with_capacity(g.out_plane() + 1);
        starts.push(0);
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for ky in 0..kh {
                    let Some(iy) = inside(oy, ky, 0, g.height) else {
                        continue;
                    };
                    for kx in 0..kw {
                        if let Some(ix) = inside(ox, kx, 1, g.width) {
                            taps.push((ky * kw + kx, iy * g.width + ix));
                        }
                    }
                }
                starts.push(taps.len());
            }
        }
        Self { taps, starts }
    }

    /// Output pixel `p`'s taps.
    fn of(&self, p: usize) -> &[(usize, usize)] {
        &self.taps[self.starts[p]..self.starts[p + 1]]
    }
}

/// `[rows][cols]` into `[cols][rows]` for each sample of `src` (samples end to end).
fn transpose_samples(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    let len = rows * cols;
    dst.par_chunks_mut(len)
        .zip(src.par_chunks(len))
        .for_each(|(dst, src)| transpose(src, cols, dst, rows, [rows, cols]));
}

/// The weights `[channels][taps]` laid tap-major, `[taps][channels]`.
fn tap_major(weight: &[f32], g: &Plane) -> Vec<f32> {
    let taps = g.kernel[0] * g.kernel[1];
    let mut by_tap = vec![0.0f32; weight.len()];
    transpose(weight, taps, &mut by_tap, g.channels, [g.channels, taps]);
    by_tap
}

/// One output pixel's row: `out[c] = Σ_(tap, i) w[tap][c] · x[i][c]` over `taps`, in their
/// order, through [`BLOCK`] running values.
fn scaled_sum(out: &mut [f32], taps: &[(usize, usize)], w: &[f32], x: &[f32]) {
    let c = out.len();
    let mut blocks = out.chunks_exact_mut(BLOCK);
    for (k, block) in (&mut blocks).enumerate() {
        let start = k * BLOCK;
        let mut sums = [0.0f32; BLOCK];
        for &(tap, i) in taps {
            let w: &[f32; BLOCK] = w[tap * c + start..][..BLOCK].try_into().expect("a block");
            let x: &[f32; BLOCK] = x[i * c + start..][..BLOCK].try_into().expect("a block");
            for l in 0..BLOCK {
                sums[l] += w[l] * x[l];
            }
        }
        block.copy_from_slice(&sums);
    }
    let rest = blocks.into_remainder();
    let start = c - rest.len();
    rest.fill(0.0);
    for &(tap, i) in taps {
        let (w, x) = (&w[tap * c + start..], &x[i * c + start..]);
        for ((o, &w), &x) in rest.iter_mut().zip(w).zip(x) {
            *o += w * x;
        }
    }
}

/// The convolution of channel-major `x` (`[batch][channels][h][w]`): the output,
/// channel-major, and `x` pixel-major (`[batch][h * w][channels]`) when `keep_input` (for the
/// backward pass).
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    g: &Plane,
    keep_input: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let c = g.channels;
    let (in_len, out_len) = (c * g.in_plane(), c * g.out_plane());
    let w = tap_major(weight, g);
    let windows = Windows::new(g);
    let kept = keep_input.then(|| {
        let mut x_t = vec![0.0f32; x.len()];
        transpose_samples(x, c, g.in_plane(), &mut x_t);
        x_t
    });
    let mut output = vec![0.0f32; g.batch * out_len];
    output.par_chunks_mut(out_len).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(x_t, out_t), (b, out)| {
            let x_t: &[f32] = match &kept {
                Some(kept) => &kept[b * in_len..][..in_len],
                None => {
                    x_t.resize(in_len, 0.0);
                    transpose(
                        &x[b * in_len..][..in_len],
                        g.in_plane(),
                        x_t,
                        c,
                        [c, g.in_plane()],
                    );
                    x_t
                }
            };
            out_t.resize(out_len, 0.0);
            for (p, row) in out_t.chunks_exact_mut(c).enumerate() {
                scaled_sum(row, windows.of(p), &w, x_t);
            }
            transpose(out_t, c, out, g.out_plane(), [g.out_plane(), c]);
        },
    );
    (output, kept)
}

/// The gradients of the input (channel-major, `[batch][channels][h][w]`) and of the weight
/// (`[channels][taps]`), each when asked, from the output's gradient (channel-major) and the
/// input kept pixel-major by [`forward`].
pub(super) fn backward(
    grad: &[f32],
    x_t: &[f32],
    weight: &[f32],
    g: &Plane,
    [want_input, want_weight]: [bool; 2],
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let c = g.channels;
    let taps_len = g.kernel[0] * g.kernel[1];
    let (in_len, out_len) = (c * g.in_plane(), c * g.out_plane());
    let w = tap_major(weight, g);
    let windows = Windows::new(g);
    let groups = g.batch.div_ceil(SAMPLES_PER_GROUP);
    // Each task: one group of samples, its slice of the input gradient and its partial sums
    // of the weight gradient (empty where not asked for).
    let asked = |want: bool, len: usize| if want { len } else { 0 };
    let mut x_grad = vec![0.0f32; asked(want_input, g.batch * in_len)];
    let mut partial = vec![0.0f32; asked(want_weight, groups * taps_len * c)];
    let tasks: Vec<(usize, &mut [f32], &mut [f32])> = {
        let dx = chunks_or_empty(
            &mut x_grad,
            asked(want_input, SAMPLES_PER_GROUP * in_len),
            groups,
        );
        let dw = chunks_or_empty(&mut partial, asked(want_weight, taps_len * c), groups);
        dx.into_iter()
            .zip(dw)
            .enumerate()
            .map(|(k, (dx, dw))| (k, dx, dw))
            .collect()
    };
    tasks.into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(dy_t, dx_t), (k, dx, dw)| {
            let samples = k * SAMPLES_PER_GROUP..((k + 1) * SAMPLES_PER_GROUP).min(g.batch);
            for (j, b) in samples.enumerate() {
                dy_t.resize(out_len, 0.0);
                let dy = &grad[b * out_len..][..out_len];
                transpose(dy, g.out_plane(), dy_t, c, [c, g.out_plane()]);
                dx_t.clear();
                dx_t.resize(asked(want_input, in_len), 0.0);
                let x_t = &x_t[b * in_len..][..in_len];
                let dw = want_weight.then_some(&mut *dw);
                let dx_rows = want_input.then_some(&mut dx_t[..]);
                sample_backward(dy_t, x_t, &w, (&windows, c), (dx_rows, dw));
                if want_input {
                    let dx = &mut dx[j * in_len..][..in_len];
                    transpose(dx_t, c, dx, g.in_plane(), [g.in_plane(), c]);
                }
            }
        },
    );
    let weight_grad = want_weight.then(|| sum_groups(&partial, taps_len, c));
    (want_input.then_some(x_grad), weight_grad)
}

/// One sample's backward, pixel-major: per output pixel and tap inside the image, the output
/// gradient's row scaled by the tap's weights into the input pixel's gradient (`dx`, zeroed by
/// the caller), and times the input pixel's row into the tap's weight-gradient sums (`dw`).
fn sample_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    (windows, c): (&Windows, usize),
    (mut dx, mut dw): (Option<&mut [f32]>, Option<&mut [f32]>),
) {
    for (p, dy_row) in dy.chunks_exact(c).enumerate() {
        for &(tap, i) in windows.of(p) {
            if let Some(dx) = dx.as_deref_mut() {
                let (dst, w) = (&mut dx[i * c..][..c], &w[tap * c..][..c]);
                for ((d, &w), &v) in dst.iter_mut().zip(w).zip(dy_row) {
                    *d += w * v;
                }
            }
            if let Some(dw) = dw.as_deref_mut() {
                let (dst, x) = (&mut dw[tap * c..][..c], &x[i * c..][..c]);
                for ((d, &x), &v) in dst.iter_mut().zip(x).zip(dy_row) {
                    *d += v * x;
                }
            }
        }
    }
}

/// The groups' weight-gradient sums (`[groups][taps][channels]`) added in group order, laid
/// channel-major (`[channels][taps]`, the weight's layout).
fn sum_groups(partial: &[f32], taps: usize, c: usize) -> Vec<f32> {
    let mut by_tap = vec![0.0f32; taps * c];
    for group in partial.chunks_exact(taps * c) {
        for (sum, &v) in by_tap.iter_mut().zip(group) {
            *sum += v;
        }
    }
    let mut by_channel = vec![0.0f32; taps * c];
    transpose(&by_tap, c, &mut by_channel, taps, [taps, c]);
    by_channel
}

/// `values` cut into `count` chunks of `len` (the last shorter), or `count` empty slices when
/// `len` is 0 (a gradient not asked for).
fn chunks_or_empty(values: &mut [f32], len: usize, count: usize) -> Vec<&mut [f32]> {
    match len {
        0 => (0..count).map(|_| &mut [][..]).collect(),
        len => values.chunks_mut(len).collect(),
    }
}
