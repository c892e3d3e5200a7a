//! The runner: config schema and validation, run folders, checkpoints and resume, the
//! training loop, and running a stage end to end. The `train` binary is a thin shell over it.

pub mod analysis;
pub mod artifacts;
pub mod bench;
pub mod checkpoint;
pub mod context;
pub mod device;
mod error;
pub mod identity;
pub mod load;
mod optim;
pub mod parents;
pub mod profile;
pub mod progress;
pub mod replicas;
pub mod run_dir;
pub mod schedule;
pub mod schema;
pub mod stage;
pub mod techniques;
pub mod testing;
pub mod train;
pub mod validate;

pub use error::RunError;
pub use load::{load, ConfigError, LoadedConfig};
pub use stage::{run_stage, RunOptions, StageOutcome};
