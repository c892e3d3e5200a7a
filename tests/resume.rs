//! A run killed at any moment resumes from its last complete epoch and ends with exactly the
//! numbers of an uninterrupted run; a diverging run stops with a clear message and keeps its
//! last good checkpoint.

mod common;

use common::*;

#[test]
fn killed_lenet_on_mnist_resumes_to_identical_numbers() {
    let config = r#"name = "resume-lenet"
seed = 7
[data]
dataset = "mnist"
train_limit = 3000
test_limit = 1000
augment = { shift_pixels = 1, noise_std = 0.05 }
[model]
kind = "lenet5"
[train]
epochs = 3
batch_size = 64
log_every = 5
optimizer = { kind = "sgd", lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = { kind = "cosine", warmup_epochs = 0.5 }
[measure]
latency_images = 20
latency_warmup = 2
"#;
    kill_and_resume_matches(config, "resume-lenet", 2);
}

#[test]
fn killed_mlp_with_dropout_and_adam_resumes_to_identical_numbers() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_dataset(dir.path(), 400);
    let config = small_config(dir.path())
        .replace(
            "hidden = [16]",
            "hidden = [32, 32]\ndropout = 0.3\ninput_dropout = 0.1",
        )
        .replace("epochs = 2", "epochs = 4")
        .replace(
            "kind = \"sgd\"\nlr = 0.05\nmomentum = 0.9",
            "kind = \"adam\"\nlr = 0.003",
        );
    kill_and_resume_matches(&config, "small", 3);
}

#[test]
fn nan_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint() {
    let (dir, data) = folder_with_data(64);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    // 64 samples / batch 16 = 4 steps per epoch: step 6 is epoch 2, step 2.
    let out = train(dir.path())
        .arg(&path)
        .env("TRAIN_FAULT_NONFINITE_AT_STEP", "6")
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("loss became NaN at epoch 2, step 2"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    let run = only_run_dir(dir.path(), "small");
    assert!(!run.join("summary.json").exists());
    assert!(t.contains("epoch 1"), "{t}");

    // The checkpoint of epoch 1 is intact: the same command without the fault resumes from it.
    let out = train(dir.path()).arg(&path).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("from the end of epoch 1"), "{t}");
    assert!(run.join("summary.json").exists());
}

#[test]
fn a_finished_run_is_reused_not_retrained() {
    let (dir, data) = folder_with_data(32);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    let first = train(dir.path()).arg(&path).output().unwrap();
    assert!(first.status.success(), "{}", text(&first));
    let again = train(dir.path()).arg(&path).output().unwrap();
    let t = text(&again);
    assert!(again.status.success(), "{t}");
    assert!(t.contains("reusing the finished run"), "{t}");
    assert!(!t.contains("epoch 1/2"), "{t}");
    // A changed config is a different result: a new folder.
    let other = train(dir.path())
        .arg(&path)
        .args(["--set", "seed=4"])
        .output()
        .unwrap();
    assert!(other.status.success());
    assert_eq!(
        std::fs::read_dir(dir.path().join("runs/small"))
            .unwrap()
            .count(),
        2
    );
}
