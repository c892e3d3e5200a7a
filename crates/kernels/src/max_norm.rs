//! The max-norm constraint: each column of a weight rescaled to an L2 norm of at most `limit`.
//!
//! burn composes it from six operations (square, a strided sum over rows, square root,
//! reciprocal, clamp, broadcast product): 8% of an MLP teacher's step (`perf`, issue 13). Here
//! one pass sums the squares per column (row by row, so the inner loop is contiguous) and one
//! pass writes the scaled weight.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::DType;

use rayon::prelude::*;

use crate::flex::rewritten_f32;

/// Whether `max_norm_columns` applies: flex without autodiff, f32.
pub fn max_norm_applies(weight: &Tensor<2>) -> bool {
    !weight.device().is_autodiff()
        && weight.dtype() == DType::F32
        && weight.clone().try_into_primitive::<Flex>().is_ok()
}

/// `weight` with each column `j` multiplied by `min(1, limit / ‖weight[.., j]‖)` (a zero column
/// is left as it is, a column with NaN becomes NaN, as burn's formulation gives); in place when
/// nothing else holds the weight.
///
/// # Panics
/// Where `max_norm_applies` is false.
///
/// # Shapes
/// - weight, output: `[rows, columns]`
pub fn max_norm_columns(weight: Tensor<2>, limit: f32) -> Tensor<2> {
    assert!(
        max_norm_applies(&weight),
        "max_norm_columns on a tensor it does not apply to"
    );
    let primitive = weight.try_into_primitive::<Flex>().expect("checked");
    Tensor::from_primitive::<Flex>(rescale(primitive, limit))
}

fn rescale(weight: FlexTensor, limit: f32) -> FlexTensor {
    let columns = weight.layout().shape()[1].max(1);
    rewritten_f32(weight, |values| {
        // Sums of squares per column, a block of columns per task, rows walked in order.
        const BLOCK: usize = 256;
        let mut squares = vec![0.0f32; columns];
        squares
            .par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(block, sums)| {
                let start = block * BLOCK;
                for row in values.chunks_exact(columns) {
                    for (sum, &w) in sums.iter_mut().zip(&row[start..]) {
                        *sum += w * w;
                    }
                }
            });
        let scales: Vec<f32> = squares
            .iter()
            .map(|&sum| {
                let scale = limit / sum.sqrt();
                if scale.is_nan() || scale < 1.0 {
                    scale
                } else {
                    1.0
                }
            })
            .collect();
        values.par_chunks_exact_mut(columns).for_each(|row| {
            for (w, &scale) in row.iter_mut().zip(&scales) {
                *w *= scale;
            }
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn matches_the_composed_formula() {
        let device = Device::flex();
        device.seed(2);
        let w = Tensor::<2>::random([7, 5], Distribution::Normal(0.0, 2.0), &device);
        // One small column (left alone) and one zero column (left alone, not NaN).
        let w = w.slice_assign([0..7, 1..2], Tensor::<2>::full([7, 1], 0.01, &device));
        let w = w.slice_assign([0..7, 3..4], Tensor::<2>::zeros([7, 1], &device));
        let norms = w.clone().powi_scalar(2).sum_dim(0).sqrt();
        let expected = w.clone() * norms.recip().mul_scalar(3.0).clamp_max(1.0);
        assert!(max_norm_applies(&w));
        let ours = max_norm_columns(w, 3.0);
        ours.into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn autodiff_tensors_are_handed_back() {
        let w = Tensor::<2>::ones([2, 2], &Device::flex().autodiff());
        assert!(!max_norm_applies(&w));
    }
}
