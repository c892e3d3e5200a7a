//! Test hooks: the environment variables the end-to-end tests use to inject faults and to
//! exercise seams through the real binary. They are all listed here ([`HOOKS`], and in
//! `docs/test-hooks.md`) and read nowhere else.
//!
//! A hook can never produce a result that poses as an ordinary run. The fault injections
//! only make a run fail (a diverged loss, a full disk), and the run resumes as it would after
//! the real fault. `TRAIN_TEST_NARROW_AFTER_EPOCH=N`, which changes the model (it halves the
//! first hidden layer of an MLP after epoch N), is part of the stage's identity: a run under
//! it gets a run folder of its own, and its `summary.json` and TensorBoard overrides list it.
//! It applies to the stage named on the command line, never to its parents.

use std::collections::HashMap;

pub const NARROW_ENV: &str = "TRAIN_TEST_NARROW_AFTER_EPOCH";
pub const NONFINITE_ENV: &str = "TRAIN_FAULT_NONFINITE_AT_STEP";
pub const EVENTS_FULL_ENV: &str = "TRAIN_FAULT_EVENTS_FULL_AT_EPOCH";

/// Every test hook and what it does.
pub const HOOKS: [(&str, &str); 3] = [
    (
        NARROW_ENV,
        "N: halve an MLP's first hidden layer after epoch N (part of the run's identity)",
    ),
    (
        NONFINITE_ENV,
        "N: the loss of global step N becomes NaN (the run stops as diverged)",
    ),
    (
        EVENTS_FULL_ENV,
        "N: TensorBoard writes fail from the end of epoch N on (the run stops as on a full disk)",
    ),
];

/// The hooks set in `env`, each a positive integer; anything else is an error naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestHooks {
    pub narrow_after_epoch: Option<usize>,
    pub fault_nonfinite_at_step: Option<usize>,
    pub fault_events_full_at_epoch: Option<usize>,
}

impl TestHooks {
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, String> {
        let read = |name: &str| -> Result<Option<usize>, String> {
            match env.get(name) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!(
                        "{name}={v}: a test hook takes a whole number >= 1 (unset it for an \
                         ordinary run)"
                    )),
                },
            }
        };
        Ok(Self {
            narrow_after_epoch: read(NARROW_ENV)?,
            fault_nonfinite_at_step: read(NONFINITE_ENV)?,
            fault_events_full_at_epoch: read(EVENTS_FULL_ENV)?,
        })
    }

    /// The hooks that change what a run computes, as `NAME=value`: recorded in the run's
    /// identity and overrides.
    pub fn result_changing(&self) -> Vec<String> {
        self.narrow_after_epoch
            .map(|n| format!("{NARROW_ENV}={n}"))
            .into_iter()
            .collect()
    }
}
