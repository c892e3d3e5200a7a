//! Clamping an activation at inference (ReLU6) in one pass, in place where the activation
//! is not shared.
//!
//! flex's `clamp` is a general unary operation into a fresh tensor: at 224x224 a MobileNetV2's
//! ReLU6s took a sixth of its batch-1 forward pass, most of it writing new memory. Values are
//! burn's: below `lo` becomes `lo`, above `hi` becomes `hi`, the rest (NaN included) is kept.

use burn::backend::Flex;
use burn::prelude::*;
use rayon::prelude::*;

use crate::flex::{unique_f32_mut, writable_f32};

/// Values per parallel task.
const VALUES_PER_TASK: usize = 1 << 16;

/// `x.clamp(lo, hi)` (`hi = f32::INFINITY` for a ReLU) when it applies (flex without autodiff,
/// f32); otherwise `Err(x)`, handed back for the caller to use burn's.
///
/// # Shapes
/// - x, output: any
// Both sides are the tensor itself (the error hands the input back, not a report).
#[allow(clippy::result_large_err)]
pub fn clamp_inference<const D: usize>(
    x: Tensor<D>,
    lo: f32,
    hi: f32,
) -> Result<Tensor<D>, Tensor<D>> {
    let mut out = writable_f32(x)?;
    let values = unique_f32_mut(&mut out).expect("a writable tensor is unique");
    values.par_chunks_mut(VALUES_PER_TASK).for_each(|chunk| {
        for v in chunk {
            *v = if *v < lo {
                lo
            } else if *v > hi {
                hi
            } else {
                *v
            };
        }
    });
    Ok(Tensor::from_primitive::<Flex>(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_burns_clamp_and_leaves_a_shared_input_alone() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[-3.0, -0.0, 0.5, 6.0, 7.5, f32::NAN]], &device);
        let before = x.clone().into_data();
        let ours = clamp_inference(x.clone(), 0.0, 6.0).unwrap();
        let values = ours.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(values[..5], [0.0, -0.0, 0.5, 6.0, 6.0]);
        assert!(values[5].is_nan());
        assert!(
            x.clone().into_data().try_to_vec::<f32>().unwrap()[..5]
                == before.try_to_vec::<f32>().unwrap()[..5]
        );
        let relu = clamp_inference(x.clone(), 0.0, f32::INFINITY).unwrap();
        let theirs = burn::tensor::activation::relu(x);
        let (a, b) = (
            relu.into_data().try_to_vec::<f32>().unwrap(),
            theirs.into_data().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a[..5], b[..5]);
        assert!(clamp_inference(Tensor::<1>::ones([2], &device.autodiff()), 0.0, 1.0).is_err());
    }

    #[test]
    fn a_tensor_nothing_else_holds_is_clamped_in_its_own_storage() {
        let device = Device::flex();
        let x = Tensor::<1>::from_floats([-1.0, 0.5, 9.0], &device);
        let address = |t: Tensor<1>| {
            let p = t.try_into_primitive::<Flex>().unwrap();
            p.as_slice::<f32>().unwrap().as_ptr() as usize
        };
        let before = address(x.clone());
        let y = clamp_inference(x, 0.0, 6.0).unwrap();
        assert_eq!(address(y), before);
    }
}
