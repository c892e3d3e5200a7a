//! The ONNX sources of this technique's exports, for `onnx::export`: an integer model as
//! QDQ (the file's levels, per-channel scales and activation grids, so the runtime executes
//! the integer model the stage trained, not a float copy of it), a 16-bit one as half-precision
//! initialisers.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use models::params::{self, HostTensor};
use models::{InputShape, ModelFileError};

use crate::int_file::IntFile;
use crate::{half_file, recorded_preprocessing};

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The graph source of the `.qnt` or `.f16` file at `path`, for `input`.
pub fn source(path: &Path, input: &InputShape) -> Result<onnx::Source, ModelFileError> {
    let bytes = models::file::read_model_bytes(path)?;
    let preprocessing = recorded_preprocessing(&bytes, path)?;
    let device = Device::flex();
    if path.extension().is_some_and(|e| e == "f16") {
        let model = half_file::from_bytes(&bytes, path, input, &device)?;
        let description = format!("{}: float16 weights, float32 compute", file_name(path));
        return Ok(onnx::Source::float(
            &model,
            *input,
            onnx::Precision::F16,
            preprocessing,
            description,
        ));
    }
    int_source(path, &bytes, input, preprocessing)
}

/// The QDQ graph source of the `.qnt` file `bytes` (read from `path`).
fn int_source(
    path: &Path,
    bytes: &[u8],
    input: &InputShape,
    preprocessing: Option<data::Preprocessing>,
) -> Result<onnx::Source, ModelFileError> {
    let (file, model) = IntFile::from_bytes(bytes, path, input, &Device::flex())?;
    let shapes = params::shapes(&model);
    let header = &file.header;
    let tensors = header
        .floats
        .iter()
        .zip(&file.floats)
        .map(|(p, values)| {
            let shape = shapes[p].clone();
            (
                p.clone(),
                HostTensor {
                    shape,
                    values: values.clone(),
                },
            )
        })
        .collect();
    let quantized: BTreeMap<String, onnx::QuantizedWeight> = header
        .weights
        .iter()
        .zip(&file.weights)
        .map(|(entry, w)| {
            let dims = match entry.transposed {
                true => vec![entry.rows, entry.cols],
                false => shapes[&entry.path].clone(),
            };
            let weight = onnx::QuantizedWeight {
                bits: entry.bits,
                dims,
                scales: w.scales.clone(),
                levels: w.levels.clone(),
            };
            (entry.path.clone(), weight)
        })
        .collect();
    let mut bits: Vec<u32> = header.weights.iter().map(|w| w.bits).collect();
    bits.sort_unstable();
    bits.dedup();
    let bits: Vec<String> = bits.iter().map(u32::to_string).collect();
    let activations = header
        .activations
        .iter()
        .map(|(point, g)| {
            let grid = onnx::Grid {
                bits: g.bits,
                scale: g.scale,
                zero_point: g.zero_point,
            };
            (point.clone(), grid)
        })
        .collect();
    Ok(onnx::Source {
        spec: header.spec.clone(),
        input: *input,
        tensors,
        precision: onnx::Precision::F32,
        quantized,
        activations,
        fold_batchnorm: header.fold_batchnorm,
        preprocessing,
        description: format!(
            "{}: {}-bit weights, QDQ (QuantizeLinear/DequantizeLinear)",
            file_name(path),
            bits.join("/")
        ),
    })
}
