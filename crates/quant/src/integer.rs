//! A `.qnt` model executed in integer arithmetic: `u8` activations on their grids, `i8`
//! weight levels, `i32` sums (`kernels::PackedInt8`, VNNI where the CPU has it), and each
//! layer's sums requantized onto the next grid with the file's scales.
//!
//! The simulation (`QuantizedModel::simulate`, dequantized weights on the float kernels with
//! every activation rounded to its grid) is the specification. This computes the same function
//! and differs from it only in `f32` rounding: the simulation sums `((q - z) s_x) (l s_w)` in
//! `f32`, rounding after every product, while this sums `(q - z) l` exactly in `i32` and scales
//! once (`sum * (s_x s_w / s_y) + bias / s_y`, the next grid's division folded in); a float
//! first layer or residual addition sums in another order. The values differ by about 1e-7
//! relative, so a requantized activation can land one level apart where the value sits within
//! that of a rounding boundary: rare, and measured as top-1 agreement on whole test sets.
//!
//! Everything else is exact: ReLU on a grid is `max(q, z)` and max-pooling takes the largest
//! level, because quantization is monotone; moving from one grid to another is a 256-entry
//! table computed with the simulation's own `f32` operations; logits are the last grid's levels
//! dequantized as the simulation dequantizes them.
//!
//! A file that quantizes its input (`quantize_input`) runs every layer on levels. Otherwise the
//! first layer stays in `f32` on its dequantized weights, as the simulation runs it (its input,
//! the normalised image, is on no grid), through our float kernels: the simulation runs burn's
//! convolution and matmul, the same sums in another order, within `f32` rounding.
//!
//! Every architecture runs here: chains of convolutions, max-pools and linear layers (MLP,
//! LeNet-5, VGG), ResNet and MobileNetV2. Their residual additions (and MobileNetV2's mean and
//! classifier, between which the simulation has no grid) are computed in float before the next
//! grid, as the simulation computes them.

use std::collections::BTreeMap;

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorData;
use kernels::{BatchNormAffine, Epilogue, Int8Path, OutputGrid, PackedInt8, Rows};
use models::{BasicBlock, ConvBn, InputShape, InvertedResidual, Model};
use rayon::prelude::*;

use crate::fake::{qmax_unsigned, ActivationGrid};
use crate::int_file::{IntFile, QuantizedWeight, WeightEntry};

/// The first layer, in float on dequantized weights: its input, the normalised image, is on no
/// grid. Our float kernels run it (the simulation runs burn's convolution and matmul: the same
/// sums in another order, within `f32` rounding).
enum First {
    Conv {
        /// `[c_out, c_in, k, k]`, dequantized.
        weight: Tensor<4>,
        /// `[kernel, stride, padding]`.
        window: [usize; 3],
        /// The folded bias, or BatchNorm.
        affine: ChannelAffine,
    },
    Linear {
        layer: Linear,
        packed: Option<kernels::PackedLinear>,
    },
}

/// What follows a first convolution per output channel.
enum ChannelAffine {
    Bias(Vec<f32>),
    BatchNorm(BatchNormAffine),
}

impl ChannelAffine {
    /// As an epilogue takes it: the bias, or zeros and the BatchNorm after them.
    fn split(self, channels: usize) -> (Vec<f32>, Option<BatchNormAffine>) {
        match self {
            ChannelAffine::Bias(b) => (b, None),
            ChannelAffine::BatchNorm(bn) => (vec![0.0; channels], Some(bn)),
        }
    }

    /// Applies it to one sample's `[c][plane]` values, in place.
    fn apply(&self, values: &mut [f32], plane: usize) {
        for (c, x) in values.chunks_exact_mut(plane).enumerate() {
            match self {
                ChannelAffine::Bias(b) => x.iter_mut().for_each(|v| *v += b[c]),
                ChannelAffine::BatchNorm(bn) => {
                    let (m, s, g, b) = (bn.mean[c], bn.std[c], bn.gamma[c], bn.beta[c]);
                    x.iter_mut().for_each(|v| *v = ((*v - m) / s) * g + b);
                }
            }
        }
    }
}

/// A convolution on levels.
struct ConvStep {
    weights: PackedInt8,
    epilogue: Epilogue,
    /// `[kernel, stride, padding]`.
    window: [usize; 3],
    /// `[h, w, c]` in.
    input: [usize; 3],
    /// The input grid's zero point: the level of the padding's zeros.
    fill: u8,
    /// One input channel: each window row's `kernel` levels are read as the next multiple of 4
    /// consecutive bytes (the extra taps' weights zero), instead of padding every pixel to four
    /// channels (a 5x5 window: 40 products where the padded pixels made 100).
    one_channel: bool,
}

/// The bytes a window row of `kernel` one-channel pixels is read as.
fn one_channel_segment(kernel: usize) -> usize {
    kernel.next_multiple_of(4)
}

impl ConvStep {
    /// The output's `[h', w', n]`.
    fn output(&self) -> [usize; 3] {
        let [h, w, _] = self.input;
        let window = self.window;
        [
            kernels::window_out(h, window),
            kernels::window_out(w, window),
            self.weights.n(),
        ]
    }

    /// The convolution of one sample's levels `x` (`[h][w][c]`) into `out` (`[h'][w'][n]`),
    /// read in place from `padded`: the image with a border of the zero point's level and its
    /// channels padded to a multiple of 4, so each window is `kernel` runs of whole groups of
    /// four, one per window row (no unfolding).
    fn run(&self, path: Int8Path, x: &[u8], (out, padded): (&mut Vec<u8>, &mut Vec<u8>)) {
        let [oh, ow, n] = self.output();
        out.resize(oh * ow * n, 0);
        let (rows, output_row) = self.pad(x, padded);
        for oy in 0..oh {
            let a = &padded[oy * output_row..];
            let dst = &mut out[oy * ow * n..];
            self.weights
                .gemm_levels(path, (a, rows, ow), &self.epilogue, (dst, n));
        }
    }

    /// As [`Self::run`], the output as the floats the sums stand for (before a residual
    /// addition).
    fn run_floats(&self, path: Int8Path, x: &[u8], (out, padded): (&mut Vec<f32>, &mut Vec<u8>)) {
        let [oh, ow, n] = self.output();
        out.resize(oh * ow * n, 0.0);
        let (rows, output_row) = self.pad(x, padded);
        let ldo = self.weights.out_stride();
        let mut sums = vec![0i32; ow * ldo];
        for oy in 0..oh {
            let a = &padded[oy * output_row..];
            self.weights.gemm(path, a, rows, ow, &mut sums);
            let dst = &mut out[oy * ow * n..(oy + 1) * ow * n];
            self.epilogue.to_floats((&sums, ldo), dst);
        }
    }

    /// `x` with its border and channel padding in `padded`; the rows' layout and the bytes
    /// between consecutive output rows' first windows.
    fn pad(&self, x: &[u8], padded: &mut Vec<u8>) -> (Rows, usize) {
        let [h, w, c] = self.input;
        let [kernel, stride, padding] = self.window;
        if self.one_channel {
            // Each row a little wider, so the last window's extra bytes stay inside it.
            let segment = one_channel_segment(kernel);
            let (hp, wp) = (h + 2 * padding, w + 2 * padding + segment - kernel);
            padded.clear();
            padded.resize(hp * wp, self.fill);
            for y in 0..h {
                padded[(y + padding) * wp + padding..][..w].copy_from_slice(&x[y * w..][..w]);
            }
            let rows = Rows {
                row_step: stride,
                segments: kernel,
                segment_step: wp,
                segment,
            };
            return (rows, stride * wp);
        }
        let cp = c.next_multiple_of(4);
        let (hp, wp) = (h + 2 * padding, w + 2 * padding);
        padded.clear();
        padded.resize(hp * wp * cp, self.fill);
        for y in 0..h {
            let row = &mut padded[((y + padding) * wp + padding) * cp..][..w * cp];
            if cp == c {
                row.copy_from_slice(&x[y * w * c..(y + 1) * w * c]);
            } else {
                for (dst, src) in row.chunks_exact_mut(cp).zip(x[y * w * c..].chunks_exact(c)) {
                    dst[..c].copy_from_slice(src);
                }
            }
        }
        let rows = Rows {
            row_step: stride * cp,
            segments: kernel,
            segment_step: wp * cp,
            segment: kernel * cp,
        };
        (rows, stride * wp * cp)
    }
}

/// ResNet's basic block on levels: `conv1` onto its grid (ReLU), `conv2` and the shortcut (the
/// projection's output, or the input dequantized as the simulation dequantizes it) added in
/// float, then the ReLU and the block's grid.
struct BlockStep {
    conv1: ConvStep,
    conv2: ConvStep,
    projection: Option<ConvStep>,
    input: ActivationGrid,
    out: OutputGrid,
}

impl BlockStep {
    fn run(&self, path: Int8Path, x: &[u8], out: &mut Vec<u8>, padded: &mut Vec<u8>) {
        let mut inner = Vec::new();
        self.conv1.run(path, x, (&mut inner, padded));
        let mut sum = Vec::new();
        self.conv2.run_floats(path, &inner, (&mut sum, padded));
        let (z, scale) = (self.input.zero_point as f32, self.input.scale);
        match &self.projection {
            Some(projection) => {
                let mut shortcut = Vec::new();
                projection.run_floats(path, x, (&mut shortcut, padded));
                sum.iter_mut().zip(&shortcut).for_each(|(y, s)| *y += s);
            }
            None => sum
                .iter_mut()
                .zip(x)
                .for_each(|(y, &q)| *y += (q as f32 - z) * scale),
        }
        out.clear();
        out.extend(sum.iter().map(|&v| self.out.level(v)));
    }
}

/// The mean of each channel of `[h][w][c]` levels on `from`, dequantized as the simulation
/// dequantizes them and averaged as burn's `mean_dim(3).mean_dim(2)` does (each row's mean,
/// then their mean).
fn channel_means(x: &[u8], [h, w, c]: [usize; 3], from: &ActivationGrid) -> Vec<f32> {
    let (z, scale) = (from.zero_point as f32, from.scale);
    let mut rows = vec![0.0f32; c];
    for y in 0..h {
        let mut row = vec![0.0f32; c];
        for px in x[y * w * c..(y + 1) * w * c].chunks_exact(c) {
            row.iter_mut()
                .zip(px)
                .for_each(|(r, &q)| *r += (q as f32 - z) * scale);
        }
        rows.iter_mut()
            .zip(&row)
            .for_each(|(m, r)| *m += r / w as f32);
    }
    rows.iter().map(|m| m / h as f32).collect()
}

/// A depthwise convolution on levels (one filter per channel), onto its grid.
struct DepthwiseStep {
    /// `[c][kernel * kernel]` levels.
    levels: Vec<i8>,
    epilogue: Epilogue,
    window: [usize; 3],
    input: [usize; 3],
    fill: u8,
}

impl DepthwiseStep {
    fn output(&self) -> [usize; 3] {
        let [h, w, c] = self.input;
        [
            kernels::window_out(h, self.window),
            kernels::window_out(w, self.window),
            c,
        ]
    }

    fn run(&self, path: Int8Path, x: &[u8], out: &mut Vec<u8>) {
        let [oh, ow, c] = self.output();
        let mut sums = vec![0i32; oh * ow * c];
        let weights = (self.levels.as_slice(), self.fill);
        kernels::depthwise_sums(x, self.input, self.window, weights, &mut sums);
        out.resize(oh * ow * c, 0);
        self.epilogue.to_levels(path, (&sums, c), (out, c));
    }
}

/// MobileNetV2's inverted residual block on levels: the expansion and the depthwise
/// convolution onto their ReLU6 grids, the projection onto the block's grid, or, with a
/// residual, in float with the input dequantized added before the block's grid (no ReLU).
struct InvertedStep {
    expand: Option<ConvStep>,
    depthwise: DepthwiseStep,
    project: ConvStep,
    /// The input's grid, when the block adds its input.
    residual: Option<ActivationGrid>,
    out: OutputGrid,
}

impl InvertedStep {
    fn run(&self, path: Int8Path, x: &[u8], out: &mut Vec<u8>, padded: &mut Vec<u8>) {
        let mut expanded = Vec::new();
        let hidden = match &self.expand {
            Some(expand) => {
                expand.run(path, x, (&mut expanded, padded));
                &expanded
            }
            None => x,
        };
        let mut filtered = Vec::new();
        self.depthwise.run(path, hidden, &mut filtered);
        let Some(input) = &self.residual else {
            return self.project.run(path, &filtered, (out, padded));
        };
        let mut sum = Vec::new();
        self.project.run_floats(path, &filtered, (&mut sum, padded));
        let (z, scale) = (input.zero_point as f32, input.scale);
        sum.iter_mut()
            .zip(x)
            .for_each(|(y, &q)| *y += (q as f32 - z) * scale);
        out.clear();
        out.extend(sum.iter().map(|&v| self.out.level(v)));
    }
}

/// The channel means of `[h][w][c]` levels on `from`, then `x W^T + b` in float (`W`
/// dequantized, `[n][c]`), onto `to`.
struct MeanLinearStep {
    input: [usize; 3],
    from: ActivationGrid,
    weight: Vec<f32>,
    bias: Vec<f32>,
    to: OutputGrid,
}

impl MeanLinearStep {
    fn run(&self, x: &[u8]) -> Vec<u8> {
        let means = channel_means(x, self.input, &self.from);
        self.weight
            .chunks_exact(means.len())
            .zip(&self.bias)
            .map(|(w, b)| {
                let dot = w.iter().zip(&means).fold(0.0f32, |acc, (w, m)| acc + w * m);
                self.to.level(dot + b)
            })
            .collect()
    }
}

/// One step on a sample's levels, `[h][w][c]`.
enum Step {
    Conv(Box<ConvStep>),
    MaxPool {
        input: [usize; 3],
        /// `[kernel, stride, padding]`.
        window: [usize; 3],
    },
    /// A residual block (ResNet's basic block).
    Block(Box<BlockStep>),
    /// MobileNetV2's inverted residual block.
    Inverted(Box<InvertedStep>),
    /// The mean over the image of each channel, in float (no grid between), then a linear
    /// layer in float on its dequantized weights (MobileNetV2's classifier), onto a grid.
    MeanLinear(Box<MeanLinearStep>),
    /// The mean over the image of each channel, onto a grid.
    GlobalMean {
        input: [usize; 3],
        from: ActivationGrid,
        to: OutputGrid,
    },
    /// From one grid to the next (a max-pool's output has its own grid).
    Regrid(Box<[u8; 256]>),
}

/// A fully connected layer on a batch of level rows.
struct LinearStep {
    weights: PackedInt8,
    epilogue: Epilogue,
}

/// A chain model's integer program.
pub struct IntegerModel {
    path: Int8Path,
    /// The first layer in float, or none when the input itself is quantized.
    first: Option<First>,
    /// Where the first floats go (the first layer's output, else the image): their grid (a
    /// ReLU included) and shape `[h, w, c]`.
    first_grid: OutputGrid,
    first_shape: [usize; 3],
    steps: Vec<Step>,
    linears: Vec<LinearStep>,
    /// The last point's grid: logits are its levels dequantized.
    logits: ActivationGrid,
}

/// Where a chain stands while its program is built: the shape of its levels and their grid.
#[derive(Clone, Copy)]
struct Cursor {
    shape: [usize; 3],
    grid: ActivationGrid,
}

/// What the builder reads from the file.
struct Source<'f> {
    weights: BTreeMap<&'f str, (&'f WeightEntry, &'f QuantizedWeight)>,
    floats: BTreeMap<&'f str, &'f [f32]>,
    grids: &'f BTreeMap<String, ActivationGrid>,
    fold: bool,
}

impl<'f> Source<'f> {
    fn new(file: &'f IntFile) -> Self {
        Self {
            weights: file
                .header
                .weights
                .iter()
                .zip(&file.weights)
                .map(|(e, w)| (e.layer.as_str(), (e, w)))
                .collect(),
            floats: file
                .header
                .floats
                .iter()
                .zip(&file.floats)
                .map(|(p, v)| (p.as_str(), v.as_slice()))
                .collect(),
            grids: &file.header.activations,
            fold: file.header.fold_batchnorm,
        }
    }

    /// That a layer's sums over `fan_in` levels (as packed) stay exact in `i32`.
    fn exact(layer: &str, fan_in: usize) -> Result<(), String> {
        if fan_in > kernels::MAX_FAN_IN {
            return Err(format!(
                "layer {layer:?}'s fan-in of {fan_in} could overflow i32 sums (at most {})",
                kernels::MAX_FAN_IN
            ));
        }
        Ok(())
    }

    fn grid(&self, point: &str) -> Result<ActivationGrid, String> {
        self.grids
            .get(point)
            .copied()
            .ok_or_else(|| format!("no activation grid at {point:?}"))
    }

    fn weight(&self, layer: &str) -> Result<(&'f WeightEntry, &'f QuantizedWeight), String> {
        let (entry, w) = self
            .weights
            .get(layer)
            .copied()
            .ok_or_else(|| format!("layer {layer:?} has no integer weights"))?;
        Ok((entry, w))
    }

    fn floats(&self, path: &str, len: usize) -> Result<Vec<f32>, String> {
        match self.floats.get(path) {
            Some(v) if v.len() == len => Ok(v.to_vec()),
            _ => Err(format!("no {len} values for {path:?}")),
        }
    }
}

/// `grid` as the epilogue writes it; `relu` clamps at the zero point.
fn output_grid(grid: &ActivationGrid, relu: bool) -> OutputGrid {
    let zero_point = grid.zero_point as f32;
    OutputGrid {
        scale: grid.scale,
        zero_point,
        low: if relu { zero_point } else { 0.0 },
        high: qmax_unsigned(grid.bits),
    }
}

/// `grid` after a ReLU6: the ReLU's zero point below, the level of 6 above (quantization is
/// monotone, so clipping then rounding is rounding then clamping; a grid made from the clip's
/// range has 6 as its top level).
fn relu6_grid(grid: &ActivationGrid) -> OutputGrid {
    let relu = output_grid(grid, true);
    OutputGrid {
        high: relu.high.min(relu.level(6.0) as f32),
        ..relu
    }
}

/// The epilogue of a layer with weights `w` reading levels on `input`, landing on `output`.
fn epilogue(
    row_sums: &[i32],
    w: &QuantizedWeight,
    input: &ActivationGrid,
    (biases, batch_norm): (Vec<f32>, Option<BatchNormAffine>),
    output: OutputGrid,
) -> Epilogue {
    Epilogue::new(
        row_sums,
        input.zero_point as i32,
        w.scales.iter().map(|s| input.scale * s).collect(),
        biases,
        batch_norm,
        output,
    )
}

impl<'f> Source<'f> {
    /// What follows convolution `name` per channel: its folded bias, or its BatchNorm.
    fn affine(&self, layer: &ConvBn, name: &str, c_out: usize) -> Result<ChannelAffine, String> {
        let bn = format!("{name}.bn");
        if self.fold {
            return Ok(ChannelAffine::Bias(
                self.floats(&format!("{bn}.beta"), c_out)?,
            ));
        }
        let get = |p: &str| self.floats(&format!("{bn}.{p}"), c_out);
        // burn adds epsilon as an f32, then takes the square root.
        let epsilon = layer.bn.epsilon as f32;
        Ok(ChannelAffine::BatchNorm(BatchNormAffine {
            mean: get("running_mean")?,
            std: get("running_var")?
                .iter()
                .map(|v| (v + epsilon).sqrt())
                .collect(),
            gamma: get("gamma")?,
            beta: get("beta")?,
        }))
    }

    /// A convolution after the first, reading `at`'s levels; its output lands on `point`'s grid.
    fn conv(
        &self,
        layer: &ConvBn,
        name: &str,
        at: &Cursor,
        point: &str,
        out: fn(&ActivationGrid) -> OutputGrid,
    ) -> Result<(Step, Cursor), String> {
        let out_grid = self.grid(point)?;
        let step = self.conv_step(layer, name, at, out(&out_grid))?;
        let cursor = Cursor {
            shape: step.output(),
            grid: out_grid,
        };
        Ok((Step::Conv(Box::new(step)), cursor))
    }

    /// Convolution `name` reading `at`'s levels, its epilogue landing on `out` (or giving the
    /// floats, [`ConvStep::run_floats`]).
    fn conv_step(
        &self,
        layer: &ConvBn,
        name: &str,
        at: &Cursor,
        out: OutputGrid,
    ) -> Result<ConvStep, String> {
        let (entry, w) = self.weight(name)?;
        let window = layer.window();
        let [kernel, ..] = window;
        let c_in = at.shape[2];
        let c_out = entry.rows;
        if entry.cols != c_in * kernel * kernel {
            return Err(format!("{name}: fan-in {} for {c_in} channels", entry.cols));
        }
        // The file's columns are `[c_in][ky][kx]`; the windows are read `[ky][kx][c]`, with
        // the channels padded to a multiple of 4 (zero weights) so that every window row is
        // whole groups of four; one channel is read `[ky][kx padded to 4]` instead.
        let taps = kernel * kernel;
        let one_channel = c_in == 1;
        let (row, fan_in) = match one_channel {
            true => (
                one_channel_segment(kernel),
                kernel * one_channel_segment(kernel),
            ),
            false => (
                kernel * c_in.next_multiple_of(4),
                taps * c_in.next_multiple_of(4),
            ),
        };
        Self::exact(name, fan_in)?;
        let mut levels = vec![0i8; c_out * fan_in];
        for o in 0..c_out {
            for ci in 0..c_in {
                for t in 0..taps {
                    let (ky, kx) = (t / kernel, t % kernel);
                    let at = match one_channel {
                        true => ky * row + kx,
                        false => (ky * kernel + kx) * c_in.next_multiple_of(4) + ci,
                    };
                    levels[o * fan_in + at] = w.levels[o * entry.cols + ci * taps + t];
                }
            }
        }
        let weights = PackedInt8::new(&levels, c_out, fan_in);
        let affine = self.affine(layer, name, c_out)?.split(c_out);
        Ok(ConvStep {
            epilogue: epilogue(weights.row_sums(), w, &at.grid, affine, out),
            weights,
            window,
            input: at.shape,
            fill: at.grid.zero_point as u8,
            one_channel,
        })
    }

    /// Depthwise convolution `name` reading `at`'s levels, onto `out`.
    fn depthwise(
        &self,
        layer: &ConvBn,
        name: &str,
        at: &Cursor,
        out: OutputGrid,
    ) -> Result<DepthwiseStep, String> {
        let (entry, w) = self.weight(name)?;
        let window = layer.window();
        let c = at.shape[2];
        if entry.rows != c || entry.cols != window[0] * window[0] {
            return Err(format!(
                "{name}: not a depthwise convolution of {c} channels"
            ));
        }
        let affine = self.affine(layer, name, c)?.split(c);
        let row_sums: Vec<i32> = w
            .levels
            .chunks_exact(entry.cols)
            .map(|r| r.iter().map(|&l| l as i32).sum())
            .collect();
        Ok(DepthwiseStep {
            epilogue: epilogue(&row_sums, w, &at.grid, affine, out),
            levels: w.levels.clone(),
            window,
            input: at.shape,
            fill: at.grid.zero_point as u8,
        })
    }

    /// Linear layer `name` in float on its dequantized weights (`[n][k]`) and its bias.
    fn float_linear(&self, layer: &Linear, name: &str) -> Result<(Vec<f32>, Vec<f32>), String> {
        let (entry, w) = self.weight(name)?;
        let weight = w
            .levels
            .iter()
            .enumerate()
            .map(|(i, &l)| l as f32 * w.scales[i / entry.cols])
            .collect();
        let bias = match layer.bias {
            Some(_) => self.floats(&format!("{name}.bias"), entry.rows)?,
            None => vec![0.0; entry.rows],
        };
        Ok((weight, bias))
    }

    /// A fully connected layer after the first, reading `at`'s levels flattened `[h][w][c]`
    /// (burn flattens `[c][h][w]`: the columns are reordered to match).
    fn linear(
        &self,
        layer: &Linear,
        name: &str,
        at: &Cursor,
        relu: bool,
    ) -> Result<(LinearStep, Cursor), String> {
        let (entry, w) = self.weight(name)?;
        let [h, wd, c] = at.shape;
        let (n, k) = (entry.rows, entry.cols);
        Self::exact(name, k)?;
        if k != h * wd * c {
            return Err(format!("{name}: fan-in {k} for {h}x{wd}x{c} features"));
        }
        let mut levels = vec![0i8; n * k];
        for o in 0..n {
            for ch in 0..c {
                for p in 0..h * wd {
                    levels[o * k + p * c + ch] = w.levels[o * k + ch * h * wd + p];
                }
            }
        }
        let weights = PackedInt8::new(&levels, n, k);
        let biases = match layer.bias {
            Some(_) => self.floats(&format!("{name}.bias"), n)?,
            None => vec![0.0; n],
        };
        let out_grid = self.grid(name)?;
        let step = LinearStep {
            epilogue: epilogue(
                weights.row_sums(),
                w,
                &at.grid,
                (biases, None),
                output_grid(&out_grid, relu),
            ),
            weights,
        };
        let cursor = Cursor {
            shape: [1, 1, n],
            grid: out_grid,
        };
        Ok((step, cursor))
    }
}

/// The table taking levels on `from` to levels on `to`: `(q - z) * s` then `to`'s rounding,
/// the simulation's own operations.
fn regrid(from: &ActivationGrid, to: &ActivationGrid) -> Box<[u8; 256]> {
    let target = output_grid(to, false);
    let mut table = Box::new([0u8; 256]);
    for (q, t) in table.iter_mut().enumerate() {
        *t = target.level((q as f32 - from.zero_point as f32) * from.scale);
    }
    table
}

/// Builds a program step by step: the first layer, then convolutions, pools and linear layers.
struct Builder<'f> {
    source: Source<'f>,
    /// The first layer in float (none when the input is quantized), and where its output goes.
    first: Option<(Option<First>, OutputGrid, [usize; 3])>,
    at: Option<Cursor>,
    steps: Vec<Step>,
    linears: Vec<LinearStep>,
}

impl<'f> Builder<'f> {
    /// A program for inputs of `[h, w, c]`: when the file quantizes the input, every layer
    /// runs on levels from the start.
    fn new(file: &'f IntFile, shape: [usize; 3]) -> Self {
        let source = Source::new(file);
        let input = source.grids.get(models::INPUT_POINT).copied();
        Self {
            first: input.map(|grid| (None, output_grid(&grid, false), shape)),
            at: input.map(|grid| Cursor { shape, grid }),
            source,
            steps: Vec::new(),
            linears: Vec::new(),
        }
    }

    /// A convolution: the first layer in float when the input is not on a grid, else on
    /// levels.
    fn conv(
        &mut self,
        layer: &ConvBn,
        name: &str,
        input: [usize; 2],
        point: &str,
    ) -> Result<(), String> {
        self.conv_to(layer, name, input, (point, |g| output_grid(g, true)))
    }

    /// [`Self::conv`] onto the grid `out` makes of `point`'s (ReLU or ReLU6).
    fn conv_to(
        &mut self,
        layer: &ConvBn,
        name: &str,
        input: [usize; 2],
        (point, out): (&str, fn(&ActivationGrid) -> OutputGrid),
    ) -> Result<(), String> {
        if self.at.is_some() {
            let (step, at) = self.source.conv(layer, name, self.cursor()?, point, out)?;
            self.steps.push(step);
            self.at = Some(at);
            return Ok(());
        }
        let grid = self.source.grid(point)?;
        let window = layer.window();
        let [c_out, ..] = layer.conv.weight.dims();
        let [h, w] = input.map(|n| kernels::window_out(n, window));
        let shape = [h, w, c_out];
        let first = First::Conv {
            weight: layer.conv.weight.val(),
            window,
            affine: self.source.affine(layer, name, c_out)?,
        };
        self.first = Some((Some(first), out(&grid), shape));
        self.at = Some(Cursor { shape, grid });
        Ok(())
    }

    /// A linear stack's layers named `{prefix}.{i}`, ReLU after all but the last (the first
    /// in float when the input is not on a grid).
    fn linear_stack(&mut self, layers: &[Linear], prefix: &str) -> Result<(), String> {
        let last = layers.len() - 1;
        for (i, layer) in layers.iter().enumerate() {
            let name = format!("{prefix}.{i}");
            self.linear(layer, &name, i < last)?;
        }
        Ok(())
    }

    fn linear(&mut self, layer: &Linear, name: &str, relu: bool) -> Result<(), String> {
        if self.at.is_none() {
            let grid = self.source.grid(name)?;
            let [_, width] = layer.weight.dims();
            let shape = [1, 1, width];
            let first = First::Linear {
                packed: kernels::PackedLinear::new(layer),
                layer: layer.clone(),
            };
            self.first = Some((Some(first), output_grid(&grid, relu), shape));
            self.at = Some(Cursor { shape, grid });
            return Ok(());
        }
        let (step, at) = self.source.linear(layer, name, self.cursor()?, relu)?;
        self.linears.push(step);
        self.at = Some(at);
        Ok(())
    }

    fn cursor(&self) -> Result<&Cursor, String> {
        self.at.as_ref().ok_or_else(|| "no first layer".to_string())
    }

    /// Max-pooling over `[kernel, stride, padding]` windows, then (when the pool's output has
    /// a grid of its own) onto `point`'s.
    fn max_pool(&mut self, window: [usize; 3], point: Option<&str>) -> Result<(), String> {
        let at = self.cursor()?;
        let [h, w, c] = at.shape;
        let mut grid = at.grid;
        self.steps.push(Step::MaxPool {
            input: at.shape,
            window,
        });
        if let Some(point) = point {
            let to = self.source.grid(point)?;
            self.steps.push(Step::Regrid(regrid(&grid, &to)));
            grid = to;
        }
        let shape = [
            kernels::window_out(h, window),
            kernels::window_out(w, window),
            c,
        ];
        self.at = Some(Cursor { shape, grid });
        Ok(())
    }

    /// ResNet's basic block `name` on the cursor's levels.
    fn block(&mut self, block: &BasicBlock, name: &str) -> Result<(), String> {
        let at = *self.cursor()?;
        let input = at.grid;
        let out = self.source.grid(name)?;
        let out_grid = output_grid(&out, true);
        let inner = format!("{name}.conv1");
        let inner_grid = self.source.grid(&format!("{inner}.relu"))?;
        let relu = output_grid(&inner_grid, true);
        let conv1 = self.source.conv_step(&block.conv1, &inner, &at, relu)?;
        let inner_at = Cursor {
            shape: conv1.output(),
            grid: inner_grid,
        };
        let conv2 =
            self.source
                .conv_step(&block.conv2, &format!("{name}.conv2"), &inner_at, out_grid)?;
        let projection = match &block.projection {
            Some(p) => {
                Some(
                    self.source
                        .conv_step(p, &format!("{name}.projection"), &at, out_grid)?,
                )
            }
            None => None,
        };
        let shape = conv2.output();
        if projection.as_ref().map_or(at.shape, |p| p.output()) != shape {
            return Err(format!("{name}: the shortcut's shape is not the block's"));
        }
        self.steps.push(Step::Block(Box::new(BlockStep {
            conv1,
            conv2,
            projection,
            input,
            out: out_grid,
        })));
        self.at = Some(Cursor { shape, grid: out });
        Ok(())
    }

    /// MobileNetV2's inverted residual block `name` on the cursor's levels.
    fn inverted(&mut self, block: &InvertedResidual, name: &str) -> Result<(), String> {
        let at = *self.cursor()?;
        let (expand, hidden_at) = match &block.expand {
            Some(layer) => {
                let grid = self.source.grid(&format!("{name}.expand.relu6"))?;
                let expand = format!("{name}.expand");
                let step = self
                    .source
                    .conv_step(layer, &expand, &at, relu6_grid(&grid))?;
                let shape = step.output();
                (Some(step), Cursor { shape, grid })
            }
            None => (None, at),
        };
        let filtered = self.source.grid(&format!("{name}.depthwise.relu6"))?;
        let depthwise = self.source.depthwise(
            &block.depthwise,
            &format!("{name}.depthwise"),
            &hidden_at,
            relu6_grid(&filtered),
        )?;
        let filtered_at = Cursor {
            shape: depthwise.output(),
            grid: filtered,
        };
        let out = self.source.grid(name)?;
        let out_grid = output_grid(&out, false);
        let project_name = format!("{name}.project");
        let project =
            self.source
                .conv_step(&block.project, &project_name, &filtered_at, out_grid)?;
        let shape = project.output();
        if block.residual && shape != at.shape {
            return Err(format!("{name}: the residual's shape is not the block's"));
        }
        self.steps.push(Step::Inverted(Box::new(InvertedStep {
            expand,
            depthwise,
            project,
            residual: block.residual.then_some(at.grid),
            out: out_grid,
        })));
        self.at = Some(Cursor { shape, grid: out });
        Ok(())
    }

    /// The channel means, then linear layer `name` in float, onto its grid.
    fn mean_linear(&mut self, layer: &Linear, name: &str) -> Result<(), String> {
        let at = *self.cursor()?;
        let (weight, bias) = self.source.float_linear(layer, name)?;
        if weight.len() != bias.len() * at.shape[2] {
            return Err(format!("{name}: fan-in for {} channels", at.shape[2]));
        }
        let to = self.source.grid(name)?;
        let classes = bias.len();
        self.steps.push(Step::MeanLinear(Box::new(MeanLinearStep {
            input: at.shape,
            from: at.grid,
            weight,
            bias,
            to: output_grid(&to, false),
        })));
        self.at = Some(Cursor {
            shape: [1, 1, classes],
            grid: to,
        });
        Ok(())
    }

    /// Each channel's mean over the image, onto `point`'s grid.
    fn global_mean(&mut self, point: &str) -> Result<(), String> {
        let at = *self.cursor()?;
        let to = self.source.grid(point)?;
        self.steps.push(Step::GlobalMean {
            input: at.shape,
            from: at.grid,
            to: output_grid(&to, false),
        });
        self.at = Some(Cursor {
            shape: [1, 1, at.shape[2]],
            grid: to,
        });
        Ok(())
    }

    fn finish(self, path: Int8Path) -> Result<IntegerModel, String> {
        let (first, first_grid, first_shape) = self.first.ok_or("no first layer")?;
        let logits = self.at.ok_or("no first layer")?.grid;
        Ok(IntegerModel {
            path,
            first,
            first_grid,
            first_shape,
            steps: self.steps,
            linears: self.linears,
            logits,
        })
    }
}

impl IntegerModel {
    /// The integer program of `model` (built from `file`, whose values it holds) for inputs of
    /// `input`, or why there is none (an architecture this does not run, a point
    /// without a grid).
    pub fn new(
        model: &Model,
        file: &IntFile,
        input: &InputShape,
        path: Int8Path,
    ) -> Result<Self, String> {
        let size = [input.height, input.width];
        let mut b = Builder::new(file, [input.height, input.width, input.channels]);
        match model {
            Model::Mlp(mlp) => b.linear_stack(&mlp.layers, "layers")?,
            Model::LeNet5(net) => {
                b.conv(&net.conv1, "conv1", size, "conv1")?;
                b.max_pool([2, 2, 0], None)?;
                b.conv(&net.conv2, "conv2", size, "conv2")?;
                b.max_pool([2, 2, 0], None)?;
                for (i, (layer, name)) in [&net.fc1, &net.fc2, &net.fc3]
                    .into_iter()
                    .zip(["fc1", "fc2", "fc3"])
                    .enumerate()
                {
                    b.linear(layer, name, i < 2)?;
                }
            }
            Model::Vgg(vgg) => {
                for (s, stage) in vgg.stages.iter().enumerate() {
                    for (i, conv) in stage.iter().enumerate() {
                        let name = format!("stages.{s}.{i}");
                        b.conv(conv, &name, size, &format!("{name}.relu"))?;
                    }
                    b.max_pool([2, 2, 0], Some(&format!("stages.{s}")))?;
                }
                b.linear_stack(&vgg.fc, "fc")?;
            }
            Model::ResNet(net) => {
                b.conv(&net.stem, "stem", size, "stem")?;
                if let Some(pool) = &net.stem_pool {
                    let padding = match pool.padding {
                        burn::nn::PaddingConfig2d::Explicit(top, ..) => top,
                        _ => 0,
                    };
                    let window = [pool.kernel_size[0], pool.stride[0], padding];
                    if pool.kernel_size[0] != pool.kernel_size[1] || pool.dilation != [1, 1] {
                        return Err("the stem's max-pool is not square".to_string());
                    }
                    b.max_pool(window, None)?;
                }
                for (i, block) in net.blocks.iter().enumerate() {
                    b.block(block, &format!("blocks.{i}"))?;
                }
                b.global_mean("pool")?;
                b.linear(&net.fc, "fc", false)?;
            }
            Model::MobileNetV2(net) => {
                b.conv_to(&net.stem, "stem", size, ("stem", relu6_grid))?;
                for (i, block) in net.blocks.iter().enumerate() {
                    b.inverted(block, &format!("blocks.{i}"))?;
                }
                b.conv_to(&net.head, "head", size, ("head", relu6_grid))?;
                b.mean_linear(&net.classifier, "classifier")?;
            }
        }
        b.finish(path)
    }

    /// The kernels a pass runs, for reports.
    pub fn kernels(&self) -> String {
        match self.first {
            Some(_) => format!("{} (first layer float)", self.path.name()),
            None => self.path.name().to_string(),
        }
    }

    /// # Shapes
    /// - input: `[batch, channels, height, width]`, normalised pixels
    /// - output: `[batch, classes]` logits
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let batch = images.dims()[0];
        let classes = self.classes();
        if batch == 0 {
            return Tensor::from_data(TensorData::new(Vec::<f32>::new(), [0, classes]), &device);
        }
        let values = self.first_layer(images);
        let per_sample = values.len() / batch.max(1);
        let tasks = rayon::current_num_threads().clamp(1, batch.max(1));
        let per_task = batch.div_ceil(tasks).max(1);
        let logits: Vec<f32> = values
            .par_chunks(per_task * per_sample)
            .flat_map_iter(|chunk| self.run(chunk, chunk.len() / per_sample))
            .collect();
        Tensor::from_data(TensorData::new(logits, [batch, classes]), &device)
    }

    /// The first floats to quantize, `[batch][c][h][w]`: the first layer's output (its bias or
    /// BatchNorm applied), or the images themselves when they are quantized.
    fn first_layer(&self, images: Tensor<4>) -> Vec<f32> {
        let host = |t: Tensor<2>| {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 activations")
        };
        let Some(first) = &self.first else {
            return host(images.flatten::<2>(1, 3));
        };
        match first {
            First::Conv {
                weight,
                window: [_, stride, padding],
                affine,
            } => {
                let (s, p) = ([*stride; 2], [*padding; 2]);
                let x = kernels::conv2d(&images, weight, s, p).unwrap_or_else(|| {
                    burn::tensor::module::conv2d(
                        images,
                        weight.clone(),
                        None,
                        burn::tensor::ops::ConvOptions::new(s, p, [1, 1], 1),
                    )
                });
                let [_, _, h, w] = x.dims();
                let mut values = host(x.flatten::<2>(1, 3));
                let plane = h * w;
                let per_sample = plane * self.first_shape[2];
                values
                    .par_chunks_mut(per_sample)
                    .for_each(|sample| affine.apply(sample, plane));
                values
            }
            First::Linear { layer, packed } => {
                let x = images.flatten::<2>(1, 3);
                match packed {
                    Some(packed) => packed.forward_values(&host(x), false),
                    None => {
                        let bias = layer.bias.as_ref().map(|b| b.val());
                        host(burn::tensor::module::linear(x, layer.weight.val(), bias))
                    }
                }
            }
        }
    }

    /// Logits per sample: the last linear layer's outputs, else what the steps leave.
    fn classes(&self) -> usize {
        match self.linears.last() {
            Some(l) => l.weights.n(),
            None => self.features(),
        }
    }

    /// `samples` first-layer outputs (`[c][h][w]` floats each) to logits.
    fn run(&self, values: &[f32], samples: usize) -> Vec<f32> {
        let [h, w, c] = self.first_shape;
        let plane = h * w;
        let features = self.features();
        let row = self
            .linears
            .first()
            .map_or(features, |l| l.weights.row_stride());
        let mut rows = vec![0u8; samples * row];
        let mut scratch = Scratch::default();
        for (s, x) in values.chunks_exact(plane * c).enumerate() {
            scratch.a.resize(plane * c, 0);
            kernels::quantize_to_pixels(self.path, x, [plane, c], &self.first_grid, &mut scratch.a);
            let out = self.run_steps(&mut scratch);
            rows[s * row..][..features].copy_from_slice(&out[..features]);
        }
        let (levels, width) = self.run_linears(rows, samples, row);
        let (z, scale) = (self.logits.zero_point as f32, self.logits.scale);
        let classes = self.classes();
        (0..samples)
            .flat_map(|s| {
                levels[s * width..][..classes]
                    .iter()
                    .map(move |&q| (q as f32 - z) * scale)
            })
            .collect()
    }

    /// The per-sample features the convolutions leave (`[h][w][c]` flattened).
    fn features(&self) -> usize {
        let mut shape = self.first_shape;
        for step in &self.steps {
            shape = match step {
                Step::Conv(conv) => {
                    let [h, w, _] = conv.input;
                    [
                        kernels::window_out(h, conv.window),
                        kernels::window_out(w, conv.window),
                        conv.weights.n(),
                    ]
                }
                Step::MaxPool {
                    input: [h, w, c],
                    window,
                } => [
                    kernels::window_out(*h, *window),
                    kernels::window_out(*w, *window),
                    *c,
                ],
                Step::Block(block) => block.conv2.output(),
                Step::GlobalMean {
                    input: [_, _, c], ..
                } => [1, 1, *c],
                Step::Inverted(block) => block.project.output(),
                Step::MeanLinear(step) => [1, 1, step.bias.len()],
                Step::Regrid(_) => shape,
            };
        }
        shape.iter().product()
    }

    /// The convolution steps on one sample's levels in `scratch.a`; returns them.
    fn run_steps<'s>(&self, scratch: &'s mut Scratch) -> &'s [u8] {
        for step in &self.steps {
            let Scratch { a, b, unfolded } = scratch;
            match step {
                Step::Conv(conv) => {
                    conv.run(self.path, a, (b, unfolded));
                    std::mem::swap(a, b);
                }
                Step::MaxPool { input, window } => {
                    let [h, w, c] = *input;
                    let (oh, ow) = (
                        kernels::window_out(h, *window),
                        kernels::window_out(w, *window),
                    );
                    b.resize(oh * ow * c, 0);
                    kernels::max_pool_levels(a, *input, *window, b);
                    std::mem::swap(a, b);
                }
                Step::Block(block) => {
                    block.run(self.path, a, b, unfolded);
                    std::mem::swap(a, b);
                }
                Step::GlobalMean { input, from, to } => {
                    *a = channel_means(a, *input, from)
                        .iter()
                        .map(|&m| to.level(m))
                        .collect();
                }
                Step::Inverted(block) => {
                    block.run(self.path, a, b, unfolded);
                    std::mem::swap(a, b);
                }
                Step::MeanLinear(step) => *a = step.run(a),
                Step::Regrid(table) => a.iter_mut().for_each(|q| *q = table[*q as usize]),
            }
        }
        &scratch.a
    }

    /// The linear layers on `samples` rows of levels (`stride` apart); returns the last
    /// layer's levels and their stride.
    fn run_linears(
        &self,
        mut rows: Vec<u8>,
        samples: usize,
        mut stride: usize,
    ) -> (Vec<u8>, usize) {
        for (i, layer) in self.linears.iter().enumerate() {
            let weights = &layer.weights;
            let n = weights.n();
            let next = self
                .linears
                .get(i + 1)
                .map_or(n, |l| l.weights.row_stride());
            let mut out = vec![0u8; samples * next];
            let a = (rows.as_slice(), Rows::dense(stride), samples);
            weights.gemm_levels(self.path, a, &layer.epilogue, (&mut out, next));
            rows = out;
            stride = next;
        }
        (rows, stride)
    }
}

/// Buffers one task reuses across its samples.
#[derive(Default)]
struct Scratch {
    a: Vec<u8>,
    b: Vec<u8>,
    /// A convolution's padded image.
    unfolded: Vec<u8>,
}
