//! The LibTorch backend (a build with `--features tch`; see scripts/libtorch.sh): the same
//! config trains to the same accuracy on flex and on LibTorch's CPU device, distillation runs
//! on LibTorch, a run checkpointed on one backend resumes on the other, and model files
//! measure on either. Run by `.ci/run`:
//!
//! `LIBTORCH="$(scripts/libtorch.sh)" cargo test -p train --features tch --test libtorch`

mod common;

use std::path::Path;

use common::*;

/// LeNet-5 on MNIST for two epochs, tested on all 10,000 images: about 99.1%. The backends draw
/// different initial weights from the same seed; at this length that moves the accuracy by a
/// tenth or two (one epoch on 20,000 images: 97.5-98.1%, too noisy to compare at 0.5 points).
const LENET: &str = r#"name = "lenet"
seed = 7
[data]
dataset = "mnist"
[model]
kind = "lenet5"
[train]
epochs = 2
batch_size = 64
log_every = 50
optimizer = { kind = "sgd", lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 5e-4 }
schedule = { kind = "cosine", warmup_epochs = 0.1 }
[measure]
latency_images = 50
latency_warmup = 5
"#;

fn trained_on(device: &str, config: &str, name: &str) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir.path().join("c.toml"), config);
    let out = train_ok(
        dir.path(),
        &path,
        &["--plain", "--set", &format!("device={device}")],
    );
    let run = only_run_dir(dir.path(), name);
    let summary = summary(&run);
    assert_eq!(summary["device"], device, "{out}");
    (dir, summary)
}

#[test]
fn lenet_trains_to_the_same_accuracy_on_flex_and_on_libtorch() {
    let (_a, flex) = trained_on("cpu", LENET, "lenet");
    let (_b, torch) = trained_on("libtorch", LENET, "lenet");
    let (fa, ta) = (
        flex["accuracy"].as_f64().unwrap(),
        torch["accuracy"].as_f64().unwrap(),
    );
    // What the closing note quotes: accuracy, training speed, batch-1 latency per backend.
    for (name, s) in [("flex", &flex), ("libtorch", &torch)] {
        eprintln!(
            "{name}: accuracy {:.2}%, {:.0} training samples/s, batch-1 p50 {:.3} ms",
            100.0 * s["accuracy"].as_f64().unwrap(),
            s["train_samples_per_s"].as_f64().unwrap(),
            s["latency_ms_p50"].as_f64().unwrap(),
        );
    }
    assert!(fa > 0.95 && ta > 0.95, "flex {fa}, libtorch {ta}");
    assert!(
        (fa - ta).abs() <= 0.005,
        "flex {fa:.4} and libtorch {ta:.4} differ by more than 0.5 points"
    );
    assert_eq!(flex["params"], torch["params"]);
    assert_eq!(flex["model_bytes"], torch["model_bytes"]);
}

#[test]
fn distillation_runs_on_libtorch_with_its_teacher_trained_there_too() {
    let (dir, student) = teacher_and_student(400);
    let out = train_ok(
        dir.path(),
        &student,
        &["--plain", "--set", "device=libtorch"],
    );
    let teacher = summary(&only_run_dir(dir.path(), "teacher"));
    let student = summary(&only_run_dir(dir.path(), "student"));
    // The teacher is a parent run launched by the student's stage: it inherits the device.
    assert_eq!(teacher["device"], "libtorch", "{out}");
    assert_eq!(student["device"], "libtorch", "{out}");
    assert!(student["accuracy"].as_f64().unwrap() > 0.9, "{out}");
}

/// Starts `config` on `first`, SIGKILLs it during epoch 2, and finishes it on `second`.
fn killed_on_then_resumed_on(first: &str, second: &str) {
    let (dir, data) = folder_with_data(400);
    let config = small_config(&data).replace("epochs = 2", "epochs = 3");
    let path = write(&dir.path().join("c.toml"), &config);
    let mut cmd = train(dir.path());
    cmd.arg(&path)
        .args(["--plain", "--set", &format!("device={first}")]);
    kill_during_epoch(cmd, 2);
    let run = only_run_dir(dir.path(), "small");
    assert!(run.join("checkpoint.bin").exists());

    let out = train_ok(
        dir.path(),
        &path,
        &["--plain", "--set", &format!("device={second}")],
    );
    assert!(out.contains("from the end of epoch 1"), "{out}");
    let summary = summary(&run);
    assert_eq!(summary["device"], second);
    assert_eq!(summary["epochs"], 3);
    assert!(summary["accuracy"].as_f64().unwrap() > 0.9, "{out}");
}

#[test]
fn a_run_checkpointed_on_flex_resumes_on_libtorch() {
    killed_on_then_resumed_on("cpu", "libtorch");
}

#[test]
fn a_run_checkpointed_on_libtorch_resumes_on_flex() {
    killed_on_then_resumed_on("libtorch", "cpu");
}

/// A model trained on one backend measures the same test accuracy on the other.
#[test]
fn model_files_measure_the_same_on_either_backend() {
    let (dir, data) = folder_with_data(400);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    train_ok(dir.path(), &path, &["--plain"]);
    let run = only_run_dir(dir.path(), "small");
    let accuracy_on = |device: &str| {
        let t = bench_ok(dir.path(), &run, &["--device", device]);
        assert!(t.contains(&format!("on {device},")), "{t}");
        bench_accuracy(&t)
    };
    assert_eq!(accuracy_on("cpu"), accuracy_on("libtorch"));
}

/// A MobileNetV2 (its depthwise convolutions: our kernel on flex, LibTorch's grouped
/// convolution there) trained on flex measures the same test accuracy on LibTorch.
#[test]
fn a_mobilenet_trained_on_flex_measures_the_same_on_libtorch() {
    let (dir, data) = folder_with_data(64);
    let config = small_config(&data)
        .replace(
            "kind = \"mlp\"\nhidden = [16]",
            "kind = \"mobilenet-v2\"\nwidth_mult = 0.25",
        )
        .replace("dataset = \"idx\"", "dataset = \"idx\"\ninput_size = 32");
    assert!(config.contains("mobilenet-v2") && config.contains("input_size"));
    let path = write(&dir.path().join("c.toml"), &config);
    train_ok(dir.path(), &path, &["--plain"]);
    let run = only_run_dir(dir.path(), "small");
    let accuracy_on =
        |device: &str| bench_accuracy(&bench_ok(dir.path(), &run, &["--device", device]));
    assert_eq!(accuracy_on("cpu"), accuracy_on("libtorch"));
}

#[test]
fn cuda_without_a_gpu_is_one_clear_error_before_anything_runs() {
    let (dir, data) = folder_with_data(40);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    // This test machine's LibTorch is the CPU-only build (scripts/libtorch.sh).
    let out = train(dir.path())
        .arg(&path)
        .args(["--set", "device=cuda"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("device") && t.contains("no CUDA device"), "{t}");
    assert!(!Path::new(&dir.path().join("runs")).exists(), "{t}");
}

/// A Slurm sweep whose trials train on CUDA must ask Slurm for GPUs; on a login node without
/// a GPU the sweep is otherwise valid (the GPU is checked where each trial runs).
#[test]
fn a_slurm_sweep_on_cuda_needs_gpus_and_is_valid_without_a_local_gpu() {
    let (dir, data) = folder_with_data(40);
    write(&dir.path().join("base.toml"), &small_config(&data));
    let sweep = |gpus: usize| {
        let path = write(
            &dir.path().join(format!("sweep{gpus}.toml")),
            &format!(
                "name = \"gpu{gpus}\"\nbase = \"base.toml\"\n[grid]\ndevice = [\"cuda\"]\n\
                 seed = [1, 2]\n[launcher]\nkind = \"slurm\"\ngpus = {gpus}\n"
            ),
        );
        let out = train(dir.path())
            .args(["sweep", path.to_str().unwrap(), "--dry-run"])
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };
    let (ok, t) = sweep(0);
    assert!(
        !ok && t.contains("launcher.gpus is 0") && t.contains("trial 0"),
        "{t}"
    );
    let (ok, t) = sweep(1);
    assert!(ok && t.contains("--gres=gpu:1"), "{t}");
    assert!(!dir.path().join("runs").exists(), "{t}");
}
