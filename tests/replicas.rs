//! CPU data parallelism (`train.replicas`): a step split across replicas follows the
//! single-replica run, the same seed gives the same numbers every time, and a replicated run
//! killed mid-epoch resumes to exactly the numbers of an uninterrupted one.

mod common;

use common::*;

const LENET: &str = r#"name = "replicas-lenet"
seed = 5
[data]
dataset = "mnist"
train_limit = 2000
test_limit = 1000
augment = { shift_pixels = 1 }
[model]
kind = "lenet5"
[train]
epochs = 2
batch_size = 64
log_every = 4
optimizer = { kind = "sgd", lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = { kind = "cosine", warmup_epochs = 0.5 }
[measure]
latency_images = 20
latency_warmup = 2
"#;

/// `(step, value)` of `tag` in the run's TensorBoard history.
fn series(run: &std::path::Path, tag: &str) -> Vec<(i64, f32)> {
    outcome_scalars(run)
        .into_iter()
        .filter(|(t, _, _)| t == tag)
        .map(|(_, step, v)| (step, v))
        .collect()
}

/// Trains `config` with `--set train.replicas=R` for each R, each in its own folder (the
/// replica count is not part of the run's identity); returns the runs' folders.
fn runs_with_replicas(config: &str, name: &str, counts: &[usize]) -> Vec<tempfile::TempDir> {
    counts
        .iter()
        .map(|r| {
            let dir = tempfile::tempdir().unwrap();
            let path = write(&dir.path().join("c.toml"), config);
            let out = train_ok(
                dir.path(),
                &path,
                &["--set", &format!("train.replicas={r}")],
            );
            if *r > 1 {
                assert!(out.contains(&format!("training on {r} replicas")), "{out}");
                // What a user comparing with a single-process run must know, said exactly
                // when the model has BatchNorm (every architecture but the MLP).
                let per_replica = format!("BatchNorm normalises each replica's 1/{r} of the batch");
                let mlp = config.contains("kind = \"mlp\"");
                assert_eq!(out.contains(&per_replica), !mlp, "{out}");
            }
            let _ = only_run_dir(dir.path(), name);
            dir
        })
        .collect()
}

#[test]
fn two_replicas_follow_one_and_repeat_exactly() {
    let dirs = runs_with_replicas(LENET, "replicas-lenet", &[1, 2, 2]);
    let runs: Vec<_> = dirs
        .iter()
        .map(|d| only_run_dir(d.path(), "replicas-lenet"))
        .collect();
    let (one, two, again) = (
        series(&runs[0], "train/loss"),
        series(&runs[1], "train/loss"),
        series(&runs[2], "train/loss"),
    );
    assert_eq!(two, again, "same seed, same replicas: the same numbers");
    assert_eq!(one.len(), two.len());
    // The first points: the same data, dropout-free, only BatchNorm's batch statistics differ
    // (each replica normalises its half of the batch), so the losses stay close.
    for ((step, a), (_, b)) in one.iter().zip(&two).take(4) {
        let rel = (a - b).abs() / a.abs().max(1e-6);
        assert!(rel < 0.05, "step {step}: loss {a} (1 replica) vs {b} (2)");
    }
    let accuracy = |run| summary(run)["accuracy"].as_f64().unwrap();
    let (a, b) = (accuracy(&runs[0]), accuracy(&runs[1]));
    assert!(
        (a - b).abs() < 0.02,
        "test accuracy {a} (1 replica) vs {b} (2)"
    );
}

#[test]
fn an_mlp_with_dropout_matches_across_replica_counts() {
    // No BatchNorm, dropout masks drawn per sample: replicas change only the order gradients
    // are added in.
    let (_data_dir, data) = folder_with_data(96);
    let config = small_config(&data)
        .replace(
            "hidden = [16]",
            "hidden = [32, 32]\ndropout = 0.3\ninput_dropout = 0.1",
        )
        .replace("batch_size = 16", "batch_size = 24");
    let dirs = runs_with_replicas(&config, "small", &[1, 3]);
    let runs: Vec<_> = dirs
        .iter()
        .map(|d| only_run_dir(d.path(), "small"))
        .collect();
    let (one, three) = (
        series(&runs[0], "train/loss"),
        series(&runs[1], "train/loss"),
    );
    assert!(!one.is_empty());
    for ((step, a), (_, b)) in one.iter().zip(&three) {
        let rel = (a - b).abs() / a.abs().max(1e-6);
        assert!(rel < 1e-4, "step {step}: loss {a} (1 replica) vs {b} (3)");
    }
}

#[test]
fn a_killed_replicated_run_resumes_to_identical_numbers() {
    let config = LENET
        .replace("[train]\n", "[train]\nreplicas = 2\n")
        .replace("epochs = 2", "epochs = 3");
    kill_and_resume_matches(&config, "replicas-lenet", 2);
}

#[test]
fn too_many_replicas_is_a_clear_error() {
    let (dir, data) = folder_with_data(32);
    let path = write(
        &dir.path().join("c.toml"),
        &small_config(&data).replace("[train]\n", "[train]\nreplicas = 100000\n"),
    );
    let out = train(dir.path()).arg(&path).output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("train.replicas = 100000"), "{t}");
    assert!(t.contains("must be at most"), "{t}");
    assert!(!dir.path().join("runs").exists(), "nothing created");
}
