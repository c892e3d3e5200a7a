//! Losses: what one training step minimises.

use burn::prelude::*;
use data::Batch;
use models::loss::cross_entropy;
use models::{ForwardHook, Tap};

use crate::Trainee;

/// A named part of the loss, logged to TensorBoard as its mean over the epoch.
pub type LossPart = (&'static str, Tensor<1>);

/// One step's forward pass and loss.
pub struct StepLoss {
    /// `[batch, classes]`
    pub logits: Tensor<2>,
    /// `[1]`, what the optimiser minimises.
    pub total: Tensor<1>,
    pub parts: Vec<LossPart>,
}

/// The loss of a batch. `&self` and `Sync`: a loss holds no per-step state, so replicas of
/// the model can evaluate it concurrently.
pub trait Loss: Sync {
    /// Runs the forward pass of `trainee` on `batch` (samples `indices` of the training split),
    /// through the stage's forward `hook` when it has one (with observation on: a training pass).
    fn loss(
        &self,
        trainee: &Trainee,
        batch: &Batch,
        indices: &[usize],
        hook: Option<&dyn ForwardHook>,
    ) -> StepLoss;
}

/// Plain supervised training: cross-entropy against the labels.
pub struct CrossEntropy;

impl Loss for CrossEntropy {
    fn loss(
        &self,
        trainee: &Trainee,
        batch: &Batch,
        _indices: &[usize],
        hook: Option<&dyn ForwardHook>,
    ) -> StepLoss {
        let mut tap = Tap::none().with_hook(hook, true);
        let logits = trainee.model.forward_tapped(batch.images.clone(), &mut tap); // [batch, classes]
        StepLoss {
            total: cross_entropy(logits.clone(), batch.labels.clone()),
            logits,
            parts: Vec::new(),
        }
    }
}
