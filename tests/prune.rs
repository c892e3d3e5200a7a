//! Pruning and sparsification through the real binary: channels removed for real (the pruned
//! model stands on its own: reloads, benches, serves as a parent), a pruning run killed
//! between steps resumes to the same result, sparse files reproduce their accuracy, and bad
//! input is refused before any work.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use models::ModelSpec;

/// A small VGG-style parent (8x8 images: two stages end at 2x2) in `dir`.
fn parent_config(dir: &Path, data: &Path, model: &str) -> PathBuf {
    let config = small_config(data)
        .replace("name = \"small\"", "name = \"parent\"")
        .replace("kind = \"mlp\"\nhidden = [16]", model);
    write(&dir.join("parent.toml"), &config)
}

const VGG: &str = "kind = \"vgg\"\nstages = [[8], [16]]\nfc = [16]";
const RESNET: &str = "kind = \"resnet\"\nstem = 8\nstages = [8, 16]\nblocks = 1";

/// A pruning stage from `parent` with `prune` as its `[prune]` section and `epochs` epochs.
fn pruned_config(data: &Path, parent: &Path, prune: &str, epochs: usize) -> String {
    derived_config(
        "pruned",
        (data, parent),
        ("prune", prune),
        (epochs, 16, 0.02),
    )
}

/// A stage that only measures the model file `from` (no training).
fn measured_from(data: &Path, from: &Path, name: &str) -> String {
    pruned_config(data, from, "", 0)
        .replace("name = \"pruned\"", &format!("name = \"{name}\""))
        .replace("[prune]\n\n", "")
}

#[test]
fn pruning_removes_channels_for_real_and_the_model_stands_on_its_own() {
    let (dir, data) = folder_with_data(64);
    let parent = parent_config(dir.path(), &data, VGG);
    let config = write(
        &dir.path().join("pruned.toml"),
        &pruned_config(
            &data,
            &parent,
            "criterion = \"l1\"\nschedule = \"iterative\"\nsteps = 2\nevery = 1\nratio = 0.5",
            3,
        ),
    );
    let check = train(dir.path())
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        text(&check).contains(
            "prune plan (channels per group, parent -> after the last step): \
             stages.0.0 8->4, stages.1.0 16->8, fc.0 16->8"
        ),
        "{}",
        text(&check)
    );
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(
        out.contains("prune step 1/2") && out.contains("prune step 2/2"),
        "{out}"
    );
    // The per-step table ends the run, and a reused run prints it again.
    let steps_table = "prune:\nstep    epoch     params";
    assert!(out.contains(steps_table), "{out}");
    let again = train_ok(dir.path(), &config, &["--plain"]);
    assert!(
        again.contains("reusing the finished run") && again.contains(steps_table),
        "{again}"
    );

    let run = only_run_dir(dir.path(), "pruned");
    let s = summary(&run);
    let steps = s["techniques"]["prune"]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    // Half of each group after the last step, a quarter after the first (iterative: 1/2, 1).
    assert_eq!(steps[0]["widths"]["stages.0.0"], 6);
    assert_eq!(steps[1]["widths"]["stages.0.0"], 4);
    let spec = models::file::read_spec(&run.join("model.bpk")).unwrap();
    assert_eq!(
        spec,
        ModelSpec::Vgg {
            stages: vec![vec![4], vec![8]],
            fc: vec![8],
            dropout: 0.0
        }
    );
    let parent_summary = summary(&only_run_dir(dir.path(), "parent"));
    assert!(s["macs"].as_u64().unwrap() < parent_summary["macs"].as_u64().unwrap() / 2);
    assert!(s["params"].as_u64().unwrap() < parent_summary["params"].as_u64().unwrap());
    assert_eq!(s["parent"]["role"], "parent");

    // The narrower model reloads on its own for bench, and as the parent of another stage.
    bench_ok(dir.path(), &run, &[]);
    let tuned = write(
        &dir.path().join("tuned.toml"),
        &measured_from(&data, &run.join("model.bpk"), "tuned"),
    );
    train_ok(dir.path(), &tuned, &["--plain"]);
    let t = summary(&only_run_dir(dir.path(), "tuned"));
    assert_eq!(
        t["accuracy"], s["accuracy"],
        "the reloaded model scores the same"
    );
}

#[test]
fn a_resnet_is_pruned_through_its_residual_groups_to_a_macs_target() {
    let (dir, data) = folder_with_data(64);
    let parent = parent_config(dir.path(), &data, RESNET);
    let config = write(
        &dir.path().join("pruned.toml"),
        &pruned_config(
            &data,
            &parent,
            "criterion = \"bn-gamma\"\nmacs_ratio = 0.5\nround_to = 2\nexclude = [\"blocks.0.inner\"]",
            1,
        ),
    );
    train_ok(dir.path(), &config, &["--plain"]);
    let run = only_run_dir(dir.path(), "pruned");
    let s = summary(&run);
    let parent_macs = summary(&only_run_dir(dir.path(), "parent"))["macs"]
        .as_u64()
        .unwrap();
    assert!(s["macs"].as_u64().unwrap() <= parent_macs / 2, "{s}");
    let ModelSpec::Resnet {
        stem,
        stages,
        inner,
        ..
    } = models::file::read_spec(&run.join("model.bpk")).unwrap()
    else {
        panic!("not a resnet");
    };
    // The stem and the first stage share one residual stream, so one width.
    assert_eq!(stem, stages[0]);
    assert!(stem < 8 && stem % 2 == 0, "{stem}");
    assert_eq!(inner[0], 8, "the excluded group keeps its width");
    bench_ok(dir.path(), &run, &[]);
}

/// A stage resizing the 8x8 images to 32x32.
fn at_32(config: String) -> String {
    config.replace("dataset = \"idx\"", "dataset = \"idx\"\ninput_size = 32")
}

/// torchvision's MobileNetV2 at a quarter width.
const MOBILENET: &str = "kind = \"mobilenet-v2\"\nwidth_mult = 0.25\ndropout = 0.0";

/// [`parent_config`] on the images resized to 32x32, trained `epochs` epochs.
fn parent_at_32(dir: &Path, data: &Path, model: &str, epochs: usize) -> PathBuf {
    let parent = parent_config(dir, data, model);
    let text = std::fs::read_to_string(&parent).unwrap();
    write(
        &parent,
        &at_32(text.replace("epochs = 2", &format!("epochs = {epochs}"))),
    )
}

/// An 8-bit QAT stage from the stage config `from` (32x32 inputs): trained, exported as
/// `model.qnt` and benched from it.
fn qat_exports_and_benches(dir: &Path, data: &Path, from: &Path) {
    let qat = derived_config(
        "qat",
        (data, from),
        (
            "quant",
            "mode = \"qat\"\nbits = 8\nactivation_bits = 8\nobserver = \"ema\"",
        ),
        (1, 16, 0.005),
    );
    let qat = write(&dir.join("qat.toml"), &at_32(qat));
    train_ok(dir, &qat, &["--plain"]);
    let run = only_run_dir(dir, "qat");
    assert_eq!(summary(&run)["artifact"], "model.qnt");
    bench_ok(dir, &run, &[]);
}

#[test]
fn a_torchvision_layout_resnet_is_pruned_then_quantized() {
    // torchvision's stem (7x7 stride 2, then a 3x3 stride-2 max-pool) and a stage of two
    // blocks, on the 8x8 images resized to 32x32.
    let (dir, data) = folder_with_data(64);
    let model = "kind = \"resnet\"\nstem = 8\nstem_layout = \"imagenet\"\nstages = [8, 16]\n\
                 blocks = [1, 2]";
    let parent = parent_at_32(dir.path(), &data, model, 2);
    let pruned = write(
        &dir.path().join("pruned.toml"),
        &at_32(pruned_config(
            &data,
            &parent,
            "criterion = \"l2\"\nmacs_ratio = 0.6\nround_to = 2",
            1,
        )),
    );
    train_ok(dir.path(), &pruned, &["--plain"]);
    let run = only_run_dir(dir.path(), "pruned");
    let spec = models::file::read_spec(&run.join("model.bpk")).unwrap();
    let ModelSpec::Resnet {
        stem_layout,
        stem,
        blocks,
        ..
    } = &spec
    else {
        panic!("not a resnet: {spec:?}");
    };
    assert_eq!(*stem_layout, models::StemLayout::Imagenet);
    assert_eq!(*blocks, models::BlockCounts::PerStage(vec![1, 2]));
    assert!(*stem < 8, "{spec:?}");
    let parent_macs = summary(&only_run_dir(dir.path(), "parent"))["macs"]
        .as_u64()
        .unwrap();
    assert!(summary(&run)["macs"].as_u64().unwrap() < parent_macs);

    qat_exports_and_benches(dir.path(), &data, &pruned);
}

#[test]
fn a_mobilenet_v2_is_pruned_through_its_inverted_residuals_then_quantized() {
    // torchvision's MobileNetV2 at a quarter width, on the 8x8 images resized to 32x32.
    let (dir, data) = folder_with_data(64);
    let parent = parent_at_32(dir.path(), &data, MOBILENET, 2);
    let pruned = write(
        &dir.path().join("pruned.toml"),
        &at_32(pruned_config(
            &data,
            &parent,
            "criterion = \"l2\"\nmacs_ratio = 0.5\nround_to = 2",
            1,
        )),
    );
    train_ok(dir.path(), &pruned, &["--plain"]);
    let run = only_run_dir(dir.path(), "pruned");
    let spec = models::file::read_spec(&run.join("model.bpk")).unwrap();
    let ModelSpec::MobilenetV2 {
        widths: Some(widths),
        ..
    } = &spec
    else {
        panic!("not a pruned mobilenet: {spec:?}");
    };
    assert_eq!(widths.hidden.len(), 17);
    let parent_macs = summary(&only_run_dir(dir.path(), "parent"))["macs"]
        .as_u64()
        .unwrap();
    assert!(summary(&run)["macs"].as_u64().unwrap() <= parent_macs / 2 + parent_macs / 20);
    bench_ok(dir.path(), &run, &[]);

    qat_exports_and_benches(dir.path(), &data, &pruned);
}

#[test]
fn a_pruning_run_killed_between_steps_resumes_to_the_same_result() {
    let (dir, data) = folder_with_data(256);
    // One epoch of parent: the kill marker (`epoch 2 step`) must be the pruning stage's.
    let parent = parent_config(dir.path(), &data, VGG);
    let text = std::fs::read_to_string(&parent).unwrap();
    write(&parent, &text.replace("epochs = 2", "epochs = 1"));
    let config = pruned_config(
        &data,
        &parent,
        "criterion = \"taylor\"\ntaylor_batches = 4\nschedule = \"agp\"\nsteps = 2\nevery = 1\nratio = 0.5",
        3,
    )
    .replace("batch_size = 16", "batch_size = 4");
    let (_a, _b) = kill_and_resume_matches_with_env(&config, "pruned", 2, &[]);
}

#[test]
fn a_mobilenet_pruning_run_killed_between_steps_resumes_to_the_same_result() {
    let (dir, data) = folder_with_data(256);
    // One epoch of parent: the kill marker (`epoch 2 step`) must be the pruning stage's.
    let parent = parent_at_32(dir.path(), &data, MOBILENET, 1);
    let config = at_32(pruned_config(
        &data,
        &parent,
        "criterion = \"l2\"\nschedule = \"agp\"\nsteps = 2\nevery = 1\nratio = 0.5",
        3,
    ))
    .replace("batch_size = 16", "batch_size = 8");
    let (_a, _b) = kill_and_resume_matches_with_env(&config, "pruned", 2, &[]);
}

#[test]
fn a_sparse_model_file_is_small_and_reproduces_its_accuracy() {
    let (dir, data) = folder_with_data(64);
    let parent = write(
        &dir.path().join("parent.toml"),
        &small_config(&data)
            .replace("name = \"small\"", "name = \"parent\"")
            .replace("hidden = [16]", "hidden = [64, 32]"),
    );
    let sparse = format!(
        "{}\n[sparsify]\nsparsity = 0.9\nschedule = \"agp\"\nsteps = 2\nevery = 1\n",
        pruned_config(&data, &parent, "", 2).replace("[prune]\n\n", "")
    )
    .replace("name = \"pruned\"", "name = \"sparse\"");
    let sparse = write(&dir.path().join("sparse.toml"), &sparse);
    let out = train_ok(dir.path(), &sparse, &["--plain"]);
    assert!(out.contains("sparsify step 2/2"), "{out}");
    let run = only_run_dir(dir.path(), "sparse");
    let s = summary(&run);
    let file = std::fs::metadata(run.join("model.sparse")).unwrap().len();
    let dense = std::fs::metadata(run.join("model.bpk")).unwrap().len();
    assert_eq!(s["model_bytes"].as_u64().unwrap(), file);
    assert!(file * 4 < dense, "sparse {file} vs dense {dense}");
    let steps = s["techniques"]["sparsify"]["steps"].as_array().unwrap();
    assert!((steps[1]["sparsity"].as_f64().unwrap() - 0.9).abs() < 1e-3);

    // Measured again from the sparse file alone: the same accuracy.
    let from_file = write(
        &dir.path().join("reloaded.toml"),
        &measured_from(&data, &run.join("model.sparse"), "reloaded"),
    );
    train_ok(dir.path(), &from_file, &["--plain"]);
    let r = summary(&only_run_dir(dir.path(), "reloaded"));
    assert_eq!(r["accuracy"], s["accuracy"]);
    assert_eq!(r["test_loss"], s["test_loss"]);
}

#[test]
fn sensitivity_writes_a_csv_a_plot_and_tensorboard_scalars() {
    let (dir, data) = folder_with_data(64);
    let parent = parent_config(dir.path(), &data, VGG);
    let out = train(dir.path())
        .args(["sensitivity", parent.to_str().unwrap(), "--plain"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let folder = only_run_dir(dir.path(), "parent").join("sensitivity");
    let csv = std::fs::read_to_string(folder.join("sensitivity.csv")).unwrap();
    // Header, then 9 ratios for each of the 3 groups (two convs, one hidden fc).
    assert_eq!(csv.lines().count(), 1 + 3 * 9, "{csv}");
    assert!(
        std::fs::metadata(folder.join("sensitivity.png"))
            .unwrap()
            .len()
            > 1000
    );
    let scalars = outcome_scalars(&folder);
    assert_eq!(
        scalars
            .iter()
            .filter(|(tag, _, _)| tag == "sensitivity/stages.0.0")
            .count(),
        9
    );
    // Every criterion ranks (random is the control); the folder is rewritten each time.
    for criterion in ["l1", "bn-gamma", "taylor", "random"] {
        let out = train(dir.path())
            .args([
                "sensitivity",
                parent.to_str().unwrap(),
                "--criterion",
                criterion,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{criterion}: {}", text(&out));
    }
    let bad = train(dir.path())
        .args(["sensitivity", parent.to_str().unwrap(), "--criterion", "l3"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("one of l1, l2, bn-gamma, taylor, random"));
}

/// Each bad `[prune]` section (or stage) is refused with its key, before anything runs.
#[test]
fn bad_pruning_input_is_refused_before_any_work() {
    let (dir, data) = folder_with_data(64);
    let parent = parent_config(dir.path(), &data, VGG);
    let cases: &[(&str, usize, &str)] = &[
        ("ratio = 1.0", 1, "prune.ratio = 1: must be in [0, 1)"),
        ("ratio = -0.1", 1, "prune.ratio = -0.1"),
        (
            "ratio = 0.5\nlayers = { \"conv*\" = 0.3 }",
            1,
            "prune.layers.\"conv*\"",
        ),
        ("ratio = 0.5\nexclude = [\"fc9\"]", 1, "prune.exclude"),
        (
            "ratio = 0.95\nmin_channels = 0",
            1,
            "leaves this group without channels",
        ),
        (
            "macs_ratio = 0.9\nexclude = [\"stages.*\"]",
            1,
            "unreachable",
        ),
        (
            "ratio = 0.5\nschedule = \"iterative\"\nsteps = 3\nevery = 2",
            3,
            "train.epochs = 3",
        ),
        ("ratio = 0.5\nratio_typo = 1", 1, "ratio_typo"),
        ("", 1, "needs a target"),
    ];
    for (section, epochs, expected) in cases {
        let config = write(
            &dir.path().join("bad.toml"),
            &pruned_config(&data, &parent, section, *epochs),
        );
        let out = train(dir.path()).arg(&config).output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{section}: accepted");
        assert!(t.contains(expected), "{section}: {t}");
        assert!(
            !dir.path().join("runs").exists(),
            "{section}: work was done"
        );
    }
    // No `from`, and a `from` that names no trained model.
    let no_from = pruned_config(&data, &parent, "ratio = 0.5", 1)
        .replace(&format!("from = \"{}\"\n", parent.display()), "")
        + "\n[model]\nkind = \"mlp\"\nhidden = [16]\n";
    let config = write(&dir.path().join("bad.toml"), &no_from);
    let out = train(dir.path()).arg(&config).output().unwrap();
    assert!(
        text(&out).contains("starts from a trained model"),
        "{}",
        text(&out)
    );
    let missing = pruned_config(&data, Path::new("nowhere.toml"), "ratio = 0.5", 1);
    let config = write(&dir.path().join("bad.toml"), &missing);
    let out = train(dir.path()).arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("nowhere.toml"), "{}", text(&out));
    assert!(!dir.path().join("runs").exists());
}
