//! The `[distill]` section of a stage config.

use std::path::PathBuf;

use models::{InputShape, ModelSpec};
use serde::{Deserialize, Serialize};
use technique::{Invalid, ParentKey, ParentShape, TechniqueConfig};

/// The config key of the teacher, a parent of the stage.
pub const TEACHER_KEY: &str = "distill.teacher";

/// Knowledge distillation (Hinton et al. 2015): loss = alpha * T^2 * KL(teacher_T || student_T)
/// + (1 - alpha) * cross-entropy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// Another stage's config (`.toml`: trained if missing, reused if finished), or a model
    /// file: ours (`.bpk`), a PyTorch `state_dict` (`.pt` / `.pth`) or `.safetensors`.
    pub teacher: PathBuf,
    /// The teacher's architecture, required when `teacher` is a PyTorch or safetensors file.
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

impl TechniqueConfig for DistillConfig {
    fn validate(&self) -> Result<(), Invalid> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Invalid::new(
                "distill.temperature",
                self.temperature,
                "must be a finite number > 0",
            ));
        }
        if !(self.alpha.is_finite() && (0.0..=1.0).contains(&self.alpha)) {
            return Err(Invalid::new(
                "distill.alpha",
                self.alpha,
                "must be in [0, 1]",
            ));
        }
        if let Some(hint) = &self.hint {
            if !(hint.weight.is_finite() && hint.weight >= 0.0) {
                return Err(Invalid::new(
                    "distill.hint.weight",
                    hint.weight,
                    "must be a finite number >= 0",
                ));
            }
        }
        Ok(())
    }

    fn parents(&self) -> Vec<ParentKey> {
        vec![ParentKey {
            key: TEACHER_KEY.into(),
            path: self.teacher.clone(),
            spec: self.teacher_model.clone(),
            spec_key: Some("distill.teacher_model".into()),
            key_map: self.key_map.clone(),
        }]
    }

    fn check(
        &self,
        own: &ModelSpec,
        parents: &[ParentShape],
        _input: &InputShape,
    ) -> Result<(), Invalid> {
        let Some(hint) = &self.hint else {
            return Ok(());
        };
        let Some(teacher) = parents.iter().find(|p| p.key == TEACHER_KEY) else {
            return Ok(());
        };
        for (key, layer, spec) in [
            ("distill.hint.student_layer", &hint.student_layer, own),
            (
                "distill.hint.teacher_layer",
                &hint.teacher_layer,
                teacher.spec,
            ),
        ] {
            let taps = spec.taps();
            if !taps.contains(layer) {
                return Err(Invalid::new(
                    key,
                    format!("{layer:?}"),
                    format!(
                        "one of this {} model's taps: {}",
                        spec.kind(),
                        taps.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}
