//! Weight sparsification: unstructured magnitude pruning (Han et al. 2015) with masks kept
//! through fine-tuning, exported as a sparse file whose size is what the run reports.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;
use models::params::{self, Edit};
use models::{InputShape, Model, ModelSpec};
use serde::{Deserialize, Serialize};
use technique::{
    Artifact, Aux, Invalid, ParentShape, Report, StageContext, Technique, TechniqueConfig,
    TechniqueError, Trainee,
};

use crate::common::{
    check_epochs, check_schedule, config_name, error, step_due, Evaluator, FROM_KEY,
};
use crate::config::{matches, Schedule};

const NAME: &str = "sparsify";

/// How the sparsity target is shared out between layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One magnitude threshold over all pruned weights: layers with many small weights lose
    /// more (the large first layer of an MLP), small sensitive ones less.
    #[default]
    Global,
    /// The same sparsity in every layer (or the one `layers` gives it).
    PerLayer,
}

/// The `[sparsify]` section: zero the smallest weights of every conv and linear layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparsifyConfig {
    /// Fraction of the pruned layers' weights set to zero, in [0, 1).
    pub sparsity: f64,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default = "one")]
    pub steps: usize,
    /// Fine-tuning epochs between steps.
    #[serde(default = "one")]
    pub every: usize,
    /// Per-layer sparsity by weight path pattern (`layers.0.weight`, `conv*`); implies
    /// per-layer thresholds for those layers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: BTreeMap<String, f64>,
    /// Weights never pruned, by path pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

fn one() -> usize {
    1
}

/// The conv and linear weights of a model (BatchNorm scales are `gamma`, not `weight`).
fn weight_paths(model: &Model) -> Vec<String> {
    params::shapes(model)
        .into_keys()
        .filter(|p| p.ends_with("weight"))
        .collect()
}

impl SparsifyConfig {
    /// The weights pruned, each with its sparsity when it has its own (`None`: global).
    fn targets(&self, model: &Model) -> Result<Vec<(String, Option<f64>)>, Invalid> {
        let paths = weight_paths(model);
        let known = || {
            format!(
                "a pattern matching at least one weight; this model's: {}",
                paths.join(", ")
            )
        };
        for pattern in &self.exclude {
            if !paths.iter().any(|p| matches(pattern, p)) {
                return Err(Invalid::new(
                    "sparsify.exclude",
                    format!("{pattern:?}"),
                    known(),
                ));
            }
        }
        for pattern in self.layers.keys() {
            if !paths.iter().any(|p| matches(pattern, p)) {
                return Err(Invalid::new(
                    &format!("sparsify.layers.\"{pattern}\""),
                    format!("{pattern:?}"),
                    known(),
                ));
            }
        }
        Ok(paths
            .into_iter()
            .filter(|p| !self.exclude.iter().any(|x| matches(x, p)))
            .map(|p| {
                let own = self
                    .layers
                    .iter()
                    .find(|(pattern, _)| matches(pattern, &p))
                    .map(|(_, &s)| s)
                    .or((self.scope == Scope::PerLayer).then_some(self.sparsity));
                (p, own)
            })
            .collect())
    }
}

impl TechniqueConfig for SparsifyConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let fraction = |key: &str, v: f64| {
            if v.is_finite() && (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Invalid::new(key, v, "must be in [0, 1)"))
            }
        };
        fraction("sparsify.sparsity", self.sparsity)?;
        for (pattern, &s) in &self.layers {
            fraction(&format!("sparsify.layers.\"{pattern}\""), s)?;
        }
        check_schedule("sparsify", self.schedule, self.steps, self.every)?;
        Ok(())
    }

    fn check(
        &self,
        own: &ModelSpec,
        parents: &[ParentShape],
        input: &InputShape,
    ) -> Result<(), Invalid> {
        let model = technique::from_model(parents, own, input, "sparsification")?;
        self.targets(&model).map(|_| ())
    }

    fn check_training(&self, epochs: usize) -> Result<(), Invalid> {
        check_epochs("sparsify", self.steps, self.every, epochs)
    }
}

/// What one sparsification step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsityStep {
    pub step: usize,
    pub epoch: usize,
    /// The sparsity this step aimed at (over the pruned weights).
    pub target: f64,
    /// Zeros among the pruned weights after the step.
    pub sparsity: f64,
    pub accuracy_before: f64,
    pub accuracy_after: f64,
    pub accuracy_finetuned: Option<f64>,
}

/// Magnitude pruning with masks (see [`SparsifyConfig`]).
pub struct Sparsification<'a> {
    config: SparsifyConfig,
    targets: Vec<(String, Option<f64>)>,
    eval: Evaluator<'a>,
    /// The inference device.
    device: Device,
    steps: Vec<SparsityStep>,
    /// Sizes of the current model: the dense burnpack file and the sparse file.
    sizes: Option<(usize, usize)>,
    log: Vec<String>,
    /// What the `.sparse` export records about its input.
    preprocessing: data::Preprocessing,
}

/// Masks (1 keep, 0 pruned) zeroing the `count` smallest magnitudes among `values`.
fn smallest_masked(values: &[&[f32]], count: usize) -> Vec<Vec<f32>> {
    let mut order: Vec<(f32, usize, usize)> = values
        .iter()
        .enumerate()
        .flat_map(|(t, v)| v.iter().enumerate().map(move |(i, x)| (x.abs(), t, i)))
        .collect();
    let count = count.min(order.len());
    if count > 0 && count < order.len() {
        order.select_nth_unstable_by(count - 1, |a, b| a.0.total_cmp(&b.0));
    }
    let mut masks: Vec<Vec<f32>> = values.iter().map(|v| vec![1.0; v.len()]).collect();
    for &(_, t, i) in &order[..count] {
        masks[t][i] = 0.0;
    }
    masks
}

impl<'a> Sparsification<'a> {
    pub fn new(config: &SparsifyConfig, ctx: &StageContext<'a>) -> Result<Self, TechniqueError> {
        let parent = ctx
            .parent(FROM_KEY)
            .ok_or_else(|| error(NAME, "sparsification needs `from` (the trained model)"))?;
        let targets = config
            .targets(&parent.model)
            .map_err(|e| error(NAME, e.to_string()))?;
        Ok(Self {
            config: config.clone(),
            targets,
            eval: Evaluator::new(ctx),
            device: ctx.device.clone(),
            steps: Vec::new(),
            sizes: None,
            log: Vec::new(),
            preprocessing: ctx.preprocessing(),
        })
    }

    /// The masks among the trainee's aux modules (the `Aux::Tensor` entries, in target order).
    fn masks(trainee: &Trainee) -> Vec<Tensor<1>> {
        trainee
            .aux
            .iter()
            .filter_map(|a| match a {
                Aux::Tensor(p) => Some(p.val()),
                Aux::Linear(_) => None,
            })
            .collect()
    }

    fn apply_masks(&self, trainee: Trainee) -> Trainee {
        let masks = Self::masks(&trainee);
        let edits: BTreeMap<String, Edit> = self
            .targets
            .iter()
            .zip(masks)
            .map(|((path, _), mask)| (path.clone(), Edit::Mask(mask)))
            .collect();
        let Trainee { model, aux } = trainee;
        Trainee {
            model: params::edit(model, &edits).0,
            aux,
        }
    }

    /// Each target's mask at `fraction` of the target sparsity: its smallest weights zeroed.
    /// Layers with their own sparsity get their own threshold; the rest share one.
    fn magnitude_masks(&self, model: &Model, fraction: f64) -> BTreeMap<&str, Vec<f32>> {
        let paths: Vec<&str> = self.targets.iter().map(|(p, _)| p.as_str()).collect();
        let values = params::values(model, |p| paths.contains(&p));
        let mut masks: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
        let global: Vec<&str> = self
            .targets
            .iter()
            .filter(|(_, own)| own.is_none())
            .map(|(p, _)| p.as_str())
            .collect();
        if !global.is_empty() {
            let slices: Vec<&[f32]> = global.iter().map(|p| &values[*p].values[..]).collect();
            let total: usize = slices.iter().map(|s| s.len()).sum();
            let count = (self.config.sparsity * fraction * total as f64).round() as usize;
            for (p, m) in global.iter().zip(smallest_masked(&slices, count)) {
                masks.insert(p, m);
            }
        }
        for (p, own) in &self.targets {
            if let Some(s) = own {
                let v = &values[p].values[..];
                let count = (s * fraction * v.len() as f64).round() as usize;
                masks.insert(p, smallest_masked(&[v], count).remove(0));
            }
        }
        masks
    }

    fn step(
        &mut self,
        k: usize,
        epoch: usize,
        mut trainee: Trainee,
    ) -> Result<Trainee, TechniqueError> {
        let n = self.config.steps;
        let fraction = self.config.schedule.fraction(k, n);
        let before = trainee.model.valid();
        let accuracy_before = self.eval.accuracy(&before);
        if let Some(previous) = self.steps.last_mut() {
            previous.accuracy_finetuned = Some(accuracy_before);
        }
        let masks = self.magnitude_masks(&trainee.model, fraction);
        let device = self.device.clone().autodiff();
        let mask_aux: Vec<Aux> = self
            .targets
            .iter()
            .map(|(p, _)| {
                let m = &masks[p.as_str()];
                Aux::Tensor(
                    Param::from_tensor(Tensor::<1>::from_data(
                        TensorData::new(m.clone(), [m.len()]),
                        &device,
                    ))
                    .set_require_grad(false),
                )
            })
            .collect();
        let zeros: usize = masks.values().flatten().filter(|&&m| m == 0.0).count();
        let total: usize = masks.values().map(Vec::len).sum();
        // Replace the masks (the Aux::Tensor entries) and keep any other technique's modules.
        let mut fresh = mask_aux.into_iter();
        trainee.aux = trainee
            .aux
            .into_iter()
            .map(|a| match a {
                Aux::Tensor(_) => fresh.next().unwrap_or(a),
                other => other,
            })
            .collect();
        let trainee = self.apply_masks(trainee);
        let accuracy_after = self.eval.accuracy(&trainee.model.valid());
        let record = SparsityStep {
            step: k,
            epoch,
            target: self.config.sparsity * fraction,
            sparsity: zeros as f64 / total.max(1) as f64,
            accuracy_before,
            accuracy_after,
            accuracy_finetuned: None,
        };
        self.log.push(format!(
            "sparsify step {k}/{n} after epoch {epoch}: {:.1}% of {total} weights are zero | \
             accuracy {:.2}% -> {:.2}% before fine-tuning",
            100.0 * record.sparsity,
            100.0 * accuracy_before,
            100.0 * accuracy_after
        ));
        self.steps.push(record);
        Ok(trainee)
    }
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    steps: Vec<SparsityStep>,
}

impl Technique for Sparsification<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> Option<String> {
        let c = &self.config;
        Some(format!(
            "sparsify: {:.1}% of {} weight tensors ({} thresholds), {} schedule over {} \
             step(s) every {} epoch(s); masks kept through fine-tuning",
            100.0 * c.sparsity,
            self.targets.len(),
            config_name(&c.scope),
            config_name(&c.schedule),
            c.steps,
            c.every
        ))
    }

    fn aux(&self, model: &Model, device: &Device) -> Vec<Aux> {
        let shapes = params::shapes(model);
        self.targets
            .iter()
            .map(|(p, _)| {
                let n = shapes.get(p).map_or(0, |s| s.iter().product());
                Aux::Tensor(
                    Param::from_tensor(Tensor::<1>::ones([n], device)).set_require_grad(false),
                )
            })
            .collect()
    }

    fn prepare(&mut self, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        self.step(1, 0, trainee)
    }

    fn after_step(&mut self, _step: usize, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        Ok(self.apply_masks(trainee))
    }

    fn after_epoch(&mut self, epoch: usize, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        match step_due(
            epoch,
            self.steps.len(),
            self.config.steps,
            self.config.every,
        ) {
            Some(k) => self.step(k, epoch + 1, trainee),
            None => Ok(trainee),
        }
    }

    fn metrics(&mut self, model: &Model, accuracy: f64) -> Vec<(String, f64)> {
        if let Some(last) = self.steps.last_mut() {
            last.accuracy_finetuned = Some(accuracy);
        }
        let dense = models::file::to_bytes(model).map_or(0, |b| b.len());
        let sparse = models::file::sparse::to_bytes(model).map_or(0, |b| b.len());
        self.sizes = Some((dense, sparse));
        let paths: Vec<&str> = self.targets.iter().map(|(p, _)| p.as_str()).collect();
        let values = params::values(model, |p| paths.contains(&p));
        let total: usize = values.values().map(|t| t.values.len()).sum();
        let zeros: usize = values
            .values()
            .flat_map(|t| &t.values)
            .filter(|v| **v == 0.0)
            .count();
        [
            ("sparsify/sparsity", zeros as f64 / total.max(1) as f64),
            ("sparsify/dense_bytes", dense as f64),
            ("sparsify/sparse_bytes", sparse as f64),
        ]
        .map(|(name, value)| (name.to_string(), value))
        .to_vec()
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn state(&self) -> Result<serde_json::Value, TechniqueError> {
        technique::save_state(
            NAME,
            &SavedState {
                steps: self.steps.clone(),
            },
        )
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), TechniqueError> {
        let saved: SavedState = technique::load_state(NAME, state)?;
        self.steps = saved.steps;
        Ok(())
    }

    fn export(&self, model: &Model) -> Option<Result<Artifact, TechniqueError>> {
        Some(
            models::file::sparse::to_bytes_with(model, Some(&self.preprocessing))
                .map(|bytes| Artifact {
                    file_name: "model.sparse".into(),
                    bytes,
                })
                .map_err(|e| error(NAME, e.to_string())),
        )
    }

    fn report(&self) -> Option<Report> {
        let mut table = format!(
            "{:<5} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "step", "epoch", "target", "sparsity", "before", "after", "tuned"
        );
        let pct = |a: Option<f64>| a.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
        for s in &self.steps {
            table += &format!(
                "{:<5} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
                s.step,
                s.epoch,
                pct(Some(s.target)),
                pct(Some(s.sparsity)),
                pct(Some(s.accuracy_before)),
                pct(Some(s.accuracy_after)),
                pct(s.accuracy_finetuned)
            );
        }
        if let Some((dense, sparse)) = self.sizes {
            table += &format!(
                "file: {sparse} bytes sparse (model.sparse) vs {dense} dense (model.bpk): {:.1}%\n",
                100.0 * sparse as f64 / dense.max(1) as f64
            );
        }
        Some(Report {
            json: serde_json::json!({
                "config": self.config,
                "steps": self.steps,
                "dense_bytes": self.sizes.map(|s| s.0),
                "sparse_bytes": self.sizes.map(|s| s.1),
            }),
            table,
        })
    }
}
