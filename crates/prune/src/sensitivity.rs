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

/// `train sensitivity CONFIG [--criterion C]`, offered to the runner's registry.
pub const ANALYSIS: technique::Analysis = technique::Analysis {
    name: "sensitivity",
    technique: "prune",
    check_option: |text| parse_criterion(text).map(|_| ()),
    run: run_analysis,
};

/// The `--criterion` of `train sensitivity`.
pub fn parse_criterion(text: &str) -> Result<Criterion, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|_| format!("--criterion {text}: one of l1, l2, bn-gamma, taylor, random"))
}

fn failed(message: impl std::fmt::Display) -> technique::TechniqueError {
    technique::TechniqueError {
        technique: "sensitivity",
        message: message.to_string(),
    }
}

/// An I/O error on `path`, as the analysis reports it.
fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> technique::TechniqueError {
    let path = path.display().to_string();
    move |e: std::io::Error| failed(format!("{path}: {e}"))
}

/// `sensitivity.csv`: one row per group and ratio.
fn write_csv(
    dir: &std::path::Path,
    points: &[SensitivityPoint],
) -> Result<std::path::PathBuf, technique::TechniqueError> {
    let csv = dir.join("sensitivity.csv");
    let mut text = String::from("group,width,ratio,kept,macs,accuracy\n");
    for p in points {
        text += &format!(
            "{},{},{},{},{},{}\n",
            p.group, p.width, p.ratio, p.kept, p.macs, p.accuracy
        );
    }
    std::fs::write(&csv, text).map_err(io(&csv))?;
    Ok(csv)
}

/// `sensitivity.png`: accuracy against ratio, one curve per group from the unpruned accuracy.
fn plot(
    ctx: &technique::AnalysisContext,
    points: &[SensitivityPoint],
    criterion: Criterion,
) -> Result<std::path::PathBuf, technique::TechniqueError> {
    let mut series: Vec<measure::plot::Series> = Vec::new();
    for p in points {
        match series.last_mut() {
            Some(s) if s.name.starts_with(&format!("{} (", p.group)) => {
                s.points.push((p.ratio, 100.0 * p.accuracy))
            }
            // Every curve starts at the unpruned model's accuracy (ratio 0).
            _ => series.push(measure::plot::Series {
                name: format!("{} ({} channels)", p.group, p.width),
                points: vec![(0.0, 100.0 * ctx.baseline), (p.ratio, 100.0 * p.accuracy)],
            }),
        }
    }
    let png = ctx.dir.join("sensitivity.png");
    measure::plot::line_plot(
        &png,
        &format!(
            "{}: each group pruned alone ({criterion:?}), no fine-tuning",
            ctx.stage
        ),
        (
            "fraction of the group's channels removed",
            "test accuracy (%)",
        ),
        &series,
    )
    .map_err(failed)?;
    Ok(png)
}

/// The points as TensorBoard scalars (step = ratio in %) and the plot as an image, in `dir`.
fn log_to_tensorboard(
    dir: &std::path::Path,
    points: &[SensitivityPoint],
    png: &std::path::Path,
) -> Result<(), technique::TechniqueError> {
    measure::tensorboard::remove_event_files(dir).map_err(io(dir))?;
    let mut events = measure::EventLog::create(dir).map_err(io(dir))?;
    for p in points {
        events.scalar(
            &format!("sensitivity/{}", p.group),
            p.accuracy,
            (p.ratio * 100.0).round() as usize,
        );
    }
    let image = std::fs::read(png).map_err(io(png))?;
    events.image(
        "sensitivity",
        &image,
        measure::plot::HEIGHT,
        measure::plot::WIDTH,
        0,
    );
    events.close().map_err(failed)?;
    Ok(())
}

/// Prunes each group of the stage's model alone at [`RATIOS`] and writes
/// `sensitivity.csv`, `sensitivity.png` (one curve per group) and TensorBoard scalars
/// (`sensitivity/<group>`) and the plot into `ctx.dir`.
fn run_analysis(
    ctx: &technique::AnalysisContext,
) -> Result<technique::AnalysisReport, technique::TechniqueError> {
    let criterion = parse_criterion(ctx.option).map_err(failed)?;
    let data = ScoreData {
        dataset: ctx.dataset,
        prep: ctx.prep,
        input: ctx.input,
        device: ctx.device.clone(),
        seed: ctx.seed,
        draw: 0,
        taylor_batches: 16,
    };
    let points = sensitivity(
        ctx.model,
        criterion,
        &data,
        &RATIOS,
        ctx.eval_batch_size,
        |done, total| (ctx.progress)(done, total),
    )
    .map_err(failed)?;
    let csv = write_csv(&ctx.dir, &points)?;

    let png = plot(ctx, &points, criterion)?;

    log_to_tensorboard(&ctx.dir, &points, &png)?;
    Ok(technique::AnalysisReport {
        table: table(&points),
        summary: format!(
            "unpruned: {:.2}%; wrote {}, {} and TensorBoard scalars in {}",
            100.0 * ctx.baseline,
            csv.display(),
            png.display(),
            ctx.dir.display()
        ),
    })
}

/// Accuracy per group (rows) and ratio (columns), in points of percent.
fn table(points: &[SensitivityPoint]) -> String {
    let mut out = format!("{:<16}", "group \\ ratio");
    for r in RATIOS {
        out += &format!(" {r:>6.1}");
    }
    out += "\n";
    let mut groups: Vec<&str> = points.iter().map(|p| p.group.as_str()).collect();
    groups.dedup();
    for g in groups {
        out += &format!("{g:<16}");
        for p in points.iter().filter(|p| p.group == g) {
            out += &format!(" {:>6.2}", 100.0 * p.accuracy);
        }
        out += "\n";
    }
    out
}
