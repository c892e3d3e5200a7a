//! Distillation stages: the teacher is trained once and reused, a changed teacher is
//! retrained, concurrent students share one teacher safely, the logs and summary show student
//! against teacher, and bad distillation settings fail before any training.

mod common;

use std::path::Path;

use common::*;
use measure::tensorboard::{read_events, EventValue};

fn setup(dir: &Path) {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx_dataset(&data, 96);
    let teacher = small_config(&data)
        .replace("name = \"small\"", "name = \"teach\"")
        .replace("hidden = [16]", "hidden = [32]");
    write(&dir.join("teacher.toml"), &teacher);
    let student = small_config(&data).replace("name = \"small\"", "name = \"student\"")
        + "\n[distill]\nteacher = \"teacher.toml\"\ntemperature = 2.0\nalpha = 0.7\n";
    write(&dir.join("student.toml"), &student);
}

fn folders(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn teacher_epochs_trained(root: &Path) -> usize {
    std::fs::read_dir(root.join("runs/teach"))
        .unwrap()
        .map(|e| {
            let log = std::fs::read_to_string(e.unwrap().path().join("train.log")).unwrap();
            log.lines().filter(|l| l.starts_with("epoch 1/")).count()
        })
        .sum()
}

#[test]
fn the_teacher_is_trained_once_reused_after_and_retrained_when_changed() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = train(dir.path()).arg("student.toml").output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("teacher: stage teach trained"), "{t}");

    // A new student (another seed) reuses the teacher.
    let out = train(dir.path())
        .arg("student.toml")
        .args(["--set", "seed=9"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("teacher: stage teach reused the finished run"),
        "{t}"
    );
    assert_eq!(teacher_epochs_trained(dir.path()), 1);
    assert_eq!(folders(&dir.path().join("runs/student")), 2);

    // The same student again is reused whole.
    let out = train(dir.path()).arg("student.toml").output().unwrap();
    assert!(
        text(&out).contains("reusing the finished run"),
        "{}",
        text(&out)
    );
    assert_eq!(folders(&dir.path().join("runs/student")), 2);

    // A changed teacher config is a new teacher, and a new student.
    let teacher = std::fs::read_to_string(dir.path().join("teacher.toml")).unwrap();
    write(
        &dir.path().join("teacher.toml"),
        &teacher.replace("lr = 0.05", "lr = 0.04"),
    );
    let out = train(dir.path()).arg("student.toml").output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("teacher: stage teach trained"), "{t}");
    assert_eq!(folders(&dir.path().join("runs/teach")), 2);
    assert_eq!(folders(&dir.path().join("runs/student")), 3);
}

#[test]
fn two_students_started_together_share_one_teacher() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let children: Vec<_> = (1..=2)
        .map(|seed| {
            train(dir.path())
                .arg("student.toml")
                .args(["--set", &format!("seed={seed}")])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(folders(&dir.path().join("runs/teach")), 1);
    assert_eq!(
        teacher_epochs_trained(dir.path()),
        1,
        "the teacher was trained twice"
    );
    assert_eq!(folders(&dir.path().join("runs/student")), 2);
}

#[test]
fn logs_and_summary_show_the_student_against_its_teacher() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = train(dir.path()).arg("student.toml").output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("teacher logits cached"), "{t}");
    assert!(t.contains("vs teacher: params"), "{t}");
    let run = std::fs::read_dir(dir.path().join("runs/student"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let tags: Vec<String> = read_events(&run)
        .unwrap()
        .into_iter()
        .filter(|(_, _, v)| matches!(v, EventValue::Scalar(_)))
        .map(|(tag, _, _)| tag)
        .collect();
    for tag in [
        "distill/kd_loss",
        "distill/ce_loss",
        "distill/agreement",
        "distill/teacher_accuracy",
        "summary/teacher_accuracy",
    ] {
        assert!(tags.iter().any(|t| t == tag), "no {tag} in {tags:?}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let parent = &summary["parent"];
    assert_eq!(parent["role"], "teacher");
    assert_eq!(parent["name"], "teach");
    // 64-32-4 teacher against a 64-16-4 student: (64*32+32+32*4+4) / (64*16+16+16*4+4).
    let ratio = parent["ratios"]["params"].as_f64().unwrap();
    assert!((ratio - 2212.0 / 1108.0).abs() < 1e-9, "{ratio}");
}

/// What `train bad.toml` prints now.
fn text_of_rejected(dir: &Path) -> String {
    text(&train(dir).arg("bad.toml").output().unwrap())
}

fn assert_rejected(dir: &Path, student: &str, needles: &[&str]) {
    write(&dir.join("bad.toml"), student);
    let out = train(dir).arg("bad.toml").output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    assert!(!dir.join("runs").exists(), "something ran:\n{t}");
    for needle in needles {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
}

#[test]
fn bad_distillation_settings_fail_before_any_training() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let student = std::fs::read_to_string(dir.path().join("student.toml")).unwrap();

    assert_rejected(
        dir.path(),
        &student.replace("teacher.toml", "nope.toml"),
        &["distill.teacher", "nope.toml", "no such file"],
    );
    assert_rejected(
        dir.path(),
        &student.replace("temperature = 2.0", "temperature = 0.0"),
        &["distill.temperature = 0", "> 0"],
    );
    assert_rejected(
        dir.path(),
        &student.replace("alpha = 0.7", "alpha = 1.5"),
        &["distill.alpha = 1.5", "[0, 1]"],
    );
    // A model that reads other inputs (resized to 12x12) may teach 8x8 inputs (it is fed its
    // own, tests/images.rs), but a stage cannot train it further on 8x8 ones.
    let teacher = std::fs::read_to_string(dir.path().join("teacher.toml")).unwrap();
    write(
        &dir.path().join("teacher12.toml"),
        &teacher.replace("dataset = \"idx\"", "dataset = \"idx\"\ninput_size = 12"),
    );
    let child = teacher
        .replace(
            "name = \"teach\"",
            "name = \"child\"\nfrom = \"teacher12.toml\"",
        )
        .replace("[model]\nkind = \"mlp\"\nhidden = [32]\n", "");
    assert_rejected(dir.path(), &child, &["from", "12x12", "8x8"]);
    // A model file without its architecture.
    write(&dir.path().join("t.safetensors"), "not really");
    assert_rejected(
        dir.path(),
        &student.replace("teacher.toml", "t.safetensors"),
        &["distill.teacher", "teacher_model"],
    );
    // A file that is not a model at all is caught when loading, before training, with its
    // own cause (not "does not fit": a classifier with other classes is tested beside the
    // loader, in runner::teacher).
    let not_a_model = student.replace("teacher.toml", "t.safetensors")
        + "\n[distill.teacher_model]\nkind = \"mlp\"\nhidden = [32]\n";
    assert_rejected(
        dir.path(),
        &not_a_model,
        &["distill.teacher", "cannot load it", "SafeTensors error"],
    );
    assert!(!text_of_rejected(dir.path()).contains("do not fit"));
    write(
        &dir.path().join("t.pt"),
        "random bytes, not a PyTorch checkpoint",
    );
    assert_rejected(
        dir.path(),
        &not_a_model.replace("t.safetensors", "t.pt"),
        &["distill.teacher", "cannot load it", "t.pt"],
    );
    assert!(!text_of_rejected(dir.path()).contains("do not fit"));
}

fn with_hint(student: &str) -> String {
    student.to_string() + "\n[distill.hint]\nstudent_layer = \"layers.0\"\nteacher_layer = \"layers.0\"\nweight = 0.5\n"
}

#[test]
fn a_hint_is_trained_through_its_adapter_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let student = std::fs::read_to_string(dir.path().join("student.toml")).unwrap();
    write(
        &dir.path().join("hint.toml"),
        &with_hint(&student).replace("epochs = 2", "epochs = 4"),
    );
    let out = train(dir.path()).arg("hint.toml").output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let run = only_run_dir(dir.path(), "student");
    let hint: Vec<f32> = read_events(&run)
        .unwrap()
        .into_iter()
        .filter_map(|(tag, _, v)| match v {
            EventValue::Scalar(x) if tag == "distill/hint_loss" => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(hint.len(), 4, "{hint:?}");
    assert!(hint[3] < hint[0], "the adapter did not learn: {hint:?}");
    // The adapter is trained with the model but not part of it.
    let summary = summary(&run);
    assert_eq!(summary["params"], 1108);
}

#[test]
fn a_killed_hint_run_resumes_to_identical_numbers() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    // Absolute paths, so the config works from the kill test's own folders.
    let data = dir.path().join("data");
    write_idx_dataset(&data, 400);
    let teacher = std::fs::read_to_string(dir.path().join("teacher.toml")).unwrap();
    write(
        &dir.path().join("teacher.toml"),
        &teacher.replace("epochs = 2", "epochs = 1"),
    );
    let student = std::fs::read_to_string(dir.path().join("student.toml"))
        .unwrap()
        .replace("epochs = 2", "epochs = 4")
        .replace(
            "\"teacher.toml\"",
            &format!("{:?}", dir.path().join("teacher.toml")),
        );
    kill_and_resume_matches(&with_hint(&student), "student", 3);
}

#[test]
fn an_unknown_hint_layer_lists_the_taps() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let student = std::fs::read_to_string(dir.path().join("student.toml")).unwrap();
    assert_rejected(
        dir.path(),
        &with_hint(&student).replace("student_layer = \"layers.0\"", "student_layer = \"fc9\""),
        &["distill.hint.student_layer = \"fc9\"", "layers.0"],
    );
}
