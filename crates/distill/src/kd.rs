//! The soft-target loss and its mix with the hard-label loss.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use models::loss::cross_entropy;

/// `T^2 * KL(softmax(teacher / T) || softmax(student / T))`, summed over classes and averaged
/// over the batch.
///
/// The `T^2` keeps the soft-target gradients on the same scale as the hard-label ones when `T`
/// changes (their magnitude falls as `1 / T^2`), as the paper prescribes.
///
/// # Shapes
/// - student: `[batch, classes]` logits
/// - teacher: `[batch, classes]` logits (no gradient flows into them)
/// - output: `[1]`
pub fn kd_loss(student: Tensor<2>, teacher: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [batch, _] = student.dims();
    let teacher = teacher.detach();
    let p_teacher = softmax(teacher.clone().div_scalar(temperature), 1); // [batch, classes]
    let log_p_teacher = log_softmax(teacher.div_scalar(temperature), 1);
    let log_p_student = log_softmax(student.div_scalar(temperature), 1);
    let kl = (p_teacher * (log_p_teacher - log_p_student)).sum(); // [1]
    kl.mul_scalar(temperature * temperature / batch as f64)
}

/// The loss of one distillation step and its two parts.
pub struct DistillLoss {
    /// `alpha * kd + (1 - alpha) * ce`
    pub total: Tensor<1>,
    pub kd: Tensor<1>,
    pub ce: Tensor<1>,
}

/// `alpha * kd_loss(student, teacher, T) + (1 - alpha) * cross_entropy(student, labels)`.
///
/// # Shapes
/// - student, teacher: `[batch, classes]`
/// - labels: `[batch]`
pub fn distillation_loss(
    student: Tensor<2>,
    teacher: Tensor<2>,
    labels: Tensor<1, Int>,
    temperature: f64,
    alpha: f64,
) -> DistillLoss {
    let kd = kd_loss(student.clone(), teacher, temperature);
    let ce = cross_entropy(student, labels);
    let total = kd.clone().mul_scalar(alpha) + ce.clone().mul_scalar(1.0 - alpha);
    DistillLoss { total, kd, ce }
}

/// Mean squared error between adapted student features and teacher features (the FitNets
/// hint loss, Romero et al. 2015).
///
/// # Shapes
/// - adapted_student, teacher: `[batch, features]`
/// - output: `[1]`
pub fn hint_loss(adapted_student: Tensor<2>, teacher: Tensor<2>) -> Tensor<1> {
    (adapted_student - teacher.detach()).powi_scalar(2).mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    fn logits(values: [[f32; 3]; 2], device: &Device) -> Tensor<2> {
        Tensor::from_floats(values, device)
    }

    #[test]
    fn identical_logits_give_zero() {
        let d = device();
        let x = logits([[1.0, -2.0, 0.5], [3.0, 0.0, 0.0]], &d);
        let loss: f32 = kd_loss(x.clone(), x, 4.0).into_scalar();
        assert!(loss.abs() < 1e-6, "{loss}");
    }

    #[test]
    fn matches_a_hand_computed_reference() {
        // The same quantity in PyTorch:
        //   s = torch.tensor([[1., 2., 3.], [0., 0., 1.]]); t = torch.tensor([[3., 2., 1.], [0., 1., 0.]])
        //   F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 2**2
        // By hand, T = 2:
        //   row 1: p_t = softmax([1.5, 1, .5]) = [.5065, .3072, .1863], p_s = [.1863, .3072, .5065];
        //          ln(p_t / p_s) = [1, 0, -1], so KL = .5065 - .1863 = .3202
        //   row 2: p_t = softmax([0, .5, 0]) = [.2741, .4519, .2741], p_s = [.2741, .2741, .4519];
        //          ln(p_t / p_s) = [0, .5, -.5], so KL = (.4519 - .2741) * .5 = .0889
        //   batch mean .20455, times T^2 = 4: 0.8182
        let d = device();
        let s = logits([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], &d);
        let t = logits([[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]], &d);
        let loss: f64 = kd_loss(s, t, 2.0).into_scalar();
        assert!((loss - 0.8182).abs() < 2e-4, "{loss}");
    }

    #[test]
    fn scales_with_t_squared_for_scaled_logits() {
        // KL(softmax(a t / T) || softmax(a s / T)) is the same for (a, T) = (1, 1) and (2, 2):
        // the loss must then differ by exactly the T^2 factor.
        let d = device();
        let s = logits([[0.3, -1.0, 2.0], [1.0, 0.5, -0.5]], &d);
        let t = logits([[1.0, 0.0, 0.0], [-1.0, 2.0, 0.0]], &d);
        let at1: f64 = kd_loss(s.clone(), t.clone(), 1.0).into_scalar();
        let at2: f64 = kd_loss(s.mul_scalar(2.0), t.mul_scalar(2.0), 2.0).into_scalar();
        assert!((at2 / at1 - 4.0).abs() < 1e-4, "{at1} {at2}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let d = device().autodiff();
        let s0 = [[0.3f32, -1.0, 2.0], [1.0, 0.5, -0.5]];
        let t = logits([[1.0, 0.0, 0.0], [-1.0, 2.0, 0.0]], &d);
        let temperature = 3.0;
        let s = Tensor::<2>::from_floats(s0, &d).require_grad();
        let loss = kd_loss(s.clone(), t.clone(), temperature);
        let grads = loss.backward();
        let grad: Vec<f32> = s.grad(&grads).unwrap().into_data().try_to_vec().unwrap();
        let eval = |values: [[f32; 3]; 2]| -> f64 {
            kd_loss(Tensor::from_floats(values, &d), t.clone(), temperature).into_scalar()
        };
        let h = 1e-2f32;
        for (i, analytic) in grad.iter().enumerate() {
            let (r, c) = (i / 3, i % 3);
            let mut plus = s0;
            plus[r][c] += h;
            let mut minus = s0;
            minus[r][c] -= h;
            let numeric = (eval(plus) - eval(minus)) / (2.0 * h as f64);
            assert!(
                (numeric - *analytic as f64).abs() < 1e-3,
                "d/ds[{r}][{c}]: analytic {analytic} numeric {numeric}"
            );
        }
    }

    #[test]
    fn hint_loss_is_the_mean_squared_difference() {
        let d = device();
        let a = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &d);
        let b = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 4.0]], &d);
        // (0 + 4 + 9 + 0) / 4
        let loss: f64 = hint_loss(a, b).into_scalar();
        assert!((loss - 3.25).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn alpha_mixes_the_two_terms() {
        let d = device();
        let s = logits([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], &d);
        let t = logits([[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]], &d);
        let y = Tensor::<1, Int>::from_ints([2, 1], &d);
        let l = distillation_loss(s, t, y, 2.0, 0.25);
        let (total, kd, ce): (f64, f64, f64) = (
            l.total.into_scalar(),
            l.kd.into_scalar(),
            l.ce.into_scalar(),
        );
        assert!((total - (0.25 * kd + 0.75 * ce)).abs() < 1e-6);
    }
}
