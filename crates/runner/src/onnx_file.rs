//! Writing a model or a technique's artefact as ONNX (`onnx::export`), shared by
//! `train export` and the stage's `output.onnx` setting.

use std::path::Path;

use models::{InputShape, Model, ModelFormat};
use settings::run_dir::write_atomic;
use settings::techniques::artifact_format;

use crate::error::RunError;

/// The graph source of `path` (a `.bpk`, `.sparse`, or a technique's artefact) whose float
/// model is `model`, with `preprocessing` recorded where the file recorded none.
pub fn source(
    path: &Path,
    model: &Model,
    input: &InputShape,
    preprocessing: Option<data::Preprocessing>,
) -> Result<onnx::Source, RunError> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut source = match artifact_format(path) {
        Some(format) => (format.onnx)(path, input)?,
        None => {
            let description = match ModelFormat::from_path(path) {
                Some(ModelFormat::Sparse) => {
                    format!("{name}: a sparse model, its zeros stored densely (float32)")
                }
                _ => format!("{name}: float32"),
            };
            onnx::Source::float(model, *input, onnx::Precision::F32, None, description)
        }
    };
    if source.preprocessing.is_none() {
        source.preprocessing = preprocessing;
    }
    Ok(source)
}

/// Exports `source` to `out` (written whole or not at all); returns its size in bytes.
pub fn write(source: &onnx::Source, options: &onnx::Options, out: &Path) -> Result<u64, RunError> {
    let bytes = onnx::export(source, options).map_err(|e| RunError::Record {
        what: "ONNX export",
        path: out.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(out, &bytes).map_err(RunError::io(out))?;
    Ok(bytes.len() as u64)
}
