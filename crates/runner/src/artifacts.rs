//! Opening what a stage saved, for measuring: our float model files (`model.bpk`, `.sparse`)
//! and the techniques' artefacts (through the registry), and choosing what is measured: the
//! export when there is one, else the float model through the packed inference path that
//! deployment runs. Shared by bench, profile and the stage's own measurement.

use std::path::Path;

use burn::prelude::*;
use models::file::{self, LoadOptions};
use models::{Classifier, Inference, InputShape, Model, ModelFileError, ModelFormat};

use crate::error::RunError;
use settings::schema::StageConfig;
use settings::techniques::artifact_format;

/// One of our float model files (a run folder's model.bpk, or a `.bpk` / `.sparse` saved by a
/// stage). The file describes itself; an older file without a spec is built from the config's.
pub fn load_float(
    model_path: &Path,
    config: &StageConfig,
    input: &InputShape,
    device: &Device,
) -> Result<Model, RunError> {
    let options = LoadOptions {
        spec: None,
        key_map: &[],
    };
    let format = match ModelFormat::from_path(model_path) {
        Some(ModelFormat::Sparse) => ModelFormat::Sparse,
        _ => ModelFormat::Burnpack,
    };
    // The architecture the file describes must fit in memory before it is built.
    if let Some(spec) = file::stored_spec(model_path, format)? {
        // The default evaluation batch is lowered to what fits (`eval_batch_for`); a chosen
        // one, and the throughput batch, are checked as asked.
        let eval = settings::validate::eval_batch_for(&spec, input, config.train.eval_batch_size);
        let batch = eval.max(config.measure.throughput_batch);
        spec.validate(input)
            .and_then(|()| settings::validate::check_inference_fits("model", &spec, input, batch))
            .map_err(|e| RunError::Record {
                what: "model file",
                path: model_path.to_path_buf(),
                message: format!("the model the file describes: {e}"),
            })?;
    }
    Ok(
        match file::load(model_path, format, options, input, device) {
            Err(ModelFileError::NoSpec { .. }) if config.model.is_some() => {
                let options = LoadOptions {
                    spec: config.model.as_ref(),
                    key_map: &[],
                };
                file::load(model_path, ModelFormat::Burnpack, options, input, device)?
            }
            other => other?,
        },
    )
}

/// A technique's artefact loaded back from its file, as something to measure: `.qnt` / `.f16`
/// through their loaders, `.sparse` as a model.
pub fn open_artifact(
    path: &Path,
    config: &StageConfig,
    input: &InputShape,
    device: &Device,
) -> Result<Box<dyn Classifier>, RunError> {
    if let Some(format) = artifact_format(path) {
        return Ok((format.open)(path, input, device)?.classifier);
    }
    Ok(Box::new(load_float(path, config, input, device)?))
}

/// What a model is measured as: its export, loaded back from the file, or the float model
/// through [`Inference`] (an MLP's packed layers).
pub enum Measured<'a> {
    Export(Box<dyn Classifier>),
    Float(Inference<'a>),
}

impl<'a> Measured<'a> {
    pub fn new(export: Option<Box<dyn Classifier>>, model: &'a Model) -> Self {
        match export {
            Some(export) => Measured::Export(export),
            None => Measured::Float(Inference::new(model)),
        }
    }

    pub fn classifier(&self) -> &dyn Classifier {
        match self {
            Measured::Export(export) => export.as_ref(),
            Measured::Float(inference) => inference,
        }
    }

    /// The kernels a pass of `batch` images runs.
    pub fn kernels(&self, batch: usize) -> String {
        self.classifier().kernels(batch)
    }
}
