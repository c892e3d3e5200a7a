//! The training convolution per layer shape: ResNet-20's layers at batch 128 (32x32 RGB), or
//! with `CONV_NET=resnet18` ResNet-18's at batch 32 (224x224 RGB), one thread, as `kernels::conv2d` trains them (the forward alone, then the forward with
//! both gradients). Each row also gives the layer's count in the network and their time
//! together, so the rows add up to the convolutions' share of a training step. Medians in
//! milliseconds. `COMPRESS_CONV=im2col` (read once per process) times im2col for every layer.
//! The bench allocates through the `train` binary's allocator (`crates/block_cache`).
//! `CONV_ONLY=16->32` times only the rows whose label starts with that text (to profile one).
//!
//! ```text
//! cargo test -p kernels --bench conv_train
//! CONV_NET=resnet18 cargo test -p kernels --bench conv_train
//! ```

#[path = "timing.rs"]
mod timing;

use burn::prelude::*;
use burn::tensor::Distribution;
use timing::{median, one_thread, time};

#[global_allocator]
static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache;

const ROUNDS: usize = 5;

/// A layer: (c_in, c_out, input size, kernel, stride), and its count in the network.
type Layer = ([usize; 5], usize);

/// ResNet-20's convolutions (batch 128).
const RESNET20: [Layer; 8] = [
    ([3, 16, 32, 3, 1], 1),
    ([16, 16, 32, 3, 1], 6),
    ([16, 32, 32, 3, 2], 1),
    ([16, 32, 32, 1, 2], 1),
    ([32, 32, 16, 3, 1], 5),
    ([32, 64, 16, 3, 2], 1),
    ([32, 64, 16, 1, 2], 1),
    ([64, 64, 8, 3, 1], 5),
];

/// torchvision's ResNet-18 at 224x224 (batch 32).
const RESNET18: [Layer; 11] = [
    ([3, 64, 224, 7, 2], 1),
    ([64, 64, 56, 3, 1], 4),
    ([64, 128, 56, 3, 2], 1),
    ([64, 128, 56, 1, 2], 1),
    ([128, 128, 28, 3, 1], 3),
    ([128, 256, 28, 3, 2], 1),
    ([128, 256, 28, 1, 2], 1),
    ([256, 256, 14, 3, 1], 3),
    ([256, 512, 14, 3, 2], 1),
    ([256, 512, 14, 1, 2], 1),
    ([512, 512, 7, 3, 1], 3),
];

/// Milliseconds of the forward alone and of the forward with both gradients.
fn measure([c_in, c_out, h, k, stride]: [usize; 5], batch: usize) -> [f64; 2] {
    let device = Device::flex().autodiff();
    let pad = k / 2;
    let x = Tensor::<4>::random([batch, c_in, h, h], Distribution::Normal(0.0, 1.0), &device);
    let w = Tensor::<4>::random([c_out, c_in, k, k], Distribution::Normal(0.0, 0.2), &device);
    let (x, w) = (x.require_grad(), w.require_grad());
    let conv = || kernels::conv2d(&x, &w, [stride; 2], [pad; 2]).expect("flex f32");
    let forward = time(|| drop(conv().into_data()), 3) / 1e3;
    let train = time(
        || {
            let grads = conv().sum().backward();
            drop(w.grad(&grads).expect("weight grad").into_data());
            drop(x.grad(&grads).expect("input grad").into_data());
        },
        3,
    ) / 1e3;
    [forward, train]
}

fn main() {
    one_thread();
    let net = std::env::var("CONV_NET").unwrap_or_else(|_| "resnet20".into());
    let (name, batch, layers): (_, _, &[Layer]) = match net.as_str() {
        "resnet20" => ("ResNet-20", 128, &RESNET20),
        "resnet18" => ("ResNet-18", 32, &RESNET18),
        other => {
            eprintln!("CONV_NET={other}: expected resnet20 or resnet18");
            std::process::exit(2);
        }
    };
    println!("{name}'s convolutions at batch {batch}, 1 thread, medians of {ROUNDS} rounds, ms\n");
    println!(
        "{:<26} {:>6} {:>9} {:>11} {:>12}",
        "layer (in->out, hxw, k, s)", "count", "forward", "fwd + bwd", "all of them"
    );
    let only = std::env::var("CONV_ONLY").unwrap_or_default();
    let mut total = 0.0;
    for &([c_in, c_out, h, k, s], count) in layers {
        let label = format!("{c_in}->{c_out}, {h}x{h}, {k}, {s}");
        if !label.starts_with(&only) {
            continue;
        }
        let runs: Vec<[f64; 2]> = (0..ROUNDS)
            .map(|_| measure([c_in, c_out, h, k, s], batch))
            .collect();
        let forward = median(runs.iter().map(|r| r[0]).collect());
        let train = median(runs.iter().map(|r| r[1]).collect());
        total += train * count as f64;
        println!(
            "{:<26} {:>6} {:>9.2} {:>11.2} {:>12.1}",
            label,
            count,
            forward,
            train,
            train * count as f64
        );
    }
    println!(
        "{:<26} {:>6} {:>9} {:>11} {:>12.1}",
        "all", "", "", "", total
    );
}
