//! Sensitivity analysis: prune each group alone at increasing ratios and measure the test
//! accuracy without fine-tuning. The curves show which layers tolerate pruning (flat) and
//! which do not (steep): what users look at to set per-layer ratios.

use models::{KeepPlan, Model};
use serde::Serialize;

use crate::config::Criterion;
use crate::importance::{channel_scores, ScoreData};
use crate::plan::{keep_count, top_channels};

/// The ratios analysed: 0.1 to 0.9.
pub const RATIOS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// One measurement: `group` pruned alone by `ratio`.
#[derive(Debug, Clone, Serialize)]
pub struct SensitivityPoint {
    pub group: String,
    pub ratio: f64,
    /// Channels kept out of the group's width.
    pub kept: usize,
    pub width: usize,
    pub macs: u64,
    pub accuracy: f64,
}

/// Prunes each group of `model` (an inference model) alone at each of `ratios` with
/// `criterion`, and evaluates each result on the test split. `progress(done, total)` is
/// called after each evaluation.
pub fn sensitivity(
    model: &Model,
    criterion: Criterion,
    data: &ScoreData,
    ratios: &[f64],
    eval_batch_size: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<SensitivityPoint>, models::ThinError> {
    let scores = if criterion == Criterion::Taylor {
        let trainable = model
            .copy_to(&data.input, &data.device.clone().autodiff())
            .map_err(|e| models::ThinError::Inconsistent(e.to_string()))?;
        channel_scores(&trainable, criterion, data)
    } else {
        channel_scores(model, criterion, data)
    };
    let groups = model.channel_groups(&data.input);
    let total = groups.len() * ratios.len();
    let mut out = Vec::with_capacity(total);
    for group in &groups {
        for &ratio in ratios {
            let kept = keep_count(group.width, ratio, 1, 1);
            let plan =
                KeepPlan::from([(group.name.clone(), top_channels(&scores[&group.name], kept))]);
            let pruned = models::thin(model, &data.input, &plan)?;
            let eval = measure::evaluate(
                &pruned,
                &data.dataset.test,
                &data.prep,
                eval_batch_size,
                &data.device,
            );
            out.push(SensitivityPoint {
                group: group.name.clone(),
                ratio,
                kept,
                width: group.width,
                macs: pruned.macs(&data.input),
                accuracy: eval.accuracy,
            });
            progress(out.len(), total);
        }
    }
    Ok(out)
}
