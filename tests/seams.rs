//! The seams every technique builds on, tried through the real binary: execution settings are
//! not a run's identity and reach parent stages; `from` starts a stage from a parent's
//! weights; a technique that reshapes the model mid-run resumes after kill -9 and leaves a
//! model file that describes itself (bench, profile and teacher use it as it is).

mod common;

use std::path::Path;

use common::*;

/// `train check` prints the run folder a config (with `args`) would use.
fn folder_of(dir: &Path, config: &Path, args: &[&str]) -> String {
    let out = train(dir)
        .arg("check")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    checked_folder(&t)
}

#[test]
fn execution_settings_neither_change_the_run_folder_nor_retrain() {
    let (dir, data) = folder_with_data(64);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let settings = [
        "--set",
        "measure.latency_images=100",
        "--set",
        "threads=1",
        "--set",
        "device=cpu",
        "--set",
        "train.log_every=1",
        "--set",
        "train.eval_batch_size=7",
    ];
    let plain = folder_of(dir.path(), &config, &[]);
    assert_eq!(folder_of(dir.path(), &config, &settings), plain);
    assert_ne!(
        folder_of(dir.path(), &config, &["--set", "seed=4"]),
        plain,
        "a setting that changes the result must change the folder"
    );

    train_ok(dir.path(), &config, &["--plain"]);
    let again = train_ok(dir.path(), &config, &[&["--plain"][..], &settings].concat());
    assert!(again.contains("reusing the finished run"), "{again}");
}

#[test]
fn environment_overrides_reach_the_teacher_stage() {
    let (dir, student) = teacher_and_student(64);
    let out = train(dir.path())
        .arg(&student)
        .arg("--plain")
        .env("COMPRESS_THREADS", "1")
        .env("COMPRESS_MEASURE__LATENCY_IMAGES", "7")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for name in ["teacher", "student"] {
        let s = summary(&only_run_dir(dir.path(), name));
        assert_eq!(s["threads"], 1, "{name}: {s}");
        assert_eq!(s["latency"]["images"], 7, "{name}: {s}");
    }
}

/// A parent trained for 3 epochs, and a child config that starts `from` it.
fn parent_and_child(epochs: usize, lr: f64) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, data) = folder_with_data(200);
    write(
        &dir.path().join("parent.toml"),
        &small_config(&data)
            .replace("name = \"small\"", "name = \"parent\"")
            .replace("epochs = 2", "epochs = 3"),
    );
    let child = small_config(&data)
        .replace(
            "name = \"small\"",
            "name = \"child\"\nfrom = \"parent.toml\"",
        )
        .replace("[model]\nkind = \"mlp\"\nhidden = [16]\n", "")
        .replace("epochs = 2", &format!("epochs = {epochs}"))
        .replace("lr = 0.05", &format!("lr = {lr}"));
    let child = write(&dir.path().join("child.toml"), &child);
    (dir, child)
}

#[test]
fn a_from_stage_of_zero_epochs_reproduces_its_parent_exactly() {
    let (dir, child) = parent_and_child(0, 0.05);
    let out = train_ok(dir.path(), &child, &["--plain"]);
    assert!(out.contains("parent: stage parent trained"), "{out}");
    let parent = summary(&only_run_dir(dir.path(), "parent"));
    let child = summary(&only_run_dir(dir.path(), "child"));
    for key in ["accuracy", "test_errors", "test_loss", "params", "macs"] {
        assert_eq!(parent[key], child[key], "{key}");
    }
    assert_eq!(child["epochs"], 0);
    assert_eq!(child["parent"]["role"], "parent");
}

#[test]
fn a_from_stage_fine_tunes_the_parents_weights() {
    let (dir, child) = parent_and_child(1, 0.001);
    train_ok(dir.path(), &child, &["--plain"]);
    let parent = summary(&only_run_dir(dir.path(), "parent"));
    let tuned = summary(&only_run_dir(dir.path(), "child"));
    // The same single epoch at the same low rate from a fresh model, for contrast.
    let fresh = std::fs::read_to_string(&child)
        .unwrap()
        .replace("from = \"parent.toml\"", "")
        .replace("name = \"child\"", "name = \"fresh\"")
        .replace(
            "[train]",
            "[model]\nkind = \"mlp\"\nhidden = [16]\n\n[train]",
        );
    let fresh = write(&dir.path().join("fresh.toml"), &fresh);
    train_ok(dir.path(), &fresh, &["--plain"]);
    let fresh = summary(&only_run_dir(dir.path(), "fresh"));
    let (p, t, f) = (
        parent["accuracy"].as_f64().unwrap(),
        tuned["accuracy"].as_f64().unwrap(),
        fresh["accuracy"].as_f64().unwrap(),
    );
    assert!(p > 0.9, "the parent learned the task: {p}");
    assert!(t > 0.9 && t > f + 0.3, "tuned {t} vs fresh {f}");
    assert_eq!(tuned["epochs"], 1);
}

#[test]
fn a_reshaping_technique_resumes_after_kill_and_leaves_a_self_describing_model() {
    let (_data_dir, data) = folder_with_data(200);
    let config = small_config(&data)
        .replace("name = \"small\"", "name = \"narrow\"")
        .replace("epochs = 2", "epochs = 3")
        .replace("hidden = [16]", "hidden = [32, 16]");
    let (straight, _killed) = kill_and_resume_matches_with_env(
        &config,
        "narrow",
        3,
        &[("TRAIN_TEST_NARROW_AFTER_EPOCH", "1")],
    );
    let dir = straight.path();
    let run = only_run_dir(dir, "narrow");
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("optimiser state reset"), "{log}");
    let spec = models::file::read_spec(&run.join("model.bpk")).unwrap();
    assert_eq!(
        spec,
        models::ModelSpec::Mlp {
            hidden: vec![16, 16],
            dropout: 0.0,
            input_dropout: 0.0
        }
    );

    let run_arg = run.to_str().unwrap();
    for args in [
        &["bench", run_arg, "--images", "10", "--warmup", "1"][..],
        &["profile", run_arg, "--runs", "3"][..],
    ] {
        let out = train(dir).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }

    // The narrowed model as a teacher file: no architecture needed beside it.
    let student = small_config(&data).replace("name = \"small\"", "name = \"student\"")
        + &format!(
            "\n[distill]\nteacher = \"{}\"\ntemperature = 2.0\nalpha = 0.5\n",
            run.join("model.bpk").display()
        );
    let student = write(&dir.join("student.toml"), &student);
    let out = train_ok(dir, &student, &["--plain"]);
    assert!(out.contains("teacher: loaded"), "{out}");
    let s = summary(&only_run_dir(dir, "student"));
    assert_eq!(s["parent"]["role"], "teacher");
}

#[test]
fn a_teacher_trained_on_other_data_settings_is_fed_its_own_inputs() {
    let (dir, student) = teacher_and_student(64);
    let out = train_ok(dir.path(), &student, &["--plain"]);
    assert!(!out.contains("fed its own inputs"), "{out}");

    // The teacher's statistics now come from half the training split.
    let teacher = dir.path().join("teacher.toml");
    let text = std::fs::read_to_string(&teacher).unwrap();
    write(
        &teacher,
        &text.replace("dataset = \"idx\"", "dataset = \"idx\"\ntrain_limit = 30"),
    );
    let out = train_ok(dir.path(), &student, &["--plain"]);
    assert!(
        out.contains("teacher: fed its own inputs, 1x8x8, mean ["),
        "{out}"
    );
    // It is measured on them as its own run measured it.
    let limited = std::fs::read_dir(dir.path().join("runs/teacher"))
        .unwrap()
        .map(|e| summary(&e.unwrap().path()))
        .find(|s| s["train_limit"] == 30)
        .expect("the teacher's run on 30 images");
    let recorded = limited["accuracy"].as_f64().unwrap() * 100.0;
    assert!(
        out.contains(&format!("teacher test accuracy {recorded:.2}%")),
        "{recorded:.2}\n{out}"
    );
}
