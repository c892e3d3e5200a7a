//! Fully connected layers for inference, from weights packed once.
//!
//! A `[batch, d_in] x [d_in, d_out]` product at inference batch sizes (1 to a few dozen rows)
//! is bound by reading the weights: the MLP teacher's 1200x1200 layer is 5.8 MB, more than a
//! core's L2. `gemm` (flex's matmul) walks the weight matrix in column panels, which in burn's
//! row-major `[d_in, d_out]` layout means strided rows the hardware prefetchers follow poorly,
//! and packs them on every call; MKL (PyTorch's) measures the same speed. An inference model's
//! weights do not change, so they are packed here once, panel after panel, each panel
//! `[d_in][48]` contiguous: every call then streams them front to back. Measured on this
//! 2-core Xeon (AVX-512), one thread, batch 32: the 784-1200-1200-10 MLP 1.37x faster than
//! through burn's layers (`cargo test -p runner --bench inference`), about the same at batch 1,
//! which is bound by reading the weights from memory either way.
//!
//! The micro-kernel holds an `8 x 48` tile of the output in 24 AVX-512 registers, starting
//! from the bias, and adds one rank-1 update per input feature in order, so every output is
//! `bias + sum_i x_i w_i` summed left to right: the same on any thread count. Machines without
//! AVX-512 get `None` from [`PackedLinear::new`] and keep burn's matmul.

use std::borrow::Cow;

use burn::backend::Flex;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;
#[cfg(target_arch = "x86_64")]
pub(crate) use pulp::x86::V4 as Isa;
#[cfg(target_arch = "x86_64")]
use pulp::{cast, f32x16, Simd};
use rayon::prelude::*;

use crate::aligned::CacheAligned;
use crate::flex::{contiguous_f32, flex_f32};
use crate::SparseLinear;

/// The instruction set the micro-kernel is written for; elsewhere than x86-64 there is none,
/// so nothing is ever packed and callers keep burn's matmul.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Isa;

#[cfg(not(target_arch = "x86_64"))]
impl Isa {
    pub(crate) fn try_new() -> Option<Self> {
        None
    }
}

/// Output columns per panel: three 16-lane registers.
const PANEL: usize = 48;
/// Output rows per tile: 8 rows x 3 registers = 24 accumulators of the 32 registers.
const TILE_ROWS: usize = 8;
/// Fewest rows per parallel task: a smaller batch runs on the calling thread.
const ROWS_PER_TASK: usize = 16;

/// How a layer's rows are split into parallel tasks.
pub(crate) struct RowTasks {
    /// `(d_in, d_out)`.
    pub dims: (usize, usize),
    /// Fewest rows per task: a smaller batch runs on the calling thread.
    pub min_rows: usize,
    /// Rows per task are a multiple of this (the kernel's tile).
    pub multiple: usize,
}

impl RowTasks {
    /// `rows(x, out)` over row-major `x` (`[batch, d_in]`) into a fresh `[batch, d_out]`: one
    /// task per thread of the current rayon pool when the batch has at least `2 * min_rows`
    /// rows (each task reads all the weights once, so more tasks would only read them more
    /// often), else on the calling thread.
    pub fn run(
        &self,
        x: &[f32],
        batch: usize,
        rows: impl Fn(&[f32], &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let (d_in, d_out) = self.dims;
        let mut out = vec![0.0; batch * d_out];
        let threads = rayon::current_num_threads();
        if batch >= 2 * self.min_rows && threads > 1 {
            let per_task = batch
                .div_ceil(threads)
                .next_multiple_of(self.multiple)
                .max(self.min_rows);
            out.par_chunks_mut(per_task * d_out)
                .zip(x.par_chunks(per_task * d_in))
                .for_each(|(out, x)| rows(x, out));
        } else {
            rows(x, &mut out);
        }
        out
    }
}

/// One fully connected layer, `y = x W + b`, with `W` packed in column panels.
#[derive(Debug, Clone)]
pub struct PackedLinear {
    d_in: usize,
    d_out: usize,
    /// `[d_out.div_ceil(48)][d_in][48]`, the last panel padded with zero columns, from
    /// `panels[start..]` (see [`CacheAligned`]).
    panels: CacheAligned,
    /// `[d_out.div_ceil(48) * 48]`, zero-padded.
    bias: Vec<f32>,
    simd: Isa,
}

impl PackedLinear {
    /// Packs a row-major `[d_in, d_out]` weight matrix and its bias, or `None` on a CPU
    /// without AVX-512 (or with empty shapes).
    ///
    /// # Panics
    /// If `weight` does not hold `d_in * d_out` values or `bias` does not hold `d_out`.
    pub(crate) fn from_values(
        weight: &[f32],
        bias: Option<&[f32]>,
        d_in: usize,
        d_out: usize,
    ) -> Option<Self> {
        assert_eq!(weight.len(), d_in * d_out, "weight of {d_in}x{d_out}");
        let simd = Isa::try_new()?;
        if d_in == 0 || d_out == 0 {
            return None;
        }
        let n_panels = d_out.div_ceil(PANEL);
        let mut panels = CacheAligned::zeros(n_panels * d_in * PANEL);
        for (p, panel) in panels
            .values_mut()
            .chunks_exact_mut(d_in * PANEL)
            .enumerate()
        {
            let start = p * PANEL;
            let width = PANEL.min(d_out - start);
            for (packed, row) in panel
                .chunks_exact_mut(PANEL)
                .zip(weight.chunks_exact(d_out))
            {
                packed[..width].copy_from_slice(&row[start..start + width]);
            }
        }
        let mut padded = vec![0.0; n_panels * PANEL];
        if let Some(bias) = bias {
            assert_eq!(bias.len(), d_out, "bias of {d_out}");
            padded[..d_out].copy_from_slice(bias);
        }
        Some(Self {
            d_in,
            d_out,
            panels,
            bias: padded,
            simd,
        })
    }

    /// Packs a burn layer whose parameters live on flex as f32 (`None` otherwise, or without
    /// AVX-512).
    pub fn new(layer: &Linear) -> Option<Self> {
        let values = LayerValues::of(layer)?;
        Self::from_values(
            &values.weight,
            values.bias.as_deref(),
            values.d_in,
            values.d_out,
        )
    }

    /// Whether this CPU runs the micro-kernel (AVX-512 on x86-64), i.e. whether layers pack.
    pub fn available() -> bool {
        Isa::try_new().is_some()
    }

    /// `x W + b` (and `max(0, .)` when `relu`) for row-major `x`, in parallel over rows on
    /// the current rayon pool when the batch is large enough.
    ///
    /// # Shapes
    /// - `x`: `[batch, d_in]`, row-major
    /// - output: `[batch, d_out]`, row-major
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `d_in`.
    pub fn forward_values(&self, x: &[f32], relu: bool) -> Vec<f32> {
        assert_eq!(x.len() % self.d_in, 0, "input rows of {} values", self.d_in);
        let batch = x.len() / self.d_in;
        let tasks = RowTasks {
            dims: (self.d_in, self.d_out),
            min_rows: ROWS_PER_TASK,
            multiple: TILE_ROWS,
        };
        tasks.run(x, batch, |x, out| self.rows(x, out, relu))
    }

    /// Every panel for the rows of `x`, tile after tile.
    fn rows(&self, x: &[f32], out: &mut [f32], relu: bool) {
        let panel_len = self.d_in * PANEL;
        for (p, panel) in self.panels.values().chunks_exact(panel_len).enumerate() {
            let start = p * PANEL;
            let columns = start..start + PANEL.min(self.d_out - start);
            let bias: &[f32; PANEL] = self.bias[start..start + PANEL]
                .try_into()
                .expect("bias is padded to whole panels");
            for (x, out) in x
                .chunks(TILE_ROWS * self.d_in)
                .zip(out.chunks_mut(TILE_ROWS * self.d_out))
            {
                let tile = Tile {
                    simd: self.simd,
                    x,
                    d_in: self.d_in,
                    panel,
                    bias,
                    out,
                    d_out: self.d_out,
                    columns: columns.clone(),
                    relu,
                };
                match x.len() / self.d_in {
                    8 => tile.run::<8>(),
                    7 => tile.run::<7>(),
                    6 => tile.run::<6>(),
                    5 => tile.run::<5>(),
                    4 => tile.run::<4>(),
                    3 => tile.run::<3>(),
                    2 => tile.run::<2>(),
                    _ => tile.run::<1>(),
                }
            }
        }
    }
}

/// Up to 8 rows of the output times one panel of columns.
struct Tile<'a> {
    simd: Isa,
    /// `[rows, d_in]`
    x: &'a [f32],
    d_in: usize,
    /// `[d_in][48]`
    panel: &'a [f32],
    bias: &'a [f32; PANEL],
    /// `[rows, d_out]`
    out: &'a mut [f32],
    d_out: usize,
    /// The panel's columns of the output (fewer than 48 in a padded last panel).
    columns: std::ops::Range<usize>,
    relu: bool,
}

impl Tile<'_> {
    /// Runs the micro-kernel with AVX-512 enabled (pulp's `vectorize` compiles the inlined
    /// body for the `V4` target features).
    #[cfg(target_arch = "x86_64")]
    fn run<const ROWS: usize>(self) {
        self.simd.vectorize(Kernel::<ROWS>(self));
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run<const ROWS: usize>(self) {
        unreachable!("nothing is packed without the micro-kernel's instruction set")
    }
}

#[cfg(target_arch = "x86_64")]
struct Kernel<'a, const ROWS: usize>(Tile<'a>);

#[cfg(target_arch = "x86_64")]
impl<const ROWS: usize> pulp::NullaryFnOnce for Kernel<'_, ROWS> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Tile {
            simd,
            x,
            d_in,
            panel,
            bias,
            out,
            d_out,
            columns,
            relu,
        } = self.0;
        // Each row sliced to exactly `d_in` values (rows past `ROWS` are empty and never read).
        let rows: [&[f32]; TILE_ROWS] = std::array::from_fn(|r| {
            if r < ROWS {
                &x[r * d_in..][..d_in]
            } else {
                &[]
            }
        });
        let bias: [f32x16; 3] = cast(*bias);
        let mut acc = [bias; TILE_ROWS];
        for (i, w) in panel.chunks_exact(PANEL).enumerate() {
            let w: [f32x16; 3] = cast(*<&[f32; PANEL]>::try_from(w).expect("48 columns"));
            // The rows written out with constant indices, so the 24 accumulators are
            // registers whatever the optimiser's unrolling decides: a `for r in 0..ROWS` loop
            // was left rolled in non-incremental builds (release, `CARGO_INCREMENTAL=0`), its
            // accumulators spilled to the stack on every step, and the MLP's batch-32
            // inference ran 30% slower than in the dev build.
            macro_rules! update_rows {
                ($($r:literal)*) => {$(
                    if $r < ROWS {
                        let a = simd.splat_f32s(rows[$r][i]);
                        acc[$r][0] = simd.mul_add_f32s(a, w[0], acc[$r][0]);
                        acc[$r][1] = simd.mul_add_f32s(a, w[1], acc[$r][1]);
                        acc[$r][2] = simd.mul_add_f32s(a, w[2], acc[$r][2]);
                    }
                )*};
            }
            update_rows!(0 1 2 3 4 5 6 7);
        }
        let zero = simd.splat_f32s(0.0);
        let width = columns.len();
        for (r, acc) in acc[..ROWS].iter().enumerate() {
            let acc = if relu {
                // `max(0, v)` with `v` second: x86's max returns its second operand when either
                // is NaN, so NaN stays NaN, as through burn's `relu`.
                acc.map(|v| simd.max_f32s(zero, v))
            } else {
                *acc
            };
            let values: [f32; PANEL] = cast(acc);
            out[r * d_out + columns.start..][..width].copy_from_slice(&values[..width]);
        }
    }
}

/// A burn layer's parameters on the host, when they live on flex as f32.
struct LayerValues {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    d_in: usize,
    d_out: usize,
}

impl LayerValues {
    fn of(layer: &Linear) -> Option<Self> {
        let [d_in, d_out] = layer.weight.dims();
        let weight = layer.weight.val();
        if weight.dtype() != DType::F32 {
            return None;
        }
        let weight = weight.try_into_primitive::<Flex>().ok()?;
        let bias = match &layer.bias {
            Some(bias) => Some(bias.val().try_into_primitive::<Flex>().ok()?),
            None => None,
        };
        Some(Self {
            weight: contiguous_f32(&weight).into_owned(),
            bias: bias.as_ref().map(|b| contiguous_f32(b).into_owned()),
            d_in,
            d_out,
        })
    }
}

/// A layer with fewer nonzero weights than this share keeps them apart too
/// ([`SparseLinear`]), for the calls they pay on.
pub const SPARSE_BELOW_DENSITY: f64 = 0.3;

/// The sparse kernel runs a call of `batch` rows when `batch * density` is at most this. It
/// reads each nonzero weight once per row where the dense kernel reads every weight once per
/// call: on the 1200-1200 MLP (1 thread, `cargo test -p runner --bench inference`) sparse is
/// 1.5x faster at 70% sparsity and 6x at 90% at batch 1, but 0.55x at 90% at batch 32, with the
/// crossover near batch 9 at 90% and batch 2 at 80%.
pub const SPARSE_ROWS_TIMES_DENSITY: f64 = 0.5;

/// The smallest dense weight matrix (bytes) a layer runs sparse for: below it the dense panels
/// stay in a core's cache and the dense kernel is the faster one. The 92%-sparse
/// LeNet-300-100 (layers of 0.94 MB and less) took 0.018-0.031 ms at batch 1 with its first
/// two layers sparse, against 0.013-0.018 ms dense (`train bench RUN --threads 1`, 3 rounds
/// alternately); above it the dense kernel waits on memory.
pub const SPARSE_MIN_DENSE_BYTES: usize = 2 << 20;

/// One layer of a stack: dense panels, and the nonzero weights apart when they are few.
#[derive(Debug, Clone)]
struct StackLayer {
    dense: PackedLinear,
    sparse: Option<SparseLinear>,
}

impl StackLayer {
    fn dims(&self) -> (usize, usize) {
        (self.dense.d_in, self.dense.d_out)
    }

    /// The sparse kernel when it pays for `batch` rows.
    fn sparse_for(&self, batch: usize) -> Option<&SparseLinear> {
        self.sparse
            .as_ref()
            .filter(|s| batch as f64 * s.density() <= SPARSE_ROWS_TIMES_DENSITY)
    }

    fn forward_values(&self, x: &[f32], relu: bool) -> Vec<f32> {
        match self.sparse_for(x.len() / self.dense.d_in) {
            Some(sparse) => sparse.forward_values(x, relu),
            None => self.dense.forward_values(x, relu),
        }
    }
}

/// A stack of linear layers with ReLU between them (none after the last): an MLP's
/// inference forward pass, weights packed once (and, in a sparse enough layer, its nonzero
/// weights apart, for the small batches they are faster at).
#[derive(Debug, Clone)]
pub struct PackedStack {
    layers: Vec<StackLayer>,
}

impl PackedStack {
    /// `None` when any layer cannot be packed (see [`PackedLinear::new`]) or the widths do not
    /// chain. Layers with fewer than [`SPARSE_BELOW_DENSITY`] nonzero weights can run sparse.
    pub fn new(layers: &[Linear]) -> Option<Self> {
        Self::with_sparse_below(layers, SPARSE_BELOW_DENSITY)
    }

    /// [`Self::new`] with layers below `density` nonzero weights able to run sparse (0: none),
    /// when their dense weights reach [`SPARSE_MIN_DENSE_BYTES`].
    pub fn with_sparse_below(layers: &[Linear], density: f64) -> Option<Self> {
        let layers = layers
            .iter()
            .map(|layer| {
                let v = LayerValues::of(layer)?;
                let (weight, bias) = (&v.weight, v.bias.as_deref());
                // Only a layer too large for the cache is worth scanning for its zeros.
                let large = v.d_in * v.d_out * 4 >= SPARSE_MIN_DENSE_BYTES;
                let sparse = large
                    .then(|| SparseLinear::from_values(weight, bias, v.d_in, v.d_out))
                    .flatten()
                    .filter(|s| s.density() < density);
                Some(StackLayer {
                    dense: PackedLinear::from_values(weight, bias, v.d_in, v.d_out)?,
                    sparse,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let chained = layers.windows(2).all(|w| w[0].dims().1 == w[1].dims().0);
        (chained && !layers.is_empty()).then_some(Self { layers })
    }

    /// The kernel each layer runs at `batch` rows, in order: `"dense"` or `"sparse"`.
    pub fn kernels(&self, batch: usize) -> Vec<&'static str> {
        self.layers
            .iter()
            .map(|l| match l.sparse_for(batch) {
                Some(_) => "sparse",
                None => "dense",
            })
            .collect()
    }

    /// The stack's logits, or `None` when `x` is not an f32 flex tensor without autodiff of
    /// the first layer's width (the caller then runs burn's layers).
    ///
    /// # Shapes
    /// - input: `[batch, d_in]`
    /// - output: `[batch, d_out of the last layer]`
    pub fn forward(&self, x: &Tensor<2>) -> Option<Tensor<2>> {
        let [batch, d_in] = x.dims();
        if d_in != self.layers[0].dims().0 || x.dtype() != DType::F32 || x.device().is_autodiff() {
            return None;
        }
        let x = x.clone().try_into_primitive::<Flex>().ok()?;
        let last = self.layers.len() - 1;
        let mut values = contiguous_f32(&x);
        for (i, layer) in self.layers.iter().enumerate() {
            values = Cow::Owned(layer.forward_values(&values, i < last));
        }
        let d_out = self.layers[last].dims().1;
        // Owned: the stack has at least one layer.
        Some(Tensor::from_primitive::<Flex>(flex_f32(
            values.into_owned(),
            [batch, d_out],
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::activation::relu;
    use burn::tensor::Distribution;

    use crate::flex::assert_all_close;

    fn device() -> Device {
        Device::default()
    }

    /// The kernel against burn's `Linear` (and ReLU) for batch sizes that exercise every tile
    /// height, and widths with and without a padded last panel.
    #[test]
    fn matches_burns_linear() {
        let Some(_) = Isa::try_new() else {
            eprintln!("no AVX-512 here: the packed kernel does not run, nothing to compare");
            return;
        };
        let device = device();
        for (d_in, d_out) in [(37, 10), (784, 120), (64, 48), (5, 97)] {
            let layer = LinearConfig::new(d_in, d_out).init(&device);
            let packed = PackedLinear::new(&layer).expect("packs on flex with AVX-512");
            for batch in [1, 3, 8, 13, 32, 45] {
                let x = Tensor::<2>::random([batch, d_in], Distribution::Normal(0.0, 1.0), &device);
                let values = x.to_data().try_to_vec::<f32>().unwrap();
                for relu_after in [false, true] {
                    let ours = packed.forward_values(&values, relu_after);
                    let reference = layer.forward(x.clone());
                    let reference = if relu_after {
                        relu(reference)
                    } else {
                        reference
                    };
                    let ours = TensorData::new(ours, [batch, d_out]);
                    assert_all_close(
                        &[&format!("{d_in}x{d_out} batch {batch} relu {relu_after}")],
                        &[ours],
                        &[reference.into_data()],
                        1e-4,
                    );
                }
            }
        }
    }

    /// Without a bias, and through the thread pool (a task of 24 rows and one of 16).
    #[test]
    fn no_bias_and_parallel_rows_match() {
        let Some(_) = Isa::try_new() else {
            return;
        };
        let device = device();
        let layer = LinearConfig::new(50, 70).with_bias(false).init(&device);
        let packed = PackedLinear::new(&layer).expect("packs");
        let x = Tensor::<2>::random([40, 50], Distribution::Normal(0.0, 1.0), &device);
        let values = x.to_data().try_to_vec::<f32>().unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let parallel = pool.install(|| packed.forward_values(&values, false));
        let serial = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| packed.forward_values(&values, false));
        assert_eq!(
            parallel, serial,
            "rows do not depend on the thread that ran them"
        );
        assert_all_close(
            &["no bias"],
            &[TensorData::new(parallel, [40, 70])],
            &[layer.forward(x).into_data()],
            1e-4,
        );
    }

    /// A NaN pre-activation stays NaN through the fused ReLU, as through burn's `relu`
    /// (a broken model must not look healthy through the fast path).
    #[test]
    fn relu_keeps_nan_like_burn() {
        if Isa::try_new().is_none() {
            return;
        }
        let device = device();
        let (d_in, d_out) = (3, 5);
        let mut weight = vec![0.5f32; d_in * d_out];
        weight[2] = f32::NAN; // input 0 -> output 2
        let packed = PackedLinear::from_values(&weight, None, d_in, d_out).expect("packs");
        let ours = packed.forward_values(&[1.0, -2.0, 0.25], true);
        let w = Tensor::<2>::from_data(TensorData::new(weight, [d_in, d_out]), &device);
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 0.25], [1, d_in]),
            &device,
        );
        let theirs = relu(x.matmul(w)).into_data().try_to_vec::<f32>().unwrap();
        assert!(theirs[2].is_nan(), "burn's relu keeps NaN: {theirs:?}");
        for (o, t) in ours.iter().zip(&theirs) {
            assert!(
                o.is_nan() == t.is_nan() && (o.is_nan() || (o - t).abs() < 1e-6),
                "{ours:?} vs {theirs:?}"
            );
        }
    }

    #[test]
    fn stack_matches_burns_layers() {
        if Isa::try_new().is_none() {
            return;
        }
        let device = device();
        let layers: Vec<Linear> = [(30, 60), (60, 50), (50, 10)]
            .iter()
            .map(|&(i, o)| LinearConfig::new(i, o).init(&device))
            .collect();
        let stack = PackedStack::new(&layers).expect("packs");
        let x = Tensor::<2>::random([9, 30], Distribution::Normal(0.0, 1.0), &device);
        let mut reference = x.clone();
        for (i, layer) in layers.iter().enumerate() {
            reference = layer.forward(reference);
            if i < 2 {
                reference = relu(reference);
            }
        }
        let ours = stack.forward(&x).expect("runs on flex");
        assert_all_close(
            &["stack"],
            &[ours.into_data()],
            &[reference.into_data()],
            1e-4,
        );
        // A tensor of another width is handed back.
        let wrong = Tensor::<2>::zeros([2, 31], &device);
        assert!(stack.forward(&wrong).is_none());
        // Widths that do not chain are refused.
        let broken = [
            LinearConfig::new(4, 5).init(&device),
            LinearConfig::new(6, 2).init(&device),
        ];
        assert!(PackedStack::new(&broken).is_none());
    }

    /// A layer large and sparse enough runs sparse at batch 1 and dense at batch 32, and the
    /// logits are the all-dense stack's bit for bit either way.
    #[test]
    fn a_sparse_layer_computes_the_dense_stacks_logits() {
        if Isa::try_new().is_none() {
            return;
        }
        let device = device();
        device.seed(12);
        let mut first = LinearConfig::new(800, 700).init(&device);
        // Nine weights in ten zero: about 0.1 of a 2.2 MB matrix left.
        let w = Tensor::<2>::random([800, 700], Distribution::Normal(0.0, 1.0), &device);
        let keep = Tensor::<2>::random([800, 700], Distribution::Uniform(0.0, 1.0), &device)
            .lower_elem(0.1)
            .float();
        first.weight = burn::module::Param::from_tensor(w * keep);
        let layers = vec![first, LinearConfig::new(700, 10).init(&device)];
        let chosen = PackedStack::new(&layers).expect("packs");
        let dense = PackedStack::with_sparse_below(&layers, 0.0).expect("packs");
        assert_eq!(chosen.kernels(1), ["sparse", "dense"]);
        assert_eq!(chosen.kernels(32), ["dense", "dense"]);
        assert_eq!(dense.kernels(1), ["dense", "dense"]);
        for batch in [1, 32] {
            let x = relu(Tensor::<2>::random(
                [batch, 800],
                Distribution::Normal(0.0, 1.0),
                &device,
            ));
            let ours = chosen.forward(&x).unwrap().into_data();
            assert_eq!(
                ours,
                dense.forward(&x).unwrap().into_data(),
                "batch {batch}"
            );
        }
    }
}
