//! Teachers for distillation: another stage (trained if missing, reused if finished), or a
//! model file trained elsewhere: ours (burnpack), a PyTorch `state_dict`, or safetensors.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::store::{
    KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use models::{InputShape, Model, ModelSpec};
use sha2::{Digest, Sha256};

use crate::load::LoadedConfig;

/// Formats a teacher file can have, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeacherFormat {
    /// `.bpk`: a model saved by this tool.
    Burnpack,
    /// `.pt` / `.pth`: a PyTorch `state_dict` (not a TorchScript archive).
    Pytorch,
    /// `.safetensors`, with PyTorch's conventions (linear weights `[out, in]`, BatchNorm
    /// `weight`/`bias`).
    Safetensors,
}

impl TeacherFormat {
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "bpk" => Some(Self::Burnpack),
            "pt" | "pth" => Some(Self::Pytorch),
            "safetensors" => Some(Self::Safetensors),
            _ => None,
        }
    }
}

/// A resolved `distill.teacher`.
#[derive(Debug, Clone)]
pub enum TeacherSource {
    /// Another stage: its run folder is found by its hash, trained first when missing.
    Stage(Box<LoadedConfig>),
    File {
        path: PathBuf,
        format: TeacherFormat,
        spec: ModelSpec,
        key_map: Vec<[String; 2]>,
        /// SHA-256 of the file (12 hex digits): the teacher's identity in the student's hash.
        sha256: String,
    },
}

/// A relative `teacher` path is looked up beside the config first, then from the current
/// directory (so both `teacher = "teacher.toml"` in an experiment folder and
/// `teacher = "configs/teacher.toml"` run from the repository root work).
pub fn resolve_path(teacher: &Path, config_path: &Path) -> PathBuf {
    if teacher.is_relative() {
        if let Some(dir) = config_path.parent() {
            let beside = dir.join(teacher);
            if beside.exists() {
                return beside;
            }
        }
    }
    teacher.to_path_buf()
}

pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(&Sha256::digest(std::fs::read(path)?)[..6]))
}

/// Builds `spec` for `input` and loads a model file's weights into it: a teacher from
/// elsewhere, or one of our own run folders' `model.bpk`.
///
/// A file whose tensors do not fit (another class count, another input size, another
/// architecture) is an error listing the mismatches.
pub fn load_model_file(
    path: &Path,
    format: TeacherFormat,
    spec: &ModelSpec,
    key_map: &[[String; 2]],
    input: &InputShape,
    device: &Device,
) -> Result<Model, String> {
    let model = Model::new(spec, input, device).map_err(|e| e.to_string())?;
    let mut remapper = KeyRemapper::new();
    for [from, to] in key_map {
        remapper = remapper
            .add_pattern(from, to)
            .map_err(|e| format!("key_map pattern {from:?}: {e}"))?;
    }
    let mut model = model;
    let result = match format {
        TeacherFormat::Burnpack => {
            let record = ModuleRecord::load(path).map_err(|e| e.to_string())?;
            return model.try_load_record(record).map_err(|e| e.to_string());
        }
        TeacherFormat::Pytorch => {
            let mut store = PytorchStore::from_file(path)
                .remap(remapper)
                .skip_enum_variants(true)
                .allow_partial(true);
            model.load_from(&mut store).map_err(|e| e.to_string())?
        }
        TeacherFormat::Safetensors => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(remapper)
                .skip_enum_variants(true)
                .allow_partial(true);
            model.load_from(&mut store).map_err(|e| e.to_string())?
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
                 use distill.key_map to rename them)",
                missing.join(", "),
                if result.unused.is_empty() {
                    "none".to_string()
                } else {
                    result.unused.join(", ")
                }
            ));
        }
        return Err(problems.join("; "));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use models::LeNet5;
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
        load_model_file(
            &path,
            TeacherFormat::Safetensors,
            &lenet_spec(),
            key_map,
            &MNIST,
            device,
        )
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
