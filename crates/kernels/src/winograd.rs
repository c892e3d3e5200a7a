//! Winograd's F(2x2, 3x3) for the 3x3, stride-1 convolutions of [`crate::PackedConv`]: each
//! 2x2 block of outputs from a 4x4 block of the padded input with 16 products per channel pair
//! where the direct convolution makes 36, 2.25x fewer multiply-adds (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016).
//!
//! With `d` a 4x4 input block and `g` a 3x3 kernel, the output block is
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`:
//! - the weights' transform `U = G g Gᵀ` (4x4 per output and input channel) is made once, at
//!   packing, as sixteen `[c][n]` matrices, one per position of the 4x4 block;
//! - per image, every input block is transformed (`V = Bᵀ d B`, additions only, vectorised over
//!   the pixel-major channels) into sixteen `[blocks][c]` matrices;
//! - the sixteen products `M = V U` run on the direct kernel's micro-kernel (a 1x1 convolution
//!   over the blocks), where the multiply-adds are;
//! - `Aᵀ M A` (additions) gives each 2x2 output block, and the layer's affine and ReLU follow.
//!
//! The transforms' constants are 0, ±1 and ±½, so the only rounding beyond the direct sum's is
//! of a few additions per value; tests bound the difference from the plain definition.

use pulp::NullaryFnOnce;

use crate::direct::DirectConv;
use crate::linear::Isa;
use crate::pixels::{grown, ConvWeights, Pixels};

/// `$body` for every run of channels `$ch..` of `$c`: sixteen at a time with AVX-512 (`$lanes`
/// loads an `f32x16`), the rest one by one (`$lanes` loads an `f32`); the body is written once
/// and compiled for both.
macro_rules! for_channels {
    ($simd:expr, $c:expr, |$ch:ident, $lanes:ident| $body:block) => {{
        let c = $c;
        let mut $ch = 0;
        #[cfg(target_arch = "x86_64")]
        {
            let $lanes = wide::Sixteen($simd);
            while $ch + 16 <= c {
                $body
                $ch += 16;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = $simd;
        let $lanes = One;
        while $ch < c {
            $body
            $ch += 1;
        }
    }};
}

thread_local! {
    /// Each thread's transformed blocks and products.
    static BLOCKS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// The sixteen products of a layer, and its affine.
#[derive(Debug, Clone)]
pub(crate) struct Winograd {
    /// `products[i * 4 + j]`: a 1x1 convolution `c -> n` whose weights are `U[i][j]`.
    products: Vec<DirectConv>,
    c: usize,
    n: usize,
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl Winograd {
    /// `layer` must be 3x3 with stride 1; `None` without AVX-512.
    pub(crate) fn new(layer: &ConvWeights) -> Option<Self> {
        let [n, c, _, _] = layer.shape;
        let identity = (vec![1.0f32; n], vec![0.0f32; n]);
        let pointwise = ConvWeights {
            weight: &[],
            shape: [n, c, 1, 1],
            window: [1, 1, 0],
            scale: &identity.0,
            shift: &identity.1,
            relu: false,
        };
        // Each product's panels filled in place (no `[n][c]` copy per position first: at
        // 512 -> 512 channels that was 16 MB written, read and packed again every training
        // step).
        let mut products = (0..16)
            .map(|_| DirectConv::zeroed(&pointwise))
            .collect::<Option<Vec<_>>>()?;
        // U = G g Gᵀ per (output, input) pair, position `(i, j)` into product `i * 4 + j`.
        for o in 0..n {
            for ci in 0..c {
                let g = &layer.weight[(o * c + ci) * 9..][..9];
                // G applied to three values: `G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]`.
                let times_g = |a: f32, b: f32, d: f32| [a, (a + b + d) * 0.5, (a - b + d) * 0.5, d];
                // (G g) by column, then each of its rows times Gᵀ.
                let columns: [[f32; 4]; 3] =
                    std::array::from_fn(|col| times_g(g[col], g[3 + col], g[6 + col]));
                let at = products[0].panel_index(o, ci);
                for i in 0..4 {
                    let row = times_g(columns[0][i], columns[1][i], columns[2][i]);
                    for (j, v) in row.into_iter().enumerate() {
                        products[i * 4 + j].panels.values_mut()[at] = v;
                    }
                }
            }
        }
        Some(Self {
            products,
            c,
            n,
            scale: layer.scale.to_vec(),
            shift: layer.shift.to_vec(),
            relu: layer.relu,
        })
    }

    /// One sample's output `[oh][ow][n]` (dense) from its padded image (`pitch` pixels per
    /// row, whole 4x4 blocks for every 2x2 output block, zeros past the image).
    pub(crate) fn forward(
        &self,
        padded: &[f32],
        size: ([usize; 2], usize),
        out: &mut Vec<f32>,
    ) -> Pixels {
        self.forward_many(padded, (1, 0), size, out)
    }

    /// [`Self::forward`] of `count` images `stride` floats apart in `padded`, their outputs
    /// one after another in `out` (`[count][oh][ow][n]`). Each product runs over the blocks of
    /// all of them at once: its transformed weights (1 MB per position at 512 -> 512 channels)
    /// are read once per call, where one image of 7x7 has 16 blocks to multiply them with.
    pub(crate) fn forward_many(
        &self,
        padded: &[f32],
        (count, stride): (usize, usize),
        ([oh, ow], pitch): ([usize; 2], usize),
        out: &mut Vec<f32>,
    ) -> Pixels {
        let (bh, bw) = (oh.div_ceil(2), ow.div_ceil(2));
        let blocks = bh * bw;
        let total = count * blocks;
        let (c, n) = (self.c, self.n);
        // A row's last blocks may read past `pitch` into the next row's first pixels: the
        // caller's layout keeps those zero where they stand for this row's right padding
        // (`conv_train.rs` stores the two paddings as one).
        let image_len = ((2 * bh + 1) * pitch + 2 * bw + 2) * c;
        assert!(
            count == 0 || padded.len() >= (count - 1) * stride + image_len,
            "padded to whole blocks"
        );
        let image = Pixels::dense(oh, ow, n);
        if count == 0 || image.is_empty() {
            out.clear();
            return image;
        }
        BLOCKS.with_borrow_mut(|(v, m)| {
            let v = grown(v, 16 * total * c);
            let m = grown(m, 16 * total * n);
            let out = grown(out, count * image.len());
            let simd = self.products[0].simd;
            let blocks_hw = [bh, bw];
            for i in 0..count {
                let inputs = Inputs {
                    simd,
                    padded: &padded[i * stride..],
                    pitch,
                    blocks: blocks_hw,
                    at: (i * blocks, total),
                    c,
                    v,
                };
                vectorized(simd, inputs);
            }
            for (p, product) in self.products.iter().enumerate() {
                let x = &v[p * total * c..][..total * c];
                let dst = &mut m[p * total * n..][..total * n];
                product.pixels(x, (c, 0), total, dst);
            }
            for (i, out) in out.chunks_exact_mut(image.len()).enumerate() {
                let outputs = Outputs {
                    simd,
                    m,
                    blocks: blocks_hw,
                    at: (i * blocks, total),
                    size: [oh, ow],
                    layer: self,
                    out,
                };
                vectorized(simd, outputs);
            }
        });
        image
    }
}

/// Arithmetic on one channel (`f32`) or sixteen (`f32x16`), so each transform is written once.
trait Lanes: Copy {
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    /// `max(0, self * scale + shift)` (NaN kept) when `relu`, else without the max.
    fn affine(self, scale: Self, shift: Self, relu: bool) -> Self;
    fn store(self, to: &mut [f32]);
}

/// How a run of channels is loaded.
trait Loader: Copy {
    type Lanes: Lanes;
    fn load(self, from: &[f32]) -> Self::Lanes;
}

impl Lanes for f32 {
    fn add(self, other: Self) -> Self {
        self + other
    }
    fn sub(self, other: Self) -> Self {
        self - other
    }
    fn affine(self, scale: Self, shift: Self, relu: bool) -> Self {
        let y = self.mul_add(scale, shift);
        if relu && y < 0.0 {
            0.0
        } else {
            y
        }
    }
    fn store(self, to: &mut [f32]) {
        to[0] = self;
    }
}

#[derive(Clone, Copy)]
struct One;

impl Loader for One {
    type Lanes = f32;
    fn load(self, from: &[f32]) -> f32 {
        from[0]
    }
}

#[cfg(target_arch = "x86_64")]
mod wide {
    use pulp::{cast, f32x16, Simd};

    use super::{Lanes, Loader};
    use crate::linear::Isa;

    #[derive(Clone, Copy)]
    pub(super) struct Sixteen(pub Isa);

    #[derive(Clone, Copy)]
    pub(super) struct Wide(Isa, f32x16);

    impl Loader for Sixteen {
        type Lanes = Wide;
        #[inline(always)]
        fn load(self, from: &[f32]) -> Wide {
            Wide(
                self.0,
                cast(*<&[f32; 16]>::try_from(&from[..16]).expect("16 lanes")),
            )
        }
    }

    impl Lanes for Wide {
        #[inline(always)]
        fn add(self, other: Self) -> Self {
            Wide(self.0, self.0.add_f32s(self.1, other.1))
        }
        #[inline(always)]
        fn sub(self, other: Self) -> Self {
            Wide(self.0, self.0.sub_f32s(self.1, other.1))
        }
        #[inline(always)]
        fn affine(self, scale: Self, shift: Self, relu: bool) -> Self {
            let y = self.0.mul_add_f32s(self.1, scale.1, shift.1);
            // `max(0, y)` with `y` second: x86's max returns its second operand when either is
            // NaN, so NaN stays NaN (as in the direct kernel).
            let y = if relu {
                self.0.max_f32s(self.0.splat_f32s(0.0), y)
            } else {
                y
            };
            Wide(self.0, y)
        }
        #[inline(always)]
        fn store(self, to: &mut [f32]) {
            let values: [f32; 16] = cast(self.1);
            to[..16].copy_from_slice(&values);
        }
    }
}

/// `work` compiled for AVX-512 (pulp's `vectorize`: its `call` is inlined into a function
/// with the target features, so the lanes' operations are single instructions).
fn vectorized(simd: Isa, work: impl NullaryFnOnce<Output = ()>) {
    #[cfg(target_arch = "x86_64")]
    pulp::Simd::vectorize(simd, work);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = simd;
        work.call()
    }
}

/// Every block of an image's `V = Bᵀ d B`, written per position: `v` is `[16][total][c]`, the
/// image's blocks from `first` on.
struct Inputs<'a> {
    simd: Isa,
    /// The padded image, `pitch` pixels per row.
    padded: &'a [f32],
    pitch: usize,
    /// `[blocks down, blocks across]`
    blocks: [usize; 2],
    /// `(first, total)`: where the image's blocks start among all of a position's.
    at: (usize, usize),
    c: usize,
    v: &'a mut [f32],
}

impl NullaryFnOnce for Inputs<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Inputs {
            simd,
            padded,
            pitch,
            blocks: [bh, bw],
            at: (first, total),
            c,
            v,
        } = self;
        let plane = total * c;
        for by in 0..bh {
            for bx in 0..bw {
                let d: [&[f32]; 16] = std::array::from_fn(|p| {
                    let (y, x) = (2 * by + p / 4, 2 * bx + p % 4);
                    &padded[(y * pitch + x) * c..][..c]
                });
                let at = (first + by * bw + bx) * c;
                for_channels!(simd, c, |ch, lanes| {
                    let mut x = [lanes.load(&d[0][ch..]); 16];
                    for p in 1..16 {
                        x[p] = lanes.load(&d[p][ch..]);
                    }
                    let t = input_transform(x);
                    for (p, value) in t.into_iter().enumerate() {
                        value.store(&mut v[p * plane + at + ch..]);
                    }
                });
            }
        }
    }
}

/// Every block of an image's `Aᵀ M A` with the layer's affine and ReLU, into its dense output.
struct Outputs<'a> {
    simd: Isa,
    /// `[16][total][n]`
    m: &'a [f32],
    blocks: [usize; 2],
    /// `(first, total)`: where the image's blocks start among all of a position's.
    at: (usize, usize),
    /// The output's `[h, w]`.
    size: [usize; 2],
    layer: &'a Winograd,
    out: &'a mut [f32],
}

impl NullaryFnOnce for Outputs<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Outputs {
            simd,
            m,
            blocks: [bh, bw],
            at: (first, total),
            size: [oh, ow],
            layer,
            out,
        } = self;
        let n = layer.n;
        for by in 0..bh {
            for bx in 0..bw {
                let b = first + by * bw + bx;
                let mp: [&[f32]; 16] = std::array::from_fn(|p| &m[(p * total + b) * n..][..n]);
                for_channels!(simd, n, |ch, lanes| {
                    let mut x = [lanes.load(&mp[0][ch..]); 16];
                    for p in 1..16 {
                        x[p] = lanes.load(&mp[p][ch..]);
                    }
                    let scale = lanes.load(&layer.scale[ch..]);
                    let shift = lanes.load(&layer.shift[ch..]);
                    for (q, value) in output_transform(x).into_iter().enumerate() {
                        let (oy, ox) = (2 * by + q / 2, 2 * bx + q % 2);
                        if oy < oh && ox < ow {
                            let y = value.affine(scale, shift, layer.relu);
                            y.store(&mut out[(oy * ow + ox) * n + ch..]);
                        }
                    }
                });
            }
        }
    }
}

/// `Bᵀ d B` (`Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`) of one 4x4
/// block (row-major). Written out without closures: a closure the optimiser leaves un-inlined
/// is compiled without the caller's AVX-512 and calls each intrinsic as a function.
#[inline(always)]
fn input_transform<T: Lanes>(d: [T; 16]) -> [T; 16] {
    let mut t = d; // Bᵀ d
    for j in 0..4 {
        t[j] = d[j].sub(d[8 + j]);
        t[4 + j] = d[4 + j].add(d[8 + j]);
        t[8 + j] = d[8 + j].sub(d[4 + j]);
        t[12 + j] = d[4 + j].sub(d[12 + j]);
    }
    let mut v = t; // (Bᵀ d) B
    for r in (0..16).step_by(4) {
        v[r] = t[r].sub(t[r + 2]);
        v[r + 1] = t[r + 1].add(t[r + 2]);
        v[r + 2] = t[r + 2].sub(t[r + 1]);
        v[r + 3] = t[r + 1].sub(t[r + 3]);
    }
    v
}

/// `Aᵀ M A` (`Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]`) of one 4x4 block: the 2x2 outputs,
/// row-major.
#[inline(always)]
fn output_transform<T: Lanes>(m: [T; 16]) -> [T; 4] {
    let mut s = [m[0]; 8]; // Aᵀ M
    for j in 0..4 {
        s[j] = m[j].add(m[4 + j]).add(m[8 + j]);
        s[4 + j] = m[4 + j].sub(m[8 + j]).sub(m[12 + j]);
    }
    [
        s[0].add(s[1]).add(s[2]),
        s[1].sub(s[2]).sub(s[3]),
        s[4].add(s[5]).add(s[6]),
        s[5].sub(s[6]).sub(s[7]),
    ]
}
