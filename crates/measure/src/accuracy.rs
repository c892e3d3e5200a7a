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
    evaluate_parts(model, split, prep, batch_size, device, 1, &|parts, work| {
        (0..parts).map(work).collect()
    })
}

/// Runs `work(part)` for each of `parts` parts, possibly concurrently, and returns the results
/// in part order.
pub type RunParts<'a> = dyn Fn(usize, &(dyn Fn(usize) -> PartSums + Sync)) -> Vec<PartSums> + 'a;

/// What one part of a split adds to an evaluation: summed loss and correct predictions.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartSums {
    loss_sum: f64,
    correct: usize,
}

/// [`evaluate`] with the split cut into `parts` contiguous parts that `run` may evaluate
/// concurrently (the training loop's replicas). Parts are added in order, so the result does
/// not depend on which finishes first.
pub fn evaluate_parts(
    model: &dyn Classifier,
    split: &Split,
    prep: &Preprocess,
    batch_size: usize,
    device: &Device,
    parts: usize,
    run: &RunParts,
) -> Evaluation {
    let samples = split.len();
    let parts = parts.clamp(1, samples.max(1));
    let per_part = samples.div_ceil(parts);
    let work = |part: usize| {
        let start = (part * per_part).min(samples);
        let end = ((part + 1) * per_part).min(samples);
        let indices: Vec<usize> = (start..end).collect();
        let mut sums = PartSums::default();
        for chunk in indices.chunks(batch_size.max(1)) {
            let batch = make_batch(split, chunk, prep, None, device);
            let logits = model.classify(batch.images); // [batch, classes]
            sums.correct += models::loss::correct(logits.clone(), batch.labels.clone());
            sums.loss_sum +=
                cross_entropy(logits, batch.labels).into_scalar::<f64>() * chunk.len() as f64;
        }
        sums
    };
    let (mut loss_sum, mut correct) = (0.0, 0);
    for part in run(parts, &work) {
        loss_sum += part.loss_sum;
        correct += part.correct;
    }
    Evaluation {
        loss: loss_sum / samples.max(1) as f64,
        accuracy: correct as f64 / samples.max(1) as f64,
        errors: samples - correct,
        samples,
    }
}

/// How closely two classifiers agree on a split.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Agreement {
    /// Images whose top-1 class is the same (the first of tied logits).
    pub agreeing: usize,
    pub samples: usize,
    pub largest_logit_difference: f32,
}

impl Agreement {
    pub fn share(&self) -> f64 {
        self.agreeing as f64 / self.samples.max(1) as f64
    }
}

/// Compares `model` with `reference` on all of `split`, in batches of `batch_size`.
pub fn agreement(
    model: &dyn Classifier,
    reference: &dyn Classifier,
    split: &Split,
    prep: &Preprocess,
    batch_size: usize,
    device: &Device,
) -> Agreement {
    let host = |t: Tensor<2>| {
        let classes = t.dims()[1].max(1);
        let values = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        (values, classes)
    };
    let mut result = Agreement::default();
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = make_batch(split, chunk, prep, None, device);
        let (ours, classes) = host(model.classify(batch.images.clone()));
        let (theirs, _) = host(reference.classify(batch.images));
        let (a, b) = (top1(&ours, classes), top1(&theirs, classes));
        result.agreeing += a.iter().zip(&b).filter(|(x, y)| x == y).count();
        result.samples += a.len();
        let difference = largest_difference(&ours, &theirs);
        result.largest_logit_difference = result.largest_logit_difference.max(difference);
    }
    result
}

/// Index of the largest logit (the first of equals), per row of `classes`.
pub fn top1(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

/// The largest difference between `a` and `b`, value by value.
pub fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
