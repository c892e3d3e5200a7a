//! The local launcher: trials as child processes of this binary (`run-trial`), `parallel` at a
//! time, each with its share of the cores and its log in the sweep's `logs/` folder.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::file::{io, Sweep, SweepError};
use crate::trials::{self, absolute, Failure};

/// Runs the trials `todo` (indices) with `exe run-trial`.
pub fn run(sweep: &Sweep, todo: &[usize], exe: &Path, plain: bool) -> Result<(), SweepError> {
    let logs = sweep.logs_dir();
    std::fs::create_dir_all(&logs).map_err(io(logs.display().to_string()))?;
    let parallel = sweep.launcher.parallel.min(todo.len().max(1));
    let cores = settings::context::cores();
    let threads = (cores / parallel).max(1);
    let bar = if plain {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(todo.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("trials {bar:30} {pos}/{len} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut queue = todo.iter().copied();
    let mut running: Vec<(usize, Child, Instant)> = Vec::new();
    let mut done = 0;
    loop {
        while running.len() < parallel {
            let Some(index) = queue.next() else { break };
            let child = start_trial(sweep, index, exe, threads)?;
            let label = sweep.trials[index].label();
            say(
                &bar,
                plain,
                &format!("trial {index} ({label}): started, {threads} threads"),
            );
            running.push((index, child, Instant::now()));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut still = Vec::new();
        for (index, mut child, started) in running {
            match child.try_wait().map_err(io("waiting for a trial"))? {
                None => still.push((index, child, started)),
                Some(status) => {
                    done += 1;
                    bar.set_position(done);
                    let seconds = started.elapsed().as_secs_f64();
                    trial_ended(sweep, index, status, seconds, (&bar, plain))?;
                }
            }
        }
        running = still;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Starts trial `index` as `exe run-trial`, its output to the trial's log, with `threads`
/// threads; it dies with this process.
fn start_trial(
    sweep: &Sweep,
    index: usize,
    exe: &Path,
    threads: usize,
) -> Result<Child, SweepError> {
    let log_path = sweep.log_file(index);
    let log = std::fs::File::create(&log_path).map_err(io(log_path.display().to_string()))?;
    let err = log
        .try_clone()
        .map_err(io(log_path.display().to_string()))?;
    Command::new(exe)
        .arg("run-trial")
        .arg(absolute(&sweep.path))
        .args(["--index", &index.to_string(), "--plain"])
        .args(["--parent-pid", &std::process::id().to_string()])
        .env(
            format!("{}_THREADS", settings::load::ENV_PREFIX),
            threads.to_string(),
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(io(format!("starting {}", exe.display())))
}

/// A trial's process ended with `status` after `seconds`: says so, and records a failure
/// the trial could not record itself (a signal, an abort).
fn trial_ended(
    sweep: &Sweep,
    index: usize,
    status: std::process::ExitStatus,
    seconds: f64,
    (bar, plain): (&ProgressBar, bool),
) -> Result<(), SweepError> {
    let label = sweep.trials[index].label();
    if status.success() {
        say(
            bar,
            plain,
            &format!("trial {index} ({label}): done in {seconds:.1} s"),
        );
        return Ok(());
    }
    // The trial records its own failure; a process that died without one
    // (a signal, an abort) gets one here.
    if !sweep.status_file(index).exists() {
        trials::record_failure(
            sweep,
            index,
            &Failure {
                exit_code: status.code(),
                message: match status.code() {
                    Some(code) => format!("exited with code {code}"),
                    None => "killed by a signal".to_string(),
                },
            },
        )?;
    }
    say(
        bar,
        plain,
        &format!(
            "trial {index} ({label}): FAILED ({}), log {}:\n{}",
            status
                .code()
                .map_or("killed by a signal".to_string(), |c| format!(
                    "exit code {c}"
                )),
            sweep.log_file(index).display(),
            trials::log_tail(sweep, index, 5)
        ),
    );
    Ok(())
}

fn say(bar: &ProgressBar, plain: bool, line: &str) {
    if plain {
        safeio::outln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Ties this process (a trial the local launcher started) to the sweep process `parent`: the
/// kernel kills it when the sweep dies, even by kill -9 (`PR_SET_PDEATHSIG`), so no trial
/// trains on orphaned. When the sweep is already gone, this returns an error.
pub fn die_with_parent(parent: u32) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("cannot tie this trial to its sweep: {e}"))?;
    // The sweep may have died before the call above: then this process has a new parent.
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return Err(format!(
            "the sweep that started this trial (process {parent}) has ended"
        ));
    }
    Ok(())
}
