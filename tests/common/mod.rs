//! Helpers shared by the end-to-end tests: run the real `train` binary in a temp folder with a
//! cleared environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_train")
}

/// A command for the binary, run in `dir`, with only PATH and HOME (for the dataset cache)
/// kept from the environment.
pub fn train(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir).env_clear();
    for key in ["PATH", "HOME", "XDG_CACHE_HOME"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes a small but learnable IDX dataset: `n` 8x8 images per split, class `c` lights up
/// row `c` (with noise), 4 classes.
pub fn write_idx_dataset(dir: &Path, n: usize) {
    let mut state = 12345u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 59) as u8
    };
    for split in ["train", "t10k"] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let class = (i % 4) as u8;
            for r in 0..8 {
                for _ in 0..8 {
                    let base: u8 = if r / 2 == class as usize { 180 } else { 10 };
                    pixels.push(base + noise());
                }
            }
            labels.push(class);
        }
        let images = data::idx::IdxImages {
            rows: 8,
            cols: 8,
            pixels,
        };
        std::fs::write(
            dir.join(format!("{split}-images-idx3-ubyte")),
            data::idx::encode_images(&images),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{split}-labels-idx1-ubyte")),
            data::idx::encode_labels(&labels),
        )
        .unwrap();
    }
}

/// A config for a quick MLP run on the IDX folder `data`.
pub fn small_config(data: &Path) -> String {
    format!(
        r#"name = "small"
seed = 3

[data]
dataset = "idx"
path = "{}"

[model]
kind = "mlp"
hidden = [16]

[train]
epochs = 2
batch_size = 16
log_every = 4

[train.optimizer]
kind = "sgd"
lr = 0.05
momentum = 0.9

[measure]
latency_images = 20
latency_warmup = 2
"#,
        data.display()
    )
}

pub fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}
