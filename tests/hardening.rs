//! Hostile input and faults, through the real binary: every one ends with a clear message and
//! a non-zero exit (never a signal or a panic), changes nothing that poses as a result, and a
//! later good command completes.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

/// The command failed cleanly: an exit code (no signal), no panic, the message it must give.
fn assert_clean_failure(out: &Output, wants: &[&str]) {
    let t = text(out);
    assert!(out.status.code().is_some(), "killed by a signal:\n{t}");
    assert!(!out.status.success(), "it succeeded:\n{t}");
    assert!(!t.contains("panicked"), "it panicked:\n{t}");
    for want in wants {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}

fn check(dir: &Path, config: &Path, sets: &[&str]) -> Output {
    let mut cmd = train(dir);
    cmd.arg("check").arg(config);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.output().unwrap()
}

#[test]
fn overrides_meet_the_schema_the_file_meets() {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    for (set, key) in [
        ("train.batch_size=true", "train.batch_size"),
        ("train.batch_size=0.5", "train.batch_size"),
        ("train.batch_size=false", "train.batch_size"),
        ("train.epochs=2.7", "train.epochs"),
    ] {
        assert_clean_failure(&check(dir.path(), &config, &[set]), &[set, key]);
    }
    // A string key stays a string.
    let out = check(dir.path(), &config, &["name=0x10"]);
    assert!(text(&out).contains("runs/0x10/"), "{}", text(&out));
    // Arrays through the environment; other tools' COMPRESS_ variables are not ours.
    let out = train(dir.path())
        .arg("check")
        .arg(&config)
        .env("COMPRESS_MODEL__HIDDEN", "[12, 6]")
        .env("COMPRESS_LEVEL", "9")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let with_env = text(&out);
    let direct = text(&check(dir.path(), &config, &["model.hidden=[12, 6]"]));
    assert_eq!(checked_folder(&with_env), checked_folder(&direct));
}

#[test]
fn sizes_that_only_allocate_are_bounded_before_anything_runs() {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    for (set, wants) in [
        (
            "model.hidden=[100000000,100000000]",
            &["model", "GiB", "smaller widths"][..],
        ),
        (
            "measure.throughput_batch=1000000000",
            &["measure.throughput_batch", "at most"],
        ),
        ("threads=100000", &["threads", "at most"]),
        (
            "train.batch_size=100000000",
            &["train.batch_size", "at most"],
        ),
    ] {
        let out = train(dir.path())
            .arg(&config)
            .args(["--set", set])
            .output()
            .unwrap();
        assert_clean_failure(&out, wants);
        assert!(
            !dir.path().join("runs").exists(),
            "{set} created a run folder"
        );
    }
    // The good command still runs; bench and profile bound their own numbers.
    train_ok(dir.path(), &config, &["--plain"]);
    let run = only_run_dir(dir.path(), "small");
    for args in [
        &["bench", "--batch", "100000000"][..],
        &["bench", "--threads", "100000"],
        &["profile", "--runs", "0"],
        &["profile", "--batch", "0"],
    ] {
        let out = train(dir.path())
            .arg(args[0])
            .arg(&run)
            .args(&args[1..])
            .output()
            .unwrap();
        assert_clean_failure(&out, &["must be between 1 and"]);
    }
}

#[test]
fn a_corrupted_model_file_is_refused_by_bench_and_by_a_student() {
    let (dir, student) = teacher_and_student(64);
    train_ok(dir.path(), &dir.path().join("teacher.toml"), &["--plain"]);
    let run = only_run_dir(dir.path(), "teacher");
    let model = run.join("model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 0x40;
    std::fs::write(&model, bytes).unwrap();

    let out = train(dir.path()).arg("bench").arg(&run).output().unwrap();
    assert_clean_failure(&out, &["model.bpk", "changed since its run recorded it"]);
    let out = train(dir.path()).arg(&student).output().unwrap();
    assert_clean_failure(&out, &["model.bpk", "changed since its run recorded it"]);
    assert!(
        !dir.path().join("runs/student").exists() || {
            let s = only_run_dir(dir.path(), "student");
            !s.join("summary.json").exists()
        }
    );
}

#[test]
fn a_full_disk_while_logging_stops_cleanly_and_the_run_resumes_later() {
    let (dir, data) = folder_with_data(64);
    let config = small_config(&data).replace("epochs = 2", "epochs = 3");
    let config = write(&dir.path().join("c.toml"), &config);
    let out = train(dir.path())
        .arg(&config)
        .arg("--plain")
        .env("TRAIN_FAULT_EVENTS_FULL_AT_EPOCH", "2")
        .output()
        .unwrap();
    assert_clean_failure(
        &out,
        &[
            "TensorBoard event file",
            "events.out.tfevents.",
            "No space left on device",
        ],
    );
    let run = only_run_dir(dir.path(), "small");
    assert!(!run.join("summary.json").exists());
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(
        log.contains("error: ") && log.contains("No space left"),
        "{log}"
    );
    // Writes fail from the end of epoch 2 on, so epoch 3's events cannot be written: the
    // run stops before epoch 3's checkpoint, keeps epoch 2's and resumes from it.
    let again = train_ok(dir.path(), &config, &["--plain"]);
    assert!(again.contains("from the end of epoch 2"), "{again}");
    assert_eq!(summary(&run)["epochs"], 3);
}

#[test]
fn stale_temporaries_of_a_killed_write_are_removed_at_the_next_start() {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let out = train(dir.path())
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let t = text(&out);
    let folder = dir.path().join(checked_folder(&t));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(".checkpoint.bin.tmp-99999"), b"torn").unwrap();
    train_ok(dir.path(), &config, &["--plain"]);
    assert!(!folder.join(".checkpoint.bin.tmp-99999").exists());
    assert!(folder.join("summary.json").exists());
}

#[test]
fn two_configs_on_the_command_line_get_a_plain_message() {
    let (dir, data) = folder_with_data(32);
    let a = write(&dir.path().join("a.toml"), &small_config(&data));
    let out = train(dir.path()).arg(&a).arg(&a).output().unwrap();
    assert_clean_failure(&out, &["one config at a time"]);
    assert!(!text(&out).contains("subcommand"), "{}", text(&out));
}
