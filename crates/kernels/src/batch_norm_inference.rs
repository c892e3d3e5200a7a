//! BatchNorm at inference (the running statistics) in one pass over the activation.
//!
//! burn composes it from four element-wise operations over the whole activation (subtract the
//! mean, divide by the standard deviation, multiply by gamma, add beta), each a pass of its own
//! with a fresh output: at 224x224 a MobileNetV2's BatchNorms were a sixth of its batch-1
//! forward pass. Here the same four f32 operations run in the same order on each value, in one
//! pass and in place where the activation is not shared, so the result is burn's bit for bit.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::flex::{contiguous_f32, unique_f32_mut, writable_f32};

/// Values per parallel task: channels' planes (or samples) are grouped up to this many.
const VALUES_PER_TASK: usize = 1 << 15;

/// Planes of fewer values are normalised a sample at a time.
const SMALL_PLANE: usize = 64;

/// burn's `batch_norm(x, gamma, beta, mean, variance, epsilon)`, `((x - mean) / sqrt(variance +
/// epsilon)) * gamma + beta` per channel, when it applies (flex without autodiff, f32, shapes
/// that agree); otherwise `Err(x)`, handed back for the caller to use burn's.
///
/// # Shapes
/// - x: `[batch, channels, ...]`
/// - gamma, beta, mean, variance: `[channels]`
/// - output: as x
// Both sides are the tensor itself (the error hands the input back, not a report).
#[allow(clippy::result_large_err)]
pub fn batch_norm_inference<const D: usize>(
    x: Tensor<D>,
    [gamma, beta, mean, variance]: [&Tensor<1>; 4],
    epsilon: f64,
) -> Result<Tensor<D>, Tensor<D>> {
    let dims = x.dims();
    let params = [gamma, beta, mean, variance];
    let applies = D >= 2
        && dims.iter().all(|&d| d > 0)
        && x.dtype() == DType::F32
        && !x.device().is_autodiff()
        && params
            .iter()
            .all(|p| p.dims() == [dims[1]] && p.dtype() == DType::F32);
    if !applies {
        return Err(x);
    }
    // The parameters' own storage, borrowed (no copy to the host per call: at 32x32 that was
    // a ResNet-20's forward pass slower by a third).
    let Some(primitives) = params
        .iter()
        .map(|p| (*p).clone().try_into_primitive::<Flex>().ok())
        .collect::<Option<Vec<FlexTensor>>>()
    else {
        return Err(x);
    };
    let [gamma, beta, mean, variance] = [0, 1, 2, 3].map(|i| contiguous_f32(&primitives[i]));
    let mut out = writable_f32(x)?;
    let values = unique_f32_mut(&mut out).expect("a writable tensor is unique");
    let plane = dims[2..].iter().product::<usize>();
    // burn adds epsilon as an f32 scalar, then takes the square root in f32.
    let std: Vec<f32> = variance
        .iter()
        .map(|v| (v + epsilon as f32).sqrt())
        .collect();
    let channels = dims[1];
    let normalize = |v: &mut f32, c: usize| *v = ((*v - mean[c]) / std[c]) * gamma[c] + beta[c];
    if plane >= SMALL_PLANE {
        values
            .par_chunks_mut(plane)
            .with_min_len((VALUES_PER_TASK / plane).max(1))
            .enumerate()
            .for_each(|(i, values)| values.iter_mut().for_each(|v| normalize(v, i % channels)));
    } else {
        // Small planes a sample at a time: per plane, a task and its bookkeeping were most
        // of the work (a fifth of MobileNetV2's batch-32 inference at 32x32, planes of 1-4).
        let sample = channels * plane;
        values
            .par_chunks_mut(sample)
            .with_min_len((VALUES_PER_TASK / sample).max(1))
            .for_each(|values| {
                for (c, values) in values.chunks_exact_mut(plane).enumerate() {
                    values.iter_mut().for_each(|v| normalize(v, c));
                }
            });
    }
    Ok(Tensor::from_primitive::<Flex>(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::module::batch_norm as burns;
    use burn::tensor::Distribution;

    /// Planes above and below `SMALL_PLANE` (by plane and by sample).
    #[test]
    fn equals_burns_bit_for_bit() {
        for dims in [[2, 5, 7, 13], [3, 5, 2, 2], [3, 5, 1, 1]] {
            equals_burns(dims);
        }
    }

    fn equals_burns(dims: [usize; 4]) {
        let device = Device::flex();
        device.seed(3);
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.5, 2.0), &device);
        let p = |lo: f64, hi: f64| Tensor::<1>::random([5], Distribution::Uniform(lo, hi), &device);
        let (gamma, beta, mean, var) = (p(0.5, 2.0), p(-1.0, 1.0), p(-1.0, 1.0), p(0.01, 3.0));
        let theirs = burns(
            x.clone(),
            gamma.clone(),
            beta.clone(),
            mean.clone(),
            var.clone(),
            1e-5,
        );
        // Shared input (a clone is held): computed into a copy, the input left as it was.
        let before = x.clone().into_data();
        let ours = batch_norm_inference(x.clone(), [&gamma, &beta, &mean, &var], 1e-5).unwrap();
        assert_eq!(ours.into_data(), theirs.into_data(), "{dims:?}");
        assert_eq!(x.into_data(), before);
    }

    #[test]
    fn autodiff_and_mismatched_shapes_are_handed_back() {
        let device = Device::flex();
        let ones = Tensor::<1>::ones([3], &device);
        let x = Tensor::<4>::ones([1, 3, 2, 2], &device.clone().autodiff());
        assert!(batch_norm_inference(x, [&ones; 4], 1e-5).is_err());
        let x = Tensor::<4>::ones([1, 4, 2, 2], &device);
        assert!(batch_norm_inference(x, [&ones; 4], 1e-5).is_err());
    }
}
