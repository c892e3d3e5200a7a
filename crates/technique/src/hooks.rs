//! The hooks a technique gives the training loop.

use burn::prelude::*;
use data::{Dataset, Preprocess};
use models::{ForwardHook, InputShape, Model};

use crate::{Aux, Loss, Trainee};

/// A technique that failed: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("{technique}: {message}")]
pub struct TechniqueError {
    pub technique: &'static str,
    pub message: String,
}

/// A final model file a technique produces instead of the plain one (sparse, integer). Its
/// length is what the run reports as the model's size.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// File name inside the run folder, e.g. `model.int8.bin`.
    pub file_name: String,
    pub bytes: Vec<u8>,
}

/// A technique's part of the run summary.
#[derive(Debug, Clone)]
pub struct Report {
    pub json: serde_json::Value,
    /// A plain-text table, printed after the run's result table.
    pub table: String,
}

/// A parent stage's (or file's) trained model, ready for a technique that uses it.
pub struct ReadyParent {
    /// The config key that named it, e.g. `distill.teacher` or `from`.
    pub key: String,
    /// The inference model, on the stage's device.
    pub model: Model,
    /// The test accuracy the parent's run recorded, when it is a stage: a technique that
    /// measures the parent again can tell a model that changed since.
    pub recorded_accuracy: Option<f64>,
    /// How this parent's model reads images, when it differs from the stage's own
    /// preprocessing (a teacher trained on other statistics or at another size): a technique
    /// that runs the parent feeds it these inputs.
    pub prep: Option<Preprocess>,
}

/// What a technique may read when it is built for a stage.
pub struct StageContext<'a> {
    pub dataset: &'a Dataset,
    pub prep: Preprocess,
    pub input: InputShape,
    /// The inference device; training runs on its autodiff twin.
    pub device: Device,
    pub eval_batch_size: usize,
    /// The stage's seed (random criteria, sampled batches).
    pub seed: u64,
    /// Whether training inputs are augmented (then they differ every epoch).
    pub augmented: bool,
    pub parents: &'a [&'a ReadyParent],
}

impl StageContext<'_> {
    pub fn parent(&self, key: &str) -> Option<&ReadyParent> {
        self.parents.iter().copied().find(|p| p.key == key)
    }

    /// What the stage's model reads, as its files and exports record it.
    pub fn preprocessing(&self) -> data::Preprocessing {
        data::Preprocessing::of(&self.prep, &self.dataset.class_names)
    }
}

/// Hooks into the training loop. Every method has a default that does nothing, so a
/// technique implements only what it changes.
pub trait Technique: Send {
    /// Short name for logs and errors, e.g. `"distill"`.
    fn name(&self) -> &'static str;

    /// A line describing the technique's settings, printed when training starts.
    fn describe(&self) -> Option<String> {
        None
    }

    /// Modules trained beside `model` (hint adapters, masks), created on a fresh start and
    /// again, as skeletons to load into, on resume. On `device` (the autodiff device).
    fn aux(&self, _model: &Model, _device: &Device) -> Vec<Aux> {
        Vec::new()
    }

    /// The loss this technique minimises, when it replaces plain cross-entropy. At most one
    /// technique of a stage supplies it.
    fn loss(&self) -> Option<&dyn Loss> {
        None
    }

    /// The hook every forward pass of the stage runs through (training, evaluation): the
    /// weights, biases and activations the layers continue with (fake-quantization supplies
    /// one). At most one technique of a stage supplies it.
    fn forward_hook(&self) -> Option<&dyn ForwardHook> {
        None
    }

    /// Whether this technique's state learns from the batches in the order they arrive (a
    /// quantizer's range observers), so the stage trains on one replica.
    fn batches_in_order(&self) -> bool {
        false
    }

    /// Before the first epoch of a fresh run (not on resume): fold BatchNorm, attach
    /// quantizers, prune one-shot.
    fn prepare(&mut self, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        Ok(trainee)
    }

    /// After every optimiser step (`step` counts from 1 over the run): apply masks, advance
    /// schedules, gather gradient statistics.
    fn after_step(&mut self, _step: usize, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        Ok(trainee)
    }

    /// After an epoch's steps (`epoch` counts from 0), before evaluation. A returned model of
    /// another spec (narrower widths) makes the loop rebuild the optimiser and record the
    /// new spec in the checkpoint.
    fn after_epoch(&mut self, _epoch: usize, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        Ok(trainee)
    }

    /// Scalars to log after each epoch's evaluation, given the inference model and the test
    /// accuracy the loop just measured.
    fn metrics(&mut self, _model: &Model, _accuracy: f64) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Lines for the run's log (what a pruning step did), drained by the loop after each hook.
    fn take_log(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// What the technique did, for the run summary (`techniques.<name>` in `summary.json`) and
    /// the table printed at the end of the run.
    fn report(&self) -> Option<Report> {
        None
    }

    /// State outside the trainee's tensors, saved in every checkpoint (see [`save_state`]).
    fn state(&self) -> Result<serde_json::Value, TechniqueError> {
        Ok(serde_json::Value::Null)
    }

    /// Restores what [`Technique::state`] saved, on resume.
    fn restore(&mut self, _state: serde_json::Value) -> Result<(), TechniqueError> {
        Ok(())
    }

    /// The final artefact, when the technique exports something other than the plain model
    /// file.
    fn export(&self, _model: &Model) -> Option<Result<Artifact, TechniqueError>> {
        None
    }
}

/// A technique's checkpointed state as JSON. A state that does not serialise is an error that
/// stops the checkpoint, never a silent `null` that the resume would then fail on.
pub fn save_state<T: serde::Serialize>(
    technique: &'static str,
    state: &T,
) -> Result<serde_json::Value, TechniqueError> {
    serde_json::to_value(state).map_err(|e| TechniqueError {
        technique,
        message: format!("its state cannot be saved in the checkpoint: {e}"),
    })
}

/// Reads back what [`save_state`] wrote; an unreadable state names the technique.
pub fn load_state<T: serde::de::DeserializeOwned>(
    technique: &'static str,
    state: serde_json::Value,
) -> Result<T, TechniqueError> {
    serde_json::from_value(state).map_err(|e| TechniqueError {
        technique,
        message: format!("unreadable state in the checkpoint: {e}"),
    })
}
