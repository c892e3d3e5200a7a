//! The `[prune]` section of a stage config: structured (channel) pruning.

use std::collections::BTreeMap;

use models::{InputShape, ModelSpec};
use serde::{Deserialize, Serialize};
pub use technique::matches;
use technique::{Invalid, ParentShape, TechniqueConfig};

pub use crate::common::Schedule;
use crate::common::{check_epochs, check_schedule};
use crate::plan::{final_ratios, Targets};

/// Upper bounds on counts read from configs.
const MAX_ROUND_TO: usize = 4096;
const MAX_TAYLOR_BATCHES: usize = 10_000;

/// How channels are ranked within a group. Every member of the group contributes: the conv or
/// linear layer that produces the channels, the layers that read them, their BatchNorms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// Sum of absolute weights over the group's members.
    L1,
    /// Euclidean norm over the group's members (Li et al. 2017 use L1; Torch-Pruning's
    /// default is L2).
    #[default]
    L2,
    /// |gamma| of the group's BatchNorms (Liu et al. 2017, network slimming); groups without
    /// BatchNorm (linear layers) fall back to L2.
    BnGamma,
    /// First-order Taylor expansion of the loss (Molchanov et al. 2019): (sum of w * dL/dw
    /// over the channel's weights)^2, summed over `taylor_batches` training batches.
    Taylor,
    /// Uniformly random ranking: the control every criterion must beat.
    Random,
}

/// Channel pruning that removes channels for real: the stage's model gets narrower layers,
/// fewer MACs and a smaller file, and runs faster where the kernels follow the MACs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    #[serde(default)]
    pub criterion: Criterion,
    #[serde(default)]
    pub schedule: Schedule,
    /// Pruning steps (1 for one-shot).
    #[serde(default = "one")]
    pub steps: usize,
    /// Fine-tuning epochs between steps.
    #[serde(default = "one")]
    pub every: usize,
    /// Fraction of each group's channels to remove, in [0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Fraction of the parent's MACs to remove, in [0, 1): the channel ratio of the groups
    /// not set by `layers` is searched so the pruned model meets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs_ratio: Option<f64>,
    /// Per-group ratios by name pattern (`*` matches any run of characters), e.g.
    /// `{ "conv1" = 0.2, "fc*" = 0.7 }`. The first matching pattern wins.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: BTreeMap<String, f64>,
    /// Groups never pruned, by name pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Fewest channels a pruned group keeps; 0 allows a plan to empty a group, which is then
    /// an error.
    #[serde(default = "one")]
    pub min_channels: usize,
    /// Keep a multiple of this many channels (vector units and GEMM tiles like multiples of 8).
    #[serde(default = "one")]
    pub round_to: usize,
    /// Training batches the Taylor criterion accumulates over at each step.
    #[serde(default = "taylor_batches")]
    pub taylor_batches: usize,
}

fn one() -> usize {
    1
}
fn taylor_batches() -> usize {
    16
}

fn check_fraction(key: &str, value: f64) -> Result<(), Invalid> {
    if !(value.is_finite() && (0.0..1.0).contains(&value)) {
        return Err(Invalid::new(key, value, "must be in [0, 1)"));
    }
    Ok(())
}

fn check_count(key: &str, value: usize, lo: usize, hi: usize) -> Result<(), Invalid> {
    if !(lo..=hi).contains(&value) {
        return Err(Invalid::new(key, value, format!("must be in {lo}..={hi}")));
    }
    Ok(())
}

impl PruneConfig {
    /// The ratio targets this section asks for.
    pub fn targets(&self) -> Targets<'_> {
        Targets {
            ratio: self.ratio,
            macs_ratio: self.macs_ratio,
            layers: &self.layers,
            exclude: &self.exclude,
            min_channels: self.min_channels,
            round_to: self.round_to,
        }
    }
}

impl TechniqueConfig for PruneConfig {
    fn validate(&self) -> Result<(), Invalid> {
        check_schedule("prune", self.schedule, self.steps, self.every)?;
        check_count("prune.round_to", self.round_to, 1, MAX_ROUND_TO)?;
        check_count("prune.min_channels", self.min_channels, 0, 1 << 20)?;
        check_count(
            "prune.taylor_batches",
            self.taylor_batches,
            1,
            MAX_TAYLOR_BATCHES,
        )?;
        if let Some(ratio) = self.ratio {
            check_fraction("prune.ratio", ratio)?;
        }
        if let Some(macs) = self.macs_ratio {
            check_fraction("prune.macs_ratio", macs)?;
        }
        if self.ratio.is_some() && self.macs_ratio.is_some() {
            return Err(Invalid::new(
                "prune.macs_ratio",
                self.macs_ratio.unwrap_or_default(),
                "give either prune.ratio (channels) or prune.macs_ratio (MACs), not both",
            ));
        }
        if self.ratio.is_none() && self.macs_ratio.is_none() && self.layers.is_empty() {
            return Err(Invalid::new(
                "prune",
                "{}",
                "needs a target: ratio (fraction of channels), macs_ratio (fraction of MACs) \
                 or per-layer ratios in layers",
            ));
        }
        for (pattern, &ratio) in &self.layers {
            check_fraction(&format!("prune.layers.\"{pattern}\""), ratio)?;
        }
        Ok(())
    }

    fn check(
        &self,
        own: &ModelSpec,
        parents: &[ParentShape],
        input: &InputShape,
    ) -> Result<(), Invalid> {
        let model = technique::from_model(parents, own, input, "a pruning stage")?;
        final_ratios(&model, input, &self.targets()).map(|_| ())
    }

    fn check_training(&self, epochs: usize) -> Result<(), Invalid> {
        check_epochs("prune", self.steps, self.every, epochs)
    }

    fn plan(&self, own: &ModelSpec, input: &InputShape) -> Result<Option<String>, Invalid> {
        let widths = crate::plan::final_widths(own, input, &self.targets())?;
        let groups: Vec<String> = widths
            .iter()
            .map(|(group, before, after)| format!("{group} {before}->{after}"))
            .collect();
        Ok(Some(format!(
            "prune plan (channels per group, parent -> after the last step): {}",
            groups.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_globs() {
        assert!(matches("conv1", "conv1"));
        assert!(!matches("conv1", "conv12"));
        assert!(matches("conv*", "conv12"));
        assert!(matches("*.inner", "blocks.3.inner"));
        assert!(matches("stages.*.1", "stages.0.1"));
        assert!(!matches("stages.*.1", "stages.0.0"));
        assert!(matches("*", "fc1"));
        assert!(!matches("a*a", "a"));
    }

    #[test]
    fn schedules_reach_the_target_at_the_last_step() {
        for s in [Schedule::OneShot, Schedule::Iterative, Schedule::Agp] {
            assert!((s.fraction(4, 4) - 1.0).abs() < 1e-12);
        }
        assert!((Schedule::Iterative.fraction(1, 4) - 0.25).abs() < 1e-12);
        // AGP front-loads: after a quarter of the steps, 1 - 0.75^3 of the target.
        assert!((Schedule::Agp.fraction(1, 4) - 0.578125).abs() < 1e-12);
    }
}
