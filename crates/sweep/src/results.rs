//! A sweep's results: `results.csv`, `results.md`, the accuracy plots with the Pareto front,
//! and `tensorboard/` (each trial's events named after its swept values, with HParams data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use measure::plot::{accuracy_plot, line_plot, Point, Series};
use measure::EventLog;

use crate::file::{io, Sweep, SweepError, Trial};
use crate::trials::{self, log_tail, now_secs, State};
use measure::hparams::{self, HValue};

/// One trial's line of the results.
pub struct Row<'a> {
    pub trial: &'a Trial,
    pub state: State,
    /// Seconds from start to end of the trial's process.
    pub wall_s: Option<f64>,
    /// Slurm: seconds from submission to start.
    pub queue_s: Option<f64>,
    /// Its HParams: what made its run and every key of its resolved config (so a key the
    /// trial does not set still has the base config's value).
    pub hparams: Vec<(String, HValue)>,
}

fn cell(value: &toml::Value) -> String {
    crate::file::raw(value)
}

fn value_of<'v>(trial: &'v Trial, key: &str) -> Option<&'v toml::Value> {
    trial.values.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |v| format!("{v:.digits$}"))
}

/// The trials that were done when the results were last written (`results.done.json`).
pub fn last_done(sweep: &Sweep) -> Vec<usize> {
    safeio::read_text(&sweep.dir.join(DONE_RECORD))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Records the trials the results just written hold.
pub fn record_done(sweep: &Sweep, done: &[usize]) -> Result<(), SweepError> {
    let path = sweep.dir.join(DONE_RECORD);
    let text = serde_json::to_string(done).unwrap_or_default();
    std::fs::write(&path, text).map_err(io(path.display().to_string()))
}

pub const DONE_RECORD: &str = "results.done.json";

/// Writes every results file; returns the paths written.
pub fn write(sweep: &Sweep, rows: &[Row]) -> Result<Vec<PathBuf>, SweepError> {
    std::fs::create_dir_all(&sweep.dir).map_err(io(sweep.dir.display().to_string()))?;
    let header = header(sweep);
    let mut csv = header.join(",") + "\n";
    let mut md = format!(
        "# Sweep {}\n\n{} trials of `{}`. Reproduce: `train sweep {}`.\n\n| {} |\n|{}|\n",
        sweep.name,
        rows.len(),
        sweep.base.display(),
        sweep.path.display(),
        header.join(" | "),
        vec!["---"; header.len()].join("|")
    );
    for row in rows {
        let cells = cells(sweep, row);
        csv += &csv_line(&cells);
        md += &format!("| {} |\n", cells.join(" | "));
    }
    md += &failed_trials(sweep, rows);
    let mut written = Vec::new();
    let csv_path = sweep.dir.join("results.csv");
    std::fs::write(&csv_path, csv).map_err(io(csv_path.display().to_string()))?;
    written.push(csv_path);

    let done: Vec<(&Row, &measure::RunSummary)> = rows
        .iter()
        .filter_map(|r| match &r.state {
            State::Done { summary, .. } => Some((r, &**summary)),
            _ => None,
        })
        .collect();
    if !done.is_empty() {
        for (file, what) in plots(sweep, &done)? {
            md += &format!(
                "\n![{what}]({})\n",
                file.file_name().unwrap_or_default().to_string_lossy()
            );
            written.push(file);
        }
    }
    let md_path = sweep.dir.join("results.md");
    std::fs::write(&md_path, md).map_err(io(md_path.display().to_string()))?;
    written.push(md_path);
    written.push(tensorboard(sweep, rows)?);
    Ok(written)
}

/// The results table's columns: the trial, its swept keys, then what it measured.
fn header(sweep: &Sweep) -> Vec<String> {
    let mut header: Vec<String> = vec!["trial".into()];
    header.extend(sweep.keys.iter().cloned());
    header.extend(
        [
            "state",
            "accuracy",
            "params",
            "model_bytes",
            "macs",
            "latency_ms_p50",
            "train_s",
            "wall_s",
            "queue_s",
            "run",
        ]
        .map(String::from),
    );
    header
}

/// One trial's cells, in [`header`]'s order (empty where it did not finish).
fn cells(sweep: &Sweep, row: &Row) -> Vec<String> {
    let mut cells = vec![row.trial.index.to_string()];
    for key in &sweep.keys {
        cells.push(value_of(row.trial, key).map(cell).unwrap_or_default());
    }
    cells.push(row.state.word().to_string());
    match &row.state {
        State::Done { dir, summary } => cells.extend([
            format!("{:.4}", summary.accuracy),
            summary.params.to_string(),
            summary.model_bytes.to_string(),
            summary.macs.to_string(),
            format!("{:.4}", summary.latency_ms_p50),
            format!("{:.1}", summary.train_seconds),
            opt(row.wall_s, 1),
            opt(row.queue_s, 1),
            dir.display().to_string(),
        ]),
        _ => {
            cells.extend(std::iter::repeat_n(String::new(), 6));
            cells.push(opt(row.wall_s, 1));
            cells.push(opt(row.queue_s, 1));
            cells.push(String::new());
        }
    }
    cells
}

/// A CSV line, quoting the cells that hold a comma or a quote.
fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            if c.contains([',', '"']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        })
        .collect();
    quoted.join(",") + "\n"
}

/// The Markdown section on failed trials (exit code, message, the log's tail); empty when
/// none failed.
fn failed_trials(sweep: &Sweep, rows: &[Row]) -> String {
    let mut md = String::new();
    for row in rows {
        let State::Failed(f) = &row.state else {
            continue;
        };
        if md.is_empty() {
            md += "\n## Failed trials\n";
        }
        md += &format!(
            "\n### trial {} ({})\n\nexit code {}: {}\n\n```\n{}\n```\n",
            row.trial.index,
            row.trial.label(),
            f.exit_code
                .map_or("none (killed by a signal)".into(), |c| c.to_string()),
            f.message,
            log_tail(sweep, row.trial.index, 20)
        );
    }
    md
}

/// The keys whose value differs between trials.
fn varying_keys(sweep: &Sweep) -> Vec<&String> {
    sweep
        .keys
        .iter()
        .filter(|k| {
            let mut seen: Vec<String> = Vec::new();
            for t in &sweep.trials {
                let v = value_of(t, k).map(cell).unwrap_or_default();
                if !seen.contains(&v) {
                    seen.push(v);
                }
            }
            seen.len() > 1
        })
        .collect()
}

/// Draws the finished trials: accuracy against latency and against size, and the test errors
/// against each varying key. Returns each image with what it shows.
fn plots(
    sweep: &Sweep,
    done: &[(&Row, &measure::RunSummary)],
) -> Result<Vec<(PathBuf, String)>, SweepError> {
    // Plot labels name only the keys that vary between trials.
    let varying = varying_keys(sweep);
    let short = |t: &Trial| -> String {
        let parts: Vec<String> = t
            .values
            .iter()
            .filter(|(k, _)| varying.contains(&k))
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect();
        if parts.is_empty() {
            t.label()
        } else {
            parts.join(",")
        }
    };
    let points = |cost: &dyn Fn(&measure::RunSummary) -> f64| -> Vec<Point> {
        done.iter()
            .map(|(r, s)| Point {
                label: short(r.trial),
                cost: cost(s),
                accuracy: s.accuracy,
            })
            .collect()
    };
    let draw_error = |e: measure::plot::PlotError| SweepError::Results(e.to_string());
    let latency = sweep.dir.join("results-accuracy-latency.png");
    accuracy_plot(
        &latency,
        &format!("{}: accuracy against latency (batch 1)", sweep.name),
        "latency p50 per image, batch 1 (ms, log scale)",
        &measure::plot::plain_number,
        &points(&|s| s.latency_ms_p50),
        true,
    )
    .map_err(draw_error)?;
    let size = sweep.dir.join("results-accuracy-size.png");
    accuracy_plot(
        &size,
        &format!("{}: accuracy against model size", sweep.name),
        "model file size (bytes, log scale)",
        &measure::plot::human_bytes,
        &points(&|s| s.model_bytes as f64),
        true,
    )
    .map_err(draw_error)?;
    let mut out = vec![
        (latency, "accuracy against latency".to_string()),
        (size, "accuracy against size".to_string()),
    ];
    for key in &varying {
        if let Some((file, series)) = errors_against(key, &varying, done) {
            let path = sweep.dir.join(&file);
            line_plot(
                &path,
                &format!("{}: test errors against {key}", sweep.name),
                (key.as_str(), "test errors"),
                &series,
            )
            .map_err(draw_error)?;
            out.push((path, format!("test errors against {key}")));
        }
    }
    Ok(out)
}

fn number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// The file name and curves of the plot of test errors against the swept key `key` (a
/// temperature, a pruning ratio, a seed), one curve per combination of the other varying
/// keys; `None` when some finished trial's value of `key` is not a number.
fn errors_against(
    key: &str,
    varying: &[&String],
    done: &[(&Row, &measure::RunSummary)],
) -> Option<(String, Vec<Series>)> {
    let mut curves: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (row, summary) in done {
        let x = number(value_of(row.trial, key)?)?;
        let others: Vec<String> = row
            .trial
            .values
            .iter()
            .filter(|(k, _)| k != key && varying.contains(&k))
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect();
        curves
            .entry(others.join(","))
            .or_default()
            .push((x, summary.test_errors as f64));
    }
    let series = curves
        .into_iter()
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name: if name.is_empty() {
                    "test errors".into()
                } else {
                    name
                },
                points,
            }
        })
        .collect();
    let slug: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Some((format!("results-errors-{slug}.png"), series))
}

/// A trial's TensorBoard folder name: its index and swept values.
pub fn run_name(trial: &Trial) -> String {
    format!(
        "{:03}-{}",
        trial.index,
        trial.label().replace(['/', '\\', ' '], "_")
    )
}

/// `tensorboard/`: the HParams experiment at the top, and per trial its run's event files
/// plus its HParams session (values, and success or failure).
fn tensorboard(sweep: &Sweep, rows: &[Row]) -> Result<PathBuf, SweepError> {
    let root = sweep.dir.join("tensorboard");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(io(root.display().to_string()))?;
    }
    std::fs::create_dir_all(&root).map_err(io(root.display().to_string()))?;
    // Each swept key's values over every trial, resolved (the base config's where a trial
    // does not set it), so parallel coordinates have an axis with every trial on it.
    let swept: Vec<Vec<(String, HValue)>> = rows
        .iter()
        .map(|row| {
            row.hparams
                .iter()
                .filter(|(k, _)| sweep.keys.contains(k))
                .cloned()
                .collect()
        })
        .collect();
    let infos = hparams::domains(&swept);
    let event_error = |e: measure::tensorboard::EventLogError| SweepError::Results(e.to_string());
    let mut top = EventLog::create(&root).map_err(io(root.display().to_string()))?;
    top.plugin(
        hparams::EXPERIMENT_TAG,
        hparams::PLUGIN,
        hparams::experiment(&infos, &hparams::RUN_METRICS, now_secs()),
        0,
    );
    // The sweep's plots, as images beside the HParams.
    for (step, file) in ["results-accuracy-latency.png", "results-accuracy-size.png"]
        .iter()
        .enumerate()
    {
        if let Ok(png) = std::fs::read(sweep.dir.join(file)) {
            top.image(
                "sweep",
                &png,
                measure::plot::HEIGHT,
                measure::plot::WIDTH,
                step,
            );
        }
    }
    top.close().map_err(event_error)?;
    for row in rows {
        let success = match &row.state {
            State::Done { .. } => true,
            State::Failed(_) => false,
            _ => continue,
        };
        let dir = root.join(run_name(row.trial));
        std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
        if let State::Done { dir: run, .. } = &row.state {
            copy_events(run, &dir)?;
        }
        let mut events = EventLog::create(&dir).map_err(io(dir.display().to_string()))?;
        // The trial's own start and end when its process recorded them (a reused run did not).
        let (start, end) = trials::timing(sweep, row.trial.index)
            .map_or((now_secs(), now_secs()), |t| (t.started, t.ended));
        events.plugin(
            hparams::SESSION_START_TAG,
            hparams::PLUGIN,
            hparams::session_start(&row.hparams, &run_name(row.trial), start),
            0,
        );
        events.plugin(
            hparams::SESSION_END_TAG,
            hparams::PLUGIN,
            hparams::session_end(success, end),
            0,
        );
        events.close().map_err(event_error)?;
    }
    Ok(root)
}

fn copy_events(run: &Path, into: &Path) -> Result<(), SweepError> {
    let entries = std::fs::read_dir(run).map_err(io(run.display().to_string()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("events.out.tfevents") {
            let to = into.join(&name);
            std::fs::copy(entry.path(), &to).map_err(io(to.display().to_string()))?;
        }
    }
    Ok(())
}
