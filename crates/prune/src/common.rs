//! What the two pruning techniques share: their parent, their step schedule and its checks,
//! and test-set evaluation of each step.

use data::{Dataset, Preprocess};
use models::Model;
use serde::{Deserialize, Serialize};
use technique::{Invalid, StageContext, TechniqueError};

/// When channels are removed. Step k of n removes the fraction f(k/n) of the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Everything before the first epoch, then fine-tune (`steps` must be 1).
    #[default]
    OneShot,
    /// Equal steps: f = k/n, with `every` fine-tuning epochs after each.
    Iterative,
    /// Automated gradual pruning (Zhu and Gupta 2017): f = 1 - (1 - k/n)^3, large steps
    /// while the network is redundant, small ones near the target.
    Agp,
}

impl Schedule {
    /// The fraction of the target reached after step `k` of `n` (k from 1).
    pub fn fraction(self, k: usize, n: usize) -> f64 {
        let t = k as f64 / n.max(1) as f64;
        match self {
            Schedule::OneShot => 1.0,
            Schedule::Iterative => t,
            Schedule::Agp => 1.0 - (1.0 - t).powi(3),
        }
    }
}

pub use technique::FROM_KEY;

/// Checks a section's `schedule`, `steps` and `every` (keys under `section.`).
pub fn check_schedule(
    section: &str,
    schedule: Schedule,
    steps: usize,
    every: usize,
) -> Result<(), Invalid> {
    if !(1..=100).contains(&steps) {
        return Err(Invalid::new(
            &format!("{section}.steps"),
            steps,
            "must be in 1..=100",
        ));
    }
    if !(1..=10_000).contains(&every) {
        return Err(Invalid::new(
            &format!("{section}.every"),
            every,
            "must be in 1..=10000",
        ));
    }
    if schedule == Schedule::OneShot && steps != 1 {
        return Err(Invalid::new(
            &format!("{section}.steps"),
            steps,
            "must be 1 with schedule = \"one-shot\" (use \"iterative\" or \"agp\" for more)",
        ));
    }
    Ok(())
}

/// Checks that `epochs` reach every step: step k (from 1) happens before epoch
/// `(k - 1) * every + 1`.
pub fn check_epochs(
    section: &str,
    steps: usize,
    every: usize,
    epochs: usize,
) -> Result<(), Invalid> {
    let last_step_epoch = (steps - 1) * every;
    if steps > 1 && epochs <= last_step_epoch {
        return Err(Invalid::new(
            "train.epochs",
            epochs,
            format!(
                "{section}.steps = {steps} with {section}.every = {every} steps before epochs {}; \
                 train.epochs must be at least {} (ideally {}, to fine-tune after the last step \
                 too)",
                (0..steps)
                    .map(|k| (k * every + 1).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                last_step_epoch + 1,
                steps * every
            ),
        ));
    }
    Ok(())
}

/// The step due after epoch `epoch` (0-based) when `done` steps are done, if any.
pub fn step_due(epoch: usize, done: usize, steps: usize, every: usize) -> Option<usize> {
    let k = done + 1;
    (k <= steps && epoch + 1 == (k - 1) * every).then_some(k)
}

/// A config enum's name as configs spell it (`"agp"`, `"bn-gamma"`).
pub fn config_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A technique error from `technique`.
pub fn error(technique: &'static str, message: impl Into<String>) -> TechniqueError {
    TechniqueError {
        technique,
        message: message.into(),
    }
}

/// Test-set accuracy of the models a step produces.
pub struct Evaluator<'a> {
    dataset: &'a Dataset,
    prep: Preprocess,
    device: burn::prelude::Device,
    batch_size: usize,
}

impl<'a> Evaluator<'a> {
    pub fn new(ctx: &StageContext<'a>) -> Self {
        Self {
            dataset: ctx.dataset,
            prep: ctx.prep,
            device: ctx.device.clone(),
            batch_size: ctx.eval_batch_size,
        }
    }

    /// Test accuracy of `model` (an inference copy).
    pub fn accuracy(&self, model: &Model) -> f64 {
        measure::evaluate(
            model,
            &self.dataset.test,
            &self.prep,
            self.batch_size,
            &self.device,
        )
        .accuracy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fall_due_every_few_epochs() {
        // 3 steps every 2 epochs: step 1 before training, 2 after epoch 2, 3 after epoch 4.
        assert_eq!(step_due(1, 1, 3, 2), Some(2));
        assert_eq!(step_due(3, 2, 3, 2), Some(3));
        assert_eq!(step_due(5, 3, 3, 2), None);
        assert_eq!(step_due(0, 1, 3, 2), None);
    }
}
