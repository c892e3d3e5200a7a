//! A `.qnt` model executed in integer arithmetic: `u8` activations on their grids, `i8`
//! weight levels, `i32` sums (`kernels::PackedInt8`, VNNI where the CPU has it), and each
//! layer's sums requantized onto the next grid with the file's scales.
//!
//! The simulation (`QuantizedModel::simulate`, dequantized weights on the float kernels with
//! every activation rounded to its grid) is the specification. This computes the same function
//! and differs from it in one way only: the simulation sums `((q - z) s_x) (l s_w)` in `f32`,
//! rounding after every product, while this sums `(q - z) l` exactly in `i32` and scales once
//! (`sum * s_x s_w + bias`). The two values differ by `f32` rounding (about 1e-7 relative), so
//! a requantized activation can land one level apart where the value sits within that of a
//! rounding boundary: rare, and measured as top-1 agreement on whole test sets.
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
//! Chains of convolutions, max-pools and linear layers run here (MLP, LeNet-5, VGG); ResNet and
//! MobileNetV2 (residual additions, depthwise convolutions) still run as the simulation.

use std::collections::BTreeMap;

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::TensorData;
use kernels::{BatchNormAffine, Epilogue, Int8Path, OutputGrid, PackedInt8, Rows};
use models::{ConvBn, InputShape, Model};
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
}

impl ConvStep {
    /// The convolution of one sample's levels `x` (`[h][w][c]`) into `out` (`[h'][w'][n]`),
    /// read in place from `padded`: the image with a border of the zero point's level and its
    /// channels padded to a multiple of 4, so each window is `kernel` runs of whole groups of
    /// four, one per window row (no unfolding).
    fn run(&self, path: Int8Path, x: &[u8], (out, padded): (&mut Vec<u8>, &mut Vec<u8>)) {
        let [h, w, c] = self.input;
        let [kernel, stride, padding] = self.window;
        let (oh, ow) = (
            kernels::window_out(h, self.window),
            kernels::window_out(w, self.window),
        );
        let n = self.weights.n();
        out.resize(oh * ow * n, 0);
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
        for oy in 0..oh {
            let a = &padded[oy * stride * wp * cp..];
            let dst = &mut out[oy * ow * n..];
            self.weights
                .gemm_levels(path, (a, rows, ow), &self.epilogue, (dst, n));
        }
    }
}

/// One step on a sample's levels, `[h][w][c]`.
enum Step {
    Conv(Box<ConvStep>),
    MaxPool {
        input: [usize; 3],
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

/// The epilogue of a layer with weights `w` reading levels on `input`, landing on `output`.
fn epilogue(
    weights: &PackedInt8,
    w: &QuantizedWeight,
    input: &ActivationGrid,
    (biases, batch_norm): (Vec<f32>, Option<BatchNormAffine>),
    output: OutputGrid,
) -> Epilogue {
    Epilogue::new(
        weights.row_sums(),
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
        relu: bool,
    ) -> Result<(Step, Cursor), String> {
        let (entry, w) = self.weight(name)?;
        let [kernel, stride, padding] = layer.window();
        let [h, wd, c_in] = at.shape;
        let c_out = entry.rows;
        if entry.cols != c_in * kernel * kernel {
            return Err(format!("{name}: fan-in {} for {c_in} channels", entry.cols));
        }
        // The file's columns are `[c_in][ky][kx]`; the windows are read `[ky][kx][c]`, with
        // the channels padded to a multiple of 4 (zero weights) so that every window row is
        // whole groups of four.
        let taps = kernel * kernel;
        let c = c_in.next_multiple_of(4);
        Self::exact(name, taps * c)?;
        let mut levels = vec![0i8; c_out * taps * c];
        for o in 0..c_out {
            for ci in 0..c_in {
                for t in 0..taps {
                    levels[(o * taps + t) * c + ci] = w.levels[o * entry.cols + ci * taps + t];
                }
            }
        }
        let weights = PackedInt8::new(&levels, c_out, taps * c);
        let (biases, batch_norm) = match self.affine(layer, name, c_out)? {
            ChannelAffine::Bias(b) => (b, None),
            ChannelAffine::BatchNorm(bn) => (vec![0.0; c_out], Some(bn)),
        };
        let out_grid = self.grid(point)?;
        let window = [kernel, stride, padding];
        let step = Step::Conv(Box::new(ConvStep {
            epilogue: epilogue(
                &weights,
                w,
                &at.grid,
                (biases, batch_norm),
                output_grid(&out_grid, relu),
            ),
            weights,
            window,
            input: at.shape,
            fill: at.grid.zero_point as u8,
        }));
        let shape = [
            kernels::window_out(h, window),
            kernels::window_out(wd, window),
            c_out,
        ];
        Ok((
            step,
            Cursor {
                shape,
                grid: out_grid,
            },
        ))
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
                &weights,
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
        if self.at.is_some() {
            let (step, at) = self.source.conv(layer, name, self.cursor()?, point, true)?;
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
        self.first = Some((Some(first), output_grid(&grid, true), shape));
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

    /// 2x2 max-pooling, then (when the pool's output has a grid of its own) onto `point`'s.
    fn max_pool(&mut self, point: Option<&str>) -> Result<(), String> {
        let at = self.cursor()?;
        let [h, w, c] = at.shape;
        let mut grid = at.grid;
        self.steps.push(Step::MaxPool { input: at.shape });
        if let Some(point) = point {
            let to = self.source.grid(point)?;
            self.steps.push(Step::Regrid(regrid(&grid, &to)));
            grid = to;
        }
        self.at = Some(Cursor {
            shape: [h / 2, w / 2, c],
            grid,
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
                b.max_pool(None)?;
                b.conv(&net.conv2, "conv2", size, "conv2")?;
                b.max_pool(None)?;
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
                    b.max_pool(Some(&format!("stages.{s}")))?;
                }
                b.linear_stack(&vgg.fc, "fc")?;
            }
            Model::ResNet(_) | Model::MobileNetV2(_) => {
                return Err(format!(
                    "{} runs as the simulation (no integer residual or depthwise layers yet)",
                    model.kind()
                ))
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
        let values = self.first_layer(images);
        let per_sample = values.len() / batch.max(1);
        let tasks = rayon::current_num_threads().clamp(1, batch.max(1));
        let per_task = batch.div_ceil(tasks).max(1);
        let classes = self.classes();
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

    fn classes(&self) -> usize {
        match self.linears.last() {
            Some(l) => l.weights.n(),
            None => self.first_shape[2],
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
                Step::MaxPool { input: [h, w, c] } => [h / 2, w / 2, *c],
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
                Step::MaxPool { input } => {
                    let [h, w, c] = *input;
                    b.resize((h / 2) * (w / 2) * c, 0);
                    kernels::max_pool_2x2_levels(a, *input, b);
                    std::mem::swap(a, b);
                }
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
