//! Commands the techniques bring (`train sensitivity`), run on a stage's trained model: the
//! stage runs (or is reused) first, then its model and data are handed to the analysis the
//! registry names ([`settings::techniques::analyses`]). Nothing here knows which technique.

use indicatif::{ProgressBar, ProgressStyle};
use technique::{Analysis, AnalysisContext, AnalysisReport};

use crate::bench::{open_target, Target};
use runner::RunError;
use runner::RunOptions;
use settings::LoadedConfig;

/// The analysis called `name`, with its option checked (before anything runs).
pub fn find(name: &str, option: &str) -> Result<Analysis, RunError> {
    let analysis = settings::techniques::analyses()
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| RunError::Record {
            what: "analysis",
            path: name.into(),
            message: "no technique offers it".into(),
        })?;
    (analysis.check_option)(option).map_err(|message| {
        RunError::Technique(technique::TechniqueError {
            technique: analysis.technique,
            message,
        })
    })?;
    Ok(analysis)
}

/// Runs (or reuses) the stage, then `analysis` on its model with `option`; its files go to
/// `<run>/<analysis name>/`.
pub fn run(
    analysis: &Analysis,
    loaded: &LoadedConfig,
    options: &RunOptions,
    option: &str,
) -> Result<AnalysisReport, RunError> {
    let outcome = runner::run_stage(loaded, options)?;
    let Target {
        model,
        config,
        dataset,
        input,
        prep,
        device,
        ..
    } = open_target(&outcome.dir, None, None)?;
    let dir = outcome.dir.join(analysis.name);
    std::fs::create_dir_all(&dir).map_err(RunError::io(&dir))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{} {{bar:30}} {{pos}}/{{len}} {{elapsed}}",
            analysis.name
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let report = (analysis.run)(&AnalysisContext {
        stage: &config.name,
        model: &model,
        dataset: &dataset,
        prep,
        input,
        device,
        seed: config.seed,
        eval_batch_size: config.train.eval_batch_size,
        baseline: outcome.summary.accuracy,
        dir,
        option,
        progress: &progress,
    })?;
    bar.finish_and_clear();
    Ok(report)
}
