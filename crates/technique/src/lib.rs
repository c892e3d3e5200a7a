//! The technique API: what a compression technique (distillation, pruning, quantization) plugs
//! into, so the training loop and the stage runner are written once and no technique depends
//! on another.
//!
//! - [`Trainee`]: the model plus the modules a technique trains or keeps beside it
//!   (checkpointed with it).
//! - [`Loss`]: what a step minimises; `Sync`, so replicas can share it, and usable by any
//!   technique (pruning's fine-tuning can distill).
//! - [`Technique`]: hooks before training, after each optimiser step, after each epoch (a
//!   reshaped model makes the loop rebuild its optimiser), metrics, checkpointed state, and
//!   the final artefact.
//! - [`TechniqueConfig`]: a technique's config section: validation, and the parents it names
//!   (resolved, hashed and run by the runner, which never names a technique), and the plan
//!   `train check` prints.
//! - [`ArtifactFormat`]: a file a technique exports, with the loader that opens it again.
//! - [`Analysis`]: a command a technique brings (`train sensitivity`), run on a stage's model.

mod analysis;
mod artifact;
mod config;
mod hooks;
mod loss;
mod trainee;

pub use analysis::{Analysis, AnalysisContext, AnalysisReport};
pub use artifact::{ArtifactFormat, OpenedArtifact};
pub use config::{
    from_model, matches, require_from, Invalid, ParentKey, ParentShape, TechniqueConfig, FROM_KEY,
};
pub use hooks::{
    load_state, save_state, Artifact, ReadyParent, Report, StageContext, Technique, TechniqueError,
};
pub use loss::{CrossEntropy, Loss, LossPart, StepLoss};
pub use trainee::{Aux, Trainee};
