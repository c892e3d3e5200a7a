//! ONNX export through the real binary: every artefact kind a stage writes (float, pruned,
//! sparse, 16-bit, 8- and 4-bit quantized) exported by `train export`, checked by
//! `onnx.checker` and run by ONNX Runtime on the test split beside our own evaluation of the
//! same file (`--verify`, the project's Python environment); `output.onnx` writes the export at
//! the end of a run; bad input is refused and writes nothing.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A small VGG-style parent (convs with BatchNorm), which writes `model.onnx` as it finishes.
fn parent(dir: &Path, data: &Path) -> PathBuf {
    let config = small_config(data)
        .replace("name = \"small\"", "name = \"parent\"")
        .replace(
            "kind = \"mlp\"\nhidden = [16]",
            "kind = \"vgg\"\nstages = [[8], [16]]\nfc = [16]",
        )
        + "\n[output]\nonnx = true\n";
    write(&dir.join("parent.toml"), &config)
}

/// `train export RUN --format onnx --out OUT --verify` in `dir`; its output.
fn export_verified(dir: &Path, run: &Path, out: &Path) -> String {
    let output = train(dir)
        .args([
            "export",
            run.to_str().unwrap(),
            "--format",
            "onnx",
            "--verify",
        ])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let t = text(&output);
    assert!(output.status.success(), "{t}");
    assert!(out.is_file(), "{t}");
    t
}

/// The percentages and the logit difference of `--verify`'s line: (ONNX Runtime's accuracy,
/// ours, agreement, largest logit difference).
fn verified(output: &str) -> (f64, f64, f64, f64) {
    let line = output
        .lines()
        .find(|l| l.contains("ONNX Runtime on"))
        .unwrap_or_else(|| panic!("no verification in\n{output}"));
    let number = |after: &str| -> f64 {
        let rest = &line[line
            .find(after)
            .unwrap_or_else(|| panic!("{after} in {line}"))
            + after.len()..];
        let token: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || ".e-+".contains(*c))
            .collect();
        token
            .parse()
            .unwrap_or_else(|_| panic!("{after} {token:?} in {line}"))
    };
    (
        number("accuracy"),
        number("(ours"),
        number("agreement"),
        number("logit difference"),
    )
}

#[test]
fn every_artefact_kind_runs_in_onnx_runtime_as_the_project_evaluates_it() {
    let (dir, data) = folder_with_data(96);
    let parent = parent(dir.path(), &data);
    let out = train_ok(dir.path(), &parent, &["--plain"]);
    let parent_run = only_run_dir(dir.path(), "parent");
    assert!(out.contains("model.onnx"), "{out}");
    assert!(
        parent_run.join("model.onnx").is_file(),
        "output.onnx wrote no model.onnx"
    );

    let stages = [
        ("float", None),
        (
            "pruned",
            Some(("prune", "macs_ratio = 0.6\nschedule = \"one-shot\"")),
        ),
        ("sparse", Some(("sparsify", "sparsity = 0.8"))),
        ("float16", Some(("quant", "mode = \"float16\""))),
        (
            "int8",
            Some(("quant", "mode = \"qat\"\nbits = 8\ncalibration_batches = 2")),
        ),
        (
            "int4",
            Some((
                "quant",
                "mode = \"qat\"\nbits = 4\nactivation_bits = 4\ncalibration_batches = 2",
            )),
        ),
        (
            "int8-input",
            Some((
                "quant",
                "mode = \"qat\"\nbits = 8\ncalibration_batches = 2\nquantize_input = true",
            )),
        ),
    ];
    for (name, section) in stages {
        let run = match section {
            None => parent_run.clone(),
            Some((section, body)) => {
                let epochs = if name == "float16" { 0 } else { 1 };
                let config =
                    derived_config(name, (&data, &parent), (section, body), (epochs, 8, 0.01));
                let config = write(&dir.path().join(format!("{name}.toml")), &config);
                train_ok(dir.path(), &config, &["--plain"]);
                only_run_dir(dir.path(), name)
            }
        };
        let graph = dir.path().join(format!("{name}.onnx"));
        let output = export_verified(dir.path(), &run, &graph);
        let (theirs, ours, agreement, difference) = verified(&output);
        println!("{name}: {output}");
        assert_eq!(theirs, ours, "{name}: {output}");
        assert_eq!(agreement, 100.0, "{name}: {output}");
        if !name.starts_with("int") {
            // Float graphs compute what the model computes, up to the order of float sums.
            assert!(difference < 1e-4, "{name}: {output}");
        } else {
            // QDQ graphs are also run without ONNX Runtime's bias rounding, which is then the
            // file's arithmetic.
            assert!(
                output.contains("without ONNX Runtime's WeightBiasQuantization pass"),
                "{output}"
            );
            assert!(
                output.contains("top-1 agreement 100.00%, largest"),
                "{output}"
            );
            // The file runs on the integer kernels (every layer, with the input quantized), and
            // `train bench` says so and measures them against the simulation.
            let bench = bench_ok(dir.path(), &run, &[]);
            let kernels = bench.lines().find(|l| l.contains("kernels:")).unwrap_or("");
            assert!(kernels.contains("int8 "), "{name}: {bench}");
            let first_float = kernels.contains("first layer float");
            assert_eq!(first_float, name != "int8-input", "{name}: {bench}");
            assert!(
                bench.contains("against the simulation it implements: top-1 agreement"),
                "{name}: {bench}"
            );
        }
        let expected = match name {
            "sparse" => "stored densely",
            "float16" => "float16 weights, float32 compute",
            "int8" | "int8-input" => "8-bit weights, QDQ",
            "int4" => "4-bit weights, QDQ",
            _ => "float32",
        };
        assert!(output.contains(expected), "{name}: {output}");
    }
}

#[test]
fn bad_exports_are_refused_and_write_nothing() {
    let (dir, data) = folder_with_data(48);
    let config = write(
        &dir.path().join("small.toml"),
        &small_config(&data).replace("epochs = 2", "epochs = 1"),
    );
    train_ok(dir.path(), &config, &["--plain"]);
    let run = only_run_dir(dir.path(), "small");
    let refuse = |args: &[&str], expected: &str| {
        let output = train(dir.path()).arg("export").args(args).output().unwrap();
        let t = text(&output);
        assert!(!output.status.success(), "{args:?} succeeded: {t}");
        assert!(
            t.contains(expected),
            "{args:?}: expected {expected:?} in {t}"
        );
        assert!(!t.contains("panicked"), "{t}");
    };
    let run_arg = run.to_str().unwrap();
    let out = dir.path().join("x.onnx");
    let out_arg = out.to_str().unwrap();

    // The output: not an .onnx name, in a missing folder, or present without --force.
    refuse(
        &[run_arg, "--format", "onnx", "--out", "model.bpk"],
        "must end in .onnx",
    );
    refuse(
        &[run_arg, "--format", "onnx", "--out", "no/such/x.onnx"],
        "folder does not exist",
    );
    std::fs::write(&out, b"keep me").unwrap();
    refuse(
        &[run_arg, "--format", "onnx", "--out", out_arg],
        "pass --force",
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    std::fs::remove_file(&out).unwrap();
    // Only ONNX is a format.
    refuse(&[run_arg, "--format", "tflite"], "invalid value 'tflite'");

    // A run that has not finished.
    let unfinished = dir.path().join("unfinished");
    std::fs::create_dir(&unfinished).unwrap();
    for file in ["model.bpk", "config.resolved.toml"] {
        std::fs::copy(run.join(file), unfinished.join(file)).unwrap();
    }
    refuse(
        &[
            unfinished.to_str().unwrap(),
            "--format",
            "onnx",
            "--out",
            out_arg,
        ],
        "has not finished",
    );

    // A model file that fails the checksum its run recorded.
    let model = run.join("model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    refuse(&[run_arg, "--format", "onnx", "--out", out_arg], "SHA-256");
    assert!(!out.exists(), "a refused export wrote {}", out.display());
}
