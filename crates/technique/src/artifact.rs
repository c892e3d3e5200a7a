//! Artefact formats: the files a technique exports beside `model.bpk` (an integer model, a
//! 16-bit one), each with the loader that opens it again. Bench, profile, parents and a stage's
//! own measurement open an artefact through the registry the techniques fill
//! (`settings::techniques::artifact_formats`), never through a technique by name.

use std::path::Path;

use burn::tensor::Device;
use models::{Classifier, InputShape, Model, ModelFileError};

/// A technique's artefact loaded back from its file.
pub struct OpenedArtifact {
    /// What is measured: the file's own inference path (integer grids, 16-bit weights).
    pub classifier: Box<dyn Classifier>,
    /// The float model its loader built (dequantized or widened weights): what a profile
    /// times layer by layer.
    pub model: Model,
}

/// A file format a technique writes as its artefact, and how to open one.
#[derive(Clone, Copy)]
pub struct ArtifactFormat {
    /// The technique that writes it (its config section's name).
    pub technique: &'static str,
    /// The file extension, without the dot (`qnt`).
    pub extension: &'static str,
    /// Opens a file of this format for `input` on `device`, checking what it holds.
    pub open: fn(&Path, &InputShape, &Device) -> Result<OpenedArtifact, ModelFileError>,
    /// The input preprocessing a file of this format records, when it records one.
    pub preprocessing: fn(&Path) -> Result<Option<data::Preprocessing>, ModelFileError>,
    /// What an ONNX graph of a file of this format is made from, for `input`.
    pub onnx: fn(&Path, &InputShape) -> Result<onnx::Source, ModelFileError>,
}

impl ArtifactFormat {
    /// Whether `path` names a file of this format (by its extension).
    pub fn matches(&self, path: &Path) -> bool {
        path.extension().is_some_and(|e| e == self.extension)
    }
}

impl std::fmt::Debug for ArtifactFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, ".{} ({})", self.extension, self.technique)
    }
}
