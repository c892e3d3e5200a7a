//! Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
//! Network"): a student learns from a teacher's softened class probabilities.
//!
//! Distillation here is a pure loss function of (student logits, teacher logits, labels); the
//! runner owns the teacher and feeds its logits in.

mod kd;

pub use kd::{distillation_loss, hint_loss, kd_loss, DistillLoss};
