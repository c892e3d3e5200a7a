//! Sweeps: one base stage config, a grid and/or a list of trials, run by a launcher (child
//! processes here, or a Slurm job array), compared in one table, two plots and TensorBoard's
//! HParams view. No scheduler of our own: Slurm schedules, or the local machine runs `parallel`
//! trials at a time.
//!
//! - [`mod@file`]: the sweep file and its trials (each the base config plus overrides).
//! - [`trials`]: running one trial, the parents trials share, each trial's state.
//! - [`local`], [`slurm`]: the launchers.
//! - [`results`], [`hparams`]: what a sweep leaves behind.

pub mod file;
pub mod local;
pub mod results;
pub mod slurm;
pub mod trials;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use file::{LauncherKind, Sweep, SweepError, Trial};
use runner::RunOptions;
use settings::LoadedConfig;
use trials::State;

/// What `train sweep` was asked.
pub struct SweepRequest {
    pub path: PathBuf,
    /// Print the job scripts, submit nothing (Slurm).
    pub dry_run: bool,
    /// Show each trial's state (and write the results when none is queued).
    pub status: bool,
    /// Slurm: after submitting, wait until the trials leave the queue, then write the results.
    pub wait: bool,
    /// Run the parents the trials share, and nothing else (the Slurm parents job).
    pub run_parents: bool,
    /// This binary, which runs each trial (`run-trial`).
    pub exe: PathBuf,
}

/// Each trial's state: its run folder, a recorded failure, or (Slurm) the queue's word.
fn states(sweep: &Sweep, loaded: &[LoadedConfig], queued: &BTreeMap<usize, String>) -> Vec<State> {
    loaded
        .iter()
        .enumerate()
        .map(|(i, l)| match trials::state(sweep, i, l) {
            done @ State::Done { .. } => done,
            other => queued
                .get(&i)
                .map_or(other, |word| State::Queued(word.clone())),
        })
        .collect()
}

/// One results row per trial, with the timings its process recorded (and, on Slurm, its
/// queueing since submission).
fn rows<'s>(
    sweep: &'s Sweep,
    loaded: &[LoadedConfig],
    states: Vec<State>,
) -> Vec<results::Row<'s>> {
    let submitted = if sweep.launcher.kind == LauncherKind::Slurm {
        slurm::submitted_at(sweep)
    } else {
        BTreeMap::new()
    };
    sweep
        .trials
        .iter()
        .zip(states)
        .zip(loaded)
        .map(|((trial, state), loaded)| {
            let timing = trials::timing(sweep, trial.index);
            let summary = match &state {
                State::Done { summary, .. } => Some(&**summary),
                _ => None,
            };
            results::Row {
                hparams: settings::identity::run_hparams(loaded, summary),
                wall_s: timing.map(|t| t.ended - t.started),
                queue_s: timing
                    .zip(submitted.get(&trial.index))
                    .map(|(t, s)| t.started - s),
                trial,
                state,
            }
        })
        .collect()
}

fn count(states: &[State], word: &str) -> usize {
    states.iter().filter(|s| s.word() == word).count()
}

/// Prints one line per trial and writes the results files; errors when trials failed.
fn finish(sweep: &Sweep, loaded: &[LoadedConfig], states: Vec<State>) -> Result<(), SweepError> {
    let rows = rows(sweep, loaded, states);
    print_states(sweep, &rows);
    // Results are never rewritten with less than they had: a trial done when they were last
    // written and not found now means its run moved (or another output folder is in use).
    let done: Vec<usize> = rows
        .iter()
        .filter(|r| matches!(r.state, State::Done { .. }))
        .map(|r| r.trial.index)
        .collect();
    let lost: Vec<usize> = results::last_done(sweep)
        .into_iter()
        .filter(|i| !done.contains(i))
        .collect();
    if !lost.is_empty() {
        safeio::errln!(
            "warning: trials {lost:?} were done when {} was last written, and their runs are \
             not found now (moved, deleted, or another output folder): the results are left as \
             they were (delete {} to write them anyway)",
            sweep.dir.join("results.md").display(),
            sweep.dir.join(results::DONE_RECORD).display()
        );
        return Ok(());
    }
    let written = results::write(sweep, &rows)?;
    results::record_done(sweep, &done)?;
    for path in &written {
        safeio::outln!("wrote {}", path.display());
    }
    let failed = rows
        .iter()
        .filter(|r| matches!(r.state, State::Failed(_)))
        .count();
    if failed > 0 {
        return Err(SweepError::TrialsFailed {
            failed,
            total: rows.len(),
            results: sweep.dir.join("results.md"),
        });
    }
    Ok(())
}

fn print_states(sweep: &Sweep, rows: &[results::Row]) {
    safeio::outln!("sweep {} ({} trials):", sweep.name, rows.len());
    for row in rows {
        let detail = match &row.state {
            State::Done { summary, dir } => format!(
                "accuracy {:.2}%, {} bytes, latency p50 {:.3} ms ({})",
                100.0 * summary.accuracy,
                summary.model_bytes,
                summary.latency_ms_p50,
                dir.display()
            ),
            State::Failed(f) => format!(
                "{}; log {}:\n{}",
                f.message,
                sweep.log_file(row.trial.index).display(),
                trials::log_tail(sweep, row.trial.index, 5)
            ),
            _ => String::new(),
        };
        safeio::outln!(
            "  {:>3} {:<40} {:<9} {detail}",
            row.trial.index,
            row.trial.label(),
            row.state.word()
        );
    }
}

/// `train sweep SWEEP`: validates every trial, runs the shared parents once, then the
/// unfinished trials through the launcher; results when they are all done or failed.
pub fn sweep(
    request: &SweepRequest,
    env: &HashMap<String, String>,
    options: &RunOptions,
) -> Result<(), SweepError> {
    let sweep = Sweep::read(&request.path)?;
    let slurm = sweep.launcher.kind == LauncherKind::Slurm;
    if slurm && !request.run_parents && !request.dry_run {
        slurm::require_slurm()?;
    }
    let env = &sweep.settle_env(env)?;
    let loaded = sweep.load_trials(env)?;
    if !request.dry_run && !request.status {
        sweep.record_output(env)?;
    }
    if request.run_parents {
        let all: Vec<&LoadedConfig> = loaded.iter().collect();
        let n = trials::run_parents(&all, options)?;
        safeio::outln!("{n} shared parent stage(s) ready");
        return Ok(());
    }
    let queued = if slurm && !request.dry_run {
        slurm::queued(&sweep)?
    } else {
        BTreeMap::new()
    };
    let now = states(&sweep, &loaded, &queued);
    if request.status {
        if queued.is_empty() {
            return finish(&sweep, &loaded, now);
        }
        let rows = rows(&sweep, &loaded, now);
        print_states(&sweep, &rows);
        return Ok(());
    }
    let todo: Vec<usize> = now
        .iter()
        .enumerate()
        .filter(|(_, s)| matches!(s, State::NotRun | State::Failed(_)))
        .map(|(i, _)| i)
        .collect();
    safeio::outln!(
        "sweep {}: {} trials of {} ({} done, {} queued, {} to run); folder {}",
        sweep.name,
        sweep.trials.len(),
        sweep.base.display(),
        count(&now, "done"),
        queued.len(),
        todo.len(),
        sweep.dir.display()
    );
    if !slurm && request.dry_run {
        for &i in &todo {
            safeio::outln!(
                "would run trial {i} ({}): {} run-trial {} --index {i}",
                sweep.trials[i].label(),
                request.exe.display(),
                sweep.path.display()
            );
        }
        return Ok(());
    }
    if !request.dry_run {
        std::fs::create_dir_all(&sweep.dir).map_err(file::io(sweep.dir.display().to_string()))?;
    }
    if !slurm {
        return run_locally(&sweep, &loaded, &todo, request, options);
    }
    submit_to_slurm(&sweep, &loaded, &todo, (&queued, now), request)
}

/// Runs the trials `todo` on this machine, their shared parents first, then writes the
/// results.
fn run_locally(
    sweep: &Sweep,
    loaded: &[LoadedConfig],
    todo: &[usize],
    request: &SweepRequest,
    options: &RunOptions,
) -> Result<(), SweepError> {
    let todo_loaded: Vec<&LoadedConfig> = todo.iter().map(|&i| &loaded[i]).collect();
    if !todo.is_empty() {
        let n = trials::run_parents(&todo_loaded, options)?;
        safeio::outln!(
            "{n} shared parent stage(s) ready; running {} trial(s), {} at a time",
            todo.len(),
            sweep.launcher.parallel
        );
        local::run(sweep, todo, &request.exe, options.plain)?;
    }
    let now = states(sweep, loaded, &BTreeMap::new());
    finish(sweep, loaded, now)
}

/// Submits the trials `todo` as a Slurm job array (after a job for their shared parents when
/// some are unfinished); with `--wait`, waits for it and writes the results.
fn submit_to_slurm(
    sweep: &Sweep,
    loaded: &[LoadedConfig],
    todo: &[usize],
    (queued, now): (&BTreeMap<usize, String>, Vec<State>),
    request: &SweepRequest,
) -> Result<(), SweepError> {
    let todo_loaded: Vec<&LoadedConfig> = todo.iter().map(|&i| &loaded[i]).collect();
    if todo.is_empty() {
        safeio::outln!("nothing to submit");
        if queued.is_empty() {
            return finish(sweep, loaded, now);
        }
        return Ok(());
    }
    let with_parents = trials::shared_parents(&todo_loaded)
        .iter()
        .any(|p| !trials::is_finished(p));
    for &i in todo {
        let _ = std::fs::remove_file(sweep.status_file(i));
    }
    match slurm::submit(sweep, &request.exe, todo, with_parents, request.dry_run)? {
        None => return Ok(()),
        Some(s) => safeio::outln!(
            "submitted job array {} ({} tasks){}",
            s.array_job,
            s.indices.len(),
            s.parents_job
                .as_ref()
                .map_or(String::new(), |p| format!(" after parents job {p}"))
        ),
    }
    if !request.wait {
        safeio::outln!(
            "`train sweep {} --status` shows progress",
            request.path.display()
        );
        return Ok(());
    }
    wait_for_slurm(sweep, loaded, todo)
}

/// Polls Slurm until the sweep's tasks have left the queue; a task that ended without a word
/// of its own (killed, out of time) is recorded as failed. Then writes the results.
fn wait_for_slurm(
    sweep: &Sweep,
    loaded: &[LoadedConfig],
    todo: &[usize],
) -> Result<(), SweepError> {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if slurm::queued(sweep)?.is_empty() {
            break;
        }
    }
    let now = states(sweep, loaded, &BTreeMap::new());
    for (&i, state) in todo.iter().zip(todo.iter().map(|&i| &now[i])) {
        if matches!(state, State::NotRun) {
            trials::record_failure(
                sweep,
                i,
                &trials::Failure {
                    exit_code: None,
                    message: "the Slurm task ended without finishing (see its log)".into(),
                },
            )?;
        }
    }
    finish(sweep, loaded, states(sweep, loaded, &BTreeMap::new()))
}

/// `train run-trial SWEEP --index I`.
pub fn run_trial(
    path: &Path,
    index: usize,
    env: &HashMap<String, String>,
    options: &RunOptions,
) -> Result<runner::StageOutcome, SweepError> {
    let sweep = Sweep::read(path)?;
    let env = sweep.settle_env(env)?;
    trials::run_trial(&sweep, index, &env, options)
}
