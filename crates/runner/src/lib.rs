//! The runner: config schema and validation, run folders, checkpoints and resume, the
//! training loop, and running a stage end to end. The `train` binary is a thin shell over it.

pub mod bench;
pub mod checkpoint;
pub mod device;
pub mod distillation;
mod error;
pub mod load;
pub mod objective;
mod optim;
pub mod profile;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod schema;
pub mod stage;
pub mod teacher;
pub mod train;
pub mod validate;

pub use error::RunError;
pub use load::{load, ConfigError, LoadedConfig};
pub use stage::{run_stage, RunOptions, StageOutcome};
