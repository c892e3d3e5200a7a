//! A stage's settings, everything decided before training starts: the config schema, layered
//! loading (file, `--set`, environment), validation, parent resolution, run identity and the
//! run folder it names, the execution context, and the registry of techniques. Sweeps,
//! `train check` and the tools read configs through it without the training loop.

pub mod context;
pub mod device;
pub mod identity;
pub mod load;
mod loaded;
pub mod parents;
pub mod run_dir;
pub mod schema;
pub mod techniques;
pub mod testing;
pub mod validate;

pub use load::load;
pub use loaded::{ConfigError, LoadedConfig};
