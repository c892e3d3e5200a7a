//! Pruning: structured channel pruning that makes models really smaller and faster.
//!
//! - [`PruneConfig`]: the `[prune]` section (criterion, schedule, targets by channel ratio or
//!   MACs, per-layer ratios by pattern, exclusions, `min_channels`, `round_to`).
//! - [`importance`]: channel scores over whole groups (L1, L2, BatchNorm gamma, first-order
//!   Taylor, random).
//! - [`plan`]: how many channels each group keeps at each step and which ones.
//! - [`Pruning`]: the technique: at each scheduled step it scores, plans and thins the model
//!   ([`models::thin()`] slices every member of every group), measures the step (params, MACs,
//!   file bytes, batch-1 latency, accuracy before and after), and lets the stage fine-tune
//!   with whatever loss it uses (cross-entropy, or distillation from the unpruned parent).
//! - [`Sparsification`]: unstructured magnitude pruning with masks kept through fine-tuning,
//!   exported as a sparse file ([`models::file::sparse`]).

mod common;
mod config;
pub mod importance;
pub mod plan;
pub mod sensitivity;
pub mod sparse;
mod technique;

pub use common::FROM_KEY;
pub use config::{matches, Criterion, PruneConfig, Schedule};
pub use sensitivity::{sensitivity, SensitivityPoint, RATIOS};
pub use sparse::{Scope, Sparsification, SparsifyConfig};
pub use technique::{Pruning, StepRecord};
