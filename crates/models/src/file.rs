//! Model files: the one place that reads and writes them, for teachers, parents, bench,
//! profile and resume.
//!
//! Our own files are burnpack (`.bpk`) with the model's spec in the file's metadata, so a
//! saved model describes itself: a pruned model reloads with its narrower widths without any
//! config. Files trained elsewhere (a PyTorch `state_dict`, safetensors) need their spec given.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::burn_pack::{Reader, Writer};
use burn::store::{
    KeyRemapper, ModuleRecord, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use sha2::{Digest, Sha256};

use crate::{InputShape, Model, ModelSpec, SpecError};

pub mod sparse;

/// Metadata key holding the spec (JSON) in our burnpack files.
const SPEC_KEY: &str = "compress.model_spec";

/// Metadata key holding the input preprocessing (JSON, [`data::Preprocessing`]).
const PREPROCESSING_KEY: &str = "compress.preprocessing";

/// Formats a model file can have, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// `.bpk`: a model saved by this tool (its spec inside).
    Burnpack,
    /// `.pt` / `.pth`: a PyTorch `state_dict` (not a TorchScript archive).
    Pytorch,
    /// `.sparse`: a magnitude-pruned model saved by this tool (see [`sparse`]).
    Sparse,
    /// `.safetensors`, with PyTorch's conventions (linear weights `[out, in]`, BatchNorm
    /// `weight`/`bias`).
    Safetensors,
}

/// What the formats are, for error messages.
pub const FORMATS: &str = ".bpk or .sparse (ours), .pt / .pth (PyTorch state_dict) or .safetensors";

impl ModelFormat {
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "bpk" => Some(Self::Burnpack),
            "sparse" => Some(Self::Sparse),
            "pt" | "pth" => Some(Self::Pytorch),
            "safetensors" => Some(Self::Safetensors),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("{}: cannot read it: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{}: no model spec inside (not saved by this tool, or saved before models described themselves); give the architecture explicitly", path.display())]
    NoSpec { path: PathBuf },
    #[error("{}: its model spec is unreadable: {message}", path.display())]
    BadSpec { path: PathBuf, message: String },
    #[error("{}: the model cannot be built: {source}", path.display())]
    Spec {
        path: PathBuf,
        #[source]
        source: SpecError,
    },
    #[error("{}: its weights do not fit: {message}", path.display())]
    Mismatch { path: PathBuf, message: String },
    #[error("key_map pattern {pattern:?}: {message}")]
    KeyMap { pattern: String, message: String },
    #[error("cannot serialise the model: {0}")]
    Write(String),
    #[error(
        "{}: the file changed since its run recorded it (SHA-256 {actual}, recorded {expected}): \
         it is corrupt or was replaced; delete the run folder to train it again",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// A model file's bytes: burnpack with the spec (derived from the live widths) inside.
pub fn to_bytes(model: &Model) -> Result<Vec<u8>, ModelFileError> {
    model_file_bytes(model, None)
}

/// A model file's bytes with the spec and, when given, the input preprocessing inside: what a
/// run writes, so the file alone says how to feed the model.
pub fn model_file_bytes(
    model: &Model,
    preprocessing: Option<&data::Preprocessing>,
) -> Result<Vec<u8>, ModelFileError> {
    let write = |e: serde_json::Error| ModelFileError::Write(e.to_string());
    let mut metadata = vec![(
        SPEC_KEY,
        serde_json::to_string(&model.spec()).map_err(write)?,
    )];
    if let Some(p) = preprocessing {
        metadata.push((PREPROCESSING_KEY, serde_json::to_string(p).map_err(write)?));
    }
    record_bytes_with_metadata(model.clone().into_record(), &metadata)
}

/// Burnpack bytes of `record` with `metadata` (key, JSON) entries.
fn record_bytes_with_metadata(
    record: ModuleRecord,
    metadata: &[(&str, String)],
) -> Result<Vec<u8>, ModelFileError> {
    let write = |e: &dyn std::fmt::Display| ModelFileError::Write(e.to_string());
    let plain = record.into_bytes().map_err(|e| write(&e))?;
    let mut tensors = Reader::from_bytes(plain)
        .and_then(Reader::into_tensors)
        .map_err(|e| write(&e))?;
    // burn gives every parameter a random id, which would make two identical trainings
    // write different files. A model file needs no ids (loading gives fresh ones; resume
    // reads the checkpoint, which keeps them for the optimiser's state), so it stores none:
    // the same weights give the same bytes and one SHA-256 checks a reproduction.
    for tensor in &mut tensors {
        tensor.param_id = None;
    }
    let mut writer = Writer::new(tensors);
    for (key, value) in metadata {
        writer = writer.with_metadata(key, value);
    }
    let bytes = writer.into_bytes().map_err(|e| write(&e))?;
    Ok(bytes.to_vec())
}

/// The spec stored in one of our model files (burnpack bytes).
pub fn spec_in_bytes(bytes: &[u8], path: &Path) -> Result<ModelSpec, ModelFileError> {
    spec_in(&reader_of(bytes, path)?, path)
}

/// A burnpack reader over `bytes` (the file `path`'s).
fn reader_of(bytes: &[u8], path: &Path) -> Result<Reader, ModelFileError> {
    Reader::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| {
        ModelFileError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })
}

/// The input preprocessing stored in one of our model files (burnpack bytes), when it has one
/// (files written before models recorded it have none), checked to be usable.
pub fn preprocessing_in_bytes(
    bytes: &[u8],
    path: &Path,
) -> Result<Option<data::Preprocessing>, ModelFileError> {
    let reader = reader_of(bytes, path)?;
    let Some(json) = reader.metadata().get(PREPROCESSING_KEY) else {
        return Ok(None);
    };
    let bad = |message: String| ModelFileError::BadSpec {
        path: path.to_path_buf(),
        message: format!("its input preprocessing: {message}"),
    };
    let record: data::Preprocessing = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    record.check().map_err(bad)?;
    Ok(Some(record))
}

/// The input preprocessing stored in the model file `path` (see [`preprocessing_in_bytes`]);
/// `None` for formats that cannot hold one (PyTorch, safetensors).
pub fn read_preprocessing(
    path: &Path,
    format: ModelFormat,
) -> Result<Option<data::Preprocessing>, ModelFileError> {
    recorded_preprocessing(&read_model_bytes(path)?, path, format)
}

/// The input preprocessing in a model file's `bytes` of `format`.
fn recorded_preprocessing(
    bytes: &[u8],
    path: &Path,
    format: ModelFormat,
) -> Result<Option<data::Preprocessing>, ModelFileError> {
    match format {
        ModelFormat::Burnpack => preprocessing_in_bytes(bytes, path),
        ModelFormat::Sparse => sparse::preprocessing_in_bytes(bytes, path),
        ModelFormat::Pytorch | ModelFormat::Safetensors => Ok(None),
    }
}

/// The spec stored in one of our model files.
pub fn read_spec(path: &Path) -> Result<ModelSpec, ModelFileError> {
    spec_in_bytes(&read_model_bytes(path)?, path)
}

/// The most bytes of a model file read back: 2^28 f32 parameters (the most a file may
/// describe) and room for its header.
pub const MAX_MODEL_FILE_BYTES: u64 = (1 << 30) + (64 << 20);

/// The bytes of the model file `path`: a regular file of at most [`MAX_MODEL_FILE_BYTES`].
pub fn read_model_bytes(path: &Path) -> Result<Vec<u8>, ModelFileError> {
    safeio::read_bounded(path, MAX_MODEL_FILE_BYTES).map_err(|e| ModelFileError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The architecture one of our files (`.bpk`, `.sparse`) says it holds, read without building
/// anything, so its size can be checked against memory before a byte of it is allocated.
/// `None` for PyTorch and safetensors files (their architecture is given beside them) and for
/// an old `.bpk` saved before files described themselves.
pub fn stored_spec(path: &Path, format: ModelFormat) -> Result<Option<ModelSpec>, ModelFileError> {
    Ok(inspect(path, format)?.spec)
}

/// What a model file is, read once: its SHA-256, the architecture it describes and the input
/// its model reads.
pub struct FileFacts {
    /// SHA-256 of the whole file, in hex.
    pub sha256: String,
    /// See [`stored_spec`].
    pub spec: Option<ModelSpec>,
    /// See [`read_preprocessing`].
    pub preprocessing: Option<data::Preprocessing>,
}

/// Reads the model file `path` once for its [`FileFacts`].
pub fn inspect(path: &Path, format: ModelFormat) -> Result<FileFacts, ModelFileError> {
    let bytes = read_model_bytes(path)?;
    let spec = match format {
        ModelFormat::Burnpack => match spec_in_bytes(&bytes, path) {
            Ok(spec) => Some(spec),
            Err(ModelFileError::NoSpec { .. }) => None,
            Err(e) => return Err(e),
        },
        ModelFormat::Sparse => Some(sparse::spec_in_bytes(&bytes, path)?),
        ModelFormat::Pytorch | ModelFormat::Safetensors => None,
    };
    Ok(FileFacts {
        sha256: sha256_hex(&bytes),
        spec,
        preprocessing: recorded_preprocessing(&bytes, path, format)?,
    })
}

fn spec_in(reader: &Reader, path: &Path) -> Result<ModelSpec, ModelFileError> {
    let json = reader
        .metadata()
        .get(SPEC_KEY)
        .ok_or_else(|| ModelFileError::NoSpec {
            path: path.to_path_buf(),
        })?;
    serde_json::from_str(json).map_err(|e| ModelFileError::BadSpec {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Loads our model bytes (from a file or a checkpoint) for `input`: the spec inside builds the
/// model, the weights fill it.
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    input: &InputShape,
    device: &Device,
) -> Result<Model, ModelFileError> {
    let spec = spec_in_bytes(bytes, path)?;
    let model = build(&spec, input, device, path)?;
    let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| ModelFileError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    model
        .try_load_record(record)
        .map_err(|e| ModelFileError::Mismatch {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Builds `spec` for `input`, its errors naming the file it came from.
pub fn build(
    spec: &ModelSpec,
    input: &InputShape,
    device: &Device,
    path: &Path,
) -> Result<Model, ModelFileError> {
    Model::new(spec, input, device).map_err(|source| ModelFileError::Spec {
        path: path.to_path_buf(),
        source,
    })
}

/// How to read a model file.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions<'a> {
    /// The architecture: required for PyTorch and safetensors files; for ours, when given, it
    /// must match the spec inside.
    pub spec: Option<&'a ModelSpec>,
    /// Renames applied to a PyTorch / safetensors file's keys, as `[regex, replacement]`.
    pub key_map: &'a [[String; 2]],
}

/// Loads the model file at `path` for `input` on `device`.
///
/// A file whose tensors do not fit (another class count, another input size, another
/// architecture) is an error listing the mismatches.
pub fn load(
    path: &Path,
    format: ModelFormat,
    options: LoadOptions,
    input: &InputShape,
    device: &Device,
) -> Result<Model, ModelFileError> {
    // Every format's reader opens the path: a FIFO or device would block or never end.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(ModelFileError::Read {
            path: path.to_path_buf(),
            message: "not a regular file (give the path of a model file)".into(),
        });
    }
    match format {
        ModelFormat::Burnpack | ModelFormat::Sparse => {
            load_ours(path, format, options, input, device)
        }
        ModelFormat::Pytorch | ModelFormat::Safetensors => {
            load_foreign(path, format, options, input, device)
        }
    }
}

fn mismatch(path: &Path) -> impl Fn(String) -> ModelFileError + '_ {
    move |message| ModelFileError::Mismatch {
        path: path.to_path_buf(),
        message,
    }
}

fn read_error(path: &Path) -> impl Fn(String) -> ModelFileError + '_ {
    move |message| ModelFileError::Read {
        path: path.to_path_buf(),
        message,
    }
}

/// One of our files (`.bpk`, `.sparse`): it describes its model; a spec given beside it must
/// be the one it holds.
fn load_ours(
    path: &Path,
    format: ModelFormat,
    options: LoadOptions,
    input: &InputShape,
    device: &Device,
) -> Result<Model, ModelFileError> {
    let (mismatch, read) = (mismatch(path), read_error(path));
    let bytes = read_model_bytes(path)?;
    let model = match (spec_in_bytes(&bytes, path), options.spec) {
        _ if format == ModelFormat::Sparse => sparse::from_bytes(&bytes, path, input, device)?,
        (Ok(_), _) => from_bytes(&bytes, path, input, device)?,
        // A file saved before models described themselves: the caller's spec builds it.
        (Err(ModelFileError::NoSpec { .. }), Some(spec)) => {
            let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| read(e.to_string()))?;
            build(spec, input, device, path)?
                .try_load_record(record)
                .map_err(|e| mismatch(e.to_string()))?
        }
        (Err(e), _) => return Err(e),
    };
    if let Some(spec) = options.spec {
        let inside = model.spec();
        if inside != spec.clone().normalized() {
            return Err(mismatch(format!(
                "the file holds a {} model {inside:?}, not the {spec:?} asked for",
                inside.kind()
            )));
        }
    }
    Ok(model)
}

/// A PyTorch `state_dict` or a safetensors file: built from the spec given, its tensors
/// renamed by the key map; every trained weight must be in the file.
fn load_foreign(
    path: &Path,
    format: ModelFormat,
    options: LoadOptions,
    input: &InputShape,
    device: &Device,
) -> Result<Model, ModelFileError> {
    let (mismatch, read) = (mismatch(path), read_error(path));
    let spec = options.spec.ok_or_else(|| ModelFileError::NoSpec {
        path: path.to_path_buf(),
    })?;
    let mut model = build(spec, input, device, path)?;
    let mut remapper = KeyRemapper::new();
    // A ResNet reads torchvision's names unless the user maps keys their own way.
    let torchvision = match options.key_map.is_empty() {
        true => spec.torchvision_key_map(),
        false => Vec::new(),
    };
    for [from, to] in options.key_map.iter().chain(&torchvision) {
        remapper = remapper
            .add_pattern(from, to)
            .map_err(|e| ModelFileError::KeyMap {
                pattern: from.clone(),
                message: e.to_string(),
            })?;
    }
    let result = match format {
        ModelFormat::Pytorch => {
            let mut store = PytorchStore::from_file(path)
                .remap(remapper)
                .skip_enum_variants(true)
                .allow_partial(true);
            model
                .load_from(&mut store)
                .map_err(|e| read(e.to_string()))?
        }
        ModelFormat::Safetensors | ModelFormat::Burnpack | ModelFormat::Sparse => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(remapper)
                .skip_enum_variants(true)
                .allow_partial(true);
            model
                .load_from(&mut store)
                .map_err(|e| read(e.to_string()))?
        }
    };
    // BatchNorm running statistics are part of a PyTorch state_dict too; only a file that
    // leaves trained weights unset is incomplete.
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(path, _)| path.clone())
        .collect();
    if !result.errors.is_empty() || !missing.is_empty() {
        let mut problems: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "no tensor in the file for: {} (keys in the file that matched nothing: {}; \
                 use a key_map to rename them)",
                missing.join(", "),
                if result.unused.is_empty() {
                    "none".to_string()
                } else {
                    result.unused.join(", ")
                }
            ));
        }
        return Err(mismatch(problems.join("; ")));
    }
    Ok(model)
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads our model file at `path`, checking it against the SHA-256 its run recorded.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), ModelFileError> {
    check_sha256(path, &sha256_hex(&read_model_bytes(path)?), expected)
}

/// `actual` (the SHA-256 of the file at `path`) against the `expected` one its run recorded.
pub fn check_sha256(path: &Path, actual: &str, expected: &str) -> Result<(), ModelFileError> {
    if actual != expected {
        return Err(ModelFileError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LeNet5;
    use burn::tensor::Distribution;
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    const MNIST: InputShape = InputShape {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };

    fn lenet_spec() -> ModelSpec {
        ModelSpec::LeNet5 {
            channels: [6, 16],
            fc: [120, 84],
        }
    }

    /// A tensor as a safetensors file holds it: dims and little-endian f32 bytes.
    type RawTensor = (Vec<usize>, Vec<u8>);

    fn floats<const D: usize>(t: Tensor<D>) -> RawTensor {
        let dims = t.dims().to_vec();
        let values: Vec<f32> = t.into_data().try_to_vec().unwrap();
        (dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// The state_dict a PyTorch LeNet-5 written as `nn.Sequential(Conv2d, BatchNorm2d)` blocks
    /// would have: `conv1.0.weight`, `conv1.1.{weight,bias,running_mean,running_var}`, linear
    /// weights as `[out, in]`.
    fn pytorch_state_dict(m: &LeNet5) -> Vec<(String, RawTensor)> {
        let mut out = Vec::new();
        for (name, block) in [("conv1", &m.conv1), ("conv2", &m.conv2)] {
            out.push((format!("{name}.0.weight"), floats(block.conv.weight.val())));
            out.push((format!("{name}.1.weight"), floats(block.bn.gamma.val())));
            out.push((format!("{name}.1.bias"), floats(block.bn.beta.val())));
            out.push((
                format!("{name}.1.running_mean"),
                floats(block.bn.running_mean.value()),
            ));
            out.push((
                format!("{name}.1.running_var"),
                floats(block.bn.running_var.value()),
            ));
        }
        for (name, fc) in [("fc1", &m.fc1), ("fc2", &m.fc2), ("fc3", &m.fc3)] {
            out.push((
                format!("{name}.weight"),
                floats(fc.weight.val().transpose()),
            ));
            out.push((
                format!("{name}.bias"),
                floats(fc.bias.as_ref().unwrap().val()),
            ));
        }
        out
    }

    fn write_safetensors(path: &Path, tensors: &[(String, RawTensor)]) {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(name, (dims, bytes))| {
                (
                    name.clone(),
                    TensorView::new(Dtype::F32, dims.clone(), bytes).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    fn key_map() -> Vec<[String; 2]> {
        vec![
            [r"^(conv\d)\.0\.".into(), "$1.conv.".into()],
            [r"^(conv\d)\.1\.".into(), "$1.bn.".into()],
        ]
    }

    fn trained_looking_lenet(device: &Device) -> LeNet5 {
        device.seed(11);
        let Model::LeNet5(mut m) = Model::new(&lenet_spec(), &MNIST, device).unwrap() else {
            unreachable!()
        };
        // Non-trivial BatchNorm statistics, so a mix-up of mean/var/gamma/beta would show.
        m.conv1.bn.running_mean = burn::module::RunningState::new(Tensor::random(
            [6],
            Distribution::Uniform(-0.5, 0.5),
            device,
        ));
        m.conv1.bn.running_var = burn::module::RunningState::new(Tensor::random(
            [6],
            Distribution::Uniform(0.5, 2.0),
            device,
        ));
        m.conv1.bn.gamma = burn::module::Param::from_tensor(Tensor::random(
            [6],
            Distribution::Uniform(0.5, 1.5),
            device,
        ));
        m
    }

    /// Writes `m` as a PyTorch-style safetensors file and loads it back for MNIST-shaped
    /// LeNet-5 inputs through `key_map`.
    fn round_trip(m: &LeNet5, key_map: &[[String; 2]], device: &Device) -> Result<Model, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teacher.safetensors");
        write_safetensors(&path, &pytorch_state_dict(m));
        load(
            &path,
            ModelFormat::Safetensors,
            LoadOptions {
                spec: Some(&lenet_spec()),
                key_map,
            },
            &MNIST,
            device,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_pytorch_style_safetensors_teacher_gives_the_original_logits() {
        let device = Device::flex();
        let original = trained_looking_lenet(&device);
        let loaded = round_trip(&original, &key_map(), &device).unwrap();
        let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let original = Model::LeNet5(original);
        let want: Vec<f32> = original
            .valid()
            .forward(x.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        let got: Vec<f32> = loaded.valid().forward(x).into_data().try_to_vec().unwrap();
        for (w, g) in want.iter().zip(&got) {
            assert!((w - g).abs() < 1e-4, "{want:?}\n{got:?}");
        }
    }

    #[test]
    fn a_teacher_with_other_classes_is_rejected_with_the_mismatch() {
        let device = Device::flex();
        let five = InputShape {
            classes: 5,
            ..MNIST
        };
        device.seed(3);
        let Model::LeNet5(m) = Model::new(&lenet_spec(), &five, &device).unwrap() else {
            unreachable!()
        };
        let err = round_trip(&m, &key_map(), &device).unwrap_err();
        assert!(err.contains("fc3"), "{err}");
    }

    #[test]
    fn unmapped_keys_are_named() {
        let device = Device::flex();
        let err = round_trip(&trained_looking_lenet(&device), &[], &device).unwrap_err();
        assert!(
            err.contains("conv1.conv.weight") && err.contains("conv1.0.weight"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod own_files {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn our_files_carry_their_spec_and_reload_without_one() {
        let device = Device::flex();
        let input = InputShape {
            channels: 1,
            height: 8,
            width: 8,
            classes: 10,
        };
        let spec = ModelSpec::Mlp {
            hidden: vec![12, 7],
            dropout: 0.1,
            input_dropout: 0.0,
        };
        let model = Model::new(&spec, &input, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bpk");
        std::fs::write(&path, to_bytes(&model).unwrap()).unwrap();
        assert_eq!(read_spec(&path).unwrap(), spec);
        let none = LoadOptions {
            spec: None,
            key_map: &[],
        };
        let back = load(&path, ModelFormat::Burnpack, none, &input, &device).unwrap();
        let x = Tensor::<4>::random([3, 1, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let a: Vec<f32> = model
            .valid()
            .forward(x.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        let b: Vec<f32> = back.valid().forward(x).into_data().try_to_vec().unwrap();
        assert_eq!(a, b);
        // Asking for another architecture than the file holds is refused.
        let other = ModelSpec::Mlp {
            hidden: vec![12],
            dropout: 0.1,
            input_dropout: 0.0,
        };
        let wrong = LoadOptions {
            spec: Some(&other),
            key_map: &[],
        };
        let err = load(&path, ModelFormat::Burnpack, wrong, &input, &device).unwrap_err();
        assert!(err.to_string().contains("not the"), "{err}");
    }
}
