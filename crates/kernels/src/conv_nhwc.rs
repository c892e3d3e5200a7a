//! Float convolutions for inference on pixel-major (NHWC) images, windows read in place, with
//! BatchNorm and ReLU applied on the tile before it leaves the registers.
//!
//! The training convolution (`conv.rs`) unfolds each sample (im2col) and multiplies in `gemm`:
//! the columns are `kernel²` times the image, written then read back, and BatchNorm, ReLU and
//! pooling each make one more pass over the channel-major output. At inference the weights are
//! fixed, so they are packed once, `[panel of 16, 32 or 64 outputs][kernel row][kernel
//! column][channel][panel]`, and the image is kept pixel-major with a border of zeros: a
//! window's row is then `kernel * channels` consecutive floats of the padded image, so a tile
//! of output pixels reads its windows where they lie (the integer kernels' layout,
//! `int8::Rows`). For stride 1 the output pixels of a whole image are consecutive windows when
//! the padded image's border columns are computed too ("virtual" pixels, 2 per row of a 3x3
//! layer, then skipped), so tiles run across rows instead of stopping at each row's end.
//!
//! The micro-kernel holds `12 pixels x 32 outputs` (or `6 x 64` for wider layers) in 24 AVX-512
//! registers and adds one rank-1 update per window element (a broadcast input times the panel's
//! weight registers); its epilogue is `max(0, sum * scale + shift)` per output channel (a
//! BatchNorm's running statistics and the convolution's bias folded into `scale` and `shift`
//! at packing). Sums run in window order, so results do not depend on the thread count; they
//! differ from burn's (im2col, its own summation order, BatchNorm unfolded) by float rounding
//! only (tests bound it).
//!
//! [`PackedConv`] picks one of three kernels per layer: the direct one above (`direct.rs`),
//! Winograd's F(2x2, 3x3) for wide 3x3 stride-1 layers (`winograd.rs`), and, for a first
//! layer of one channel and few outputs, one vectorised over pixels (`planar.rs`); images,
//! layer descriptions and pooling are `pixels.rs`. Where each pays is measured by
//! `cargo test -p kernels --bench conv` (benches/README.md).

use crate::direct::DirectConv;
use crate::linear::Isa;
use crate::pixels::{grown, pad_image, ConvWeights, Pixels};
use crate::planar::Planar;
use crate::winograd::Winograd;

/// A convolution (one group, dilation 1, square kernel and stride, symmetric zero padding)
/// with its per-channel affine and ReLU, packed for [`PackedConv::forward`].
#[derive(Debug, Clone)]
pub struct PackedConv {
    direct: DirectConv,
    /// A one-channel, stride-1 layer vectorised over pixels (`planar.rs`).
    planar: Option<Box<Planar>>,
    /// The Winograd form of a 3x3, stride-1 layer wide enough for it to pay (the direct
    /// panels are kept too, for images too large for it).
    winograd: Option<Box<Winograd>>,
}

/// A 3x3, stride-1 layer runs as Winograd's F(2x2, 3x3) when its input times output channels
/// reach this and its transformed blocks fit [`WINOGRAD_MAX_BYTES`]. Its products sum over `c`
/// channels per block, short runs for the micro-kernel, and its transforms cost per channel,
/// so narrow layers keep the direct kernel. Measured (`cargo test -p kernels --bench conv`,
/// 1 thread, 2026-12-06): Winograd 1.5x the direct kernel at 14x14 32 -> 64 and 64 -> 64, tied
/// at 28x28 32 -> 32, slower at 16 channels.
pub const WINOGRAD_MIN_CHANNEL_PRODUCT: usize = 2048;

/// The most bytes an image's transformed blocks and products may take for Winograd (the
/// direct kernel reads the image in place): at 56x56 64 -> 64 (6.4 MB, past the core's L2)
/// the two tie.
pub const WINOGRAD_MAX_BYTES: usize = 4 << 20;

impl PackedConv {
    /// `None` on a CPU without AVX-512, for a non-square kernel or empty shapes. A 3x3,
    /// stride-1 layer of at least [`WINOGRAD_MIN_CHANNEL_PRODUCT`] channel pairs runs as
    /// Winograd's F(2x2, 3x3) (`winograd.rs`) on images whose blocks fit
    /// [`WINOGRAD_MAX_BYTES`].
    ///
    /// # Panics
    /// If the slices do not match the shape.
    pub fn new(layer: ConvWeights) -> Option<Self> {
        let winograd = Self::winograd_layer(&layer);
        let mut packed = Self::direct(ConvWeights { ..layer })?;
        packed.planar = Planar::new(&layer, packed.simd()).map(Box::new);
        if winograd {
            packed.winograd = Some(Box::new(Winograd::new(&layer)?));
        }
        Some(packed)
    }

    /// [`Self::new`] for images of one size (`[h, w]`): where Winograd runs on them, the
    /// direct panels are left out (the training convolution packs its weights every step, and
    /// at ResNet-18's 512 channels packing both forms was an eighth of the step).
    pub(crate) fn for_image(layer: ConvWeights, [h, w]: [usize; 2]) -> Option<Self> {
        let [n, c, _, _] = layer.shape;
        let winograd = Self::winograd_layer(&layer)
            && Self::winograd_fits(
                c,
                n,
                crate::window_out(h, layer.window),
                crate::window_out(w, layer.window),
            );
        if !winograd {
            return Self::new(layer);
        }
        Some(Self {
            direct: DirectConv::unpacked(&layer)?,
            planar: None,
            winograd: Some(Box::new(Winograd::new(&layer)?)),
        })
    }

    /// Whether a layer has a Winograd form: 3x3, stride 1, enough channel pairs.
    fn winograd_layer(layer: &ConvWeights) -> bool {
        let [n, c, kernel, _] = layer.shape;
        kernel == 3 && layer.window[..2] == [3, 1] && c * n >= WINOGRAD_MIN_CHANNEL_PRODUCT
    }

    /// Whether an `[oh, ow]` output's transformed blocks fit [`WINOGRAD_MAX_BYTES`].
    fn winograd_fits(c: usize, n: usize, oh: usize, ow: usize) -> bool {
        let blocks = oh.div_ceil(2) * ow.div_ceil(2);
        16 * blocks * (c + n) * 4 <= WINOGRAD_MAX_BYTES
    }

    /// [`Self::new`] on the direct kernel whatever the shape (to compare the two).
    pub fn direct(layer: ConvWeights) -> Option<Self> {
        Some(Self {
            direct: DirectConv::new(layer)?,
            planar: None,
            winograd: None,
        })
    }

    /// The instruction set it was packed for.
    pub(crate) fn simd(&self) -> Isa {
        self.direct.simd
    }

    /// Whether the layer has Winograd's F(2x2, 3x3) form (run for images whose blocks fit
    /// [`WINOGRAD_MAX_BYTES`]).
    pub fn is_winograd(&self) -> bool {
        self.winograd.is_some()
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.direct.n
    }

    /// Input channels.
    pub fn c(&self) -> usize {
        self.direct.c
    }

    /// The output's `[h, w]` for an input of `[h, w]`.
    pub fn output(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        let d = &self.direct;
        let window = [d.kernel, d.stride, d.padding];
        [crate::window_out(h, window), crate::window_out(w, window)]
    }

    /// One sample: `x` laid out as `input` says (`input.c` must be [`Self::c`]) through the
    /// convolution, its affine and ReLU into `out`, laid out as the returned [`Pixels`] say.
    /// `padded` is scratch the caller keeps between calls.
    ///
    /// # Panics
    /// If `x` is shorter than `input` says or has other channels.
    pub fn forward(
        &self,
        x: &[f32],
        input: Pixels,
        padded: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Pixels {
        assert!(
            input.c == self.c() && x.len() >= input.len(),
            "input {input:?}"
        );
        let [oh, ow] = self.output([input.h, input.w]);
        if let Some(planar) = self.planar.as_ref().filter(|_| oh > 0 && ow > 0) {
            return planar.forward(x, input, padded, out);
        }
        let (c, p) = (self.c(), self.direct.padding);
        let ([hp, wp], winograd) = self.padded_size([input.h, input.w]);
        let padded = grown(padded, hp * wp * c);
        pad_image(padded, [input.h, input.w, c], p, [hp, wp], |y, row| {
            row.copy_from_slice(&x[y * input.pitch * c..][..input.w * c])
        });
        self.run_padded(padded, ([oh, ow], wp), winograd, out)
    }

    /// The `[height, width]` in pixels of the zero-padded image [`Self::run_padded`] reads for
    /// an `[h, w]` input (the padding on every side; for Winograd, whole 4x4 input blocks for
    /// every 2x2 output block, zeros past the image), and whether Winograd runs on it.
    pub(crate) fn padded_size(&self, [h, w]: [usize; 2]) -> ([usize; 2], bool) {
        let p = self.direct.padding;
        let [oh, ow] = self.output([h, w]);
        let (mut hp, mut wp) = (h + 2 * p, w + 2 * p);
        let winograd = self.winograd.is_some() && Self::winograd_fits(self.c(), self.n(), oh, ow);
        if winograd {
            hp = hp.max(oh.div_ceil(2) * 2 + 2);
            wp = wp.max(ow.div_ceil(2) * 2 + 2);
        }
        ([hp, wp], winograd)
    }

    /// The output `[oh][ow][n]` of one image already padded as [`Self::padded_size`] says
    /// (`wp` pixels per row; `winograd` as it returned) into `out`, laid out as the returned
    /// [`Pixels`] say. `wp` may be less than the padded width by up to the padding: the reads
    /// past a row's end then take the next row's first pixels, which must be zero (its left
    /// padding standing for this row's right one; `conv_train.rs`).
    pub(crate) fn run_padded(
        &self,
        padded: &[f32],
        ([oh, ow], wp): ([usize; 2], usize),
        winograd: bool,
        out: &mut Vec<f32>,
    ) -> Pixels {
        if oh == 0 || ow == 0 {
            out.clear();
            return Pixels::dense(oh, ow, self.n());
        }
        match self.winograd.as_ref().filter(|_| winograd) {
            Some(winograd) => winograd.forward(padded, ([oh, ow], wp), out),
            None => self.direct.run_padded(padded, ([oh, ow], wp), out),
        }
    }

    /// [`Self::run_padded`] through Winograd (where [`Self::padded_size`] said it runs) for
    /// `count` images `stride` floats apart in `padded`, their outputs one after another in
    /// `out`, each laid out as the returned [`Pixels`] say: each of Winograd's products runs
    /// over all their blocks at once.
    ///
    /// # Panics
    /// If the layer has no Winograd form.
    pub(crate) fn run_winograd_many(
        &self,
        padded: &[f32],
        images: (usize, usize),
        size: ([usize; 2], usize),
        out: &mut Vec<f32>,
    ) -> Pixels {
        let winograd = self
            .winograd
            .as_ref()
            .expect("a layer with a Winograd form");
        winograd.forward_many(padded, images, size, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The plain definition: `[h][w][c]` in, `[oh][ow][n]` out.
    fn reference(x: &[f32], [h, w, c]: [usize; 3], layer: &ConvWeights) -> Vec<f32> {
        let [n, _, k, _] = layer.shape;
        let [_, stride, pad] = layer.window;
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let mut out = vec![0.0; oh * ow * n];
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..n {
                    let mut sum = 0.0f64;
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (y, xx) = (oy * stride + ky, ox * stride + kx);
                                if y < pad || xx < pad || y - pad >= h || xx - pad >= w {
                                    continue;
                                }
                                let v = x[((y - pad) * w + xx - pad) * c + ci] as f64;
                                sum += v * layer.weight[((o * c + ci) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                    let y = sum as f32 * layer.scale[o] + layer.shift[o];
                    out[(oy * ow + ox) * n + o] = if layer.relu { y.max(0.0) } else { y };
                }
            }
        }
        out
    }

    /// Against the plain definition at shapes off every tile and panel size, stride 1 (the
    /// virtual pixels) and 2, with and without padding and ReLU, and from an input with a
    /// pitch wider than its rows (the layout a stride-1 layer leaves).
    #[test]
    fn convolutions_compute_the_definition() {
        if Isa::try_new().is_none() {
            return; // nothing is packed: callers keep burn's convolution
        }
        for (i, &(h, w, c, n, k, stride, pad, relu)) in [
            (5, 7, 3, 20, 3, 1, 1, true),
            (14, 14, 6, 16, 5, 1, 0, true),
            (8, 9, 4, 40, 3, 2, 1, false),
            (28, 28, 1, 32, 3, 1, 1, true),
            (3, 3, 2, 5, 3, 1, 1, false),
            (7, 7, 64, 70, 1, 1, 0, true),
            // 3x3 stride 1, rows of whole 12-pixel tiles, one- and two-register panels.
            (20, 20, 16, 16, 3, 1, 1, true),
            (13, 30, 8, 32, 3, 1, 1, false),
            // Winograd: even and odd outputs, padded or not, one panel or several.
            (7, 9, 32, 64, 3, 1, 1, true),
            (14, 14, 64, 40, 3, 1, 1, true),
            (5, 6, 64, 70, 3, 1, 0, false),
            (1, 1, 256, 8, 3, 1, 1, true),
            // One input channel, vectorised over pixels: LeNet-5's first layer, rows of more
            // than one tile, fewer pixels than a tile.
            (28, 28, 1, 6, 5, 1, 2, true),
            (9, 40, 1, 10, 5, 1, 2, false),
            (5, 3, 1, 17, 3, 1, 0, true),
        ]
        .iter()
        .enumerate()
        {
            let weight = values(n * c * k * k, i as u64);
            let scale = values(n, 100 + i as u64);
            let shift = values(n, 200 + i as u64);
            let layer = ConvWeights {
                weight: &weight,
                shape: [n, c, k, k],
                window: [k, stride, pad],
                scale: &scale,
                shift: &shift,
                relu,
            };
            let x = values(h * w * c, 300 + i as u64);
            let expected = reference(&x, [h, w, c], &layer);
            let winograd = k == 3 && stride == 1 && c * n >= WINOGRAD_MIN_CHANNEL_PRODUCT;
            let direct = PackedConv::direct(ConvWeights { ..layer }).expect("AVX-512");
            let packed = PackedConv::new(layer).expect("AVX-512");
            assert_eq!(packed.is_winograd(), winograd, "case {i}");
            // The input dense, and with two columns of garbage after each row.
            let pitch = w + 2;
            let mut wide = vec![f32::NAN; h * pitch * c];
            for y in 0..h {
                wide[y * pitch * c..][..w * c].copy_from_slice(&x[y * w * c..][..w * c]);
            }
            let inputs = [
                (&x, Pixels::dense(h, w, c)),
                (&wide, Pixels { h, w, c, pitch }),
            ];
            for ((input, layout), packed) in inputs
                .into_iter()
                .flat_map(|i| [(i, &packed), (i, &direct)])
            {
                let (mut padded, mut out) = (Vec::new(), Vec::new());
                let o = packed.forward(input, layout, &mut padded, &mut out);
                assert_eq!([o.h, o.w, o.c], [expected.len() / (o.w * n), o.w, n]);
                for oy in 0..o.h {
                    for ox in 0..o.w {
                        let got = &out[(oy * o.pitch + ox) * n..][..n];
                        let want = &expected[(oy * o.w + ox) * n..][..n];
                        for (g, e) in got.iter().zip(want) {
                            assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "case {i} {g} {e}");
                        }
                    }
                }
            }
        }
    }
}
