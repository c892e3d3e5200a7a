//! The runner's error type: each variant says what went wrong and where.

use std::path::PathBuf;

use crate::checkpoint::CheckpointError;
use settings::load::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("loading data.dataset")]
    Data(#[source] data::DataError),
    #[error("building the model")]
    Model(#[source] models::SpecError),
    #[error(
        "loss became {value} at epoch {epoch}, step {step}: training diverged. The last good \
         checkpoint ({checkpoint}) is kept; lower train.optimizer.lr or add a warm-up \
         (train.schedule.warmup_epochs) and run again"
    )]
    NonFiniteLoss {
        epoch: usize,
        step: usize,
        value: f64,
        checkpoint: String,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    ModelFile(#[from] models::ModelFileError),
    #[error(transparent)]
    Events(#[from] measure::tensorboard::EventLogError),
    #[error(transparent)]
    Technique(#[from] technique::TechniqueError),
    #[error("device {device:?} in {config}: {problem}")]
    Device {
        device: String,
        config: String,
        problem: settings::device::DeviceError,
    },
    /// A parent model's recorded input does not fit this stage's data.
    #[error("{0}")]
    Input(String),
    #[error("cannot start {threads} worker threads: {message}")]
    Threads { threads: usize, message: String },
    #[error("{what} {}: {message}", path.display())]
    Record {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Read(#[from] safeio::ReadError),
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| RunError::Io { path, source }
    }
}
