//! Test-split accuracy and loss of a model.

use burn::prelude::*;
use data::{make_batch, Preprocess, Split};
use models::loss::cross_entropy;
use models::Classifier;

/// Accuracy and mean loss over a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub errors: usize,
    pub samples: usize,
}

/// Evaluates `model` (an inference copy: no autodiff, BatchNorm in eval mode) on all of
/// `split`, in batches of `batch_size`.
pub fn evaluate(
    model: &dyn Classifier,
    split: &Split,
    prep: &Preprocess,
    batch_size: usize,
    device: &Device,
) -> Evaluation {
    let indices: Vec<usize> = (0..split.len()).collect();
    let mut loss_sum = 0.0;
    let mut correct = 0usize;
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = make_batch(split, chunk, prep, None, device);
        let logits = model.classify(batch.images); // [batch, classes]
        correct += models::loss::correct(logits.clone(), batch.labels.clone());
        loss_sum += cross_entropy(logits, batch.labels).into_scalar::<f64>() * chunk.len() as f64;
    }
    let samples = split.len();
    Evaluation {
        loss: loss_sum / samples.max(1) as f64,
        accuracy: correct as f64 / samples.max(1) as f64,
        errors: samples - correct,
        samples,
    }
}
