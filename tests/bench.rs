//! `train bench`: latency of a trained model at batch 1 and batch N, into the run's
//! TensorBoard and summary.json; targets that cannot be benchmarked get a clear error.

mod common;

use common::*;
use measure::tensorboard::read_events;

#[test]
fn benchmarks_a_run_folder_and_records_the_results() {
    let (dir, data) = folder_with_data(64);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    train_ok(dir.path(), &path, &[]);
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

#[test]
fn profiles_a_run_layer_by_layer_with_a_recorded_timeline() {
    let (dir, data) = folder_with_data(64);
    let config = small_config(&data).replace("hidden = [16]", "hidden = [16, 8]");
    let path = write(&dir.path().join("c.toml"), &config);
    train_ok(dir.path(), &path, &[]);
    let run = only_run_dir(dir.path(), "small");

    let out = train(dir.path())
        .args([
            "profile",
            run.to_str().unwrap(),
            "--runs",
            "20",
            "--batch",
            "4",
        ])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for needle in [
        "layers.0",
        "layers.1",
        "layers.2",
        "sum of layers",
        "whole forward",
        "backward",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
    // An MLP's packed layers, what `train bench` times, are timed beside burn's layers.
    assert_eq!(
        t.contains("whole forward through the packed layers"),
        kernels::PackedLinear::available(),
        "{t}"
    );
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("profile.trace.json")).unwrap())
            .unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    // The recorded timeline: the last three inference passes, each with its layers as they ran.
    let passes = events
        .iter()
        .filter(|e| e["cat"] == "forward" && e["tid"] == 1)
        .count();
    assert_eq!(passes, 3);
    let layers: Vec<_> = events
        .iter()
        .filter(|e| e["cat"] == "layer" && e["tid"] == 1)
        .collect();
    assert_eq!(layers.len(), 9);
    let names: Vec<&str> = layers[..3]
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["layers.0", "layers.1", "layers.2"]);
    // MACs per layer: 64*16, 16*8, 8*4.
    let macs: Vec<u64> = layers[..3]
        .iter()
        .map(|e| e["args"]["macs_per_sample"].as_u64().unwrap())
        .collect();
    assert_eq!(macs, vec![1024, 128, 32]);
    let texts: Vec<String> = read_events(&run)
        .unwrap()
        .into_iter()
        .map(|(t, _, _)| t)
        .collect();
    assert!(texts.iter().any(|t| t == "profile"), "{texts:?}");
}

#[test]
fn input_size_resizes_images_and_the_models_adapt() {
    let (dir, data) = folder_with_data(64);
    // LeNet-5 needs 12x12 at least; the 8x8 images are resized to 16x16 for it.
    let config = small_config(&data)
        .replace(
            "kind = \"mlp\"\nhidden = [16]",
            "kind = \"lenet5\"\nchannels = [2, 4]\nfc = [8, 8]",
        )
        .replace("dataset = \"idx\"", "dataset = \"idx\"\ninput_size = 16");
    let path = write(&dir.path().join("c.toml"), &config);
    let out = train(dir.path()).arg(&path).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("images of 1x16x16"), "{t}");
    let run = only_run_dir(dir.path(), "small");
    // conv1 (pad 2) keeps 16x16, pool 8x8, conv2 (5x5) 4x4, pool 2x2: fc1 sees 4 * 2 * 2 = 16.
    // MACs: 16*16*2*25 + 4*4*4*2*25 + 16*8 + 8*8 + 8*4.
    let summary = summary(&run);
    assert_eq!(summary["macs"], 12_800 + 3_200 + 128 + 64 + 32);
}
