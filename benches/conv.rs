//! Float convolutions at inference, per layer shape, side by side on one thread: the training
//! kernel (`kernels::conv2d`, im2col + `gemm`, channel-major, what a model ran before
//! `kernels::PackedConv`), the pixel-major direct kernel (`PackedConv::direct`) and Winograd's
//! F(2x2, 3x3) (`PackedConv::new` on a 3x3 stride-1 layer). One sample per call, as the chain
//! program runs them; rounds interleave the three, medians in microseconds, and GFLOP/s of
//! the direct convolution's arithmetic (`2 * h * w * n * c * 9`, so Winograd's figure is an
//! effective rate).
//!
//! ```text
//! cargo test -p kernels --bench conv
//! ```

#[path = "timing.rs"]
mod timing;

use burn::prelude::*;
use burn::tensor::Distribution;
use kernels::{ConvWeights, PackedConv, Pixels};
use timing::{median, one_thread, time};

const ROUNDS: usize = 7;

fn main() {
    one_thread();
    let device = Device::flex();
    println!(
        "3x3 stride-1 convolutions, padding 1, one sample per call, 1 thread, medians of \
         {ROUNDS} rounds, us (GFLOP/s)\n"
    );
    println!(
        "{:<22} {:>16} {:>16} {:>16} {:>9}",
        "layer", "im2col + gemm", "direct", "Winograd", "vs im2col"
    );
    for (h, c, n) in [
        (28, 8, 16),
        (28, 16, 16),
        (28, 16, 32),
        (28, 32, 32),
        (14, 32, 64),
        (14, 64, 64),
        (32, 16, 16),
        (16, 32, 32),
        (16, 64, 64),
        (28, 64, 64),
        (8, 64, 64),
        (56, 64, 64),
    ] {
        let weight = Tensor::<4>::random([n, c, 3, 3], Distribution::Normal(0.0, 0.1), &device);
        let x = Tensor::<4>::random([1, c, h, h], Distribution::Normal(0.0, 1.0), &device);
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().expect("f32");
        let w = values(weight.clone());
        let (scale, shift) = (vec![1.0f32; n], vec![0.0f32; n]);
        let layer = || ConvWeights {
            weight: &w,
            shape: [n, c, 3, 3],
            window: [3, 1, 1],
            scale: &scale,
            shift: &shift,
            relu: true,
        };
        let (Some(direct), Some(winograd)) =
            (PackedConv::direct(layer()), PackedConv::new(layer()))
        else {
            println!("no AVX-512: nothing to compare");
            return;
        };
        let pixels = values(x.clone().permute([0, 2, 3, 1]));
        let input = Pixels::dense(h, h, c);
        let calls = (2_000_000 / (h * h * c * n)).clamp(20, 5000);
        let (mut padded, mut out) = (Vec::new(), Vec::new());
        let mut rounds = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            rounds[0].push(time(
                || {
                    let y = kernels::conv2d(&x, &weight, [1, 1], [1, 1]).expect("flex f32");
                    let _ = burn::tensor::activation::relu(y).into_data();
                },
                calls,
            ));
            rounds[1].push(time(
                || {
                    direct.forward(&pixels, input, &mut padded, &mut out);
                },
                calls,
            ));
            rounds[2].push(time(
                || {
                    winograd.forward(&pixels, input, &mut padded, &mut out);
                },
                calls,
            ));
        }
        let flops = 2.0 * (h * h * n * c * 9) as f64;
        let [im2col, direct_us, winograd_us] = rounds.map(median);
        let cell = |us: f64| format!("{us:.1} ({:.0})", flops / us / 1e3);
        let best = direct_us.min(winograd_us);
        println!(
            "{:<22} {:>16} {:>16} {:>16} {:>8.2}x",
            format!("{h}x{h} {c} -> {n}"),
            cell(im2col),
            cell(direct_us),
            if winograd.is_winograd() {
                cell(winograd_us)
            } else {
                "(direct)".into()
            },
            im2col / best
        );
    }
}
