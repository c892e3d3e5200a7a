//! MLP inference, burn's layers against our packed ones (`models::Inference`), side by side:
//! the Hinton teacher's 784-1200-1200-10 MLP and the 800-800 student at batch 1 and 32, one
//! thread, logits read back. Rounds alternate between the two so a noisy neighbour hits both;
//! medians per batch (in microseconds) and the ratio.
//!
//! ```text
//! cargo test -p runner --bench inference      # the users' dev profile
//! cargo bench -p runner --bench inference
//! ```

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use measure::latency::median;
use models::{Classifier, Inference, InputShape, Model, ModelSpec};

const ROUNDS: usize = 7;
const CALLS: usize = 200;

/// Microseconds per call of `classifier` on `x`, after a warm-up.
fn round(classifier: &dyn Classifier, x: &Tensor<4>) -> f64 {
    for _ in 0..20 {
        let _ = classifier.classify(x.clone()).into_data();
    }
    let start = Instant::now();
    for _ in 0..CALLS {
        let _ = classifier.classify(x.clone()).into_data();
    }
    start.elapsed().as_secs_f64() * 1e6 / CALLS as f64
}

fn main() {
    let device = Device::flex();
    let input = InputShape {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    if !kernels::PackedLinear::available() {
        println!("this CPU lacks AVX-512: the packed kernel does not run, nothing to compare");
        return;
    }
    println!(
        "MLP inference on 1 thread, medians of {ROUNDS} interleaved rounds of {CALLS} calls\n"
    );
    println!(
        "{:<18} {:>6} {:>12} {:>12} {:>8} {:>14}",
        "model", "batch", "burn us", "packed us", "ratio", "packed img/s"
    );
    let pool = measure::compute_pool(1).expect("a one-thread pool");
    for (name, hidden) in [
        ("MLP 1200-1200", "[1200, 1200]"),
        ("MLP 800-800", "[800, 800]"),
    ] {
        let spec: ModelSpec =
            toml::from_str(&format!("kind = \"mlp\"\nhidden = {hidden}")).unwrap();
        device.seed(1);
        let model = Model::new(&spec, &input, &device).unwrap();
        let packed = Inference::new(&model);
        for batch in [1, 32] {
            let x =
                Tensor::<4>::random([batch, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
            let (mut burn, mut ours) = (Vec::new(), Vec::new());
            pool.install(|| {
                for _ in 0..ROUNDS {
                    burn.push(round(&model, &x));
                    ours.push(round(&packed, &x));
                }
            });
            let (burn, ours) = (median(burn), median(ours));
            println!(
                "{name:<18} {batch:>6} {burn:>12.1} {ours:>12.1} {:>7.2}x {:>14.0}",
                burn / ours,
                batch as f64 * 1e6 / ours
            );
        }
    }
}
