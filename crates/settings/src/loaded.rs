//! What loading a stage config gives: the stage, validated, with everything derived from it
//! ([`LoadedConfig`]), or the reason it cannot run ([`ConfigError`]). Its own module so that
//! parent resolution and loading, which call each other, share these types without a cycle.

use std::path::PathBuf;

use burn::tensor::Device;
use models::{InputShape, ModelFormat, ModelSpec};
use technique::Invalid;

use crate::schema::StageConfig;
use crate::testing::TestHooks;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file is missing, not a regular file, too large or not text.
    #[error("{}", .0.about("config file"))]
    Read(safeio::ReadError),
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("--set {text}: expected KEY=VALUE, e.g. --set train.epochs=3")]
    BadOverride { text: String },
    #[error("{}: after applying overrides ({overrides}): {message}", path.display())]
    Override {
        path: PathBuf,
        overrides: String,
        message: String,
    },
    #[error("{location}: {invalid}")]
    Invalid { location: String, invalid: Invalid },
}

/// A stage that parsed and validated, with everything derived from it: where it came from,
/// its input, the architecture it starts from, its device, its resolved parents and its
/// identity. Nothing downstream re-validates.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub config: StageConfig,
    /// The per-sample input and class count the data section gives.
    pub input: InputShape,
    /// The architecture the stage starts from: `[model]`, or its `from` parent's.
    pub model: ModelSpec,
    pub device: Device,
    pub parents: Vec<Parent>,
    /// The run folder's name under `<output.dir>/<name>/` (see [`crate::identity`]).
    pub hash: String,
    /// The overrides this stage was given (`--set k=v`, `COMPRESS_K=v`, and test hooks that
    /// change results), for reports.
    pub overrides: Vec<String>,
    /// The test hooks of the stage named on the command line (none for its parents).
    pub hooks: TestHooks,
}

impl LoadedConfig {
    /// The run folder of this stage.
    pub fn run_path(&self) -> PathBuf {
        self.config
            .output
            .dir
            .join(&self.config.name)
            .join(&self.hash)
    }

    /// The parent the stage starts from, if any.
    pub fn from_parent(&self) -> Option<&Parent> {
        self.parents.iter().find(|p| p.key == FROM_KEY)
    }
}

/// The key of the parent whose weights a stage starts from.
pub const FROM_KEY: &str = "from";

/// A resolved parent.
#[derive(Debug, Clone)]
pub struct Parent {
    /// The dotted config key that names it.
    pub key: String,
    pub source: ParentSource,
}

#[derive(Debug, Clone)]
pub enum ParentSource {
    /// Another stage: its run folder is found by its hash, trained first when missing.
    Stage(Box<LoadedConfig>),
    /// A model file trained elsewhere, or one of ours.
    File {
        path: PathBuf,
        format: ModelFormat,
        spec: ModelSpec,
        key_map: Vec<[String; 2]>,
        /// SHA-256 of the file (12 hex digits): its identity in the child's hash.
        sha256: String,
        /// The input its model reads, as one of our files records it.
        preprocessing: Option<Box<data::Preprocessing>>,
    },
}

impl Parent {
    /// What enters the child's hash: the parent stage's hash or the file's SHA-256.
    pub fn identity(&self) -> String {
        match &self.source {
            ParentSource::Stage(stage) => stage.hash.clone(),
            ParentSource::File { sha256, .. } => sha256.clone(),
        }
    }

    /// The parent's architecture (for a stage, the one it starts from).
    pub fn spec(&self) -> &ModelSpec {
        match &self.source {
            ParentSource::Stage(stage) => &stage.model,
            ParentSource::File { spec, .. } => spec,
        }
    }

    /// Whether the parent is a PyTorch or safetensors file (weights without an architecture).
    pub fn is_foreign_file(&self) -> bool {
        matches!(
            &self.source,
            ParentSource::File {
                format: models::ModelFormat::Pytorch | models::ModelFormat::Safetensors,
                ..
            }
        )
    }

    /// How the end-of-run table names the parent: the key's last part (`teacher`), or
    /// `parent` for `from`.
    pub fn role(&self) -> &str {
        match self.key.as_str() {
            FROM_KEY => "parent",
            key => key.rsplit('.').next().unwrap_or(key),
        }
    }
}
