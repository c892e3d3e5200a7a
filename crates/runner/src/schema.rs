//! The experiment config: one TOML file per stage. Parsed strictly (`deny_unknown_fields`,
//! tagged enums) so a typo is an error with a line number, never a silently ignored key.

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
    pub data: DataConfig,
    pub model: ModelSpec,
    pub train: TrainConfig,
    /// Train this stage as the student of a teacher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    #[serde(default)]
    pub measure: MeasureConfig,
    #[serde(default)]
    pub output: OutputConfig,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetName,
    /// The folder of IDX files when `dataset = "idx"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
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
}

fn default_batch() -> usize {
    128
}
fn default_eval_batch() -> usize {
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
}

fn runs_dir() -> PathBuf {
    PathBuf::from("runs")
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { dir: runs_dir() }
    }
}

/// Knowledge distillation (Hinton et al. 2015): loss = alpha * T^2 * KL(teacher_T || student_T)
/// + (1 - alpha) * cross-entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// Another stage's config (`.toml`: trained if missing, reused if finished), or a model
    /// file: ours (`.bpk`), a PyTorch `state_dict` (`.pt` / `.pth`) or `.safetensors`.
    pub teacher: PathBuf,
    /// The teacher's architecture, required when `teacher` is a model file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_model: Option<ModelSpec>,
    /// Renames applied to the keys of a PyTorch / safetensors file before loading, as
    /// `[regex, replacement]` pairs, e.g. `[["^conv1\\.0\\.", "conv1.conv."]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_map: Vec<[String; 2]>,
    /// Softmax temperature T (> 0).
    pub temperature: f64,
    /// Weight of the soft-target term, in [0, 1].
    pub alpha: f64,
    /// Compute the teacher's logits on the training set once when inputs are not augmented
    /// (and no hint is used).
    #[serde(default = "yes")]
    pub cache_teacher_logits: bool,
    /// Optional feature distillation (FitNets-style hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<HintConfig>,
}

/// An L2 loss between a student layer's activations, mapped by a learned linear adapter, and a
/// teacher layer's (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintConfig {
    /// A tap point of the student, e.g. `"fc1"` (LeNet-5) or `"layers.0"` (MLP).
    pub student_layer: String,
    /// A tap point of the teacher.
    pub teacher_layer: String,
    /// Weight of the hint loss added to the distillation loss.
    #[serde(default = "hint_weight")]
    pub weight: f64,
}

fn hint_weight() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}
