//! Commands a technique brings, run on a finished stage's trained model (`train sensitivity`
//! is pruning's). The runner runs (or reuses) the stage, opens its model and data, and hands
//! them over; it never names the technique: the registry (`settings::techniques::analyses`)
//! lists what the techniques offer.

use std::path::PathBuf;

use burn::tensor::Device;
use data::{Dataset, Preprocess};
use models::{InputShape, Model};

use crate::TechniqueError;

/// What an analysis runs on.
pub struct AnalysisContext<'a> {
    /// The stage's name (for titles).
    pub stage: &'a str,
    /// The stage's trained model, on the inference device.
    pub model: &'a Model,
    pub dataset: &'a Dataset,
    pub prep: Preprocess,
    pub input: InputShape,
    pub device: Device,
    pub seed: u64,
    pub eval_batch_size: usize,
    /// The model's test accuracy as its run recorded it.
    pub baseline: f64,
    /// The folder its files go to (`<run>/<analysis name>/`), created by the runner.
    pub dir: PathBuf,
    /// The command's one option (sensitivity: the criterion), checked by `check_option`.
    pub option: &'a str,
    /// Called with (done, total) as the work advances, for a progress bar.
    pub progress: &'a dyn Fn(usize, usize),
}

/// What an analysis printed and wrote.
pub struct AnalysisReport {
    /// The table for the terminal.
    pub table: String,
    /// One closing line (what it found and where the files are).
    pub summary: String,
}

/// A command a technique brings.
#[derive(Clone, Copy)]
pub struct Analysis {
    /// The subcommand (`sensitivity`), also the folder its files go to in the run.
    pub name: &'static str,
    /// The technique that offers it.
    pub technique: &'static str,
    /// Checks the option before anything runs; the error says what is allowed.
    pub check_option: fn(&str) -> Result<(), String>,
    pub run: fn(&AnalysisContext) -> Result<AnalysisReport, TechniqueError>,
}
