//! The 16-bit float model file (`.f16`): every tensor as IEEE half precision.
//!
//! The shared envelope (see `container.rs`) with magic `CMPF1601`; the header (JSON)
//! holds `spec`, `input` and `tensors` (paths in payload order); the payload each tensor's
//! values as little-endian `f16`, sized from the model the spec builds. Loading widens them
//! to `f32`: the model then computes exactly as a float model whose weights are the rounded
//! ones.

use std::path::Path;

use half::f16;
use models::params::{self, Edit, HostTensor};
use models::{InputShape, Model, ModelFileError, ModelSpec};
use serde::{Deserialize, Serialize};

use burn::prelude::*;

use crate::container::{self, Payload};

pub const MAGIC: &[u8; 8] = b"CMPF1601";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    spec: ModelSpec,
    input: InputShape,
    tensors: Vec<String>,
    /// The model's input preprocessing (files before it was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preprocessing: Option<data::Preprocessing>,
}

/// The `.f16` file of `model`, exported for `input`.
pub fn to_bytes(model: &Model, input: &InputShape) -> Vec<u8> {
    to_bytes_with(model, input, None)
}

/// [`to_bytes`] with the model's input preprocessing recorded in the header.
pub fn to_bytes_with(
    model: &Model,
    input: &InputShape,
    preprocessing: Option<&data::Preprocessing>,
) -> Vec<u8> {
    let values = params::values(model, |_| true);
    let mut payload = Vec::new();
    for tensor in values.values() {
        for v in &tensor.values {
            payload.extend(f16::from_f32(*v).to_le_bytes());
        }
    }
    let header = Header {
        spec: model.spec(),
        input: *input,
        tensors: values.into_keys().collect(),
        preprocessing: preprocessing.cloned(),
    };
    container::seal(MAGIC, &header, &payload)
}

/// Loads an `.f16` file into a float model for `input` on `device`.
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    input: &InputShape,
    device: &Device,
) -> Result<Model, ModelFileError> {
    let (header, payload): (Header, _) =
        container::open(MAGIC, "a 16-bit model file (.f16)", bytes, path)?;
    let mismatch = |message: String| ModelFileError::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    let (model, shapes) = container::build((&header.spec, &header.input), input, device, path)?;
    if header.tensors.len() != shapes.len()
        || header.tensors.iter().any(|t| !shapes.contains_key(t))
    {
        return Err(mismatch(format!(
            "it holds tensors {:?}; the model has {:?}",
            header.tensors,
            shapes.keys().collect::<Vec<_>>()
        )));
    }
    let mut payload = Payload::new(payload);
    let mut edits = std::collections::BTreeMap::new();
    for tensor in &header.tensors {
        let shape = shapes[tensor].clone();
        let n: usize = shape.iter().product();
        let values = payload
            .take(2 * n)
            .map_err(mismatch)?
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        edits.insert(tensor.clone(), Edit::Replace(HostTensor { shape, values }));
    }
    payload.finish().map_err(mismatch)?;
    Ok(params::edit(model, &edits).0)
}
