//! `train bench`: latency of a trained model at batch 1 and batch N, into the run's
//! TensorBoard and summary.json; targets that cannot be benchmarked get a clear error.

mod common;

use common::*;
use measure::tensorboard::read_events;

#[test]
fn benchmarks_a_run_folder_and_records_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx_dataset(&data, 64);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    let out = train(dir.path()).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run = only_run_dir(dir.path(), "small");

    let out = train(dir.path())
        .args([
            "bench",
            run.to_str().unwrap(),
            "--images",
            "40",
            "--batch",
            "8",
        ])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for needle in [
        "p50",
        "p95",
        "p99",
        "cv",
        "forward",
        "(40 runs of 1)",
        "(5 runs of 8)",
        "real time: yes",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
    let summary = summary(&run);
    assert_eq!(summary["bench"]["batch1"]["images"], 40);
    assert_eq!(summary["bench"]["batch"], 8);
    assert!(
        summary["accuracy"].is_number(),
        "the rest of the summary is kept"
    );
    let tags: Vec<String> = read_events(&run)
        .unwrap()
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    assert!(
        tags.iter().any(|t| t == "bench/latency_ms_p50_batch1"),
        "{tags:?}"
    );
    assert!(
        tags.iter().any(|t| t == "eval/accuracy"),
        "training events were lost: {tags:?}"
    );

    // The model file alone works with its config.
    let out = train(dir.path())
        .args([
            "bench",
            run.join("model.bpk").to_str().unwrap(),
            "--images",
            "10",
        ])
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn unbenchable_targets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path()).args(["bench", "."]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a finished run folder"),
        "{}",
        text(&out)
    );

    write(&dir.path().join("m.bpk"), "x");
    let out = train(dir.path()).args(["bench", "m.bpk"]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("needs --config"), "{}", text(&out));
}
