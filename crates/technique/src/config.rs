//! A technique's config section: its validation and the parents it names.

use std::path::PathBuf;

pub use models::Invalid;
use models::{InputShape, ModelSpec};

/// A config key naming a parent: another stage's config (`.toml`) or a model file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentKey {
    /// Dotted key, e.g. `distill.teacher`.
    pub key: String,
    pub path: PathBuf,
    /// The architecture of a model file trained elsewhere (PyTorch, safetensors).
    pub spec: Option<ModelSpec>,
    /// The key where users give that architecture, e.g. `distill.teacher_model`.
    pub spec_key: Option<String>,
    /// Renames for a PyTorch / safetensors file's keys, as `[regex, replacement]`.
    pub key_map: Vec<[String; 2]>,
}

/// What a resolved parent's model looks like, for checks that need it (hint taps).
pub struct ParentShape<'a> {
    pub key: &'a str,
    pub spec: &'a ModelSpec,
}

/// A technique's section of the stage config.
pub trait TechniqueConfig {
    /// Checks every value of the section (keys in errors are full: `distill.alpha`).
    fn validate(&self) -> Result<(), Invalid>;

    /// The parents this section names.
    fn parents(&self) -> Vec<ParentKey> {
        Vec::new()
    }

    /// Checks that need the resolved parents and the stage's own model (e.g. that a hint's
    /// layers exist), before anything runs.
    fn check(
        &self,
        _own: &ModelSpec,
        _parents: &[ParentShape],
        _input: &InputShape,
    ) -> Result<(), Invalid> {
        Ok(())
    }

    /// Checks against the stage's training length (a schedule that needs more epochs).
    fn check_training(&self, _epochs: usize) -> Result<(), Invalid> {
        Ok(())
    }

    /// What the technique will do to the stage's model `own`, in one line for `train check`
    /// (e.g. pruning's channels per group before and after), computed from widths alone.
    fn plan(&self, _own: &ModelSpec, _input: &InputShape) -> Result<Option<String>, Invalid> {
        Ok(None)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The parent a stage starts from (`from = ...` at the top of the config): pruning and
/// quantization need one.
pub const FROM_KEY: &str = "from";

/// The preamble of a `check` for a technique that starts from a trained model: the stage must
/// name it (`from`), and `own` (its architecture) is built for its widths alone (parameters
/// are lazy: nothing is initialised), with an error under the `from` key.
pub fn from_model(
    parents: &[ParentShape],
    own: &ModelSpec,
    input: &InputShape,
    what: &str,
) -> Result<models::Model, Invalid> {
    require_from(parents, what)?;
    models::Model::new(own, input, &Default::default())
        .map_err(|e| Invalid::new(FROM_KEY, format!("{own:?}"), e.to_string()))
}

/// Checks that the stage names the trained model it starts from.
pub fn require_from(parents: &[ParentShape], what: &str) -> Result<(), Invalid> {
    if parents.iter().any(|p| p.key == FROM_KEY) {
        return Ok(());
    }
    Err(Invalid::new(
        "from",
        "(missing)",
        format!(
            "{what} starts from a trained model: set `from` to the stage config (.toml) or \
             model file to start from"
        ),
    ))
}
