//! MLP inference, burn's layers against our packed ones (`models::Inference`), side by side:
//! the Hinton teacher's 784-1200-1200-10 MLP and the 800-800 student at batch 1 and 32, one
//! thread, logits read back. Rounds alternate between the two so a noisy neighbour hits both;
//! medians per batch (in microseconds) and the ratio. Then, on the 1200-1200 MLP with its
//! smallest weights zeroed (one global magnitude threshold, as `[sparsify]` does) at several
//! sparsities, the dense kernels against the stack as it chooses (sparse layers where
//! `kernels::SPARSE_BELOW_DENSITY` and `SPARSE_ROWS_TIMES_DENSITY` say they pay), with the
//! kernel each layer ran.
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

/// The `train` binary's allocator, so that `train bench`'s passes are what this measures.
#[global_allocator]
static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache;

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
    sparse_against_dense(&pool, &input);
}

/// `model` with the smallest `sparsity` of its weight matrices' entries zeroed (one global
/// magnitude threshold; biases kept).
fn pruned(model: &Model, sparsity: f64) -> Model {
    use models::params::{self, Edit};
    let weights = params::values(model, |p| p.ends_with(".weight"));
    let mut magnitudes: Vec<f32> = weights
        .values()
        .flat_map(|t| t.values.iter().map(|v| v.abs()))
        .collect();
    let cut = ((magnitudes.len() as f64 * sparsity) as usize).min(magnitudes.len() - 1);
    let threshold = *magnitudes.select_nth_unstable_by(cut, f32::total_cmp).1;
    let edits = weights
        .into_iter()
        .map(|(path, mut t)| {
            t.values
                .iter_mut()
                .filter(|v| v.abs() < threshold)
                .for_each(|v| *v = 0.0);
            (path, Edit::Replace(t))
        })
        .collect();
    params::edit(model.clone(), &edits).0
}

/// Microseconds per call of `stack` on `x`, after a warm-up.
fn stack_round(stack: &kernels::PackedStack, x: &Tensor<2>) -> f64 {
    for _ in 0..20 {
        let _ = stack.forward(x).unwrap().into_data();
    }
    let start = Instant::now();
    for _ in 0..CALLS {
        let _ = stack.forward(x).unwrap().into_data();
    }
    start.elapsed().as_secs_f64() * 1e6 / CALLS as f64
}

fn sparse_against_dense(pool: &rayon::ThreadPool, input: &InputShape) {
    let device = Device::flex();
    println!("\nMLP 1200-1200, dense against sparse kernels, 1 thread, medians of {ROUNDS} rounds");
    println!(
        "{:<10} {:>6} {:>12} {:>12} {:>8}  kernels",
        "sparsity", "batch", "dense us", "chosen us", "ratio"
    );
    let spec: ModelSpec = toml::from_str("kind = \"mlp\"\nhidden = [1200, 1200]").unwrap();
    device.seed(2);
    let model = Model::new(&spec, input, &device).unwrap();
    for sparsity in [0.5, 0.7, 0.8, 0.9, 0.95] {
        let model = pruned(&model, sparsity);
        let models::Model::Mlp(mlp) = &model else {
            unreachable!("an MLP spec")
        };
        let dense = kernels::PackedStack::with_sparse_below(&mlp.layers, 0.0).unwrap();
        let sparse = kernels::PackedStack::new(&mlp.layers).unwrap();
        for batch in [1, 32] {
            // Non-negative inputs, half of them zero, as pixels and ReLU outputs are.
            let x = Tensor::<2>::random([batch, 784], Distribution::Normal(0.0, 1.0), &device)
                .clamp_min(0.0);
            let (mut d, mut s) = (Vec::new(), Vec::new());
            pool.install(|| {
                for _ in 0..ROUNDS {
                    d.push(stack_round(&dense, &x));
                    s.push(stack_round(&sparse, &x));
                }
            });
            let (d, s) = (median(d), median(s));
            let kernels = sparse.kernels(batch).join(", ");
            println!(
                "{sparsity:<10} {batch:>6} {d:>12.1} {s:>12.1} {:>7.2}x  {kernels}",
                d / s
            );
        }
    }
}
