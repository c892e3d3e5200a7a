//! One SGD step (weight decay, momentum, Nesterov) in one pass over a parameter.
//!
//! burn's `Sgd` is six or seven tensor operations per parameter, each a pass over it, several
//! of them copies (the velocity is shared with the state): 20% of the Hinton MLP teacher's
//! step, 2.4M parameters (`perf`, issue 13). Here each element is read once (parameter,
//! gradient, velocity) and written once (parameter, velocity), in parallel on the current
//! rayon pool. The arithmetic is burn's, operation for operation in f32, so the results are
//! bit-identical to `burn::optim::Sgd` (test).

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::flex::{contiguous_f32, copy_f32, owned_f32, unique_f32_mut};

/// The constants of one SGD step, as burn's `Sgd` holds them.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    /// The learning rate (burn multiplies by it as an f32).
    pub lr: f32,
    /// L2 penalty added to the gradient, `grad + param * penalty`.
    pub weight_decay: Option<f32>,
    /// `(momentum, 1 - dampening, nesterov)`.
    pub momentum: Option<(f32, f32, bool)>,
}

/// Whether `sgd_step` applies to these tensors: flex without autodiff, f32, equal shapes.
pub fn sgd_applies<const D: usize>(
    param: &Tensor<D>,
    grad: &Tensor<D>,
    velocity: Option<&Tensor<D>>,
) -> bool {
    [Some(param), Some(grad), velocity]
        .iter()
        .flatten()
        .all(|t| {
            !t.device().is_autodiff()
                && t.dtype() == DType::F32
                && t.dims() == param.dims()
                && (*t).clone().try_into_primitive::<Flex>().is_ok()
        })
}

/// `param` after one step, and the new velocity (with momentum). `velocity` is the previous
/// step's (`None` on the first step, where the velocity starts as the gradient). The parameter
/// and velocity are updated in place when nothing else holds them (the optimiser's case), so a
/// step allocates nothing.
///
/// # Panics
/// Where `sgd_applies` is false.
///
/// # Shapes
/// - param, grad, velocity and both outputs: the parameter's shape
pub fn sgd_step<const D: usize>(
    param: Tensor<D>,
    grad: &Tensor<D>,
    velocity: Option<Tensor<D>>,
    step: SgdStep,
) -> (Tensor<D>, Option<Tensor<D>>) {
    assert!(
        sgd_applies(&param, grad, velocity.as_ref()),
        "sgd_step on tensors it does not apply to"
    );
    let flex = |t: Tensor<D>| t.try_into_primitive::<Flex>().expect("checked");
    let grad_p = flex(grad.clone());
    let g = contiguous_f32(&grad_p);
    let mut param_p = owned_f32(flex(param));
    let mut velocity_p = match (velocity, step.momentum) {
        (Some(v), Some(_)) => Some(owned_f32(flex(v))),
        _ => None,
    };
    let first = velocity_p.is_none();
    if first && step.momentum.is_some() {
        // burn starts the velocity as the (decayed) gradient; `run` fills it in.
        velocity_p = Some(copy_f32(&grad_p));
    }
    {
        let p = unique_f32_mut(&mut param_p).expect("owned_f32 makes it unique");
        let v = velocity_p
            .as_mut()
            .map(|v| unique_f32_mut(v).expect("owned_f32 makes it unique"));
        run(p, &g, v, first, step);
    }
    let wrap = |t: FlexTensor| Tensor::<D>::from_primitive::<Flex>(t);
    (wrap(param_p), velocity_p.map(wrap))
}

/// Burn's formulas in burn's order: `g = param * penalty + grad`; `v = g * (1 - dampening) +
/// v * momentum` (`v = g` on the first step); the update is `v * momentum + g` (Nesterov) or
/// `v`; `param - update * lr`. Updates `p` and `v` in place.
fn run(p: &mut [f32], g: &[f32], v: Option<&mut [f32]>, first: bool, step: SgdStep) {
    const CHUNK: usize = 1 << 14;
    let element = |p: &mut f32, g: f32, v: Option<&mut f32>| {
        let g = match step.weight_decay {
            Some(penalty) => *p * penalty + g,
            None => g,
        };
        let update = match (step.momentum, v) {
            (Some((momentum, keep, nesterov)), Some(v)) => {
                *v = if first { g } else { g * keep + *v * momentum };
                if nesterov {
                    *v * momentum + g
                } else {
                    *v
                }
            }
            _ => g,
        };
        *p -= update * step.lr;
    };
    match v {
        Some(v) => p
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|((p, g), v)| {
                for ((p, &g), v) in p.iter_mut().zip(g).zip(v) {
                    element(p, g, Some(v));
                }
            }),
        None => p
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(p, g)| {
                for (p, &g) in p.iter_mut().zip(g) {
                    element(p, g, None);
                }
            }),
    }
}
