//! The envelope both export formats share: 8 magic bytes, a `u32` (little-endian) header
//! length, the header as compact JSON, the payload, then the SHA-256 of everything before it.
//! The checksum is verified before anything else is read; the payload's layout is derived
//! from the model the header's spec builds, never from numbers in the file alone.

use std::path::Path;

use std::collections::BTreeMap;

use burn::prelude::*;
use models::{params, InputShape, Model, ModelFileError, ModelSpec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// At most 2^28 parameters (1 GiB of f32 once loaded).
const MAX_ENTRIES: usize = 1 << 28;
/// Headers are small (names, shapes, a few scalars per layer): anything larger is corrupt.
const MAX_HEADER: usize = 4 << 20;
const DIGEST: usize = 32;

pub fn read_error(path: &Path, message: impl Into<String>) -> ModelFileError {
    ModelFileError::Read {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// `magic`, the header and the payload, sealed with their checksum.
pub fn seal<H: Serialize>(magic: &[u8; 8], header: &H, payload: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(12 + header.len() + payload.len() + DIGEST);
    out.extend(magic);
    out.extend((header.len() as u32).to_le_bytes());
    out.extend(&header);
    out.extend(payload);
    let digest = Sha256::digest(&out);
    out.extend(digest);
    out
}

/// The header and payload of a sealed file, after checking its magic and checksum.
pub fn open<'b, H: DeserializeOwned>(
    magic: &[u8; 8],
    what: &str,
    bytes: &'b [u8],
    path: &Path,
) -> Result<(H, &'b [u8]), ModelFileError> {
    if bytes.len() < magic.len() + 4 + DIGEST || &bytes[..magic.len()] != magic {
        return Err(read_error(
            path,
            format!("not {what} (wrong magic bytes, or truncated)"),
        ));
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST);
    if Sha256::digest(body).as_slice() != digest {
        return Err(read_error(
            path,
            "its checksum does not match its contents: the file is corrupt or truncated",
        ));
    }
    let rest = &body[magic.len()..];
    let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if length > MAX_HEADER || length > rest.len() {
        return Err(read_error(
            path,
            format!(
                "its header claims {length} bytes, the file holds {}",
                rest.len()
            ),
        ));
    }
    let (header, payload) = rest.split_at(length);
    let header = serde_json::from_slice(header)
        .map_err(|e| read_error(path, format!("its header is unreadable: {e}")))?;
    Ok((header, payload))
}

/// Reads consecutive slices of a payload whose sizes the caller derived.
pub struct Payload<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Payload<'b> {
    pub fn new(bytes: &'b [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn take(&mut self, n: usize) -> Result<&'b [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "its payload ends at byte {} but {} more are needed",
                self.bytes.len(),
                n
            ));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// Errors unless every byte was read.
    pub fn finish(self) -> Result<(), String> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes after the last tensor",
                self.bytes.len() - self.at
            ))
        }
    }
}

/// `n` little-endian `f32`s.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The model a header's spec builds for `input` (lazily: nothing allocated yet), with its
/// tensors' shapes, after checking the file was exported for this input and that the spec is
/// of a size a file may describe.
pub fn build(
    (spec, exported_for): (&ModelSpec, &InputShape),
    input: &InputShape,
    device: &Device,
    path: &Path,
) -> Result<(Model, BTreeMap<String, Vec<usize>>), ModelFileError> {
    if exported_for != input {
        return Err(ModelFileError::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "it was exported for input {exported_for:?}, this dataset gives {input:?}"
            ),
        });
    }
    let model = models::file::build(spec, input, device, path)?;
    let shapes = params::shapes(&model);
    let entries = shapes
        .values()
        .map(|s| s.iter().product::<usize>())
        .fold(0usize, usize::saturating_add);
    if entries > MAX_ENTRIES {
        return Err(read_error(
            path,
            format!("its spec describes {entries} parameters, more than {MAX_ENTRIES}"),
        ));
    }
    Ok((model, shapes))
}
