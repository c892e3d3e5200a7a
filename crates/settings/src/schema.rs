//! The experiment config: one TOML file per stage. Parsed strictly (`deny_unknown_fields`,
//! tagged enums) so a typo is an error with a line number, never a silently ignored key.
//!
//! Each technique owns its section's type (`distill::DistillConfig`); this file only places
//! the sections. Execution settings (device, threads, measurement, logging, folders) live
//! beside the rest for the user, but are not part of a run's identity (see
//! [`crate::context`]).

use std::path::PathBuf;

use models::ModelSpec;
use serde::{Deserialize, Serialize};

/// A stage's whole config, as read from TOML and overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Name of the run: results go to `<output.dir>/<name>/<hash>/`.
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// `"cpu"` (burn's flex backend), or with the `tch` feature `"libtorch"` / `"cuda:N"`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Worker threads for training; 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    /// Start from this parent's trained weights: another stage's config (`.toml`: trained
    /// if missing, reused if finished) or one of our model files (`.bpk`). The model is the
    /// parent's, so `[model]` is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<PathBuf>,
    pub data: DataConfig,
    /// The architecture; required unless `from` gives the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    pub train: TrainConfig,
    /// Train this stage as the student of a teacher (the `distill` technique).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<distill::DistillConfig>,
    /// Remove channels (the `prune` technique): the stage starts `from` a trained model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<prune::PruneConfig>,
    /// Zero the smallest weights (the `sparsify` technique), saved as a sparse file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsify: Option<prune::SparsifyConfig>,
    /// Quantize (the `quant` technique): QAT, PTQ or a 16-bit export of the `from` model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<quant::QuantConfig>,
    #[serde(default)]
    pub measure: MeasureConfig,
    #[serde(default)]
    pub output: OutputConfig,
}

impl StageConfig {
    /// The keys a config may hold at its top level (`name`, `train`, `prune`, ...), read from
    /// the schema itself, so a new section is known to environment overrides the moment it
    /// is added here.
    pub fn top_level_keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        KEYS.get_or_init(struct_fields::<StageConfig>)
    }
}

/// The field names serde's derive gives a struct: its `Deserialize` asks the deserializer
/// for a struct with these fields, and this one records them and stops.
fn struct_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

fn default_seed() -> u64 {
    1
}
fn default_device() -> String {
    "cpu".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    Digits,
    /// A folder of IDX files given by `data.path`.
    Idx,
    /// A folder of image files in torchvision's `ImageFolder` layout, given by `data.path`.
    ImageFolder,
    /// CIFAR-10's binary files in the folder `data.path`.
    Cifar10,
    /// CIFAR-100's binary files in the folder `data.path`.
    Cifar100,
}

impl DatasetName {
    /// Whether the dataset is read from `data.path` (the user's files) rather than fetched.
    pub fn reads_path(self) -> bool {
        matches!(
            self,
            Self::Idx | Self::ImageFolder | Self::Cifar10 | Self::Cifar100
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetName,
    /// The folder the data is read from when `dataset` is `"idx"`, `"image-folder"`,
    /// `"cifar10"` or `"cifar100"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Input channels of an image folder: 1 (grayscale) or 3 (RGB); default 3 unless every
    /// image is grayscale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// The most MiB an image folder's decoded images may take in memory; a larger folder is
    /// streamed from disk, decoded batch by batch (same numbers, slower); 0 always streams.
    /// Default: a quarter of this machine's memory (or of its cgroup's limit). An execution
    /// setting: not part of the run's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_decoded_mb: Option<u64>,
    /// Where fetched datasets are cached (default: the user's cache dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Use only the first N training samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Use only the first N test samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Resize images to `input_size x input_size` (bilinear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    #[serde(default)]
    pub augment: AugmentConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random translation of up to this many pixels ("jitter").
    #[serde(default)]
    pub shift_pixels: usize,
    /// Gaussian noise on normalised pixels.
    #[serde(default)]
    pub noise_std: f32,
    /// Random crop from the image padded by this many zero pixels on every side
    /// (torchvision's `RandomCrop(size, padding)`): the same operation as `shift_pixels`,
    /// under the name natural-image recipes use. Set one of the two.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub crop_padding: usize,
    /// Mirror images left to right with probability 1/2.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hflip: bool,
}

impl AugmentConfig {
    /// What the data layer does with these settings (`crop_padding` is a shift).
    pub fn augment(&self) -> data::Augment {
        data::Augment {
            shift_pixels: self.shift_pixels.max(self.crop_padding),
            noise_std: self.noise_std,
            hflip: self.hflip,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Steps between `train/loss` points in TensorBoard and log lines.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Max-norm constraint (Srivastava et al. 2014): after every step, each unit's incoming
    /// weights in a fully connected layer are rescaled to at most this L2 norm. Left out of
    /// the run's identity when unset, so older runs keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_norm: Option<f64>,
    /// Model replicas a CPU training step is split across (data parallelism on flex: each
    /// replica on its own thread, gradients summed in a fixed order). 0 chooses: on flex one
    /// per worker thread for convolutional nets and 1 for MLPs; LibTorch always trains on 1
    /// (it parallelises inside each op). An execution setting: not part of the run's identity.
    #[serde(default)]
    pub replicas: usize,
}

fn default_batch() -> usize {
    128
}
pub(crate) fn default_eval_batch() -> usize {
    1000
}
fn default_log_every() -> usize {
    50
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerConfig {
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
        /// L2 penalty added to the gradient (coupled, as in the original Adam).
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter 2019).
    Adamw {
        lr: f64,
        #[serde(default = "beta1")]
        beta1: f64,
        #[serde(default = "beta2")]
        beta2: f64,
        #[serde(default = "eps")]
        eps: f64,
        #[serde(default = "adamw_decay")]
        weight_decay: f64,
    },
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn adamw_decay() -> f64 {
    1e-2
}

impl OptimizerConfig {
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. }
            | OptimizerConfig::Adam { lr, .. }
            | OptimizerConfig::Adamw { lr, .. } => *lr,
        }
    }

    pub fn weight_decay(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { weight_decay, .. }
            | OptimizerConfig::Adam { weight_decay, .. }
            | OptimizerConfig::Adamw { weight_decay, .. } => *weight_decay,
        }
    }
}

/// Learning-rate schedule over the run; every kind may start with a linear warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleConfig {
    Constant {
        #[serde(default)]
        warmup_epochs: f64,
    },
    /// Multiply the rate by `gamma` every `step_epochs` epochs.
    Step {
        step_epochs: usize,
        #[serde(default = "gamma")]
        gamma: f64,
        #[serde(default)]
        warmup_epochs: f64,
    },
    /// Cosine decay from `lr` to `min_lr` over the run (per step).
    Cosine {
        #[serde(default)]
        min_lr: f64,
        #[serde(default)]
        warmup_epochs: f64,
    },
}

fn gamma() -> f64 {
    0.1
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig::Constant { warmup_epochs: 0.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureConfig {
    /// Images timed one by one for latency (after the warm-up).
    #[serde(default = "latency_images")]
    pub latency_images: usize,
    #[serde(default = "latency_warmup")]
    pub latency_warmup: usize,
    /// Threads for batch-1 latency (1 gives the steadiest numbers on a CPU).
    #[serde(default = "one")]
    pub latency_threads: usize,
    #[serde(default = "default_batch")]
    pub throughput_batch: usize,
}

fn latency_images() -> usize {
    300
}
fn latency_warmup() -> usize {
    50
}
fn one() -> usize {
    1
}

impl Default for MeasureConfig {
    fn default() -> Self {
        Self {
            latency_images: latency_images(),
            latency_warmup: latency_warmup(),
            latency_threads: one(),
            throughput_batch: default_batch(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    #[serde(default = "runs_dir")]
    pub dir: PathBuf,
    /// Also write the measured model (the technique's artefact, else `model.bpk`) as
    /// `model.onnx` in the run folder at the end of the run (see `train export`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub onnx: bool,
}

fn runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: runs_dir(),
            onnx: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_level_keys_are_the_schema_fields() {
        let keys = StageConfig::top_level_keys();
        for key in ["name", "seed", "from", "data", "model", "train", "output"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        for section in ["distill", "prune", "sparsify", "quant"] {
            assert!(keys.contains(&section), "{section} missing from {keys:?}");
        }
    }
}
