//! The event files a run writes are read back by TensorBoard's own reader
//! (`EventAccumulator`), with every tag the run promises.

mod common;

use std::process::Command;

use common::*;

const TAGS: [&str; 7] = [
    "train/loss",
    "train/accuracy",
    "eval/loss",
    "eval/accuracy",
    "lr",
    "epoch_seconds",
    "samples_per_second",
];

/// The project's own Python with TensorBoard (`target/tensorboard-venv`, prepared by
/// `scripts/tensorboard-venv.sh` on first use): the global Python is never touched.
fn python_with_tensorboard() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/tensorboard-venv.sh"))
        .output()
        .expect("bash runs scripts/tensorboard-venv.sh");
    assert!(
        out.status.success(),
        "preparing TensorBoard's environment failed: {}",
        text(&out)
    );
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    format!("{venv}/bin/python")
}

const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
ea.Reload()
tags = ea.Tags()
out = {"scalars": {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]},
       "tensors": tags["tensors"],
       "images": {t: [[i.width, i.height, len(i.encoded_image_string)] for i in ea.Images(t)]
                  for t in tags["images"]}}
if "config" in tags["tensors"]:
    out["config"] = ea.Tensors("config")[0].tensor_proto.string_val[0].decode()
print(json.dumps(out))
"#;

#[test]
fn tensorboard_reads_every_promised_tag() {
    let (dir, data) = folder_with_data(64);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    train_ok(dir.path(), &path, &[]);
    let run = std::fs::read_dir(dir.path().join("runs/small"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    let py = python_with_tensorboard();
    let out = Command::new(py)
        .args(["-c", READER])
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scalars = read["scalars"].as_object().unwrap();
    for tag in TAGS {
        let points = scalars.get(tag).and_then(|v| v.as_array());
        assert!(
            points.is_some_and(|p| !p.is_empty()),
            "no {tag} in {:?}",
            scalars.keys()
        );
    }
    // Two epochs: two evaluation points, and the last is the accuracy the summary reports.
    let eval = scalars["eval/accuracy"].as_array().unwrap();
    assert_eq!(eval.len(), 2);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let last = eval[1][1].as_f64().unwrap();
    assert!((last - summary["accuracy"].as_f64().unwrap()).abs() < 1e-6);
    assert!(
        read["config"]
            .as_str()
            .unwrap()
            .contains("name = \"small\""),
        "{read}"
    );
}
