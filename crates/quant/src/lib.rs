//! Quantization: quantization-aware training with fake-quantization and straight-through
//! gradients, post-training quantization as its baseline, and the exports they produce: an
//! integer model file (`.qnt`, 8/4/2-bit weights) and a 16-bit float file (`.f16`), each with
//! a loader that measurement runs from the file itself.
//!
//! - [`fake`]: quantize-dequantize math and the straight-through estimator.
//! - [`quantizer`]: observers and the [`models::ForwardHook`] every forward pass runs through.
//! - [`int_file`], [`half_file`]: the file formats and their loaders.
//! - [`Quantization`]: the technique (`[quant]`).

pub mod config;
mod container;
pub mod fake;
pub mod half_file;
pub mod int_file;
pub mod integer;
pub mod onnx;
pub mod quantized_model;
pub mod quantizer;
mod technique;

use std::path::Path;

use burn::prelude::*;
pub use config::{Mode, ObserverKind, QuantConfig};
use models::{Classifier, InputShape, Model, ModelFileError};
pub use quantized_model::QuantizedModel;
pub use technique::{Quantization, HALF_FILE, INT_FILE};

/// The artefact formats this technique writes, for the registry (`settings::techniques`).
pub const ARTIFACT_FORMATS: [::technique::ArtifactFormat; 2] = [
    ::technique::ArtifactFormat {
        technique: "quant",
        extension: "qnt",
        open: open_artifact,
        preprocessing: artifact_preprocessing,
        onnx: onnx::source,
    },
    ::technique::ArtifactFormat {
        technique: "quant",
        extension: "f16",
        open: open_artifact,
        preprocessing: artifact_preprocessing,
        onnx: onnx::source,
    },
];

fn open_artifact(
    path: &Path,
    input: &InputShape,
    device: &Device,
) -> Result<::technique::OpenedArtifact, ModelFileError> {
    let export = open_export(path, input, device)?;
    Ok(::technique::OpenedArtifact {
        model: export.model().clone(),
        classifier: Box::new(export),
    })
}

/// The input preprocessing an export's header records (none in files written before it was).
fn artifact_preprocessing(path: &Path) -> Result<Option<data::Preprocessing>, ModelFileError> {
    recorded_preprocessing(&models::file::read_model_bytes(path)?, path)
}

/// [`artifact_preprocessing`] of an export's bytes, read from `path`.
fn recorded_preprocessing(
    bytes: &[u8],
    path: &Path,
) -> Result<Option<data::Preprocessing>, ModelFileError> {
    /// The one header field read here, whichever format the file is.
    #[derive(serde::Deserialize)]
    struct Recorded {
        #[serde(default)]
        preprocessing: Option<data::Preprocessing>,
    }
    let magic = if bytes.starts_with(half_file::MAGIC) {
        half_file::MAGIC
    } else {
        int_file::MAGIC
    };
    let (header, _): (Recorded, _) =
        container::open(magic, "an export (.qnt or .f16)", bytes, path)?;
    match header.preprocessing {
        Some(p) => {
            p.check().map_err(|e| {
                container::read_error(path, format!("its input preprocessing: {e}"))
            })?;
            Ok(Some(p))
        }
        None => Ok(None),
    }
}

/// A loaded export: what measurement runs.
pub enum Export {
    Int(QuantizedModel),
    Half(Model),
}

impl Export {
    /// The float model underneath (dequantized weights, or the widened 16-bit ones).
    pub fn model(&self) -> &Model {
        match self {
            Export::Int(m) => &m.model,
            Export::Half(m) => m,
        }
    }

    fn classifier(&self) -> &dyn Classifier {
        match self {
            Export::Int(m) => m,
            Export::Half(m) => m,
        }
    }
}

impl Classifier for Export {
    fn kind(&self) -> &str {
        self.classifier().kind()
    }

    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        self.classifier().classify(images)
    }

    fn kernels(&self, batch: usize) -> String {
        self.classifier().kernels(batch)
    }

    fn specification(&self) -> Option<Box<dyn Classifier + '_>> {
        self.classifier().specification()
    }

    fn num_params(&self) -> usize {
        self.classifier().num_params()
    }

    fn macs(&self, input: &InputShape) -> u64 {
        self.classifier().macs(input)
    }
}

/// Opens an export (`.qnt`, `.f16`) for `input` on `device`.
pub fn open_export(
    path: &Path,
    input: &InputShape,
    device: &Device,
) -> Result<Export, ModelFileError> {
    let bytes = models::file::read_model_bytes(path)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("qnt") => QuantizedModel::from_bytes(&bytes, path, input, device).map(Export::Int),
        Some("f16") => half_file::from_bytes(&bytes, path, input, device).map(Export::Half),
        _ => Err(ModelFileError::Read {
            path: path.to_path_buf(),
            message: "not an export (.qnt or .f16)".into(),
        }),
    }
}

#[cfg(test)]
mod tests;
