//! Clamping an activation (ReLU6) in one pass: at inference in place where the activation is
//! not shared, in training as one node of burn's autodiff graph.
//!
//! flex's `clamp` is a general unary operation into a fresh tensor: at 224x224 a MobileNetV2's
//! ReLU6s took a sixth of its batch-1 forward pass, most of it writing new memory. In training
//! burn builds the clamp from two comparisons and two `mask_fill`s, each a graph node with its
//! own mask tensor and backward `mask_fill`: a fifth of a MobileNetV2 training step on 32x32
//! RGB (`perf`, 2026-12-06). Values and gradients are burn's: below `lo` becomes `lo`, above
//! `hi` becomes `hi`, the rest (NaN included) is kept; the gradient passes where the input is
//! neither below `lo` nor above `hi` (the bounds themselves and NaN included).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::flex::{contiguous_f32, flex_f32, unique_f32_mut, writable_f32};

/// Values per parallel task.
const VALUES_PER_TASK: usize = 1 << 16;

/// burn's clamp of one value.
#[inline(always)]
fn clamped(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

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
            *v = clamped(*v, lo, hi);
        }
    });
    Ok(Tensor::from_primitive::<Flex>(out))
}

/// `x.clamp(lo, hi)` on any f32 flex tensor: [`clamp_inference`] without autodiff, one graph
/// node with autodiff; otherwise `Err(x)`, handed back for the caller to use burn's.
///
/// # Shapes
/// - x, output: any
#[allow(clippy::result_large_err)]
pub fn clamp<const D: usize>(x: Tensor<D>, lo: f32, hi: f32) -> Result<Tensor<D>, Tensor<D>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    if !x.device().is_autodiff() {
        return clamp_inference(x, lo, hi);
    }
    match x.clone().try_into_primitive::<Autodiff<Flex>>() {
        Ok(primitive) => Ok(Tensor::from_primitive::<Autodiff<Flex>>(tracked(
            primitive, lo, hi,
        ))),
        Err(_) => Err(x),
    }
}

/// The clamp as a node of burn's autodiff graph, keeping one byte per value (whether its
/// gradient passes) where burn keeps two masks and the input.
fn tracked(x: FloatTensor<Autodiff<Flex>>, lo: f32, hi: f32) -> FloatTensor<Autodiff<Flex>> {
    let (x, node) = x.into_parts();
    let shape = x.layout().shape().clone();
    let values = contiguous_f32(&x);
    // Plain loops over chunks (they vectorise; an element-wise `collect` ran at 1.6 ns a value).
    let mut output = vec![0.0f32; values.len()];
    match ClampBackward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let mut passes = vec![0u8; values.len()];
            values
                .par_chunks(VALUES_PER_TASK)
                .zip(output.par_chunks_mut(VALUES_PER_TASK))
                .zip(passes.par_chunks_mut(VALUES_PER_TASK))
                .for_each(|((x, y), pass)| {
                    for ((&x, y), pass) in x.iter().zip(y).zip(pass) {
                        *y = clamped(x, lo, hi);
                        *pass = u8::from(!(x < lo || x > hi));
                    }
                });
            prep.finish(Arc::new(passes), flex_f32(output, shape))
        }
        OpsKind::UnTracked(prep) => {
            values
                .par_chunks(VALUES_PER_TASK)
                .zip(output.par_chunks_mut(VALUES_PER_TASK))
                .for_each(|(x, y)| {
                    for (&x, y) in x.iter().zip(y) {
                        *y = clamped(x, lo, hi);
                    }
                });
            prep.finish(flex_f32(output, shape))
        }
    }
}

#[derive(Debug)]
struct ClampBackward;

impl Backward<Flex, 1> for ClampBackward {
    /// Per value, 1 where its gradient passes.
    type State = Arc<Vec<u8>>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(parent) = parent {
            let shape = grad.layout().shape().clone();
            let passes = ops.state;
            let values = contiguous_f32(&grad);
            let mut input_grad = vec![0.0f32; values.len()];
            input_grad
                .par_chunks_mut(VALUES_PER_TASK)
                .zip(values.par_chunks(VALUES_PER_TASK))
                .zip(passes.par_chunks(VALUES_PER_TASK))
                .for_each(|((dx, g), pass)| {
                    for ((dx, &g), &pass) in dx.iter_mut().zip(g).zip(pass) {
                        *dx = if pass != 0 { g } else { 0.0 };
                    }
                });
            grads.register::<Flex>(parent.id, flex_f32(input_grad, shape));
        }
    }
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

    #[test]
    fn training_values_and_gradients_equal_burns_exactly() {
        let device = Device::flex().autodiff();
        // The bounds themselves, values beyond them and NaN, on both sides of each.
        let raw = [
            -3.0,
            -0.0,
            0.0,
            0.5,
            6.0,
            7.5,
            f32::NAN,
            5.999,
            6.001,
            -1e-7,
        ];
        let weights =
            Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], &device);
        let run = |ours: bool| {
            let x = Tensor::<1>::from_floats(raw, &device).require_grad();
            let y = if ours {
                clamp(x.clone(), 0.0, 6.0).expect("flex autodiff")
            } else {
                x.clone().clamp(0.0, 6.0)
            };
            let values = y.clone().into_data().try_to_vec::<f32>().unwrap();
            let grads = (y * weights.clone()).sum().backward();
            let grad = x
                .grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            (values, grad)
        };
        let (ours, theirs) = (run(true), run(false));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ours.0), bits(&theirs.0));
        assert_eq!(bits(&ours.1), bits(&theirs.1));
        assert!(clamp(Tensor::<1>::ones([2], &Device::flex()), 0.0, 1.0).is_ok());
    }
}
