//! The Slurm launcher: one job array (one task per unfinished trial), the shared parents as a
//! job it depends on, and the queue's view of each trial from `squeue` and `sacct` (their
//! parsable text forms: the JSON schemas differ between Slurm versions).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::file::{io, Sweep, SweepError};
use crate::trials::absolute;

/// What one `train sweep` submitted, kept in `submissions.json` of the sweep folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub array_job: String,
    pub parents_job: Option<String>,
    /// The trial indices of the array's tasks.
    pub indices: Vec<usize>,
    /// When it was submitted (seconds since the epoch).
    #[serde(default)]
    pub submitted_at: f64,
}

const SUBMISSIONS: &str = "submissions.json";

pub fn submissions(sweep: &Sweep) -> Vec<Submission> {
    safeio::read_text(&sweep.dir.join(SUBMISSIONS))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn save_submissions(sweep: &Sweep, all: &[Submission]) -> Result<(), SweepError> {
    let path = sweep.dir.join(SUBMISSIONS);
    let text = serde_json::to_string_pretty(all).unwrap_or_default();
    std::fs::write(&path, text).map_err(io(path.display().to_string()))
}

/// Errors unless `sbatch`, `squeue` and `sacct` can be run.
pub fn require_slurm() -> Result<(), SweepError> {
    for tool in ["sbatch", "squeue", "sacct"] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        if !found {
            return Err(SweepError::Slurm(format!(
                "launcher.kind = \"slurm\" needs Slurm's `{tool}` on PATH, and this machine has \
                 none: run the sweep on the cluster's login node, or set launcher.kind = \"local\""
            )));
        }
    }
    Ok(())
}

fn options(sweep: &Sweep) -> Vec<String> {
    let l = &sweep.launcher;
    let mut out = vec![format!("--job-name={}", sweep.name)];
    if let Some(p) = &l.partition {
        out.push(format!("--partition={p}"));
    }
    if l.gpus > 0 {
        out.push(format!("--gres=gpu:{}", l.gpus));
    }
    out.push(format!("--cpus-per-task={}", l.cpus));
    if let Some(m) = &l.mem {
        out.push(format!("--mem={m}"));
    }
    if let Some(t) = &l.time {
        out.push(format!("--time={t}"));
    }
    if let Some(a) = &l.account {
        out.push(format!("--account={a}"));
    }
    out.extend(l.extra.iter().cloned());
    out
}

fn script(options: &[String], command: &str) -> String {
    let mut text = String::from("#!/bin/bash\n");
    for option in options {
        text += &format!("#SBATCH {option}\n");
    }
    // Each task's threads are its CPUs; Slurm exports CUDA_VISIBLE_DEVICES for its GPUs.
    text += "export COMPRESS_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n";
    text += &format!("exec {command}\n");
    text
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// The parents' job script and the array's, for the trials `indices`.
pub fn scripts(
    sweep: &Sweep,
    exe: &Path,
    indices: &[usize],
    with_parents: bool,
) -> (Option<String>, String) {
    let sweep_path = quote(&absolute(&sweep.path));
    let exe = quote(&absolute(exe));
    let logs = absolute(&sweep.logs_dir());
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut common = options(sweep);
    common.push(format!("--chdir={}", cwd.display()));
    // A preempted task goes back to the queue and, being an ordinary run, resumes from its
    // last checkpoint.
    common.push("--requeue".to_string());
    let parents = with_parents.then(|| {
        let mut o = common.clone();
        o[0] = format!("--job-name={}-parents", sweep.name);
        o.push(format!("--output={}", logs.join("parents.log").display()));
        script(
            &o,
            &format!("{exe} sweep {sweep_path} --run-parents --plain"),
        )
    });
    let list: Vec<String> = indices.iter().map(|i| i.to_string()).collect();
    let mut array = format!("--array={}", list.join(","));
    if sweep.launcher.throttle > 0 {
        array += &format!("%{}", sweep.launcher.throttle);
    }
    let mut o = common;
    o.push(array);
    o.push(format!("--output={}", logs.join("%a.log").display()));
    let trials = script(
        &o,
        &format!("{exe} run-trial {sweep_path} --index \"$SLURM_ARRAY_TASK_ID\" --plain"),
    );
    (parents, trials)
}

fn sbatch(script_path: &Path, dependency: Option<&str>) -> Result<String, SweepError> {
    let mut cmd = Command::new("sbatch");
    cmd.arg("--parsable");
    if let Some(job) = dependency {
        cmd.arg(format!("--dependency=afterok:{job}"));
    }
    let out = cmd
        .arg(script_path)
        .output()
        .map_err(io("running sbatch"))?;
    if !out.status.success() {
        return Err(SweepError::Slurm(format!(
            "sbatch {} failed: {}",
            script_path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SweepError::Slurm(format!(
            "sbatch printed no job id: {text:?}"
        )));
    }
    Ok(id)
}

/// Submits the trials `indices` as one array (after a parents job when `with_parents`);
/// `dry_run` prints the scripts and submits nothing.
pub fn submit(
    sweep: &Sweep,
    exe: &Path,
    indices: &[usize],
    with_parents: bool,
    dry_run: bool,
) -> Result<Option<Submission>, SweepError> {
    let (parents, trials) = scripts(sweep, exe, indices, with_parents);
    if dry_run {
        if let Some(p) = &parents {
            safeio::outln!("--- parents job (the array depends on it) ---\n{p}");
        }
        safeio::outln!("--- trials: one array task per trial ---\n{trials}");
        return Ok(None);
    }
    std::fs::create_dir_all(sweep.logs_dir())
        .map_err(io(sweep.logs_dir().display().to_string()))?;
    let parents_job = match parents {
        Some(text) => {
            let path = sweep.dir.join("parents.sbatch");
            std::fs::write(&path, text).map_err(io(path.display().to_string()))?;
            Some(sbatch(&path, None)?)
        }
        None => None,
    };
    let path = sweep.dir.join("trials.sbatch");
    std::fs::write(&path, trials).map_err(io(path.display().to_string()))?;
    let submitted_at = crate::trials::now_secs();
    let array_job = sbatch(&path, parents_job.as_deref())?;
    let submission = Submission {
        array_job,
        parents_job,
        indices: indices.to_vec(),
        submitted_at,
    };
    let mut all = submissions(sweep);
    all.push(submission.clone());
    save_submissions(sweep, &all)?;
    Ok(Some(submission))
}

/// The queue's state of each trial that is in it (pending, running, ...), by index.
pub fn queued(sweep: &Sweep) -> Result<BTreeMap<usize, String>, SweepError> {
    let jobs: Vec<String> = submissions(sweep)
        .iter()
        .map(|s| s.array_job.clone())
        .collect();
    let mut out = BTreeMap::new();
    if jobs.is_empty() {
        return Ok(out);
    }
    let output = Command::new("squeue")
        .args(["-h", "-r", "-o", "%i %T", "-j", &jobs.join(",")])
        .output()
        .map_err(io("running squeue"))?;
    // squeue errors on ids it no longer knows (all finished): nothing is queued then.
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        if let Some(index) = task_index(id) {
            out.insert(index, state.to_lowercase());
        }
    }
    Ok(out)
}

/// When each trial's latest array task was submitted (seconds since the epoch).
pub fn submitted_at(sweep: &Sweep) -> BTreeMap<usize, f64> {
    let mut out = BTreeMap::new();
    for s in submissions(sweep) {
        for &i in &s.indices {
            out.insert(i, s.submitted_at);
        }
    }
    out
}

fn task_index(id: &str) -> Option<usize> {
    id.split('_').nth(1).and_then(|t| t.parse().ok())
}
