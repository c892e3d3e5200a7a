//! Fully connected layers for inference whose weights are mostly zeros (a sparsified model).
//!
//! Each input feature keeps only its nonzero weights and their output columns (the rows of
//! `W`, `[d_in, d_out]`, compressed). A sample's output starts from the bias, and each input
//! adds `x_i * w_ij` to the outputs its row reaches, input after input. Inputs that are zero
//! are skipped, and after a ReLU about half of them are. So the work is the nonzero weights
//! of the nonzero inputs, where a dense product reads every weight.
//!
//! The sums are those of the dense packed kernel ([`crate::PackedLinear`]): the same fused
//! multiply-adds in the same input order. They skip only terms whose product is an exact zero,
//! which leaves a sum unchanged, so the logits are the dense kernel's bit for bit. The one
//! exception is an infinite or NaN input against a zero weight, which the dense product turns
//! into NaN.

use crate::linear::{Isa, RowTasks};

/// Fewest rows per parallel task: a smaller batch runs on the calling thread.
const ROWS_PER_TASK: usize = 8;

/// One fully connected layer, `y = x W + b`, keeping only `W`'s nonzero weights.
#[derive(Debug, Clone)]
pub struct SparseLinear {
    pub(crate) d_in: usize,
    pub(crate) d_out: usize,
    /// `starts[i]..starts[i + 1]` are input `i`'s entries in `columns` and `values`.
    starts: Vec<usize>,
    /// Each nonzero weight's output column.
    columns: Vec<u32>,
    values: Vec<f32>,
    /// `[d_out]`.
    bias: Vec<f32>,
    simd: Isa,
}

impl SparseLinear {
    /// The nonzero weights of a row-major `[d_in, d_out]` matrix, with its bias; `None` on
    /// the CPUs the dense kernel does not run on (whose sums these must equal) or for empty
    /// shapes.
    ///
    /// # Panics
    /// If `weight` does not hold `d_in * d_out` values, `bias` does not hold `d_out`, or
    /// `d_out` exceeds `u32::MAX`.
    pub fn from_values(
        weight: &[f32],
        bias: Option<&[f32]>,
        d_in: usize,
        d_out: usize,
    ) -> Option<Self> {
        assert_eq!(weight.len(), d_in * d_out, "weight of {d_in}x{d_out}");
        assert!(u32::try_from(d_out).is_ok(), "{d_out} outputs");
        let simd = Isa::try_new()?;
        if d_in == 0 || d_out == 0 {
            return None;
        }
        let mut starts = Vec::with_capacity(d_in + 1);
        let (mut columns, mut values) = (Vec::new(), Vec::new());
        starts.push(0);
        for row in weight.chunks_exact(d_out.max(1)).take(d_in) {
            for (j, &w) in row.iter().enumerate() {
                if w != 0.0 {
                    columns.push(j as u32);
                    values.push(w);
                }
            }
            starts.push(values.len());
        }

        let bias = match bias {
            Some(b) => {
                assert_eq!(b.len(), d_out, "bias of {d_out}");
                b.to_vec()
            }
            None => vec![0.0; d_out],
        };
        Some(Self {
            d_in,
            d_out,
            starts,
            columns,
            values,
            bias,
            simd,
        })
    }

    /// The share of the weights that are nonzero.
    pub fn density(&self) -> f64 {
        self.values.len() as f64 / (self.d_in * self.d_out).max(1) as f64
    }

    /// `x W + b` (and `max(0, .)` when `relu`) for row-major `x`, in parallel over rows on the
    /// current rayon pool when the batch is large enough.
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
            multiple: 1,
        };
        tasks.run(x, batch, |x, out| self.rows(x, out, relu))
    }

    /// Every row, compiled for the dense kernel's instruction set (so `mul_add` is one
    /// instruction, not a library call).
    fn rows(&self, x: &[f32], out: &mut [f32], relu: bool) {
        #[cfg(target_arch = "x86_64")]
        self.simd.vectorize(Rows {
            layer: self,
            x,
            out,
            relu,
        });
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no layer is made without the dense kernel's instruction set: {x:?} {out:?} {relu}"
        );
    }

    /// One sample: `y = b`, then each nonzero input's nonzero weights, in input order.
    #[inline(always)]
    fn row(&self, x: &[f32], y: &mut [f32], relu: bool) {
        y.copy_from_slice(&self.bias);
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let entries = self.starts[i]..self.starts[i + 1];
            for (&j, &w) in self.columns[entries.clone()]
                .iter()
                .zip(&self.values[entries])
            {
                let y = &mut y[j as usize];
                // One rounding, as the dense kernel's fused multiply-add.
                *y = xi.mul_add(w, *y);
            }
        }
        if relu {
            // `max(0, v)` keeping NaN, as the dense kernel and burn's `relu` do.
            y.iter_mut().filter(|v| **v < 0.0).for_each(|v| *v = 0.0);
        }
    }
}

/// The rows of one call, as a function pulp compiles with the instruction set enabled.
#[cfg(target_arch = "x86_64")]
struct Rows<'a> {
    layer: &'a SparseLinear,
    x: &'a [f32],
    out: &'a mut [f32],
    relu: bool,
}

#[cfg(target_arch = "x86_64")]
impl pulp::NullaryFnOnce for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Rows {
            layer,
            x,
            out,
            relu,
        } = self;
        for (x, y) in x
            .chunks_exact(layer.d_in)
            .zip(out.chunks_exact_mut(layer.d_out))
        {
            layer.row(x, y, relu);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PackedLinear;

    /// A `[d_in, d_out]` matrix with about `density` of its entries nonzero, and inputs with
    /// zeros among them (as after a ReLU).
    fn sparse_case(
        d_in: usize,
        d_out: usize,
        density: f64,
        batch: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut state = 0x2545f4914f6cdd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let weight = (0..d_in * d_out)
            .map(|_| {
                if next() < density {
                    (next() - 0.5) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let bias = (0..d_out).map(|_| (next() - 0.5) as f32).collect();
        let x = (0..batch * d_in)
            .map(|_| {
                if next() < 0.5 {
                    0.0
                } else {
                    (next() * 2.0 - 0.5) as f32
                }
            })
            .collect();
        (weight, bias, x)
    }

    #[test]
    fn sums_are_the_dense_kernels_bit_for_bit() {
        if !PackedLinear::available() {
            return;
        }
        for (d_in, d_out, density, batch) in [
            (784, 300, 0.08, 1),
            (300, 100, 0.2, 33),
            (50, 10, 0.5, 7),
            (9, 1, 0.0, 2),
        ] {
            let (weight, bias, x) = sparse_case(d_in, d_out, density, batch);
            let sparse = SparseLinear::from_values(&weight, Some(&bias), d_in, d_out).unwrap();
            let dense = PackedLinear::from_values(&weight, Some(&bias), d_in, d_out).unwrap();
            for relu in [false, true] {
                let ours = sparse.forward_values(&x, relu);
                let theirs = dense.forward_values(&x, relu);
                assert_eq!(ours, theirs, "{d_in}x{d_out} at {density}, relu {relu}");
            }
            let expected =
                weight.iter().filter(|w| **w != 0.0).count() as f64 / (d_in * d_out) as f64;
            assert_eq!(sparse.density(), expected);
        }
    }

    #[test]
    fn parallel_rows_match_one_thread() {
        let (weight, bias, x) = sparse_case(64, 40, 0.1, 50);
        let Some(sparse) = SparseLinear::from_values(&weight, Some(&bias), 64, 40) else {
            return;
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let a = one.install(|| sparse.forward_values(&x, true));
        let b = two.install(|| sparse.forward_values(&x, true));
        assert_eq!(a, b);
    }
}
