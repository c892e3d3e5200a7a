//! Running one trial, the parents trials share, and what each trial's state is.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use measure::RunSummary;
use runner::RunOptions;
use serde::{Deserialize, Serialize};
use settings::parents::ParentSource;
use settings::LoadedConfig;

use crate::file::{io, Sweep, SweepError};

/// Why a trial failed, recorded in `trials/<index>.json` of the sweep folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The process's exit code; `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    pub message: String,
}

/// Where a trial stands.
#[derive(Debug, Clone)]
pub enum State {
    Done {
        dir: PathBuf,
        summary: Box<RunSummary>,
    },
    Failed(Failure),
    /// In Slurm's queue (pending or running), by its own word.
    Queued(String),
    NotRun,
}

impl State {
    pub fn word(&self) -> &str {
        match self {
            State::Done { .. } => "done",
            State::Failed(_) => "failed",
            State::Queued(state) => state,
            State::NotRun => "not run",
        }
    }
}

/// Done when its run folder holds a summary (results are never rewritten: the folder is the
/// trial's config's), failed when a failure was recorded, else not run.
pub fn state(sweep: &Sweep, index: usize, loaded: &LoadedConfig) -> State {
    let dir = loaded.run_path();
    if let Ok(text) = safeio::read_text(&dir.join(settings::run_dir::SUMMARY)) {
        if let Ok(summary) = serde_json::from_str(&text) {
            return State::Done {
                dir,
                summary: Box::new(summary),
            };
        }
    }
    match safeio::read_text(&sweep.status_file(index)) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(failure) => State::Failed(failure),
            Err(e) => State::Failed(Failure {
                exit_code: None,
                message: format!("unreadable failure record: {e}"),
            }),
        },
        Err(_) => State::NotRun,
    }
}

pub fn record_failure(sweep: &Sweep, index: usize, failure: &Failure) -> Result<(), SweepError> {
    let path = sweep.status_file(index);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent.display().to_string()))?;
    }
    let text = serde_json::to_string_pretty(failure).unwrap_or_default();
    std::fs::write(&path, text).map_err(io(path.display().to_string()))
}

/// The last `lines` lines of a trial's log.
pub fn log_tail(sweep: &Sweep, index: usize, lines: usize) -> String {
    // The log's end only: a long training log is not read whole.
    let bytes = safeio::read_tail(&sweep.log_file(index), 64 << 10).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// When a trial's process started and ended (seconds since the epoch), recorded by the trial
/// itself in `trials/<index>.timing.json`: the part of a trial that is not training is its
/// wall time less its training time, and (Slurm) its queueing is start less submission.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub started: f64,
    pub ended: f64,
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn timing(sweep: &Sweep, index: usize) -> Option<Timing> {
    let path = sweep
        .dir
        .join("trials")
        .join(format!("{index}.timing.json"));
    serde_json::from_str(&safeio::read_text(&path).ok()?).ok()
}

fn record_timing(sweep: &Sweep, index: usize, timing: Timing) {
    let dir = sweep.dir.join("trials");
    if std::fs::create_dir_all(&dir).is_ok() {
        let text = serde_json::to_string(&timing).unwrap_or_default();
        let _ = std::fs::write(dir.join(format!("{index}.timing.json")), text);
    }
}

/// `train run-trial SWEEP --index I`: runs (or resumes, or reuses) trial `index`; a failure
/// is recorded for the sweep before it is returned.
pub fn run_trial(
    sweep: &Sweep,
    index: usize,
    env: &HashMap<String, String>,
    options: &RunOptions,
) -> Result<runner::StageOutcome, SweepError> {
    let trial = sweep.trial(index)?;
    let status = sweep.status_file(index);
    let started = now_secs();
    let result = sweep
        .load_trial(trial, env)
        .and_then(|loaded| runner::run_stage(&loaded, options).map_err(|e| Box::new(e).into()));
    record_timing(
        sweep,
        index,
        Timing {
            started,
            ended: now_secs(),
        },
    );
    match result {
        Ok(outcome) => {
            let _ = std::fs::remove_file(&status);
            Ok(outcome)
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message += &format!(": {cause}");
                source = cause.source();
            }
            record_failure(
                sweep,
                index,
                &Failure {
                    exit_code: Some(1),
                    message,
                },
            )?;
            Err(e)
        }
    }
}

/// The parent stages of `trials`, each once (by run identity), in order of first use.
pub fn shared_parents(trials: &[&LoadedConfig]) -> Vec<LoadedConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for trial in trials {
        for parent in &trial.parents {
            if let ParentSource::Stage(stage) = &parent.source {
                if seen.insert(stage.run_path()) {
                    out.push((**stage).clone());
                }
            }
        }
    }
    out
}

/// Whether a parent stage is already finished.
pub fn is_finished(stage: &LoadedConfig) -> bool {
    stage.run_path().join(settings::run_dir::SUMMARY).exists()
}

/// Runs (or reuses) the parents `trials` share, once each, before the trials.
pub fn run_parents(trials: &[&LoadedConfig], options: &RunOptions) -> Result<usize, SweepError> {
    let parents = shared_parents(trials);
    for stage in &parents {
        runner::run_stage(stage, options).map_err(Box::new)?;
    }
    Ok(parents.len())
}

/// A path as a job script or a child process should see it (absolute).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
