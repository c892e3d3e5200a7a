//! Helpers shared by the end-to-end tests: run the real `train` binary in a temp folder with a
//! cleared environment.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use measure::tensorboard::{read_events, EventValue};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_train")
}

/// A command for the binary, run in `dir`, with only PATH and HOME (for the dataset cache)
/// kept from the environment.
pub fn train(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).env_clear();
    for key in ["PATH", "HOME", "XDG_CACHE_HOME"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes a small but learnable IDX dataset: `n` 8x8 images per split, class `c` lights up
/// row `c` (with noise), 4 classes.
pub fn write_idx_dataset(dir: &Path, n: usize) {
    let mut state = 12345u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 59) as u8
    };
    for split in ["train", "t10k"] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = (i % 4) as u8;
            for r in 0..8 {
                for _ in 0..8 {
                    let base: u8 = if r / 2 == class as usize { 180 } else { 10 };
                    pixels.push(base + noise());
                }
            }
            labels.push(class);
        }
        let images = data::idx::IdxImages {
            rows: 8,
            cols: 8,
            pixels,
        };
        std::fs::write(
            dir.join(format!("{split}-images-idx3-ubyte")),
            data::idx::encode_images(&images),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{split}-labels-idx1-ubyte")),
            data::idx::encode_labels(&labels),
        )
        .unwrap();
    }
}

/// A temp folder holding a small IDX dataset of `n` images per split in `data/`.
pub fn folder_with_data(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx_dataset(&data, n);
    (dir, data)
}

/// Runs `train CONFIG ARGS...` in `dir`, asserting it succeeds; returns its output.
pub fn train_ok(dir: &Path, config: &Path, args: &[&str]) -> String {
    let out = train(dir).arg(config).args(args).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t
}

/// Runs `train bench TARGET --images 10 --warmup 2 EXTRA...` in `dir` (a fresh process loading
/// the model), asserting it succeeds; returns its output.
pub fn bench_ok(dir: &Path, target: &Path, extra: &[&str]) -> String {
    let out = train(dir)
        .arg("bench")
        .arg(target)
        .args(["--images", "10", "--warmup", "2"])
        .args(extra)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    t
}

/// The test accuracy a `train bench` output reports (e.g. `99.30%`).
pub fn bench_accuracy(output: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.contains("test accuracy:"))
        .unwrap_or_else(|| panic!("no accuracy line in\n{output}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

/// A config for a quick MLP run on the IDX folder `data`.
pub fn small_config(data: &Path) -> String {
    format!(
        r#"name = "small"
seed = 3

[data]
dataset = "idx"
path = "{}"

[model]
kind = "mlp"
hidden = [16]

[train]
epochs = 2
batch_size = 16
log_every = 4

[train.optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9

[measure]
latency_images = 20
latency_warmup = 2
"#,
        data.display()
    )
}

pub fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// Scalars that depend on the run's outcome (timings left out), sorted.
pub fn outcome_scalars(run: &Path) -> Vec<(String, i64, f32)> {
    let timing = [
        "epoch_seconds",
        "samples_per_second",
        "summary/latency",
        "summary/throughput",
        "summary/train_seconds",
        "prune/latency",
    ];
    let mut scalars: Vec<_> = read_events(run)
        .unwrap()
        .into_iter()
        .filter_map(|(tag, step, v)| match v {
            EventValue::Scalar(x) if !timing.iter().any(|t| tag.starts_with(t)) => {
                Some((tag, step, x))
            }
            _ => None,
        })
        .collect();
    scalars.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    scalars
}

pub fn only_run_dir(root: &Path, name: &str) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("runs").join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

pub fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Runs `config` to completion in one folder, and killed (SIGKILL) during epoch `kill_epoch`
/// then restarted in another; the two must agree exactly.
pub fn kill_and_resume_matches(config: &str, name: &str, kill_epoch: usize) {
    kill_and_resume_matches_with_env(config, name, kill_epoch, &[]);
}

/// [`kill_and_resume_matches`] with extra environment variables for every run; returns the
/// folders holding the two runs (kept alive by the returned temp dirs).
pub fn kill_and_resume_matches_with_env(
    config: &str,
    name: &str,
    kill_epoch: usize,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, tempfile::TempDir) {
    let train = |dir: &Path| {
        let mut cmd = train(dir);
        cmd.envs(env.iter().copied());
        cmd
    };
    let straight = tempfile::tempdir().unwrap();
    let path = write(&straight.path().join("c.toml"), config);
    let out = train(straight.path())
        .arg(&path)
        .arg("--plain")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let killed = tempfile::tempdir().unwrap();
    let path = write(&killed.path().join("c.toml"), config);
    let mut cmd = train(killed.path());
    cmd.arg(&path).arg("--plain");
    kill_during_epoch(cmd, kill_epoch);
    let run = only_run_dir(killed.path(), name);
    assert!(run.join("checkpoint.bin").exists());
    assert!(
        !run.join("summary.json").exists(),
        "a killed run must not look finished"
    );

    let out = train(killed.path())
        .arg(&path)
        .arg("--plain")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!("from the end of epoch {}", kill_epoch - 1)),
        "{t}"
    );

    let a = only_run_dir(straight.path(), name);
    let (sa, sb) = (summary(&a), summary(&run));
    for key in [
        "accuracy",
        "test_loss",
        "test_errors",
        "params",
        "model_bytes",
        "macs",
        "epochs",
    ] {
        assert_eq!(sa[key], sb[key], "{key}");
    }
    let (ea, eb) = (outcome_scalars(&a), outcome_scalars(&run));
    assert!(ea.iter().any(|(t, _, _)| t == "eval/accuracy"));
    assert_eq!(ea, eb, "TensorBoard histories differ");
    (straight, killed)
}

/// Runs `cmd` (a training run with `--plain`) and SIGKILLs it once it logs a step of epoch
/// `epoch`; asserts it did not finish first.
pub fn kill_during_epoch(mut cmd: Command, epoch: usize) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = format!("epoch {epoch} step");
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let hit = line.starts_with(&marker);
        seen.push(line);
        if hit {
            child.kill().unwrap(); // SIGKILL: no cleanup of any kind
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run ended before it could be killed:\n{}",
        seen.join("\n")
    );
}

/// The run folder `train check` prints (`... results in FOLDER)`).
pub fn checked_folder(check_output: &str) -> String {
    let at = check_output
        .find("results in ")
        .expect("check prints the run folder")
        + "results in ".len();
    let rest = &check_output[at..];
    rest[..rest.find(')').unwrap_or(rest.len())].to_string()
}

/// A folder with a small dataset, `teacher.toml` and `student.toml` distilling from it;
/// returns the folder and the student's config.
pub fn teacher_and_student(n: usize) -> (tempfile::TempDir, PathBuf) {
    let (dir, data) = folder_with_data(n);
    write(
        &dir.path().join("teacher.toml"),
        &small_config(&data).replace("name = \"small\"", "name = \"teacher\""),
    );
    let student = small_config(&data).replace("name = \"small\"", "name = \"student\"")
        + "\n[distill]\nteacher = \"teacher.toml\"\ntemperature = 4.0\nalpha = 0.7\n";
    let student = write(&dir.path().join("student.toml"), &student);
    (dir, student)
}

/// A stage named `name` that starts `from` the stage config `parent` (on the IDX data at
/// `data`) with one technique section `[section]` holding `body`, trained `epochs` epochs at
/// `batch` images per step and learning rate `lr`.
#[allow(dead_code)]
pub fn derived_config(
    name: &str,
    (data, parent): (&Path, &Path),
    (section, body): (&str, &str),
    (epochs, batch, lr): (usize, usize, f64),
) -> String {
    format!(
        r#"name = "{name}"
seed = 3
from = "{}"

[data]
dataset = "idx"
path = "{}"

[{section}]
{body}

[train]
epochs = {epochs}
batch_size = {batch}
log_every = 4

[train.optimizer]
kind = "sgd"
lr = {lr}
momentum = 0.9

[measure]
latency_images = 20
latency_warmup = 2
"#,
        parent.display(),
        data.display()
    )
}
