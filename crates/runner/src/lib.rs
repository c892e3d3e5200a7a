//! Running a stage: its training loop (replicas, optimizer, schedule), checkpoints and exact
//! resume, progress, and the stage end to end (parents, training, measurement, summary). The
//! settings it runs are decided by the `settings` crate; the `train` binary is a thin shell.

pub mod artifacts;
pub mod checkpoint;
mod error;
pub mod onnx_file;
mod optim;
pub mod progress;
pub mod replicas;
pub mod schedule;
pub mod stage;
pub mod test_technique;
pub mod train;

pub use error::RunError;
pub use stage::{run_stage, RunOptions, StageOutcome};
