//! The sparse model file (`.sparse`): what a magnitude-pruned model is stored as.
//!
//! Each tensor is stored in whichever encoding is smallest for it: dense (`f32` values), a
//! bitmap (one bit per entry, then the non-zero values) or coordinates (`u32` index of each
//! non-zero entry, then the values). At 90% sparsity the bitmap costs 0.125 + 0.4 = 0.525
//! bytes per entry against 4 dense; coordinates win below about 3% density.
//!
//! Layout (little-endian): magic `CSPR`, version `u32`, spec JSON (`u32` length + bytes),
//! from version 2 the input preprocessing JSON (`u32` length + bytes; length 0: none),
//! tensor count `u32`, then per tensor: path (`u16` length + bytes), rank `u8`, dims (`u32`
//! each), encoding `u8`, payload; then the SHA-256 of everything before it, checked on read.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use sha2::{Digest, Sha256};

use super::ModelFileError;
use crate::params::{self, Edit, HostTensor};
use crate::{InputShape, Model, ModelSpec};

const MAGIC: &[u8; 4] = b"CSPR";
const VERSION: u32 = 2;
const DENSE: u8 = 0;
const BITMAP: u8 = 1;
const COORDINATES: u8 = 2;
/// Bounds on what a file may claim, checked before anything is allocated from it.
const MAX_RANK: usize = 8;
/// At most 2^28 entries (1 GiB of f32) per tensor and per model.
const MAX_ENTRIES: usize = 1 << 28;

/// Bytes of `values` in each encoding: dense, bitmap, coordinates.
fn encoded_sizes(n: usize, nonzero: usize) -> [usize; 3] {
    [4 * n, n.div_ceil(8) + 4 + 4 * nonzero, 4 + 8 * nonzero]
}

fn encode_tensor(out: &mut Vec<u8>, path: &str, t: &HostTensor) {
    out.extend((path.len() as u16).to_le_bytes());
    out.extend(path.as_bytes());
    out.push(t.shape.len() as u8);
    for &d in &t.shape {
        out.extend((d as u32).to_le_bytes());
    }
    let nonzero: Vec<(usize, f32)> = t
        .values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| *v != 0.0)
        .collect();
    let sizes = encoded_sizes(t.values.len(), nonzero.len());
    let best = (0..3).min_by_key(|&i| sizes[i]).unwrap_or(0) as u8;
    out.push(best);
    match best {
        DENSE => t.values.iter().for_each(|v| out.extend(v.to_le_bytes())),
        BITMAP => {
            let mut bits = vec![0u8; t.values.len().div_ceil(8)];
            for (i, _) in &nonzero {
                bits[i / 8] |= 1 << (i % 8);
            }
            out.extend(bits);
            out.extend((nonzero.len() as u32).to_le_bytes());
            nonzero
                .iter()
                .for_each(|(_, v)| out.extend(v.to_le_bytes()));
        }
        _ => {
            out.extend((nonzero.len() as u32).to_le_bytes());
            nonzero
                .iter()
                .for_each(|(i, _)| out.extend((*i as u32).to_le_bytes()));
            nonzero
                .iter()
                .for_each(|(_, v)| out.extend(v.to_le_bytes()));
        }
    }
}

/// The sparse file's bytes for `model`: its spec and every float tensor (weights, biases,
/// BatchNorm parameters and running statistics).
pub fn to_bytes(model: &Model) -> Result<Vec<u8>, ModelFileError> {
    to_bytes_with(model, None)
}

/// [`to_bytes`] with the model's input preprocessing recorded.
pub fn to_bytes_with(
    model: &Model,
    preprocessing: Option<&data::Preprocessing>,
) -> Result<Vec<u8>, ModelFileError> {
    let write = |e: serde_json::Error| ModelFileError::Write(e.to_string());
    let spec = serde_json::to_string(&model.spec()).map_err(write)?;
    let prep = match preprocessing {
        Some(p) => serde_json::to_string(p).map_err(write)?,
        None => String::new(),
    };
    let tensors = params::values(model, |_| true);
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(VERSION.to_le_bytes());
    for text in [&spec, &prep] {
        out.extend((text.len() as u32).to_le_bytes());
        out.extend(text.as_bytes());
    }
    out.extend((tensors.len() as u32).to_le_bytes());
    for (path, t) in &tensors {
        encode_tensor(&mut out, path, t);
    }
    let digest = Sha256::digest(&out);
    out.extend(digest);
    Ok(out)
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap_or_default()) as usize)
    }
    fn u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()) as usize)
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, String> {
        Ok(self
            .take(n.checked_mul(4).ok_or("size overflow")?)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Reads one tensor. Its shape must be the one `expected` gives its path (the model's),
/// checked before anything is allocated from the file's numbers.
fn decode_tensor(
    c: &mut Cursor,
    expected: &BTreeMap<String, Vec<usize>>,
) -> Result<(String, HostTensor), String> {
    let len = c.u16()?;
    let path = String::from_utf8(c.take(len)?.to_vec()).map_err(|_| "a path is not UTF-8")?;
    let rank = c.u8()? as usize;
    if rank == 0 || rank > MAX_RANK {
        return Err(format!("{path}: rank {rank} (1..={MAX_RANK} allowed)"));
    }
    let shape: Vec<usize> = (0..rank).map(|_| c.u32()).collect::<Result<_, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ENTRIES)
        .ok_or_else(|| format!("{path}: shape {shape:?} is too large"))?;
    match expected.get(&path) {
        None => return Err(format!("{path} is not a tensor of this model")),
        Some(want) if *want != shape => {
            return Err(format!("{path} has shape {shape:?}, the model {want:?}"))
        }
        Some(_) => {}
    }
    let values = match c.u8()? {
        DENSE => c.f32s(n)?,
        BITMAP => {
            let bits = c.take(n.div_ceil(8))?;
            let nonzero = c.u32()?;
            let set: Vec<usize> = (0..n)
                .filter(|i| bits[i / 8] & (1 << (i % 8)) != 0)
                .collect();
            if set.len() != nonzero {
                return Err(format!(
                    "{path}: the bitmap marks {} entries, the count says {nonzero}",
                    set.len()
                ));
            }
            let mut values = vec![0.0; n];
            for (i, v) in set.into_iter().zip(c.f32s(nonzero)?) {
                values[i] = v;
            }
            values
        }
        COORDINATES => {
            let nonzero = c.u32()?;
            if nonzero > n {
                return Err(format!("{path}: {nonzero} non-zeros in {n} entries"));
            }
            let indices: Vec<usize> = (0..nonzero).map(|_| c.u32()).collect::<Result<_, _>>()?;
            let mut values = vec![0.0; n];
            for (i, v) in indices.into_iter().zip(c.f32s(nonzero)?) {
                *values
                    .get_mut(i)
                    .ok_or_else(|| format!("{path}: index {i} out of {n}"))? = v;
            }
            values
        }
        other => return Err(format!("{path}: unknown encoding {other}")),
    };
    Ok((path, HostTensor { shape, values }))
}

/// What a sparse file's header holds.
struct Header<'a> {
    spec: ModelSpec,
    preprocessing: Option<data::Preprocessing>,
    /// At the tensor count.
    cursor: Cursor<'a>,
}

/// The body of a sparse file after its checksum is checked: its spec and preprocessing.
fn header(bytes: &[u8]) -> Result<Header<'_>, String> {
    if bytes.len() < MAGIC.len() + 32 || &bytes[..4] != MAGIC {
        return Err("not a sparse model file (no CSPR header)".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("its checksum does not match: the file is corrupt or truncated".into());
    }
    let mut c = Cursor { bytes: body, at: 4 };
    let version = c.u32()?;
    if version != 1 && version != VERSION as usize {
        return Err(format!(
            "version {version}; this build reads 1 and {VERSION}"
        ));
    }
    let len = c.u32()?;
    let spec: ModelSpec = serde_json::from_slice(c.take(len)?)
        .map_err(|e| format!("its model spec is unreadable: {e}"))?;
    let mut preprocessing = None;
    if version >= 2 {
        let len = c.u32()?;
        if len > 0 {
            let record: data::Preprocessing = serde_json::from_slice(c.take(len)?)
                .map_err(|e| format!("its input preprocessing is unreadable: {e}"))?;
            record
                .check()
                .map_err(|e| format!("its input preprocessing: {e}"))?;
            preprocessing = Some(record);
        }
    }
    Ok(Header {
        spec,
        preprocessing,
        cursor: c,
    })
}

/// The tensors after the header, each of the shape `expected` gives it, all of them present.
fn tensors(
    mut c: Cursor,
    expected: &BTreeMap<String, Vec<usize>>,
) -> Result<BTreeMap<String, HostTensor>, String> {
    let count = c.u32()?;
    if count != expected.len() {
        return Err(format!("{count} tensors, the model has {}", expected.len()));
    }
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let (path, t) = decode_tensor(&mut c, expected)?;
        if out.insert(path.clone(), t).is_some() {
            return Err(format!("{path} appears twice"));
        }
    }
    if c.at != c.bytes.len() {
        return Err(format!(
            "{} unexpected trailing bytes",
            c.bytes.len() - c.at
        ));
    }
    Ok(out)
}

/// The spec stored in a sparse file's bytes.
pub fn spec_in_bytes(bytes: &[u8], path: &Path) -> Result<ModelSpec, ModelFileError> {
    header(bytes)
        .map(|h| h.spec)
        .map_err(|message| ModelFileError::Read {
            path: path.to_path_buf(),
            message,
        })
}

/// The input preprocessing stored in a sparse file's bytes (none in version 1 files).
pub fn preprocessing_in_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<Option<data::Preprocessing>, ModelFileError> {
    header(bytes)
        .map(|h| h.preprocessing)
        .map_err(|message| ModelFileError::Read {
            path: path.to_path_buf(),
            message,
        })
}

/// Loads a sparse file's bytes into a model for `input` on `device`. The spec inside builds
/// the model (lazily: nothing is allocated for it yet), and every tensor in the file must have
/// the shape the model gives it before its values are read.
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    input: &InputShape,
    device: &Device,
) -> Result<Model, ModelFileError> {
    let read = |message: String| ModelFileError::Read {
        path: path.to_path_buf(),
        message,
    };
    let Header { spec, cursor, .. } = header(bytes).map_err(read)?;
    let model = super::build(&spec, input, device, path)?;
    let expected = params::shapes(&model);
    let entries = expected
        .values()
        .map(|shape| shape.iter().product::<usize>())
        .fold(0usize, usize::saturating_add);
    if entries > MAX_ENTRIES {
        return Err(read(format!(
            "its spec describes {entries} parameters, more than the {MAX_ENTRIES} a sparse \
             file may hold"
        )));
    }
    let tensors = tensors(cursor, &expected).map_err(|message| ModelFileError::Mismatch {
        path: path.to_path_buf(),
        message,
    })?;
    let edits = tensors
        .into_iter()
        .map(|(name, t)| (name, Edit::Replace(t)))
        .collect();
    Ok(params::edit(model, &edits).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_encoding_is_chosen() {
        // Dense at full density, bitmap at 10%, coordinates at 1%.
        let pick = |n, nz| {
            let s = encoded_sizes(n, nz);
            (0..3).min_by_key(|&i| s[i]).unwrap()
        };
        assert_eq!(pick(1000, 1000), 0);
        assert_eq!(pick(1000, 100), 1);
        assert_eq!(pick(1000, 10), 2);
    }

    fn sealed(body: Vec<u8>) -> Vec<u8> {
        let mut out = body;
        let digest = Sha256::digest(&out);
        out.extend(digest);
        out
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        assert!(header(b"").is_err());
        assert!(header(&[0u8; 64]).is_err());
        let mut body = Vec::from(*MAGIC);
        body.extend(VERSION.to_le_bytes());
        body.extend(u32::MAX.to_le_bytes()); // a spec longer than the file
        assert!(header(&sealed(body)).err().unwrap().contains("truncated"));
    }

    #[test]
    fn a_claimed_shape_must_be_the_models_before_anything_is_allocated() {
        // A well-formed file whose one tensor claims 2^23 x 16 all-zero entries in four
        // bytes of coordinates: refused for its shape, never allocated.
        let mut body = Vec::new();
        encode_tensor(
            &mut body,
            "w",
            &HostTensor {
                shape: vec![2, 2],
                values: vec![0.0; 4],
            },
        );
        let dims_at = 2 + 1 + 1;
        body[dims_at..dims_at + 4].copy_from_slice(&(1u32 << 23).to_le_bytes());
        body[dims_at + 4..dims_at + 8].copy_from_slice(&16u32.to_le_bytes());
        let expected = BTreeMap::from([("w".to_string(), vec![2, 2])]);
        let mut c = Cursor {
            bytes: &body,
            at: 0,
        };
        let err = decode_tensor(&mut c, &expected).unwrap_err();
        assert!(
            err.contains("has shape [8388608, 16], the model [2, 2]"),
            "{err}"
        );
    }
}
