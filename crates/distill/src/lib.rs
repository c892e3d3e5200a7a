//! Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
//! Network"): a student learns from a teacher's softened class probabilities, optionally with
//! a feature hint (Romero et al. 2015, "FitNets").
//!
//! The technique as a module: the pure losses (`kd`), the `[distill]` config section
//! ([`DistillConfig`], its validation and the teacher it names as a parent) and the
//! [`Distillation`] technique the runner plugs into its loop.

mod config;
mod kd;
mod technique;

pub use config::{DistillConfig, HintConfig, TEACHER_KEY};
pub use kd::{distillation_loss, hint_loss, kd_loss, DistillLoss};
pub use technique::Distillation;
