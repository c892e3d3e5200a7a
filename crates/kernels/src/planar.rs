//! A first layer on a one-channel image (a grayscale digit into LeNet-5's or VGG's first
//! convolution), vectorised over pixels instead of output channels.
//!
//! The pixel-major kernel puts 16 output channels in a register and runs one multiply-add per
//! window element: with one input channel a window row is `kernel` floats, so a tile spends
//! more time setting up its rows than multiplying, and LeNet-5's 6 outputs fill 6 of 16 lanes
//! (12 us per image for its first layer). Here a register holds 16 neighbouring pixels of one
//! output row: per window element, two loads of the (zero-padded) image row and a broadcast
//! weight per output channel feed `outputs x 2` multiply-adds, and the affine and ReLU run on
//! the tile before it is written pixel-major.

#[cfg(target_arch = "x86_64")]
use pulp::{cast, f32x16, Simd};

use crate::linear::Isa;
use crate::pixels::{grown, ConvWeights, Pixels};

/// Output channels per tile (8 x 2 registers = 16 accumulators).
const OUTPUTS: usize = 8;
/// Pixels per tile: two registers of 16.
const SPAN: usize = 32;

/// The widest layer that runs here: its outputs are written one channel at a time, and at 32
/// channels (VGG's first layer) those scattered stores made it 2.3x slower than the
/// pixel-major kernel (21 against 9 us per image), where at LeNet-5's 6 it is 2.3x faster.
pub(crate) const MAX_OUTPUTS: usize = 16;

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Planar {
    n: usize,
    kernel: usize,
    padding: usize,
    /// `[n][kernel * kernel]`
    weights: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
    simd: Isa,
}

impl Planar {
    /// A stride-1 layer of one input channel and at most [`MAX_OUTPUTS`] outputs; `None`
    /// otherwise.
    pub(crate) fn new(layer: &ConvWeights, simd: Isa) -> Option<Self> {
        let [n, c, kernel, _] = layer.shape;
        let [_, stride, padding] = layer.window;
        (c == 1 && stride == 1 && n <= MAX_OUTPUTS).then(|| Self {
            n,
            kernel,
            padding,
            weights: layer.weight.to_vec(),
            scale: layer.scale.to_vec(),
            shift: layer.shift.to_vec(),
            relu: layer.relu,
            simd,
        })
    }

    /// One sample (`input.c == 1`) into `out`, dense `[oh][ow][n]`.
    pub(crate) fn forward(
        &self,
        x: &[f32],
        input: Pixels,
        padded: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Pixels {
        let (k, p) = (self.kernel, self.padding);
        let (oh, ow) = (input.h + 2 * p + 1 - k, input.w + 2 * p + 1 - k);
        // Every tile's two loads of 16 stay inside a row: the width rounded up to whole tiles
        // plus the window's reach, zeros past the image.
        let pitch = ow.div_ceil(SPAN) * SPAN + k - 1;
        let hp = input.h + 2 * p;
        let padded = grown(padded, hp * pitch);
        padded.fill(0.0);
        for y in 0..input.h {
            let src = &x[y * input.pitch..][..input.w];
            padded[(y + p) * pitch + p..][..input.w].copy_from_slice(src);
        }
        let out = grown(out, oh * ow * self.n);
        for oy in 0..oh {
            let rows = &padded[oy * pitch..][..k * pitch];
            for x0 in (0..ow).step_by(SPAN) {
                for o0 in (0..self.n).step_by(OUTPUTS) {
                    let tile = Tile {
                        simd: self.simd,
                        rows,
                        pitch,
                        x0,
                        pixels: SPAN.min(ow - x0),
                        o0,
                        layer: self,
                        out: &mut out[oy * ow * self.n..][..ow * self.n],
                    };
                    tile.run(OUTPUTS.min(self.n - o0));
                }
            }
        }
        Pixels::dense(oh, ow, self.n)
    }
}

/// Up to [`OUTPUTS`] channels times [`SPAN`] pixels of one output row.
struct Tile<'a> {
    simd: Isa,
    /// The `kernel` padded rows the output row reads, `pitch` apart.
    rows: &'a [f32],
    pitch: usize,
    x0: usize,
    /// Real pixels of the tile (the rest are computed and dropped).
    pixels: usize,
    o0: usize,
    layer: &'a Planar,
    /// The output row, `[ow][n]`.
    out: &'a mut [f32],
}

impl Tile<'_> {
    #[cfg(target_arch = "x86_64")]
    fn run(self, outputs: usize) {
        match outputs {
            1 => self.simd.vectorize(Kernel::<1>(self)),
            2 => self.simd.vectorize(Kernel::<2>(self)),
            3 => self.simd.vectorize(Kernel::<3>(self)),
            4 => self.simd.vectorize(Kernel::<4>(self)),
            5 => self.simd.vectorize(Kernel::<5>(self)),
            6 => self.simd.vectorize(Kernel::<6>(self)),
            7 => self.simd.vectorize(Kernel::<7>(self)),
            _ => self.simd.vectorize(Kernel::<8>(self)),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run(self, _outputs: usize) {
        unreachable!("nothing is packed without the micro-kernel's instruction set")
    }
}

#[cfg(target_arch = "x86_64")]
struct Kernel<'a, const OUT: usize>(Tile<'a>);

#[cfg(target_arch = "x86_64")]
impl<const OUT: usize> pulp::NullaryFnOnce for Kernel<'_, OUT> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Tile {
            simd,
            rows,
            pitch,
            x0,
            pixels,
            o0,
            layer,
            out,
        } = self.0;
        let (k, n) = (layer.kernel, layer.n);
        let load = |at: usize| -> f32x16 {
            cast(*<&[f32; 16]>::try_from(&rows[at..][..16]).expect("16 pixels"))
        };
        let zero = simd.splat_f32s(0.0);
        let mut acc = [[zero; 2]; OUTPUTS];
        let weights: [&[f32]; OUTPUTS] = std::array::from_fn(|o| {
            if o < OUT {
                &layer.weights[(o0 + o) * k * k..][..k * k]
            } else {
                &[]
            }
        });
        for ky in 0..k {
            for kx in 0..k {
                let at = ky * pitch + x0 + kx;
                let v = [load(at), load(at + 16)];
                let tap = ky * k + kx;
                macro_rules! update {
                    ($($o:literal)*) => {$(
                        if $o < OUT {
                            let w = simd.splat_f32s(weights[$o][tap]);
                            acc[$o][0] = simd.mul_add_f32s(w, v[0], acc[$o][0]);
                            acc[$o][1] = simd.mul_add_f32s(w, v[1], acc[$o][1]);
                        }
                    )*};
                }
                update!(0 1 2 3 4 5 6 7);
            }
        }
        for (o, acc) in acc[..OUT].iter().enumerate() {
            let c = o0 + o;
            let scale = simd.splat_f32s(layer.scale[c]);
            let shift = simd.splat_f32s(layer.shift[c]);
            for (half, v) in acc.iter().enumerate() {
                let y = simd.mul_add_f32s(*v, scale, shift);
                // `max(0, y)` with `y` second: NaN stays NaN (x86's max returns its second
                // operand when either is NaN), as the other kernels' epilogues.
                let y = if layer.relu {
                    simd.max_f32s(zero, y)
                } else {
                    y
                };
                let y: [f32; 16] = cast(y);
                let first = half * 16;
                for (lane, &value) in y.iter().enumerate().take(pixels.saturating_sub(first)) {
                    out[(x0 + first + lane) * n + c] = value;
                }
            }
        }
    }
}
