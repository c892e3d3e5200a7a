//! Classification loss shared by training and evaluation.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Mean cross-entropy of `logits` against integer `labels`.
///
/// # Shapes
/// - logits: `[batch, classes]`
/// - labels: `[batch]`
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let log_probs = log_softmax(logits, 1); // [batch, classes]
    let picked = log_probs.gather(1, labels.reshape([batch, 1])); // [batch, 1]
    picked.mean().neg()
}

/// How many rows of `logits` have their largest value at the class `classes` names.
///
/// # Shapes
/// - logits: `[batch, classes]`
/// - classes: `[batch]`
pub fn correct(logits: Tensor<2>, classes: Tensor<1, Int>) -> usize {
    logits
        .argmax(1)
        .flatten::<1>(0, 1)
        .equal(classes)
        .int()
        .sum()
        .into_scalar::<i64>() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_value() {
        // torch.nn.functional.cross_entropy(torch.tensor([[1., 2., 3.], [1., 1., 1.]]),
        //                                   torch.tensor([2, 0]))  ->  0.7531
        // by hand: -log(e^3 / (e + e^2 + e^3)) = 0.4076, -log(1/3) = 1.0986, mean 0.7531
        let device = Device::flex();
        let logits = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], &device);
        let labels = Tensor::<1, Int>::from_ints([2, 0], &device);
        let loss: f32 = cross_entropy(logits, labels).into_scalar();
        assert!((loss - 0.753_06).abs() < 1e-4, "{loss}");
    }
}
