//! Sweeps through the real binary: the local launcher and a real one-node Slurm (started by
//! `scripts/slurm-up.sh`) give the same results; failed trials are recorded with their log
//! and re-run alone once fixed; finished trials are never run again; TensorBoard's own reader
//! finds the HParams data; bad sweeps are refused before anything runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts (or finds) the one-node Slurm cluster; returns its `SLURM_CONF`.
fn slurm() -> String {
    let out = Command::new(root().join("scripts/slurm-up.sh"))
        .output()
        .expect("bash runs scripts/slurm-up.sh");
    assert!(
        out.status.success(),
        "starting Slurm failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A base config (`base.toml`) in `dir` that fine-tunes a small parent (`parent.toml`):
/// trials share the parent, which must run once, first.
fn base(dir: &Path, data: &Path) -> PathBuf {
    write(
        &dir.join("parent.toml"),
        &small_config(data).replace("name = \"small\"", "name = \"parent\""),
    );
    let model = "[model]\nkind = \"mlp\"\nhidden = [16]\n\n";
    let config = small_config(data)
        .replace(
            "name = \"small\"",
            "name = \"trial\"\nfrom = \"parent.toml\"",
        )
        .replace(model, "")
        .replace("epochs = 2", "epochs = 1");
    write(&dir.join("base.toml"), &config)
}

fn sweep_file(dir: &Path, name: &str, launcher: &str, extra_trial: Option<&str>) -> PathBuf {
    let mut text = format!(
        "name = \"{name}\"\nbase = \"base.toml\"\n[grid]\nseed = [1, 2]\n\"train.optimizer.lr\" = [0.05, 0.1]\n"
    );
    if let Some(lr) = extra_trial {
        text += &format!("[[trials]]\n\"train.optimizer.lr\" = {lr}\n");
    }
    text += &format!("[launcher]\n{launcher}\n");
    write(&dir.join(format!("{name}.toml")), &text)
}

fn sweep(dir: &Path, file: &Path, args: &[&str], slurm_conf: Option<&str>) -> Output {
    let mut cmd = train(dir);
    cmd.arg("sweep").arg(file).arg("--plain").args(args);
    if let Some(conf) = slurm_conf {
        cmd.env("SLURM_CONF", conf);
    }
    cmd.output().unwrap()
}

/// `results.csv` as rows of cells, the run folder column left out (it differs per folder).
fn results(dir: &Path, name: &str) -> Vec<Vec<String>> {
    let text =
        std::fs::read_to_string(dir.join("runs/sweeps").join(name).join("results.csv")).unwrap();
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    let header = rows[0].clone();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| {
            !["run", "wall_s", "queue_s", "train_s", "latency_ms_p50"].contains(&header[i].as_str())
        })
        .collect();
    for row in &mut rows {
        *row = keep.iter().map(|&i| row[i].clone()).collect();
    }
    rows
}

const HPARAMS_READER: &str = r#"
import json, os, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
root = sys.argv[1]
out = {}
for sub in [""] + sorted(os.listdir(root)):
    d = os.path.join(root, sub)
    if not os.path.isdir(d):
        continue
    ea = EventAccumulator(d, size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    try:
        content = ea.PluginTagToContent("hparams")
    except KeyError:
        content = {}
    entry = {"scalars": ea.Tags()["scalars"]}
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        kind = data.WhichOneof("data")
        if kind == "experiment":
            entry["hparams"] = [h.name for h in data.experiment.hparam_infos]
            entry["domains"] = {h.name: [h.domain_interval.min_value, h.domain_interval.max_value]
                                for h in data.experiment.hparam_infos
                                if h.WhichOneof("domain") == "domain_interval"}
            entry["metrics"] = [m.name.tag for m in data.experiment.metric_infos]
        elif kind == "session_start_info":
            entry["values"] = {k: getattr(v, v.WhichOneof("kind"))
                               for k, v in data.session_start_info.hparams.items()}
        elif kind == "session_end_info":
            entry["status"] = data.session_end_info.status
    out[sub or "."] = entry
print(json.dumps(out))
"#;

fn python_with_tensorboard() -> String {
    let out = Command::new(root().join("scripts/tensorboard-venv.sh"))
        .output()
        .expect("bash runs scripts/tensorboard-venv.sh");
    assert!(out.status.success(), "{}", text(&out));
    format!("{}/bin/python", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn a_local_sweep_records_a_failed_trial_reruns_only_it_once_fixed_and_writes_hparams() {
    let (dir, data) = folder_with_data(64);
    base(dir.path(), &data);
    let file = sweep_file(
        dir.path(),
        "local",
        "kind = \"local\"\nparallel = 2",
        Some("1e30"),
    );
    let out = sweep(dir.path(), &file, &[], None);
    let t = text(&out);
    assert!(
        !out.status.success(),
        "a failed trial must fail the sweep: {t}"
    );
    assert!(t.contains("1 shared parent stage(s) ready"), "{t}");
    assert!(t.contains("1 of 5 trials failed"), "{t}");
    let md = std::fs::read_to_string(dir.path().join("runs/sweeps/local/results.md")).unwrap();
    assert!(md.contains("## Failed trials"), "{md}");
    assert!(
        md.contains("diverged"),
        "the log tail is in the report: {md}"
    );
    // A plot of test errors against each numeric swept key, one curve per value of the other.
    for key in ["seed", "train_optimizer_lr"] {
        let plot = format!("results-errors-{key}.png");
        assert!(md.contains(&plot), "{md}");
        assert!(dir.path().join("runs/sweeps/local").join(&plot).exists());
    }
    let rows = results(dir.path(), "local");
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[1..5].iter().filter(|r| r[3] == "done").count(), 4);
    assert_eq!(rows[5][3], "failed");

    // The cause fixed (a sane learning rate): only that trial runs.
    let text_before = std::fs::read_to_string(&file).unwrap();
    write(&file, &text_before.replace("= 1e30", "= 0.02"));
    let out = sweep(dir.path(), &file, &[], None);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("(4 done, 0 queued, 1 to run)"), "{t}");
    assert_eq!(t.matches(": started").count(), 1, "{t}");
    // Run again: nothing runs, every result kept.
    let out = sweep(dir.path(), &file, &[], None);
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("0 to run") && !t.contains("started"),
        "{t}"
    );

    // TensorBoard's own reader: the experiment, and each trial's values, status and metrics.
    let py = python_with_tensorboard();
    let out = Command::new(py)
        .args(["-c", HPARAMS_READER])
        .arg(dir.path().join("runs/sweeps/local/tensorboard"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        read["."]["hparams"],
        serde_json::json!(["seed", "train.optimizer.lr"])
    );
    assert_eq!(read["."]["metrics"][0], "summary/accuracy");
    // Resolved values: the listed trial sets only the rate, and runs with the base's seed 3.
    assert_eq!(read["."]["domains"]["seed"], serde_json::json!([1.0, 3.0]));
    assert_eq!(
        read["."]["domains"]["train.optimizer.lr"],
        serde_json::json!([0.02, 0.1])
    );
    let trial = &read["001-seed=1,train.optimizer.lr=0.1"];
    assert_eq!(trial["values"]["seed"], 1.0);
    assert_eq!(trial["values"]["train.optimizer.lr"], 0.1);
    assert_eq!(trial["status"], 1, "STATUS_SUCCESS");
    assert!(trial["scalars"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("summary/accuracy")));
    assert_eq!(read.as_object().unwrap().len(), 6, "{read}");
}

#[test]
fn a_slurm_array_gives_the_local_results_and_a_second_invocation_submits_nothing() {
    let conf = slurm();
    let (local_dir, data) = folder_with_data(64);
    base(local_dir.path(), &data);
    let local = sweep_file(
        local_dir.path(),
        "s",
        "kind = \"local\"\nparallel = 1",
        None,
    );
    let out = sweep(local_dir.path(), &local, &[], None);
    assert!(out.status.success(), "{}", text(&out));

    let slurm_dir = tempfile::tempdir().unwrap();
    base(slurm_dir.path(), &data);
    let file = sweep_file(
        slurm_dir.path(),
        "s",
        "kind = \"slurm\"\ncpus = 1\nthrottle = 2",
        Some("1e30"),
    );
    let out = sweep(slurm_dir.path(), &file, &["--dry-run"], Some(&conf));
    let t = text(&out);
    assert!(t.contains("#SBATCH --array=0,1,2,3,4%2"), "{t}");
    assert!(t.contains("parents job"), "{t}");
    assert!(!slurm_dir
        .path()
        .join("runs/sweeps/s/submissions.json")
        .exists());

    let out = sweep(slurm_dir.path(), &file, &["--wait"], Some(&conf));
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("submitted job array") && t.contains("after parents job"),
        "{t}"
    );
    assert!(t.contains("1 of 5 trials failed"), "{t}");
    let md = std::fs::read_to_string(slurm_dir.path().join("runs/sweeps/s/results.md")).unwrap();
    assert!(md.contains("diverged"), "{md}");
    // The four grid trials: the local launcher's results exactly.
    let (a, b) = (
        results(local_dir.path(), "s"),
        results(slurm_dir.path(), "s"),
    );
    assert_eq!(a[..5], b[..5]);

    // Fixed: one task submitted; then nothing at all.
    let text_before = std::fs::read_to_string(&file).unwrap();
    write(&file, &text_before.replace("= 1e30", "= 0.02"));
    let out = sweep(slurm_dir.path(), &file, &["--wait"], Some(&conf));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("(1 tasks)") && !t.contains("parents job"), "{t}");
    let out = sweep(slurm_dir.path(), &file, &[], Some(&conf));
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("nothing to submit"),
        "{t}"
    );
    let out = sweep(slurm_dir.path(), &file, &["--status"], Some(&conf));
    assert_eq!(text(&out).matches(" done ").count(), 5, "{}", text(&out));
}

#[test]
fn bad_sweeps_are_refused_before_anything_runs() {
    let (dir, data) = folder_with_data(32);
    base(dir.path(), &data);
    for (grid, expected) in [
        (
            "\"train.optimizer.lrr\" = [0.1]",
            "trial 0 (train.optimizer.lrr=0.1)",
        ),
        ("seed = []", "give at least one value"),
        ("seed = [\"one\"]", "trial 0 (seed=one)"),
        ("\"train.epochs\" = [1, -2]", "trial 1 (train.epochs=-2)"),
    ] {
        let file = write(
            &dir.path().join("bad.toml"),
            &format!("name = \"bad\"\nbase = \"base.toml\"\n[grid]\n{grid}\n"),
        );
        let out = sweep(dir.path(), &file, &[], None);
        let t = text(&out);
        assert!(!out.status.success(), "{grid} accepted");
        assert!(t.contains(expected), "{grid}: {t}");
        assert!(!dir.path().join("runs/sweeps/bad").exists(), "{grid}: {t}");
        assert!(
            !dir.path().join("runs/parent").exists(),
            "{grid} ran the parent"
        );
    }
    // A Slurm launcher where there is no Slurm.
    let file = sweep_file(dir.path(), "nosl", "kind = \"slurm\"", None);
    let out = train(dir.path())
        .args(["sweep", file.to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("needs Slurm's `sbatch` on PATH"), "{t}");
    assert!(!dir.path().join("runs").exists(), "{t}");
}
