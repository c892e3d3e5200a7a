//! The direct pixel-major convolution behind [`crate::PackedConv`] (its module documentation
//! says how it reads windows in place and why): weights packed in panels, a `12 x 32` or
//! `6 x 64` tile of outputs in registers, the affine and ReLU on the tile.

#[cfg(target_arch = "x86_64")]
use pulp::{cast, f32x16, Simd};

use crate::aligned::CacheAligned;
use crate::linear::Isa;
use crate::pixels::{grown, ConvWeights, Pixels};

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

/// A convolution (one group, dilation 1, square kernel and stride, symmetric zero padding)
/// with its per-channel affine and ReLU, packed for the direct pixel-major kernel.
#[derive(Debug, Clone)]
pub(crate) struct DirectConv {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    /// Registers per panel: 1 (layers of up to 16 outputs), 2 or 4.
    width: usize,
    /// `[panels][kernel * kernel * c][width * 16]`, outputs past `n` zero (empty for a layer
    /// packed for Winograd only).
    pub(crate) panels: CacheAligned,
    /// Per output channel, padded to whole panels.
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
    pub(crate) simd: Isa,
}

impl DirectConv {
    /// `None` on a CPU without AVX-512, for a non-square kernel or empty shapes.
    ///
    /// # Panics
    /// If the slices do not match the shape.
    pub(crate) fn new(layer: ConvWeights) -> Option<Self> {
        let [n, c, kh, kw] = layer.shape;
        assert_eq!(
            layer.weight.len(),
            n * c * kh * kw,
            "weight of {:?}",
            layer.shape
        );
        let kernel = layer.window[0];
        let mut conv = Self::zeroed(&layer)?;
        for (o, filter) in layer.weight.chunks_exact(c * kernel * kernel).enumerate() {
            for ci in 0..c {
                for ky in 0..kernel {
                    for kx in 0..kernel {
                        let at = conv.panel_index(o, (ky * kernel + kx) * c + ci);
                        conv.panels.values_mut()[at] = filter[(ci * kernel + ky) * kernel + kx];
                    }
                }
            }
        }
        Some(conv)
    }

    /// The layer's description with every weight zero, for the caller to fill through
    /// [`Self::panel_index`] (`layer.weight` is not read).
    ///
    /// # Panics
    /// If the affine does not match the shape.
    pub(crate) fn zeroed(layer: &ConvWeights) -> Option<Self> {
        let mut conv = Self::unpacked(layer)?;
        let lanes = conv.width * 16;
        let k = conv.kernel * conv.kernel * conv.c;
        conv.panels = CacheAligned::zeros(conv.n.div_ceil(lanes) * k * lanes);
        Some(conv)
    }

    /// The layer's description without its panels, for a [`crate::PackedConv`] that only
    /// ever runs its Winograd form (`run_padded` and `pixels` must then not be called).
    pub(crate) fn unpacked(layer: &ConvWeights) -> Option<Self> {
        let [n, c, kh, kw] = layer.shape;
        let [kernel, stride, padding] = layer.window;
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
            panels: CacheAligned::zeros(0),
            scale: padded(layer.scale),
            shift: padded(layer.shift),
            relu: layer.relu,
            simd,
        })
    }

    /// Where the weight of output `o` at window element `at` (`(ky * kernel + kx) * c + ci`)
    /// lies in the panels.
    #[inline(always)]
    pub(crate) fn panel_index(&self, o: usize, at: usize) -> usize {
        let lanes = self.width * 16;
        let k = self.kernel * self.kernel * self.c;
        ((o / lanes) * k + at) * lanes + o % lanes
    }

    /// The output of a padded image (`wp` pixels per row, `padding` already around it) into
    /// `out`, laid out as the returned [`Pixels`] say.
    pub(crate) fn run_padded(
        &self,
        padded: &[f32],
        ([oh, ow], wp): ([usize; 2], usize),
        out: &mut Vec<f32>,
    ) -> Pixels {
        let c = self.c;
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
        assert!(
            !self.panels.values().is_empty(),
            "a convolution packed for Winograd only"
        );
        let lanes = self.width * 16;
        let k = self.kernel * self.kernel * self.c;
        let span = (self.kernel - 1) * window_row + self.kernel * self.c;
        for (p, panel) in self.panels.values().chunks_exact(k * lanes).enumerate() {
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
        // A whole tile of a 3x3 stride-1 layer of one register's outputs: each input value
        // loaded once for the three windows that read it (`Kernel3x3`).
        macro_rules! whole_3x3 {
            ($($c:literal)*) => {
                match self.step {
                    $($c => return self.simd.vectorize(Kernel3x3::<$c>(self)),)*
                    _ => {}
                }
            };
        }
        if (rows, width) == (TILE, 1) && self.kernel == 3 && self.step * 3 == self.segment {
            whole_3x3!(8 16 32 64 128);
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
        finish(simd, &acc[..ROWS], (scale, shift, relu), out, (n, columns));
    }
}

#[cfg(target_arch = "x86_64")]
/// A whole tile (12 pixels) of a 3x3 stride-1 layer of at most 16 outputs (one register), its
/// windows `C` floats (the channel count) apart. [`Kernel`] loads each input value once per
/// window that reads it: three times for a 3x3 kernel, and with one register of outputs that
/// is a load per multiply-add, more than the core issues. Here the tile's 14 input pixels of a
/// kernel row are loaded once per input channel, and each feeds the three outputs whose
/// windows hold it (`acc[p - kx]`, the three kernel columns' weights held in registers).
/// 16 -> 16 channels at 28x28: 124-134 -> 174-177 GFLOP/s (`cargo test -p kernels --bench
/// conv`, direct column). With two registers of outputs (31 of the 32 vector registers) the compiler
/// spilled, and it ran at a fifth of [`Kernel`]'s speed. Sums run over kernel rows, then
/// channels, then columns, where [`Kernel`]'s run over rows, columns, then channels: results
/// differ from it by rounding.
struct Kernel3x3<'a, const C: usize>(Tile<'a>);

#[cfg(target_arch = "x86_64")]
impl<const C: usize> pulp::NullaryFnOnce for Kernel3x3<'_, C> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Tile {
            simd,
            x,
            window_row,
            segment,
            panel,
            scale,
            shift,
            out,
            n,
            columns,
            relu,
            ..
        } = self.0;
        // One register of outputs per pixel (a panel of 16 lanes).
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero]; TILE];
        for ky in 0..3 {
            // The pixels this kernel row of the tile's windows reads: 12 + 2.
            let row = &x[ky * window_row..][..(TILE + 2) * C];
            let weights = &panel[ky * segment * 16..][..segment * 16];
            for ci in 0..C {
                let w: [f32x16; 3] = std::array::from_fn(|kx| {
                    let at = (kx * C + ci) * 16;
                    cast(*<&[f32; 16]>::try_from(&weights[at..][..16]).expect("16 lanes"))
                });
                // Pixel `p` is column `kx` of output `p - kx`'s window; written out with
                // constant indices, so the accumulators stay in registers.
                macro_rules! pixels {
                    ($($p:literal)*) => {$(
                        let a = simd.splat_f32s(row[$p * C + ci]);
                        for kx in 0..3 {
                            let r = ($p as usize).wrapping_sub(kx);
                            if r < TILE {
                                acc[r][0] = simd.mul_add_f32s(a, w[kx], acc[r][0]);
                            }
                        }
                    )*};
                }
                pixels!(0 1 2 3 4 5 6 7 8 9 10 11 12 13);
            }
        }
        finish(simd, &acc, (scale, shift, relu), out, (n, columns));
    }
}

/// A tile's accumulators (`acc[r]`: pixel `r`'s outputs, one panel) through the layer's affine
/// and ReLU into `out` (pixel `r` at `r * n`, the panel's `columns`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn finish<const WIDTH: usize>(
    simd: Isa,
    acc: &[[f32x16; WIDTH]],
    (scale, shift, relu): (&[f32], &[f32], bool),
    out: &mut [f32],
    (n, columns): (usize, std::ops::Range<usize>),
) {
    let zero = simd.splat_f32s(0.0);
    let lanes = WIDTH * 16;
    let width = columns.len();
    for (r, acc) in acc.iter().enumerate() {
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
