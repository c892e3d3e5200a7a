//! Depthwise 3x3 convolutions per MobileNetV2 layer shape (32x32 images), the two kernels side
//! by side on one thread: one (sample, channel) plane at a time (`DepthwiseLayout::Planes`)
//! and one sample's pixels at a time, channels innermost (`DepthwiseLayout::Pixels`). Two
//! measures per layer: inference at batch 32, and a training step's forward and backward
//! (both gradients) at batch 64 (one replica's half of a batch of 128). Rounds interleave the
//! two kernels; medians in microseconds. `Auto` marks the one `depthwise_conv2d` picks.
//!
//! ```text
//! cargo test -p kernels --bench depthwise
//! ```

#[path = "timing.rs"]
mod timing;

use burn::prelude::*;
use burn::tensor::Distribution;
use kernels::{depthwise_conv2d_in, DepthwiseLayout};
use timing::{median, one_thread, time};

const ROUNDS: usize = 7;

/// Microseconds of one inference call at batch 32 and of one training forward and backward
/// at batch 64, by `layout`.
fn measure([c, h, stride]: [usize; 3], layout: DepthwiseLayout, weight: &Tensor<4>) -> [f64; 2] {
    let device = Device::flex();
    let x = Tensor::<4>::random([32, c, h, h], Distribution::Normal(0.0, 1.0), &device);
    let conv = |x: &Tensor<4>, w: &Tensor<4>| {
        depthwise_conv2d_in(x, w, [stride, stride], [1, 1], layout).expect("flex f32")
    };
    let calls = (2_000_000 / (32 * c * h * h)).clamp(5, 2_000);
    let infer = time(|| drop(conv(&x, weight).into_data()), calls);
    let autodiff = device.autodiff();
    let x = Tensor::<4>::random([64, c, h, h], Distribution::Normal(0.0, 1.0), &autodiff);
    let w = Tensor::<4>::from_data(weight.to_data(), &autodiff).require_grad();
    let x = x.require_grad();
    let train = time(
        || {
            let grads = conv(&x, &w).sum().backward();
            drop(w.grad(&grads).expect("weight grad").into_data());
            drop(x.grad(&grads).expect("input grad").into_data());
        },
        calls / 2 + 1,
    );
    [infer, train]
}

fn main() {
    one_thread();
    let device = Device::flex();
    println!(
        "3x3 depthwise, padding 1, 1 thread, medians of {ROUNDS} rounds, us \
         (* = what depthwise_conv2d picks)\n"
    );
    println!(
        "{:<20} {:>11} {:>11} {:>8}   {:>11} {:>11} {:>8}",
        "layer (c, hxw, s)", "infer planes", "pixels", "ratio", "train planes", "pixels", "ratio"
    );
    // (channels, input size, stride): MobileNetV2's depthwise layers on 32x32 images.
    for [c, h, s] in [
        [32, 16, 1],
        [96, 16, 2],
        [144, 8, 1],
        [144, 8, 2],
        [192, 4, 1],
        [192, 4, 2],
        [384, 2, 1],
        [576, 2, 1],
        [576, 2, 2],
        [960, 1, 1],
        // At 224x224: where the rows grow past the pixel-major kernels' width.
        [32, 112, 1],
        [144, 56, 1],
        [384, 14, 1],
        [576, 14, 2],
        [960, 7, 1],
    ] {
        let weight = Tensor::<4>::random([c, 1, 3, 3], Distribution::Normal(0.0, 0.5), &device);
        let mut runs = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        for _ in 0..ROUNDS {
            for (k, layout) in [DepthwiseLayout::Planes, DepthwiseLayout::Pixels]
                .into_iter()
                .enumerate()
            {
                let [infer, train] = measure([c, h, s], layout, &weight);
                runs[k][0].push(infer);
                runs[k][1].push(train);
            }
        }
        let [[ip, tp], [ix, tx]] = runs.map(|r| r.map(median));
        let picked = DepthwiseLayout::Auto.resolve([32, c, h, h], [c, 1, 3, 3], [s, s], [1, 1]);
        let pixels = picked == Some(DepthwiseLayout::Pixels);
        let mark = |picked: bool| if picked { "*" } else { " " };
        println!(
            "{:<20} {:>10.1}{} {:>10.1}{} {:>7.2}x   {:>10.1}{} {:>10.1}{} {:>7.2}x",
            format!("{c}, {h}x{h}, {s}"),
            ip,
            mark(!pixels),
            ix,
            mark(pixels),
            ip / ix,
            tp,
            mark(!pixels),
            tx,
            mark(pixels),
            tp / tx,
        );
    }
}
