//! The hook through which a technique changes what the training loop minimises and does
//! between epochs, so the loop itself is written once.

use burn::nn::Linear;
use burn::prelude::*;
use data::Batch;
use models::loss::cross_entropy;
use models::Model;

/// A named part of the loss, logged to TensorBoard as its mean over the epoch.
pub type LossPart = (&'static str, Tensor<1>);

/// What the optimiser trains: the model, plus any parameters a technique trains alongside it
/// and throws away at the end (a hint adapter).
#[derive(Module, Debug)]
pub struct Trainee {
    pub model: Model,
    /// Maps student features to teacher features for a hint loss: `[d_student, d_teacher]`.
    pub adapter: Option<Linear>,
}

/// One step's forward pass and loss.
pub struct StepLoss {
    /// `[batch, classes]`
    pub logits: Tensor<2>,
    /// `[1]`, what the optimiser minimises.
    pub total: Tensor<1>,
    pub parts: Vec<LossPart>,
}

/// What a technique adds to training: distillation replaces the loss, pruning rewrites the
/// model between epochs, QAT reparameterises weights.
pub trait Objective {
    /// Runs the forward pass of `trainee` on `batch` (samples `indices` of the training split)
    /// and returns the loss to minimise.
    fn loss(&mut self, trainee: &Trainee, batch: &Batch, indices: &[usize]) -> StepLoss;

    /// `[in, out]` of a linear adapter to train alongside the model, if the technique uses one.
    fn adapter_dims(&self) -> Option<[usize; 2]> {
        None
    }

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
    fn loss(&mut self, trainee: &Trainee, batch: &Batch, _indices: &[usize]) -> StepLoss {
        let logits = trainee.model.forward(batch.images.clone());
        StepLoss {
            total: cross_entropy(logits.clone(), batch.labels.clone()),
            logits,
            parts: Vec::new(),
        }
    }
}
