//! The channel-pruning technique: score, plan and thin at each scheduled step, measure what
//! each step bought, fine-tune in between with whatever loss the stage uses.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::prelude::*;
use data::{Dataset, Preprocess};
use models::{InputShape, KeepPlan, Model};
use serde::{Deserialize, Serialize};
use technique::{Report, StageContext, Technique, TechniqueError, Trainee};

use crate::common::{config_name, error, step_due, Evaluator, FROM_KEY};
use crate::config::{Criterion, PruneConfig};
use crate::importance::{channel_scores, ScoreData};
use crate::plan::{final_ratios, step_counts, top_channels};

const NAME: &str = "prune";
/// Batch-1 inferences timed after each step (medians reported), after a short warm-up.
const LATENCY_IMAGES: usize = 300;
const LATENCY_WARMUP: usize = 30;

/// What one pruning step did, as saved in checkpoints and the run summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based step number.
    pub step: usize,
    /// Epochs of fine-tuning done before the step.
    pub epoch: usize,
    /// Fraction of the final ratios this step reaches.
    pub fraction: f64,
    /// Channels each group keeps (indices into the group as it stood before the step).
    pub keep: KeepPlan,
    pub widths: BTreeMap<String, usize>,
    pub params: usize,
    pub macs: u64,
    pub model_bytes: usize,
    pub latency_ms_p50: f64,
    /// Test accuracy just before the step, right after it, and after the fine-tuning that
    /// followed (up to the next step or the end of the run).
    pub accuracy_before: f64,
    pub accuracy_pruned: f64,
    pub accuracy_finetuned: Option<f64>,
}

/// Channel pruning (see [`PruneConfig`]).
pub struct Pruning<'a> {
    config: PruneConfig,
    dataset: &'a Dataset,
    prep: Preprocess,
    input: InputShape,
    /// The inference device (latency runs on it).
    device: Device,
    eval: Evaluator<'a>,
    seed: u64,
    /// Group widths of the parent: the base the ratios apply to.
    widths: BTreeMap<String, usize>,
    /// The final removal ratio of every prunable group.
    ratios: BTreeMap<String, f64>,
    /// Parent figures before any step (params, MACs, bytes, latency).
    parent: Option<StepRecord>,
    records: Vec<StepRecord>,
    log: Vec<String>,
}

impl<'a> Pruning<'a> {
    pub fn new(config: &PruneConfig, ctx: &StageContext<'a>) -> Result<Self, TechniqueError> {
        let parent = ctx.parent(FROM_KEY).ok_or_else(|| {
            error(
                NAME,
                "a pruning stage needs `from` (the trained model to prune)",
            )
        })?;
        let widths = parent
            .model
            .channel_groups(&ctx.input)
            .into_iter()
            .map(|g| (g.name, g.width))
            .collect();
        let ratios = final_ratios(&parent.model, &ctx.input, &config.targets())
            .map_err(|e| error(NAME, e.to_string()))?;
        Ok(Self {
            config: config.clone(),
            dataset: ctx.dataset,
            prep: ctx.prep,
            input: ctx.input,
            device: ctx.device.clone(),
            eval: Evaluator::new(ctx),
            seed: ctx.seed,
            widths,
            ratios,
            parent: None,
            records: Vec::new(),
            log: Vec::new(),
        })
    }

    /// Params, MACs, file bytes and batch-1 latency of `model` (an inference copy).
    fn measure(&self, model: &Model) -> Result<(usize, u64, usize, f64), TechniqueError> {
        let bytes = models::file::to_bytes(model)
            .map_err(|e| error(NAME, e.to_string()))?
            .len();
        let latency = measure::batch_latency(
            model,
            &self.dataset.test,
            &self.prep,
            1,
            LATENCY_IMAGES,
            LATENCY_WARMUP,
            1,
            &self.device,
        );
        Ok((
            model.num_params(),
            model.macs(&self.input),
            bytes,
            latency.p50_ms,
        ))
    }

    /// The model before its first pruning step: the parent every step is compared with.
    fn unpruned_record(
        &self,
        before: &Model,
        epoch: usize,
        accuracy_before: f64,
    ) -> Result<StepRecord, TechniqueError> {
        let (params, macs, model_bytes, latency_ms_p50) = self.measure(before)?;
        Ok(StepRecord {
            step: 0,
            epoch,
            fraction: 0.0,
            keep: KeepPlan::new(),
            widths: self.widths.clone(),
            params,
            macs,
            model_bytes,
            latency_ms_p50,
            accuracy_before,
            accuracy_pruned: accuracy_before,
            accuracy_finetuned: None,
        })
    }

    /// The channels of each group that step `k` keeps (`counts` of them, the best scored);
    /// groups left at full width are not listed.
    fn channels_to_keep(
        &self,
        model: &Model,
        k: usize,
        counts: &BTreeMap<String, usize>,
    ) -> KeepPlan {
        let scores = channel_scores(
            model,
            self.config.criterion,
            &ScoreData {
                dataset: self.dataset,
                prep: self.prep,
                input: self.input,
                device: self.device.clone(),
                seed: self.seed,
                draw: k,
                taylor_batches: self.config.taylor_batches,
            },
        );
        let mut keep = KeepPlan::new();
        for group in model.channel_groups(&self.input) {
            let Some(&count) = counts.get(&group.name) else {
                continue;
            };
            if count < group.width {
                keep.insert(
                    group.name.clone(),
                    top_channels(&scores[&group.name], count),
                );
            }
        }
        keep
    }

    /// The step's line for the log: widths, MACs and latency against the parent, accuracy
    /// before fine-tuning.
    fn log_step(&mut self, k: usize, record: &StepRecord) {
        let (n, epoch) = (self.config.steps, record.epoch);
        let parent = self.parent.as_ref().unwrap_or(record);
        self.log.push(format!(
            "prune step {k}/{n} after epoch {epoch}: {} | MACs {} -> {} ({:.2}x fewer), \
             latency p50 {:.3} ms ({:.2}x faster than the parent) | accuracy {:.2}% -> {:.2}% \
             before fine-tuning",
            describe_widths(&self.widths, &record.widths),
            parent.macs,
            record.macs,
            parent.macs as f64 / record.macs.max(1) as f64,
            record.latency_ms_p50,
            parent.latency_ms_p50 / record.latency_ms_p50.max(1e-9),
            100.0 * record.accuracy_before,
            100.0 * record.accuracy_pruned,
        ));
    }

    /// Pruning step `k` (from 1) after `epoch` epochs of fine-tuning.
    fn step(
        &mut self,
        k: usize,
        epoch: usize,
        mut trainee: Trainee,
    ) -> Result<Trainee, TechniqueError> {
        let n = self.config.steps;
        let before = trainee.model.valid();
        let accuracy_before = self.eval.accuracy(&before);
        if let Some(previous) = self.records.last_mut() {
            previous.accuracy_finetuned = Some(accuracy_before);
        }
        if self.parent.is_none() {
            self.parent = Some(self.unpruned_record(&before, epoch, accuracy_before)?);
        }
        let fraction = self.config.schedule.fraction(k, n);
        let counts = step_counts(&self.widths, &self.ratios, fraction, &self.config.targets());
        let keep = self.channels_to_keep(&trainee.model, k, &counts);
        let thinned = models::thin(&trainee.model, &self.input, &keep)
            .map_err(|e| error(NAME, format!("step {k}: {e}")))?;
        trainee.model = thinned;
        let after = trainee.model.valid();
        let widths: BTreeMap<String, usize> = after
            .channel_groups(&self.input)
            .into_iter()
            .map(|g| (g.name, g.width))
            .collect();
        let (params, macs, model_bytes, latency_ms_p50) = self.measure(&after)?;
        let record = StepRecord {
            step: k,
            epoch,
            fraction,
            keep,
            widths,
            params,
            macs,
            model_bytes,
            latency_ms_p50,
            accuracy_before,
            accuracy_pruned: self.eval.accuracy(&after),
            accuracy_finetuned: None,
        };
        self.log_step(k, &record);
        self.records.push(record);
        Ok(trainee)
    }
}

/// `conv1 6->4, conv2 16->11` for the groups that changed.
fn describe_widths(from: &BTreeMap<String, usize>, to: &BTreeMap<String, usize>) -> String {
    let changed: Vec<String> = from
        .iter()
        .filter_map(|(name, w)| {
            let now = to.get(name)?;
            (now != w).then(|| format!("{name} {w}->{now}"))
        })
        .collect();
    if changed.is_empty() {
        "no group narrowed".into()
    } else {
        changed.join(", ")
    }
}

/// What the prune technique saves in checkpoints.
#[derive(Serialize, Deserialize)]
struct SavedState {
    parent: Option<StepRecord>,
    records: Vec<StepRecord>,
}

impl Technique for Pruning<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> Option<String> {
        let c = &self.config;
        let target = match (c.ratio, c.macs_ratio) {
            (_, Some(m)) => format!("{:.0}% of MACs", 100.0 * m),
            (Some(r), _) => format!("{:.0}% of channels", 100.0 * r),
            _ => "per-layer ratios".into(),
        };
        let fallback = if c.criterion == Criterion::BnGamma {
            " (groups without BatchNorm: l2)"
        } else {
            ""
        };
        Some(format!(
            "prune: {}{fallback} criterion, {} schedule over {} step(s) every {} epoch(s), removing {target}; final ratios {}",
            config_name(&c.criterion),
            config_name(&c.schedule),
            c.steps,
            c.every,
            self.ratios
                .iter()
                .map(|(g, r)| format!("{g} {:.2}", r))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn prepare(&mut self, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        self.step(1, 0, trainee)
    }

    fn after_epoch(&mut self, epoch: usize, trainee: Trainee) -> Result<Trainee, TechniqueError> {
        match step_due(
            epoch,
            self.records.len(),
            self.config.steps,
            self.config.every,
        ) {
            Some(k) => self.step(k, epoch + 1, trainee),
            None => Ok(trainee),
        }
    }

    fn metrics(&mut self, model: &Model, accuracy: f64) -> Vec<(String, f64)> {
        if let Some(last) = self.records.last_mut() {
            last.accuracy_finetuned = Some(accuracy);
        }
        let mut out = vec![
            ("prune/step", self.records.len() as f64),
            ("prune/params", model.num_params() as f64),
            ("prune/macs", model.macs(&self.input) as f64),
        ];
        if let Some(last) = self.records.last() {
            out.extend([
                ("prune/model_bytes", last.model_bytes as f64),
                ("prune/latency_ms_p50", last.latency_ms_p50),
                ("prune/accuracy_before_step", last.accuracy_before),
                ("prune/accuracy_after_step", last.accuracy_pruned),
            ]);
        }
        out.into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect()
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn state(&self) -> Result<serde_json::Value, TechniqueError> {
        technique::save_state(
            NAME,
            &SavedState {
                parent: self.parent.clone(),
                records: self.records.clone(),
            },
        )
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), TechniqueError> {
        let saved: SavedState = technique::load_state(NAME, state)?;
        self.parent = saved.parent;
        self.records = saved.records;
        Ok(())
    }

    fn report(&self) -> Option<Report> {
        let parent = self.parent.as_ref()?;
        let mut table = format!(
            "{:<6} {:>6} {:>10} {:>12} {:>10} {:>10} {:>9} {:>9} {:>10}\n",
            "step", "epoch", "params", "MACs", "bytes", "p50 ms", "before", "pruned", "tuned"
        );
        let pct = |a: Option<f64>| a.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a));
        for r in std::iter::once(parent).chain(&self.records) {
            table += &format!(
                "{:<6} {:>6} {:>10} {:>12} {:>10} {:>10.3} {:>9} {:>9} {:>10}\n",
                if r.step == 0 {
                    "parent".to_string()
                } else {
                    r.step.to_string()
                },
                r.epoch,
                r.params,
                r.macs,
                r.model_bytes,
                r.latency_ms_p50,
                pct(Some(r.accuracy_before)),
                if r.step == 0 {
                    "-".into()
                } else {
                    pct(Some(r.accuracy_pruned))
                },
                if r.step == 0 {
                    "-".into()
                } else {
                    pct(r.accuracy_finetuned)
                },
            );
        }
        Some(Report {
            json: serde_json::json!({
                "config": self.config,
                "final_ratios": self.ratios,
                "parent": parent,
                "steps": self.records,
            }),
            table,
        })
    }
}
