//! The pixel-major training convolution's weight gradient (`conv_train.rs`) as a kernel of its
//! own, reading the padded batch and the output's gradient in place.
//!
//! `dW[o][ci][ky][kx] = sum over samples and output pixels (y, x) of dY[o][y][x] *
//! padded[y * s + ky][x * s + kx][ci]` (`s` the stride). In the pixel-major padded batch a
//! window's kernel row, its `kernel * c` values for every `(kx, ci)`, is contiguous: so for
//! one output pixel, one kernel row and `M` output channels, the update is `M` broadcasts of
//! `dY` times `W` registers of that row, `M x W` multiply-adds into accumulators held in
//! registers while the pixels of a sample go by.
//!
//! Through `gemm` the same sums ran as one product per kernel row over every window of the
//! padded rows: the virtual ones too (a row's padding pixels and the padded rows below the
//! image, whose output gradient was spread out as zeros into a copy first), 1.1x the work at
//! 32x32, 1.2x at 16x16, 1.4x at 8x8. Here only real output pixels are visited. On one
//! core, at batch 128 (a test timing this function alone, 2026-12-07): 210 GFLOP/s at
//! ResNet-20's 16 -> 16 layers, 195 at 32 -> 32, 171 at 64 -> 64, against the core's 225;
//! the layers' backward passes went from 10.4 to 9.4, 9.0 to 7.8 and 7.7 to 6.7 ms.
//!
//! Sums run over samples, then output rows, then pixels, in order, whatever the thread count
//! (threads take disjoint output channels).

#[cfg(target_arch = "x86_64")]
use pulp::{cast, f32x16, Simd};
use rayon::prelude::*;

use crate::conv_geometry::Geometry;
use crate::linear::Isa;

/// Longest kernel row (`kernel * c_in` floats) this kernel takes: 3x3 layers of up to 128
/// input channels, 1x1 layers of up to 384. Each tile of output channels reads a sample's windows once per slice of
/// the row, from L2 at these widths, where `gemm` packs them once; wider layers, whose
/// virtual windows `gemm` skips by copying the real ones out (`WindowRows`), keep it. The
/// three layers timed together, forward and backward, this kernel against `gemm`
/// (`CONV_NET=resnet18 cargo test -p kernels --bench conv_train`, 1 thread, 2026-12-07):
/// 256 -> 256 at 14x14 281.8 against 272.0 ms, 512 -> 512 at 7x7 372.4 against 347.5 ms.
const MAX_ROW: usize = 384;

/// Where a tile of `M` output channels times `W` registers of one kernel row's window runs
/// with `M * W` accumulators (20 or 24), `W` loads and a broadcast in registers besides (at
/// most 32 in all), `W` dividing the row's registers. `None` where the row is not a whole
/// number of registers or no `W` divides it, and for tiles narrower than 3 registers unless
/// `n` output channels make whole tiles (leftover channels run one at a time, a load per
/// multiply-add at such widths): the caller keeps `gemm`.
fn tile_shape(row: usize, n: usize) -> Option<(usize, usize)> {
    if row > MAX_ROW || !row.is_multiple_of(16) {
        return None;
    }
    let registers = row / 16;
    let shape = [(4, 6), (8, 3), (4, 5), (6, 4), (12, 2), (24, 1)]
        .into_iter()
        .find(|&(_, w)| registers.is_multiple_of(w))?;
    (shape.1 >= 3 || n.is_multiple_of(shape.0)).then_some(shape)
}

/// Whether [`weight_grad`] runs on a layer of `kernel` x `kernel` over `c_in` channels into
/// `c_out` (where the CPU has AVX-512).
pub(crate) fn takes(kernel: usize, c_in: usize, c_out: usize) -> bool {
    tile_shape(kernel * c_in, c_out).is_some()
}

/// `dW` (`[c_out][c_in][k][k]`, burn's layout) from the output's gradient (`[batch][c_out][oh]
/// [ow]`) and the padded batch (`[batch][hp][wp][c_in]`, `wp` the stored pitch, then the zeros
/// the last windows read past its end), at the layer's stride (the same along both axes);
/// `None` where this kernel does not run (no AVX-512, or no tile for the layer's kernel row
/// and output channels: [`tile_shape`]).
pub(crate) fn weight_grad(
    grad: &[f32],
    padded: &[f32],
    [hp, wp]: [usize; 2],
    g: &Geometry,
) -> Option<Vec<f32>> {
    let simd = Isa::try_new()?;
    let (c, n, k) = (g.c_in, g.c_out, g.kernel[0]);
    let row = k * c;
    let (m, w) = tile_shape(row, n)?;
    let image = Image {
        grad,
        padded,
        c,
        n,
        k,
        stride: g.stride[0],
        out: [g.out_h, g.out_w],
        hp,
        wp,
    };
    // Per output channel, per kernel row, the window row: `[n][k][k * c]`.
    let per_channel = k * row;
    let mut sums = vec![0.0f32; n * per_channel];
    // Output channels in whole tiles, split among the pool's threads; each thread goes
    // through the samples in order, so a sample's padded rows are read from its core's cache
    // by every tile of its share.
    let blocks = n.div_ceil(m);
    // Samples per tile: enough output pixels for the accumulators' loads and stores, and each
    // call's setup, to be a small part of the tile's work.
    let group = TILE_PIXELS.div_ceil(g.out_h * g.out_w).min(g.batch);
    let per_thread = blocks.div_ceil(rayon::current_num_threads().min(blocks)) * m;
    sums.par_chunks_mut(per_thread * per_channel)
        .enumerate()
        .for_each(|(t, share)| {
            let first = t * per_thread;
            for b in (0..g.batch).step_by(group) {
                let images = b..(b + group).min(g.batch);
                for (i, tile) in share.chunks_mut(m * per_channel).enumerate() {
                    let o = first + i * m;
                    let outputs = tile.len() / per_channel;
                    image.accumulate(simd, (images.clone(), o, outputs), (m, w), tile);
                }
            }
        });
    Some(burns_layout(&sums, [n, c, k]))
}

/// Fewest output pixels a tile sums over per call (several samples' at small images).
const TILE_PIXELS: usize = 256;

/// One layer's inputs to the weight gradient.
struct Image<'a> {
    grad: &'a [f32],
    padded: &'a [f32],
    c: usize,
    n: usize,
    k: usize,
    stride: usize,
    out: [usize; 2],
    hp: usize,
    wp: usize,
}

impl Image<'_> {
    /// Samples `images`' contribution for output channels `o..o + outputs` added into `sums`
    /// (`[outputs][k][k * c]`), in tiles of `m` channels (fewer for the last ones) by `w`
    /// registers.
    fn accumulate(
        &self,
        simd: Isa,
        (images, o, outputs): (std::ops::Range<usize>, usize, usize),
        (m, w): (usize, usize),
        sums: &mut [f32],
    ) {
        let (c, k, s) = (self.c, self.k, self.stride);
        let [oh, ow] = self.out;
        let row = k * c;
        let plane = oh * ow;
        let lanes = w * 16;
        let (b, count) = (images.start, images.len());
        let (image, sample) = (self.hp * self.wp * c, self.n * plane);
        // The floats a tile reads from its first window: the last window's last register.
        let span = (count - 1) * image + ((oh - 1) * self.wp + ow - 1) * s * c + lanes;
        for ky in 0..k {
            let first_row = (b * self.hp + ky) * self.wp * c;
            for j in (0..row).step_by(lanes) {
                let windows = &self.padded[first_row + j..][..span];
                let mut start = 0;
                while start < outputs {
                    let channels = if outputs - start >= m { m } else { 1 };
                    let first = (b * self.n + o + start) * plane;
                    let grads = &self.grad[first..][..(count - 1) * sample + channels * plane];
                    let at = (start * k + ky) * row + j;
                    let tile = Tile {
                        simd,
                        windows,
                        grads,
                        images: (count, image, sample),
                        step: s * self.wp * c,
                        pixel: s * c,
                        out: self.out,
                        sums: &mut sums[at..],
                        sums_step: k * row,
                    };
                    tile.run(channels, w);
                    start += channels;
                }
            }
        }
    }
}

/// `M` output channels' sums over a group of samples for one register-aligned slice of a
/// kernel row.
struct Tile<'a> {
    simd: Isa,
    /// From the first output pixel's window (at this slice of the row).
    windows: &'a [f32],
    /// The `M` channels' output gradients, `[M][oh][ow]` per sample.
    grads: &'a [f32],
    /// Samples, and the floats between one's windows and the next's, and between one's
    /// output gradients and the next's.
    images: (usize, usize, usize),
    /// Floats between the windows of one output row and the next.
    step: usize,
    /// Floats between one output pixel's window and the next's: the stride times the
    /// channel count.
    pixel: usize,
    out: [usize; 2],
    /// Channel `m`'s sums at `m * sums_step`, `W * 16` of them, added to.
    sums: &'a mut [f32],
    sums_step: usize,
}

impl Tile<'_> {
    #[cfg(target_arch = "x86_64")]
    fn run(self, m: usize, w: usize) {
        match (m, w) {
            (4, 6) => self.simd.vectorize(Kernel::<4, 6>(self)),
            (1, 6) => self.simd.vectorize(Kernel::<1, 6>(self)),
            (8, 3) => self.simd.vectorize(Kernel::<8, 3>(self)),
            (1, 3) => self.simd.vectorize(Kernel::<1, 3>(self)),
            (4, 5) => self.simd.vectorize(Kernel::<4, 5>(self)),
            (1, 5) => self.simd.vectorize(Kernel::<1, 5>(self)),
            (6, 4) => self.simd.vectorize(Kernel::<6, 4>(self)),
            (1, 4) => self.simd.vectorize(Kernel::<1, 4>(self)),
            (12, 2) => self.simd.vectorize(Kernel::<12, 2>(self)),
            (24, 1) => self.simd.vectorize(Kernel::<24, 1>(self)),
            _ => unreachable!("no {m} x {w} tile (`tile_shape`)"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run(self, _m: usize, _w: usize) {
        unreachable!("no tile runs without the micro-kernel's instruction set")
    }
}

#[cfg(target_arch = "x86_64")]
struct Kernel<'a, const M: usize, const W: usize>(Tile<'a>);

#[cfg(target_arch = "x86_64")]
impl<const M: usize, const W: usize> pulp::NullaryFnOnce for Kernel<'_, M, W> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Tile {
            simd,
            windows,
            grads,
            images: (count, image, sample),
            step,
            pixel,
            out: [oh, ow],
            sums,
            sums_step,
        } = self.0;
        let register = |values: &[f32], at: usize| -> f32x16 {
            cast(*<&[f32; 16]>::try_from(&values[at..][..16]).expect("16 lanes"))
        };
        let mut acc: [[f32x16; W]; M] = std::array::from_fn(|i| {
            std::array::from_fn(|j| register(sums, i * sums_step + j * 16))
        });
        for (b, y) in (0..count).flat_map(|b| (0..oh).map(move |y| (b, y))) {
            let windows = &windows[b * image + y * step..];
            let grads = &grads[b * sample..];
            let grads: [&[f32]; M] = std::array::from_fn(|i| &grads[(i * oh + y) * ow..][..ow]);
            for x in 0..ow {
                let window = &windows[x * pixel..][..W * 16];
                let v: [f32x16; W] = std::array::from_fn(|j| register(window, j * 16));
                for i in 0..M {
                    let a = simd.splat_f32s(grads[i][x]);
                    for j in 0..W {
                        acc[i][j] = simd.mul_add_f32s(a, v[j], acc[i][j]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (j, v) in acc.iter().enumerate() {
                let v: [f32; 16] = cast(*v);
                sums[i * sums_step + j * 16..][..16].copy_from_slice(&v);
            }
        }
    }
}

/// `[n][k][k][c]` (per output channel, kernel row, column, input channel) into burn's
/// `[n][c][k][k]`.
fn burns_layout(sums: &[f32], [n, c, k]: [usize; 3]) -> Vec<f32> {
    let mut weight_grad = vec![0.0f32; n * c * k * k];
    for (dst, src) in weight_grad
        .chunks_exact_mut(c * k * k)
        .zip(sums.chunks_exact(k * k * c))
    {
        for (at, &v) in src.iter().enumerate() {
            let (ci, kxy) = (at % c, at / c);
            dst[ci * k * k + kxy] = v;
        }
    }
    weight_grad
}
