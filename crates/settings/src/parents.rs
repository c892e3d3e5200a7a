//! Parents: the stages (or model files) a stage builds on, whatever the role. `from` (start
//! from this result's weights) and every key a technique's section names (`distill.teacher`)
//! are resolved here the same way: the path is found, a config is loaded recursively with the
//! child's execution context (refusing cycles), a model file is loaded once to prove it fits,
//! and the parent's identity enters the child's hash. Nothing here names a technique.

use std::path::{Path, PathBuf};

use models::file::{self, LoadOptions};
use models::{InputShape, ModelFormat};
use technique::{Invalid, ParentKey};

use crate::context::Execution;
use crate::loaded::{ConfigError, LoadedConfig};
pub use crate::loaded::{Parent, ParentSource, FROM_KEY};

/// A relative path is looked up beside the config first, then from the current directory (so
/// both `teacher = "teacher.toml"` in an experiment folder and `teacher =
/// "configs/teacher.toml"` run from the repository root work).
pub fn resolve_path(path: &Path, config_path: &Path) -> PathBuf {
    if path.is_relative() {
        if let Some(dir) = config_path.parent() {
            let beside = dir.join(path);
            if beside.exists() {
                return beside;
            }
        }
    }
    path.to_path_buf()
}

/// Where a parent is being resolved from: the child's file, its context and the chain of
/// configs that led here (to refuse cycles).
pub struct ChildSide<'a> {
    pub path: &'a Path,
    pub execution: &'a Execution,
    pub input: &'a InputShape,
    pub device: &'a burn::tensor::Device,
    /// Samples per batch the child runs a parent's model at (its training batch size).
    pub batch: usize,
    pub chain: &'a mut Vec<PathBuf>,
    /// Loads a parent stage's config with the child's context (the loader, passed in so that
    /// loading and resolving, which recurse through each other, stay two modules).
    pub load_parent: &'a LoadParent,
}

/// How [`resolve`] loads a parent stage's config: `(path, the child's context, the chain)`.
pub type LoadParent =
    dyn Fn(&Path, &Execution, &mut Vec<PathBuf>) -> Result<LoadedConfig, ConfigError>;

/// Resolves one parent key; an error is the key's [`Invalid`] (the caller adds the line).
pub fn resolve(parent: &ParentKey, child: ChildSide) -> Result<Parent, ResolveError> {
    let bad = |allowed: String| {
        ResolveError::Invalid(Invalid::new(
            &parent.key,
            format!("{:?}", parent.path.display().to_string()),
            allowed,
        ))
    };
    let path = resolve_path(&parent.path, child.path);
    let is_config = path.extension().is_some_and(|e| e == "toml");
    let format = ModelFormat::from_path(&path);
    if !is_config && format.is_none() {
        return Err(bad(format!(
            "a stage config (.toml) or a model file: {}",
            file::FORMATS
        )));
    }
    if !path.exists() {
        return Err(bad(format!(
            "no such file (looked beside {} and in the current directory)",
            child.path.display()
        )));
    }
    let source = match format {
        None => resolve_stage(path, child, &parent.key, &bad)?,
        Some(format) => resolve_file(parent, path, format, &child, &bad)?,
    };
    Ok(Parent {
        key: parent.key.clone(),
        source,
    })
}

/// A parent that is another stage's config: loaded with the child's context, refusing a
/// chain that loops.
fn resolve_stage(
    path: PathBuf,
    child: ChildSide,
    key: &str,
    bad: &dyn Fn(String) -> ResolveError,
) -> Result<ParentSource, ResolveError> {
    let here = child
        .path
        .canonicalize()
        .unwrap_or_else(|_| child.path.to_path_buf());
    let there = path.canonicalize().unwrap_or_else(|_| path.clone());
    if there == here || child.chain.contains(&there) {
        return Err(bad("the chain of parents loops back to this config".into()));
    }
    child.chain.push(here);
    let stage = (child.load_parent)(&path, child.execution, child.chain);
    child.chain.pop();
    let stage = stage.map_err(|e| ResolveError::InParent(Box::new(e)))?;
    check_parent_input(key, &stage.input, child.input).map_err(bad)?;
    Ok(ParentSource::Stage(Box::new(stage)))
}

/// A parent's input against the child's: the same channels always; the same size for the
/// model the child trains further (`from`). A teacher at another size is fed its own inputs.
fn check_parent_input(key: &str, parent: &InputShape, child: &InputShape) -> Result<(), String> {
    if parent.channels != child.channels {
        return Err(format!(
            "the parent reads {}-channel images but this stage's data has {} channels; they \
             must match (data.dataset / data.channels)",
            parent.channels, child.channels
        ));
    }
    if key == crate::loaded::FROM_KEY
        && (parent.height, parent.width) != (child.height, child.width)
    {
        return Err(format!(
            "the parent sees {}x{} inputs but this stage {}x{}; they must match for the model \
             this stage trains further (data.dataset / data.input_size)",
            parent.height, parent.width, child.height, child.width
        ));
    }
    Ok(())
}

/// A parent that is a model file: bounded by the memory check, verified against the SHA-256
/// its run recorded, and loaded once to prove it fits.
fn resolve_file(
    parent: &ParentKey,
    path: PathBuf,
    format: ModelFormat,
    child: &ChildSide,
    bad: &dyn Fn(String) -> ResolveError,
) -> Result<ParentSource, ResolveError> {
    let ours = matches!(format, ModelFormat::Burnpack | ModelFormat::Sparse);
    if !ours && parent.spec.is_none() {
        return Err(bad(format!(
            "a PyTorch or safetensors file needs its architecture: add {}",
            parent
                .spec_key
                .as_deref()
                .map_or("the model spec beside this key".to_string(), |k| format!(
                    "a [{k}] table (kind = \"mlp\", ...)"
                ))
        )));
    }
    // Read once for its checksum and what it says it holds and reads.
    let facts = file::inspect(&path, format)
        .map_err(|e| bad(format!("cannot read it as a model file: {e}")))?;
    // One of our files says what input its model reads; the others read the child's.
    let input = &facts.preprocessing.as_ref().map_or(*child.input, |p| {
        InputShape::read_by(p, child.input.classes)
    });
    check_parent_input(&parent.key, input, child.input).map_err(bad)?;
    if let Some(spec) = &parent.spec {
        let key = parent.spec_key.as_deref().unwrap_or(&parent.key);
        spec.validate(input).map_err(ResolveError::Invalid)?;
        crate::validate::check_fits(key, spec, input, 1).map_err(ResolveError::Invalid)?;
    }
    // A file in a finished run folder must be the one its run recorded.
    if let Some(sha256) = crate::run_dir::recorded_for(&path).map_err(bad)? {
        file::check_sha256(&path, &facts.sha256, &sha256).map_err(|e| bad(e.to_string()))?;
    }
    // What one of our files says it holds gets the memory bound a config's model gets,
    // before anything of it is built.
    if let Some(spec) = &facts.spec {
        spec.validate(input).map_err(|e| {
            bad(format!(
                "the architecture the file describes is not usable: {e}"
            ))
        })?;
        crate::validate::check_fits(&parent.key, spec, input, child.batch)
            .map_err(ResolveError::Invalid)?;
    }
    // Load it once now, so a file that does not fit fails before any training.
    let model = file::load(
        &path,
        format,
        LoadOptions {
            spec: parent.spec.as_ref(),
            key_map: &parent.key_map,
        },
        input,
        child.device,
    )
    .map_err(|e| match e {
        // Weights that load but do not match: say what they had to match.
        models::ModelFileError::Mismatch { .. } => bad(format!(
            "its weights do not fit {}x{}x{} inputs and {} classes: {e}",
            input.channels, input.height, input.width, input.classes
        )),
        other => bad(format!("cannot load it: {other}")),
    })?;
    // The first 12 hex digits: the file parent's identity in this stage's hash.
    let sha256 = facts.sha256[..12].to_string();
    Ok(ParentSource::File {
        path,
        format,
        spec: model.spec(),
        key_map: parent.key_map.clone(),
        sha256,
        preprocessing: facts.preprocessing.map(Box::new),
    })
}

/// Why a parent did not resolve.
pub enum ResolveError {
    /// The key's value is wrong (located by the caller).
    Invalid(Invalid),
    /// The parent's own config is wrong (already located in the parent's file).
    InParent(Box<ConfigError>),
}
