//! `train report DIR`: every finished run under a folder in one table, and plots of accuracy
//! against latency and against size with the Pareto front marked.

use std::path::{Path, PathBuf};

use crate::hparams::{self, HValue};
use crate::plot::{accuracy_plot, PlotError, Point, HEIGHT, WIDTH};
use crate::summary::{group_digits, RunSummary};
use crate::EventLog;

/// One run of the report.
#[derive(Debug, Clone)]
pub struct ReportRun {
    pub dir: PathBuf,
    pub summary: RunSummary,
}

impl ReportRun {
    /// What made the run (see [`RunSummary::technique`]).
    pub fn technique(&self) -> String {
        self.summary.technique()
    }

    /// `name/hash`, unique within a runs folder.
    pub fn label(&self) -> String {
        format!(
            "{}/{}",
            self.summary.name,
            &self.summary.hash[..self.summary.hash.len().min(6)]
        )
    }
}

/// A run folder left out of the report, and why.
pub type Skipped = (PathBuf, String);

/// What `report` found and wrote.
pub struct Report {
    pub runs: Vec<ReportRun>,
    pub skipped: Vec<Skipped>,
    pub markdown: PathBuf,
    pub plots: Vec<PathBuf>,
}

/// Every folder under `dir` (recursively) holding a `summary.json`; unreadable summaries are
/// returned as skipped with the reason.
pub fn collect(dir: &Path) -> std::io::Result<(Vec<ReportRun>, Vec<Skipped>)> {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&folder)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "summary.json") {
                let parsed = safeio::read_text(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        serde_json::from_str::<RunSummary>(&t).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(summary) => runs.push(ReportRun {
                        dir: folder.clone(),
                        summary,
                    }),
                    Err(reason) => skipped.push((folder.clone(), reason)),
                }
            }
        }
    }
    runs.sort_by_key(ReportRun::label);
    Ok((runs, skipped))
}

/// The HParams experiment of a folder of runs: the hyperparameters every run has (recorded in
/// its summary; a key some runs lack would drop them from the parallel coordinates) against
/// the summary figures. A technique's own settings stay in its runs' sessions.
fn experiment(runs: &[ReportRun]) -> Vec<u8> {
    let hparams: Vec<Vec<(String, HValue)>> = runs
        .iter()
        .map(|r| {
            r.summary
                .hparams
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), HValue::from_json(v)?)))
                .collect()
        })
        .collect();
    let shared: Vec<(String, Vec<HValue>)> = hparams::domains(&hparams)
        .into_iter()
        .filter(|(key, _)| hparams.iter().all(|run| run.iter().any(|(k, _)| k == key)))
        .collect();
    hparams::experiment(
        &shared,
        &hparams::RUN_METRICS,
        crate::summary::unix_secs() as f64,
    )
}

/// The report's table as three narrow ones (results, against the parent, provenance), each
/// short enough for TensorBoard's Text tab, with its tag.
pub fn narrow_tables(runs: &[ReportRun]) -> [(&'static str, String); 3] {
    let mut results = String::from(
        "| run | technique | accuracy (%) | params | bytes | MACs | p50 (ms) |\n|---|---|---|---|---|---|---|\n",
    );
    let mut parents = String::from(
        "| run | parent | params | bytes | MACs | latency | accuracy (points) |\n|---|---|---|---|---|---|---|\n",
    );
    let mut provenance = String::from(
        "| run | seed | epochs | overrides | finished (UTC) |\n|---|---|---|---|---|\n",
    );
    for run in runs {
        let s = &run.summary;
        results += &format!("| {} |\n", result_cells(run).join(" | "));
        if let Some(p) = &s.parent {
            let r = &p.ratios;
            parents += &format!(
                "| {} | {} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {:+.2} |\n",
                run.label(),
                p.name,
                r.params,
                r.model_bytes,
                r.macs,
                r.latency_p50,
                r.accuracy_delta_points
            );
        }
        provenance += &format!(
            "| {} | {} | {} | {} | {} |\n",
            run.label(),
            s.seed.map_or("-".to_string(), |seed| seed.to_string()),
            s.epochs,
            overrides_cell(&s.overrides),
            if s.finished_at.is_empty() {
                "-"
            } else {
                &s.finished_at
            }
        );
    }
    [
        ("report/results", results),
        ("report/vs_parent", parents),
        ("report/provenance", provenance),
    ]
}

/// A run's results: label, technique, accuracy (%), params, bytes, MACs, latency p50 (ms).
fn result_cells(run: &ReportRun) -> [String; 7] {
    let s = &run.summary;
    [
        run.label(),
        run.technique(),
        format!("{:.2}", s.accuracy * 100.0),
        group_digits(s.params as u64),
        group_digits(s.model_bytes),
        group_digits(s.macs),
        format!("{:.3}", s.latency_ms_p50),
    ]
}

/// A run's overrides as code spans, `-` when none.
fn overrides_cell(overrides: &[String]) -> String {
    if overrides.is_empty() {
        return "-".to_string();
    }
    overrides
        .iter()
        .map(|o| format!("`{}`", o.replace('|', "\\|")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The markdown table of `runs` (report.md and the terminal).
pub fn table(runs: &[ReportRun]) -> String {
    let mut out = String::from(
        "| run | technique | accuracy (%) | params | bytes | MACs/sample | latency p50 (ms) | vs parent: params / bytes / MACs / latency (x smaller or faster), accuracy (points) | seed | epochs | train limit | overrides | finished (UTC) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        let s = &run.summary;
        let vs = match &s.parent {
            Some(p) => format!(
                "{} ({}): {:.2} / {:.2} / {:.2} / {:.2}, {:+.2}",
                p.name,
                p.role,
                p.ratios.params,
                p.ratios.model_bytes,
                p.ratios.macs,
                p.ratios.latency_p50,
                p.ratios.accuracy_delta_points
            ),
            None => "-".into(),
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            result_cells(run).join(" | "),
            vs,
            s.seed.map_or("-".to_string(), |seed| seed.to_string()),
            s.epochs,
            s.train_limit
                .map_or("all".to_string(), |n| group_digits(n as u64)),
            overrides_cell(&s.overrides),
            if s.finished_at.is_empty() {
                "-"
            } else {
                &s.finished_at
            }
        );
    }
    out
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Draw(#[from] PlotError),
    #[error(transparent)]
    Events(#[from] crate::tensorboard::EventLogError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ReportError {
    let path = path.to_path_buf();
    move |source| ReportError::Io { what, path, source }
}

/// Writes `report.md`, `report-accuracy-latency.png` and `report-accuracy-size.png` into `dir`,
/// and the plots as images into a TensorBoard run at `dir/report`.
pub fn write_report(dir: &Path) -> Result<Report, ReportError> {
    let (runs, skipped) = collect(dir).map_err(io("reading", dir))?;
    let points = |cost: &dyn Fn(&RunSummary) -> f64| -> Vec<Point> {
        runs.iter()
            .map(|r| Point {
                label: r.label(),
                cost: cost(&r.summary),
                accuracy: r.summary.accuracy,
            })
            .collect()
    };
    let latency_png = dir.join("report-accuracy-latency.png");
    let size_png = dir.join("report-accuracy-size.png");
    accuracy_plot(
        &latency_png,
        "Accuracy against latency (batch 1, end to end)",
        "latency p50 per image, batch 1 (ms, log scale)",
        &crate::plot::plain_number,
        &points(&|s| s.latency_ms_p50),
        true,
    )?;
    accuracy_plot(
        &size_png,
        "Accuracy against model size",
        "model file size (bytes, log scale)",
        &crate::plot::human_bytes,
        &points(&|s| s.model_bytes as f64),
        true,
    )?;
    let markdown = dir.join("report.md");
    let mut text = format!(
        "# Report of {}\n\n{} runs. Reproduce: `train report {}`.\n\n{}\n![accuracy against latency](report-accuracy-latency.png)\n\n![accuracy against size](report-accuracy-size.png)\n",
        dir.display(),
        runs.len(),
        dir.display(),
        table(&runs)
    );
    if !skipped.is_empty() {
        text += "\nSkipped (unreadable summary.json):\n\n";
        for (folder, reason) in &skipped {
            text += &format!("- `{}`: {reason}\n", folder.display());
        }
    }
    std::fs::write(&markdown, text).map_err(io("writing", &markdown))?;

    let tb = dir.join("report");
    let mut events = EventLog::create(&tb).map_err(io("creating the event file in", &tb))?;
    for (tag, png) in [
        ("report/accuracy_vs_latency", &latency_png),
        ("report/accuracy_vs_size", &size_png),
    ] {
        let bytes = std::fs::read(png).map_err(io("reading", png))?;
        events.image(tag, &bytes, HEIGHT, WIDTH, 0);
    }
    events.plugin(
        hparams::EXPERIMENT_TAG,
        hparams::PLUGIN,
        experiment(&runs),
        0,
    );
    // TensorBoard's Text tab wraps a wide table mid-number: one narrow table per concern.
    for (tag, markdown) in narrow_tables(&runs) {
        events.text(tag, &markdown, 0);
    }
    events.close()?;
    Ok(Report {
        runs,
        skipped,
        markdown,
        plots: vec![latency_png, size_png],
    })
}
