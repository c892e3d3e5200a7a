//! Building the optimiser from the config: SGD is ours (one fused pass per parameter on flex,
//! burn's formulas), Adam and AdamW are burn's.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    join_path, AdamConfig, AdamWConfig, LearningRate, ModuleOptimizer, Optimizer, RecordState,
    StateSink, StateSource,
};
use burn::prelude::*;

use settings::schema::OptimizerConfig;

pub fn build_optimizer(config: &OptimizerConfig) -> ModuleOptimizer {
    let decay = |penalty: f64| (penalty > 0.0).then(|| WeightDecayConfig::new(penalty as f32));
    match config {
        OptimizerConfig::Sgd {
            momentum,
            nesterov,
            weight_decay,
            ..
        } => ModuleOptimizer::from(Sgd {
            // PyTorch's convention (no dampening), which the published recipes assume.
            momentum: (*momentum > 0.0).then_some((*momentum as f32, 0.0, *nesterov)),
            weight_decay: (*weight_decay > 0.0).then_some(*weight_decay as f32),
        }),
        OptimizerConfig::Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } => AdamConfig::new()
            .with_beta_1(*beta1 as f32)
            .with_beta_2(*beta2 as f32)
            .with_epsilon(*eps as f32)
            .with_weight_decay(decay(*weight_decay))
            .init(),
        OptimizerConfig::Adamw {
            beta1,
            beta2,
            eps,
            weight_decay,
            ..
        } => AdamWConfig::new()
            .with_beta_1(*beta1 as f32)
            .with_beta_2(*beta2 as f32)
            .with_epsilon(*eps as f32)
            .with_weight_decay(*weight_decay as f32)
            .init(),
    }
}

/// SGD with optional weight decay and (Nesterov) momentum: `burn::optim::Sgd`'s formulas and
/// state layout (a `momentum.velocity` tensor per parameter, so checkpoints written by either
/// load in the other), computed by `kernels::sgd_step` in one pass where it applies and by the
/// same tensor operations as burn's elsewhere (LibTorch).
#[derive(Clone, Debug)]
pub struct Sgd {
    /// `(momentum, dampening, nesterov)`.
    momentum: Option<(f32, f64, bool)>,
    weight_decay: Option<f32>,
}

/// One parameter's SGD state; recorded as burn's `SgdState` is (`{param}.momentum.velocity`).
#[derive(Clone)]
pub struct SgdState<const D: usize> {
    pub momentum: Option<MomentumState<D>>,
}

/// The momentum's velocity.
#[derive(Clone)]
pub struct MomentumState<const D: usize> {
    pub velocity: Tensor<D>,
}

// burn's `#[derive(RecordState)]` names paths inside burn-optim only; these are what it
// generates for burn's own `SgdState` and `MomentumState`.
impl<const D: usize> RecordState for SgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(momentum) = &self.momentum {
            momentum.state_flatten(&join_path(prefix, "momentum"), out);
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let path = join_path(prefix, "momentum");
        let momentum = match src.has_under(&path) {
            true => Some(MomentumState::state_unflatten(&path, src, device)?),
            false => None,
        };
        Some(SgdState { momentum })
    }
}

impl<const D: usize> RecordState for MomentumState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "velocity", self.velocity.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, "velocity")?;
        Some(MomentumState {
            velocity: Tensor::from_data(data, device),
        })
    }
}

impl Optimizer for Sgd {
    type State<const D: usize> = SgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SgdState<D>>,
    ) -> (Tensor<D>, Option<SgdState<D>>) {
        let velocity = state.and_then(|s| s.momentum).map(|m| m.velocity);
        let step = kernels::SgdStep {
            lr: lr as f32,
            weight_decay: self.weight_decay,
            // burn computes `1 - dampening` in f64, then multiplies in f32.
            momentum: self.momentum.map(|(momentum, dampening, nesterov)| {
                (momentum, (1.0 - dampening) as f32, nesterov)
            }),
        };
        let (tensor, velocity) = if kernels::sgd_applies(&tensor, &grad, velocity.as_ref()) {
            kernels::sgd_step(tensor, &grad, velocity, step)
        } else {
            self.composed(lr, tensor, grad, velocity)
        };
        let momentum = velocity.map(|velocity| MomentumState { velocity });
        (tensor, Some(SgdState { momentum }))
    }

    fn to_device<const D: usize>(state: SgdState<D>, device: &Device) -> SgdState<D> {
        SgdState {
            momentum: state.momentum.map(|m| MomentumState {
                velocity: m.velocity.to_device(device),
            }),
        }
    }
}

impl Sgd {
    /// The step as burn's `Sgd` computes it, operation for operation.
    fn composed<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        mut grad: Tensor<D>,
        velocity: Option<Tensor<D>>,
    ) -> (Tensor<D>, Option<Tensor<D>>) {
        if let Some(penalty) = self.weight_decay {
            grad = tensor.clone().mul_scalar(penalty).add(grad);
        }
        let mut new_velocity = None;
        if let Some((momentum, dampening, nesterov)) = self.momentum {
            let velocity = match velocity {
                Some(v) => grad
                    .clone()
                    .mul_scalar(1.0 - dampening)
                    .add(v.mul_scalar(momentum)),
                None => grad.clone(),
            };
            grad = match nesterov {
                true => velocity.clone().mul_scalar(momentum).add(grad),
                false => velocity.clone(),
            };
            new_velocity = Some(velocity);
        }
        (tensor - grad.mul_scalar(lr), new_velocity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::Distribution;

    /// Three steps of ours and of burn's `Sgd` from the same weights and gradients.
    fn both(momentum: f64, nesterov: bool, weight_decay: f64) {
        let device = Device::flex().autodiff();
        device.seed(8);
        let layer: Linear = LinearConfig::new(6, 5).init(&device);
        let config = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum,
            nesterov,
            weight_decay,
        };
        let mut ours = build_optimizer(&config);
        let mut burns = SgdConfig::new()
            .with_momentum((momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(0.0)
                    .with_nesterov(nesterov)
            }))
            .with_weight_decay(
                (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
            )
            .init();
        let (mut a, mut b) = (layer.clone(), layer);
        for step in 0..3 {
            let x = Tensor::<2>::random([4, 6], Distribution::Normal(0.0, 1.0), &device);
            let grads_a = GradientsParams::from_grads(
                a.forward(x.clone()).powi_scalar(2).sum().backward(),
                &a,
            );
            let grads_b =
                GradientsParams::from_grads(b.forward(x).powi_scalar(2).sum().backward(), &b);
            a = ours.step(0.1, a, grads_a);
            b = burns.step(0.1, b, grads_b);
            assert_eq!(
                a.weight.val().into_data(),
                b.weight.val().into_data(),
                "step {step}: momentum {momentum}, nesterov {nesterov}, decay {weight_decay}"
            );
            assert_eq!(
                a.bias.as_ref().unwrap().val().into_data(),
                b.bias.as_ref().unwrap().val().into_data()
            );
        }
    }

    /// A checkpoint's optimiser record written by burn's `Sgd` resumes in ours: the next step
    /// is the one burn would have taken.
    #[test]
    fn burns_sgd_records_load_into_ours() {
        let device = Device::flex().autodiff();
        device.seed(9);
        let layer: Linear = LinearConfig::new(4, 3).init(&device);
        let burns_config = || {
            SgdConfig::new()
                .with_momentum(Some(
                    MomentumConfig::new()
                        .with_momentum(0.9)
                        .with_dampening(0.0)
                        .with_nesterov(true),
                ))
                .init()
        };
        let x = Tensor::<2>::random([2, 4], Distribution::Normal(0.0, 1.0), &device);
        let grads = |l: &Linear| {
            GradientsParams::from_grads(l.forward(x.clone()).powi_scalar(2).sum().backward(), l)
        };
        let mut burns = burns_config();
        let layer = burns.step(0.1, layer.clone(), grads(&layer));
        let config = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.0,
        };
        let mut ours = build_optimizer(&config).load_record(burns.to_record());
        let a = ours.step(0.1, layer.clone(), grads(&layer));
        let b = burns.step(0.1, layer.clone(), grads(&layer));
        assert_eq!(a.weight.val().into_data(), b.weight.val().into_data());
    }

    #[test]
    fn our_sgd_steps_exactly_as_burns() {
        both(0.9, true, 5e-4);
        both(0.9, false, 0.0);
        both(0.0, false, 1e-3);
    }
}
