//! `train sensitivity CONFIG`: how much each layer's channels matter, measured by pruning each
//! group alone at ratios 0.1 to 0.9 (no fine-tuning) on the stage's trained model.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use measure::plot::{line_plot, Series};
use measure::EventLog;
use prune::importance::ScoreData;
use prune::{Criterion, SensitivityPoint, RATIOS};

use crate::bench::{open_target, Target};
use crate::error::RunError;
use crate::{LoadedConfig, RunOptions};

/// Where the analysis went.
pub struct SensitivityReport {
    pub dir: PathBuf,
    pub csv: PathBuf,
    pub png: PathBuf,
    pub points: Vec<SensitivityPoint>,
    /// The unpruned model's accuracy.
    pub baseline: f64,
}

impl SensitivityReport {
    /// Accuracy per group (rows) and ratio (columns), in points of percent.
    pub fn table(&self) -> String {
        let mut out = format!("{:<16}", "group \\ ratio");
        for r in RATIOS {
            out += &format!(" {r:>6.1}");
        }
        out += "\n";
        let mut groups: Vec<&str> = self.points.iter().map(|p| p.group.as_str()).collect();
        groups.dedup();
        for g in groups {
            out += &format!("{g:<16}");
            for p in self.points.iter().filter(|p| p.group == g) {
                out += &format!(" {:>6.2}", 100.0 * p.accuracy);
            }
            out += "\n";
        }
        out
    }
}

/// The `--criterion` of `train sensitivity`: `l1`, `l2`, `bn-gamma`, `taylor` or `random`.
pub fn parse_criterion(text: &str) -> Result<Criterion, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("--criterion {text}: one of l1, l2, bn-gamma, taylor, random"))
}

/// Runs (or reuses) the stage, then analyses its model; results go to `<run>/sensitivity/`.
pub fn sensitivity(
    loaded: &LoadedConfig,
    options: &RunOptions,
    criterion: Criterion,
) -> Result<SensitivityReport, RunError> {
    let outcome = crate::run_stage(loaded, options)?;
    let Target {
        model,
        config,
        dataset,
        input,
        prep,
        device,
        ..
    } = open_target(&outcome.dir, None, None)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("sensitivity {bar:30} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let data = ScoreData {
        dataset: &dataset,
        prep,
        input,
        device: device.clone(),
        seed: config.seed,
        draw: 0,
        taylor_batches: 16,
    };
    let points = prune::sensitivity(
        &model,
        criterion,
        &data,
        &RATIOS,
        config.train.eval_batch_size,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .map_err(|e| {
        RunError::Technique(technique::TechniqueError {
            technique: "sensitivity",
            message: e.to_string(),
        })
    })?;
    bar.finish_and_clear();

    let dir = outcome.dir.join("sensitivity");
    std::fs::create_dir_all(&dir).map_err(RunError::io(&dir))?;
    let csv = dir.join("sensitivity.csv");
    let mut text = String::from("group,width,ratio,kept,macs,accuracy\n");
    for p in &points {
        text += &format!(
            "{},{},{},{},{},{}\n",
            p.group, p.width, p.ratio, p.kept, p.macs, p.accuracy
        );
    }
    crate::run_dir::write_atomic(&csv, text.as_bytes()).map_err(RunError::io(&csv))?;

    let mut series: Vec<Series> = Vec::new();
    for p in &points {
        match series.last_mut() {
            Some(s) if s.name.starts_with(&format!("{} (", p.group)) => {
                s.points.push((p.ratio, 100.0 * p.accuracy))
            }
            // Every curve starts at the unpruned model's accuracy (ratio 0).
            _ => series.push(Series {
                name: format!("{} ({} channels)", p.group, p.width),
                points: vec![
                    (0.0, 100.0 * outcome.summary.accuracy),
                    (p.ratio, 100.0 * p.accuracy),
                ],
            }),
        }
    }
    let png = dir.join("sensitivity.png");
    line_plot(
        &png,
        &format!(
            "{}: each group pruned alone ({criterion:?}), no fine-tuning",
            config.name
        ),
        (
            "fraction of the group's channels removed",
            "test accuracy (%)",
        ),
        &series,
    )
    .map_err(|e| {
        RunError::Technique(technique::TechniqueError {
            technique: "sensitivity",
            message: e.to_string(),
        })
    })?;

    measure::tensorboard::remove_event_files(&dir).map_err(RunError::io(&dir))?;
    let mut events = EventLog::create(&dir).map_err(RunError::io(&dir))?;
    for p in &points {
        events.scalar(
            &format!("sensitivity/{}", p.group),
            p.accuracy,
            (p.ratio * 100.0).round() as usize,
        );
    }
    if let Ok(bytes) = std::fs::read(&png) {
        events.image(
            "sensitivity",
            &bytes,
            measure::plot::HEIGHT,
            measure::plot::WIDTH,
            0,
        );
    }
    events.close()?;
    Ok(SensitivityReport {
        dir,
        csv,
        png,
        points,
        baseline: outcome.summary.accuracy,
    })
}
