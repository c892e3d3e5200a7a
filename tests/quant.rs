//! Quantization through the real binary: QAT and PTQ export an integer file whose accuracy is
//! measured from the file (and reproduced by a fresh process), the 16-bit export is half the
//! float file, a killed QAT run resumes identically, and bad input is refused before any
//! work.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A small VGG-style parent (convs with BatchNorm to fold) trained for `epochs` epochs.
fn parent_config(dir: &Path, data: &Path, epochs: usize) -> PathBuf {
    let config = small_config(data)
        .replace("name = \"small\"", "name = \"parent\"")
        .replace(
            "kind = \"mlp\"\nhidden = [16]",
            "kind = \"vgg\"\nstages = [[8], [16]]\nfc = [16]",
        )
        .replace("epochs = 2", &format!("epochs = {epochs}"));
    write(&dir.join("parent.toml"), &config)
}

/// A quantizing stage from `parent` with `quant` as its `[quant]` section.
fn quant_config(data: &Path, parent: &Path, quant: &str, epochs: usize) -> String {
    derived_config(
        "quantized",
        (data, parent),
        ("quant", quant),
        (epochs, 8, 0.01),
    )
}

/// The test accuracy `train bench` prints for `target` (a fresh process loading the file).
fn bench_file_accuracy(dir: &Path, target: &Path, config: Option<&Path>) -> String {
    let extra = match config {
        Some(config) => vec!["--config", config.to_str().unwrap()],
        None => Vec::new(),
    };
    bench_accuracy(&bench_ok(dir, target, &extra))
}

#[test]
fn qat_exports_an_integer_file_whose_accuracy_a_fresh_process_reproduces() {
    let (dir, data) = folder_with_data(96);
    let parent = parent_config(dir.path(), &data, 2);
    let config = write(
        &dir.path().join("qat.toml"),
        &quant_config(
            &data,
            &parent,
            "mode = \"qat\"\nbits = 4\nlayers = { \"stages.0.0\" = 8 }\ncalibration_batches = 2",
            2,
        ),
    );
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(
        out.contains("measuring model.qnt (loaded from disk)"),
        "{out}"
    );
    assert!(out.contains("activation point"), "{out}");
    let run = only_run_dir(dir.path(), "quantized");
    let s = summary(&run);
    assert_eq!(s["artifact"], "model.qnt");
    let file_bytes = std::fs::metadata(run.join("model.qnt")).unwrap().len();
    assert_eq!(s["model_bytes"].as_u64().unwrap(), file_bytes);
    // The file computes what the in-memory fake-quantized model computed.
    let in_memory = s["techniques"]["quant"]["fake_quant_accuracy"]
        .as_f64()
        .unwrap();
    let from_file = s["accuracy"].as_f64().unwrap();
    assert!(
        (in_memory - from_file).abs() <= 0.001,
        "{in_memory} vs {from_file}"
    );
    assert_eq!(s["techniques"]["quant"]["weight_bits"]["stages.0.0"], 8);
    assert_eq!(s["techniques"]["quant"]["weight_bits"]["stages.1.0"], 4);
    // A fresh process, from the run folder and from the file itself.
    let printed = format!("{:.2}%", 100.0 * from_file);
    assert_eq!(bench_file_accuracy(dir.path(), &run, None), printed);
    assert_eq!(
        bench_file_accuracy(dir.path(), &run.join("model.qnt"), Some(&config)),
        printed
    );
    let parent_run = only_run_dir(dir.path(), "parent");
    let float_bytes = std::fs::metadata(parent_run.join("model.bpk"))
        .unwrap()
        .len();
    assert!(
        file_bytes * 100 < float_bytes * 30,
        "{file_bytes} of {float_bytes}"
    );
    let scalars = outcome_scalars(&run);
    for tag in ["quant/float_accuracy", "quant/fake_quant_accuracy"] {
        assert!(scalars.iter().any(|(t, _, _)| t == tag), "no {tag}");
    }
    assert!(scalars
        .iter()
        .any(|(t, _, _)| t.starts_with("quant/activation_scale/")));
}

#[test]
fn ptq_and_the_16_bit_export_are_measured_from_their_files() {
    let (dir, data) = folder_with_data(64);
    let parent = parent_config(dir.path(), &data, 1);
    let ptq = write(
        &dir.path().join("ptq.toml"),
        &quant_config(&data, &parent, "mode = \"ptq\"\ncalibration_batches = 2", 0),
    );
    train_ok(dir.path(), &ptq, &["--plain"]);
    let run = only_run_dir(dir.path(), "quantized");
    assert_eq!(summary(&run)["artifact"], "model.qnt");

    // Another valid export put in its place is not this run's: refused by its checksum.
    let other = write(
        &dir.path().join("ptq-other.toml"),
        &quant_config(
            &data,
            &parent,
            "mode = \"ptq\"\nbits = 4\ncalibration_batches = 1",
            0,
        )
        .replace("quantized", "other"),
    );
    train_ok(dir.path(), &other, &["--plain"]);
    let original = std::fs::read(run.join("model.qnt")).unwrap();
    let other_run = only_run_dir(dir.path(), "other");
    std::fs::copy(other_run.join("model.qnt"), run.join("model.qnt")).unwrap();
    let out = train(dir.path())
        .args([
            "bench",
            run.to_str().unwrap(),
            "--images",
            "5",
            "--warmup",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a replaced export was measured");
    assert!(
        text(&out).contains("changed since its run recorded it"),
        "{}",
        text(&out)
    );
    std::fs::write(run.join("model.qnt"), original).unwrap();

    let half = write(
        &dir.path().join("half.toml"),
        &quant_config(&data, &parent, "mode = \"float16\"", 0).replace("quantized", "half"),
    );
    train_ok(dir.path(), &half, &["--plain"]);
    let run = only_run_dir(dir.path(), "half");
    let s = summary(&run);
    assert_eq!(s["artifact"], "model.f16");
    let parent_bytes = summary(&only_run_dir(dir.path(), "parent"))["model_bytes"]
        .as_u64()
        .unwrap();
    let half_bytes = s["model_bytes"].as_u64().unwrap();
    assert!(
        half_bytes * 100 <= parent_bytes * 52,
        "{half_bytes} of {parent_bytes}"
    );
    let printed = format!("{:.2}%", 100.0 * s["accuracy"].as_f64().unwrap());
    assert_eq!(bench_file_accuracy(dir.path(), &run, None), printed);
}

#[test]
fn a_killed_qat_run_resumes_identically() {
    let (dir, data) = folder_with_data(256);
    // One epoch of parent: the kill marker (`epoch 2 step`) must be the QAT stage's.
    let parent = parent_config(dir.path(), &data, 1);
    let config = quant_config(
        &data,
        &parent,
        // BatchNorm trains unfolded in epoch 1 and is folded from epoch 2: the kill lands
        // after the switch, so the checkpoint must carry it.
        "mode = \"qat\"\nobserver = \"ema\"\nfreeze_observers_after = 2\nfreeze_bn_after = 1\n\
         calibration_batches = 2",
        3,
    )
    .replace("batch_size = 8", "batch_size = 4");
    let (_a, _b) = kill_and_resume_matches_with_env(&config, "quantized", 2, &[]);
}

#[test]
fn bad_quant_input_is_refused_before_any_work() {
    let (dir, data) = folder_with_data(32);
    let parent = parent_config(dir.path(), &data, 1);
    for (quant, epochs, expected) in [
        ("bits = 3", 1, "quant.bits"),
        ("activation_bits = 16", 1, "quant.activation_bits"),
        ("observer = \"median\"", 1, "unknown variant `median`"),
        ("layers = { \"conv9*\" = 4 }", 1, "matches no layer"),
        ("mode = \"ptq\"", 2, "must be 0 with quant.mode = \"ptq\""),
        (
            "mode = \"qat\"\nfreeze_bn_after = 3",
            2,
            "quant.freeze_bn_after",
        ),
    ] {
        let config = write(
            &dir.path().join("bad.toml"),
            &quant_config(&data, &parent, quant, epochs),
        );
        let out = train(dir.path()).arg(&config).output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{quant} was accepted");
        assert!(t.contains(expected), "{quant}: {t}");
        assert!(
            !dir.path().join("runs/quantized").exists(),
            "{quant} left a run folder"
        );
    }

    // A corrupt or truncated export: a clear error, not a panic.
    let good = write(
        &dir.path().join("ptq.toml"),
        &quant_config(&data, &parent, "mode = \"ptq\"\ncalibration_batches = 1", 0),
    );
    train_ok(dir.path(), &good, &["--plain"]);
    let bytes = std::fs::read(only_run_dir(dir.path(), "quantized").join("model.qnt")).unwrap();
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 1;
    for (name, content) in [("flipped.qnt", flipped), ("cut.qnt", bytes[..40].to_vec())] {
        let path = write_bytes(&dir.path().join(name), &content);
        let out = train(dir.path())
            .args(["bench", path.to_str().unwrap(), "--config"])
            .arg(&good)
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{name} loaded");
        assert!(
            t.contains(name) && (t.contains("checksum") || t.contains("truncated")),
            "{name}: {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    }
}

fn write_bytes(path: &Path, bytes: &[u8]) -> PathBuf {
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

#[test]
fn qat_fine_tunes_by_distillation_from_the_float_parent() {
    let (dir, data) = folder_with_data(64);
    let parent = parent_config(dir.path(), &data, 1);
    let config = quant_config(&data, &parent, "mode = \"qat\"\ncalibration_batches = 1", 1)
        + &format!(
            "\n[distill]\nteacher = \"{}\"\ntemperature = 4.0\nalpha = 0.7\n",
            parent.display()
        );
    let config = write(&dir.path().join("qat-kd.toml"), &config);
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(out.contains("distilling at T = 4"), "{out}");
    let run = only_run_dir(dir.path(), "quantized");
    assert_eq!(summary(&run)["artifact"], "model.qnt");
    let scalars = outcome_scalars(&run);
    for tag in ["distill/agreement", "quant/fake_quant_accuracy"] {
        assert!(scalars.iter().any(|(t, _, _)| t == tag), "no {tag}");
    }
}
