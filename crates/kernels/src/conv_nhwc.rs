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

#[cfg(target_arch = "x86_64")]
use pulp::{cast, f32x16, Simd};

use crate::linear::Isa;
use crate::planar::Planar;
use crate::winograd::Winograd;

/// Output channels per panel at most (four 16-lane registers).
const PANEL: usize = 64;
/// Output pixels per tile at most: 12 x 2 registers = 24 accumulators of the 32 (6 x 4 for
/// panels of four registers).
const TILE: usize = 12;

/// Pixels per tile for panels of `width` registers.
fn tile_rows(width: usize) -> usize {
    match width {
        4 => 6,
        _ => TILE,
    }
}

/// A pixel-major image: `h` rows of `pitch` pixels (the first `w` real), `c` floats each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pixels {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Pixels per stored row (at least `w`).
    pub pitch: usize,
}

impl Pixels {
    /// A dense image (pitch `w`).
    pub fn dense(h: usize, w: usize, c: usize) -> Self {
        Self { h, w, c, pitch: w }
    }

    /// Floats the image spans.
    pub fn len(&self) -> usize {
        match self.h {
            0 => 0,
            h => ((h - 1) * self.pitch + self.w) * self.c,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first `len` values of `buffer`, grown to hold them (never shrunk: a chain's buffers
/// hold layers of different sizes in turn, and growing one back would zero it each time, 7% of
/// the VGG's inference).
pub(crate) fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// A convolution (one group, dilation 1, square kernel and stride, symmetric zero padding)
/// with its per-channel affine and ReLU, packed for [`PackedConv::forward`].
#[derive(Debug, Clone)]
pub struct PackedConv {
    n: usize,
    c: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// Registers per panel: 1 (layers of up to 16 outputs) or 2.
    width: usize,
    /// `[panels][kernel * kernel * c][width * 16]`, outputs past `n` zero.
    panels: Vec<f32>,
    /// Per output channel, padded to whole panels.
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
    simd: Isa,
    /// A one-channel, stride-1 layer vectorised over pixels (`planar.rs`).
    planar: Option<Box<Planar>>,
    /// The Winograd form of a 3x3, stride-1 layer wide enough for it to pay.
    /// (`direct`'s panels are kept too, for images too large for it.)
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

/// What [`PackedConv::new`] packs: the weight `[n, c, kernel, kernel]` (burn's layout), the
/// window `[kernel, stride, padding]`, the affine `y = sum * scale + shift` per output channel,
/// and whether ReLU follows.
pub struct ConvWeights<'a> {
    pub weight: &'a [f32],
    pub shape: [usize; 4],
    pub window: [usize; 3],
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

impl PackedConv {
    /// `None` on a CPU without AVX-512, for a non-square kernel or empty shapes. A 3x3,
    /// stride-1 layer of at least [`WINOGRAD_MIN_CHANNEL_PRODUCT`] channel pairs runs as
    /// Winograd's F(2x2, 3x3) (`winograd.rs`) on images whose blocks fit
    /// [`WINOGRAD_MAX_BYTES`].
    ///
    /// # Panics
    /// If the slices do not match the shape.
    pub fn new(layer: ConvWeights) -> Option<Self> {
        let [n, c, kernel, _] = layer.shape;
        let winograd =
            kernel == 3 && layer.window[..2] == [3, 1] && c * n >= WINOGRAD_MIN_CHANNEL_PRODUCT;
        let mut packed = Self::direct(ConvWeights { ..layer })?;
        packed.planar = Planar::new(&layer, packed.simd).map(Box::new);
        if winograd {
            packed.winograd = Some(Box::new(Winograd::new(&layer)?));
        }
        Some(packed)
    }

    /// [`Self::new`] on the direct kernel whatever the shape (to compare the two).
    pub fn direct(layer: ConvWeights) -> Option<Self> {
        let [n, c, kh, kw] = layer.shape;
        let [kernel, stride, padding] = layer.window;
        assert_eq!(
            layer.weight.len(),
            n * c * kh * kw,
            "weight of {:?}",
            layer.shape
        );
        assert!(
            layer.scale.len() == n && layer.shift.len() == n,
            "an affine per output"
        );
        let simd = Isa::try_new()?;
        if n == 0 || c == 0 || kh != kw || kh != kernel || kernel == 0 || stride == 0 {
            return None;
        }
        let width = match n {
            0..=16 => 1,
            17..=32 => 2,
            _ => 4,
        };
        let lanes = width * 16;
        let panels_n = n.div_ceil(lanes);
        let k = kernel * kernel * c;
        let mut panels = vec![0.0f32; panels_n * k * lanes];
        for o in 0..n {
            let (p, lane) = (o / lanes, o % lanes);
            for ci in 0..c {
                for ky in 0..kernel {
                    for kx in 0..kernel {
                        let from = ((o * c + ci) * kernel + ky) * kernel + kx;
                        let at = (ky * kernel + kx) * c + ci;
                        panels[(p * k + at) * lanes + lane] = layer.weight[from];
                    }
                }
            }
        }
        let padded = |v: &[f32]| {
            let mut out = v.to_vec();
            out.resize(panels_n * lanes, 0.0);
            out
        };
        Some(Self {
            n,
            c,
            kernel,
            stride,
            padding,
            width,
            panels,
            scale: padded(layer.scale),
            shift: padded(layer.shift),
            relu: layer.relu,
            simd,
            planar: None,
            winograd: None,
        })
    }

    /// The instruction set it was packed for.
    pub(crate) fn simd(&self) -> Isa {
        self.simd
    }

    /// Whether the layer has Winograd's F(2x2, 3x3) form (run for images whose blocks fit
    /// [`WINOGRAD_MAX_BYTES`]).
    pub fn is_winograd(&self) -> bool {
        self.winograd.is_some()
    }

    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input channels.
    pub fn c(&self) -> usize {
        self.c
    }

    /// The output's `[h, w]` for an input of `[h, w]`.
    pub fn output(&self, [h, w]: [usize; 2]) -> [usize; 2] {
        let window = [self.kernel, self.stride, self.padding];
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
            input.c == self.c && x.len() >= input.len(),
            "input {input:?}"
        );
        let [oh, ow] = self.output([input.h, input.w]);
        if let Some(planar) = self.planar.as_ref().filter(|_| oh > 0 && ow > 0) {
            return planar.forward(x, input, padded, out);
        }
        let (c, p) = (self.c, self.padding);
        let (mut hp, mut wp) = (input.h + 2 * p, input.w + 2 * p);
        let blocks = oh.div_ceil(2) * ow.div_ceil(2);
        let winograd = self
            .winograd
            .as_ref()
            .filter(|_| 16 * blocks * (c + self.n) * 4 <= WINOGRAD_MAX_BYTES);
        if winograd.is_some() {
            // Whole 4x4 input blocks for every 2x2 output block, zeros past the image.
            hp = hp.max(oh.div_ceil(2) * 2 + 2);
            wp = wp.max(ow.div_ceil(2) * 2 + 2);
        }
        // Only the border is zeroed: the interior is overwritten (a buffer this size is
        // written twice otherwise, a tenth of a layer's time at these widths).
        let padded = grown(padded, hp * wp * c);
        padded[..p * wp * c].fill(0.0);
        padded[(p + input.h) * wp * c..].fill(0.0);
        for y in 0..input.h {
            let row = &mut padded[(y + p) * wp * c..][..wp * c];
            row[..p * c].fill(0.0);
            row[(p + input.w) * c..].fill(0.0);
            let src = &x[y * input.pitch * c..][..input.w * c];
            row[p * c..][..input.w * c].copy_from_slice(src);
        }
        if oh == 0 || ow == 0 {
            out.clear();
            return Pixels::dense(oh, ow, self.n);
        }
        if let Some(winograd) = winograd {
            return winograd.forward(padded, ([oh, ow], wp), out);
        }
        let window_row = wp * c;
        // Rows wider than a tile run across rows over the padded width; a row that fits one
        // tile runs alone (the padded width's extra pixels would be a third more work for
        // LeNet-5's second layer, 10 outputs per row of 14).
        if self.stride == 1 && ow > tile_rows(self.width) {
            // Every output pixel of the padded width: window `i` starts at pixel `i`.
            let pixels = (oh - 1) * wp + ow;
            // Every pixel read later is written (the virtual ones are never read).
            let out = grown(out, oh * wp * self.n);
            self.pixels(padded, (c, window_row), pixels, out);
            Pixels {
                h: oh,
                w: ow,
                c: self.n,
                pitch: wp,
            }
        } else {
            let out = grown(out, oh * ow * self.n);
            for oy in 0..oh {
                let first = &padded[oy * self.stride * window_row..];
                let dst = &mut out[oy * ow * self.n..][..ow * self.n];
                self.pixels(first, (self.stride * c, window_row), ow, dst);
            }
            Pixels::dense(oh, ow, self.n)
        }
    }

    /// `pixels` output pixels whose windows start `step` floats apart in `x` (window rows
    /// `window_row` apart), written `n` floats apart into `out`.
    pub(crate) fn pixels(
        &self,
        x: &[f32],
        (step, window_row): (usize, usize),
        pixels: usize,
        out: &mut [f32],
    ) {
        let lanes = self.width * 16;
        let k = self.kernel * self.kernel * self.c;
        let span = (self.kernel - 1) * window_row + self.kernel * self.c;
        for (p, panel) in self.panels.chunks_exact(k * lanes).enumerate() {
            let c0 = p * lanes;
            let columns = c0..(c0 + lanes).min(self.n);
            let mut i = 0;
            while i < pixels {
                let rows = tile_rows(self.width).min(pixels - i);
                let tile = Tile {
                    simd: self.simd,
                    x: &x[i * step..][..(rows - 1) * step + span],
                    step,
                    window_row,
                    segment: self.kernel * self.c,
                    kernel: self.kernel,
                    panel,
                    scale: &self.scale[c0..][..lanes],
                    shift: &self.shift[c0..][..lanes],
                    out: &mut out[i * self.n..][..rows * self.n],
                    n: self.n,
                    columns: columns.clone(),
                    relu: self.relu,
                };
                tile.run(rows, self.width);
                i += rows;
            }
        }
    }
}

/// Up to [`TILE`] output pixels times one panel.
struct Tile<'a> {
    simd: Isa,
    /// From the first pixel's window.
    x: &'a [f32],
    step: usize,
    window_row: usize,
    /// `kernel * c`: one window row.
    segment: usize,
    kernel: usize,
    /// `[kernel * segment][width * 16]`
    panel: &'a [f32],
    scale: &'a [f32],
    shift: &'a [f32],
    /// `[rows][n]`
    out: &'a mut [f32],
    n: usize,
    columns: std::ops::Range<usize>,
    relu: bool,
}

impl Tile<'_> {
    /// Runs the micro-kernel for `rows` pixels and `width` registers per panel, with AVX-512
    /// enabled (pulp's `vectorize` compiles the inlined body for the `V4` target features).
    #[cfg(target_arch = "x86_64")]
    fn run(self, rows: usize, width: usize) {
        // A whole tile whose windows are a common channel count apart gets that distance as a
        // constant: each pixel's load is then one address off the first (an immediate
        // offset), where a run-time distance made the compiler chain eleven additions per
        // step of the loop, which measured 1.2x slower.
        macro_rules! whole {
            ($r:literal, $w:literal, $($step:literal)*) => {
                match self.step {
                    $($step => return self.simd.vectorize(Kernel::<$r, $w, $step>(self)),)*
                    _ => {}
                }
            };
        }
        match (rows, width) {
            (12, 1) => whole!(12, 1, 8 16 32 64 128),
            (12, 2) => whole!(12, 2, 8 16 32 64 128),
            (6, 4) => whole!(6, 4, 8 16 32 64 128),
            _ => {}
        }
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match (rows, width) {
                    $(($r, 1) => self.simd.vectorize(Kernel::<$r, 1, 0>(self)),)*
                    $(($r, 2) => self.simd.vectorize(Kernel::<$r, 2, 0>(self)),)*
                    (1, _) => self.simd.vectorize(Kernel::<1, 4, 0>(self)),
                    (2, _) => self.simd.vectorize(Kernel::<2, 4, 0>(self)),
                    (3, _) => self.simd.vectorize(Kernel::<3, 4, 0>(self)),
                    (4, _) => self.simd.vectorize(Kernel::<4, 4, 0>(self)),
                    (5, _) => self.simd.vectorize(Kernel::<5, 4, 0>(self)),
                    (6, _) => self.simd.vectorize(Kernel::<6, 4, 0>(self)),
                    _ => unreachable!("tiles have 1 to {TILE} rows"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run(self, _rows: usize, _width: usize) {
        unreachable!("nothing is packed without the micro-kernel's instruction set")
    }
}

#[cfg(target_arch = "x86_64")]
/// `STEP`: the distance between windows when it is a constant, else 0.
struct Kernel<'a, const ROWS: usize, const WIDTH: usize, const STEP: usize>(Tile<'a>);

#[cfg(target_arch = "x86_64")]
impl<const ROWS: usize, const WIDTH: usize, const STEP: usize> pulp::NullaryFnOnce
    for Kernel<'_, ROWS, WIDTH, STEP>
{
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Tile {
            simd,
            x,
            step,
            window_row,
            segment,
            kernel,
            panel,
            scale,
            shift,
            out,
            n,
            columns,
            relu,
        } = self.0;
        let step = if STEP > 0 { STEP } else { step };
        let lanes = WIDTH * 16;
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero; WIDTH]; TILE];
        for ky in 0..kernel {
            // Each pixel's window row sliced to exactly `segment` floats (pixels past `ROWS`
            // are empty and never read).
            let rows: [&[f32]; TILE] = std::array::from_fn(|r| {
                if r < ROWS {
                    &x[r * step + ky * window_row..][..segment]
                } else {
                    &[]
                }
            });
            let weights = &panel[ky * segment * lanes..][..segment * lanes];
            for (i, w) in (0..segment).zip(weights.chunks_exact(lanes)) {
                let w: [f32x16; WIDTH] = std::array::from_fn(|j| {
                    cast(*<&[f32; 16]>::try_from(&w[j * 16..][..16]).expect("16 lanes"))
                });
                // The pixels written out with constant indices, so the accumulators stay in
                // registers whatever the unrolling (as in `linear.rs`).
                macro_rules! update_rows {
                    ($($r:literal)*) => {$(
                        if $r < ROWS {
                            let a = simd.splat_f32s(rows[$r][i]);
                            for j in 0..WIDTH {
                                acc[$r][j] = simd.mul_add_f32s(a, w[j], acc[$r][j]);
                            }
                        }
                    )*};
                }
                update_rows!(0 1 2 3 4 5 6 7 8 9 10 11);
            }
        }
        let width = columns.len();
        for (r, acc) in acc[..ROWS].iter().enumerate() {
            let mut values = [0.0f32; PANEL];
            for (j, v) in acc.iter().enumerate() {
                let s: f32x16 = cast(*<&[f32; 16]>::try_from(&scale[j * 16..][..16]).expect("16"));
                let t: f32x16 = cast(*<&[f32; 16]>::try_from(&shift[j * 16..][..16]).expect("16"));
                let y = simd.mul_add_f32s(*v, s, t);
                // `max(0, y)` with `y` second: x86's max returns its second operand when
                // either is NaN, so NaN stays NaN, as through burn's `relu`.
                let y = if relu { simd.max_f32s(zero, y) } else { y };
                let y: [f32; 16] = cast(y);
                values[j * 16..][..16].copy_from_slice(&y);
            }
            let dst = &mut out[r * n + columns.start..][..width];
            if width == lanes {
                dst.copy_from_slice(&values[..lanes]);
            } else {
                // A narrow layer's (LeNet-5's 6 channels): element by element, where
                // `copy_from_slice` of a run-time length calls `memcpy` for a few floats.
                dst.iter_mut().zip(&values).for_each(|(d, v)| *d = *v);
            }
        }
    }
}

/// The larger of `a` and `b`, NaN when either is (a NaN in a window stays NaN).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// Max-pooling over `kernel x kernel` windows at `stride`, no padding, of a pixel-major image
/// into `out` (dense); returns the output's layout.
pub fn max_pool_pixels(
    x: &[f32],
    input: Pixels,
    [kernel, stride]: [usize; 2],
    out: &mut Vec<f32>,
) -> Pixels {
    let window = [kernel, stride, 0];
    let (oh, ow, c) = (
        crate::window_out(input.h, window),
        crate::window_out(input.w, window),
        input.c,
    );
    let out = grown(out, oh * ow * c);
    if kernel == 2 && stride == 2 {
        // The common window: the two rows' larger values first (one vectorised loop over
        // whole rows), then each pair of neighbours (4.6 -> 0.5 us for LeNet-5's first pool).
        let mut rows = vec![0.0f32; 2 * ow * c];
        for (oy, dst) in out.chunks_exact_mut(ow * c).enumerate() {
            let top = &x[2 * oy * input.pitch * c..][..2 * ow * c];
            let bottom = &x[(2 * oy + 1) * input.pitch * c..][..2 * ow * c];
            for ((r, &a), &b) in rows.iter_mut().zip(top).zip(bottom) {
                *r = nan_max(a, b);
            }
            for (d, pair) in dst.chunks_exact_mut(c).zip(rows.chunks_exact(2 * c)) {
                let (left, right) = pair.split_at(c);
                for ((d, &a), &b) in d.iter_mut().zip(left).zip(right) {
                    *d = nan_max(a, b);
                }
            }
        }
        return Pixels::dense(oh, ow, c);
    }
    out.fill(f32::NEG_INFINITY);
    for oy in 0..oh {
        for ox in 0..ow {
            let dst = &mut out[(oy * ow + ox) * c..][..c];
            for ky in 0..kernel {
                for kx in 0..kernel {
                    let (y, xx) = (oy * stride + ky, ox * stride + kx);
                    let src = &x[(y * input.pitch + xx) * c..][..c];
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = nan_max(*d, v);
                    }
                }
            }
        }
    }
    Pixels::dense(oh, ow, c)
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

    #[test]
    fn pooling_takes_each_windows_largest_value() {
        // 3 rows of 4 pixels (pitch 5), 2 channels; 2x2 windows at stride 2.
        let input = Pixels {
            h: 3,
            w: 4,
            c: 2,
            pitch: 5,
        };
        let x: Vec<f32> = (0..3 * 5 * 2).map(|v| ((v * 7) % 11) as f32).collect();
        let mut out = Vec::new();
        let o = max_pool_pixels(&x, input, [2, 2], &mut out);
        assert_eq!(o, Pixels::dense(1, 2, 2));
        let at = |y: usize, xx: usize, ch: usize| x[(y * 5 + xx) * 2 + ch];
        for ox in 0..2 {
            for ch in 0..2 {
                let want = [
                    at(0, 2 * ox, ch),
                    at(0, 2 * ox + 1, ch),
                    at(1, 2 * ox, ch),
                    at(1, 2 * ox + 1, ch),
                ]
                .into_iter()
                .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(out[ox * 2 + ch], want);
            }
        }
        let nan = [f32::NAN, 1.0, 2.0, 3.0];
        max_pool_pixels(&nan, Pixels::dense(2, 2, 1), [2, 2], &mut out);
        assert!(out[0].is_nan(), "a NaN in the window stays NaN");
    }
}
