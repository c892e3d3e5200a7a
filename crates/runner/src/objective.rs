//! The hook through which a technique changes what the training loop minimises and does
//! between epochs, so the loop itself is written once.

use burn::prelude::*;
use data::Batch;
use models::loss::cross_entropy;
use models::Model;

/// A named part of the loss, logged to TensorBoard as its mean over the epoch.
pub type LossPart = (&'static str, Tensor<1>);

/// What a technique adds to training: distillation replaces the loss, pruning rewrites the
/// model between epochs, QAT reparameterises weights.
pub trait Objective {
    /// The loss to minimise for one batch, and named parts of it to log.
    ///
    /// # Shapes
    /// - logits: `[batch, classes]`
    /// - output: `[1]`
    fn loss(
        &mut self,
        logits: Tensor<2>,
        batch: &Batch,
        indices: &[usize],
    ) -> (Tensor<1>, Vec<LossPart>);

    /// Runs after an epoch's optimiser steps, before evaluation; may return a changed model.
    fn after_epoch(&mut self, _epoch: usize, model: Model) -> Model {
        model
    }

    /// Extra scalars to log after each epoch's evaluation, given the inference model.
    fn epoch_metrics(&mut self, _model: &Model) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

/// Plain supervised training: cross-entropy against the labels.
pub struct CrossEntropy;

impl Objective for CrossEntropy {
    fn loss(
        &mut self,
        logits: Tensor<2>,
        batch: &Batch,
        _indices: &[usize],
    ) -> (Tensor<1>, Vec<LossPart>) {
        (cross_entropy(logits, batch.labels.clone()), Vec::new())
    }
}
