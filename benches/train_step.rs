//! Training-step and inference speed on the CPU, setups measured side by side in one run.
//!
//! `cargo bench -p runner --bench train_step`
//!
//! Compares LeNet-5 training steps (batch 128, SGD) run from the main thread (flex hands each
//! op to rayon's global pool) against the same steps inside a dedicated pool, which is what the
//! runner does; and batch-1 inference on the main thread against a 1-thread pool, which is how
//! the latency harness measures. Reports medians of repeated rounds and their ratios.

use std::time::Instant;

use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use models::loss::cross_entropy;
use models::{InputShape, Model, ModelSpec};

const ROUNDS: usize = 7;
const STEPS: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn lenet(device: &Device) -> Model {
    let spec: ModelSpec = toml::from_str("kind = \"lenet5\"").unwrap();
    let input = InputShape {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    device.seed(1);
    Model::new(&spec, &input, device).unwrap()
}

/// Median milliseconds per training step.
fn train_steps(device: &Device) -> f64 {
    let device = device.clone().autodiff();
    let mut model = lenet(&device);
    let mut optim = SgdConfig::new().init();
    let x = Tensor::<4>::random([128, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..128).map(|i| i % 10).collect::<Vec<i64>>(), [128]),
        &device,
    );
    let mut rounds = Vec::new();
    for round in 0..=ROUNDS {
        let start = Instant::now();
        for _ in 0..STEPS {
            let loss = cross_entropy(model.forward(x.clone()), y.clone());
            let _: f32 = loss.clone().into_scalar();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.01, model, grads);
        }
        if round > 0 {
            // Round 0 is warm-up.
            rounds.push(start.elapsed().as_secs_f64() * 1e3 / STEPS as f64);
        }
    }
    median(rounds)
}

/// Median microseconds per batch-1 forward (read back, as a caller would).
fn infer_one(device: &Device) -> f64 {
    let model = lenet(device);
    let x = Tensor::<4>::random([1, 1, 28, 28], Distribution::Normal(0.0, 1.0), device);
    let mut times = Vec::new();
    for i in 0..550 {
        let start = Instant::now();
        let _ = model.forward(x.clone()).argmax(1).into_data();
        if i >= 50 {
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    median(times)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn main() {
    let device = Device::flex();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("LeNet-5 + BatchNorm on flex, {cores} cores, medians of {ROUNDS} rounds");

    let main_thread = train_steps(&device);
    let in_pool = pool(cores).install(|| train_steps(&device));
    let one_thread = pool(1).install(|| train_steps(&device));
    println!("training step, batch 128 (ms/step, lower is better):");
    println!(
        "  main thread, global pool   {main_thread:7.2}  ({:.0} samples/s)",
        128e3 / main_thread
    );
    println!("  inside a {cores}-thread pool     {in_pool:7.2}  ({:.0} samples/s)  x{:.2} vs main thread", 128e3 / in_pool, main_thread / in_pool);
    println!(
        "  inside a 1-thread pool     {one_thread:7.2}  ({:.0} samples/s)  x{:.2} vs main thread",
        128e3 / one_thread,
        main_thread / one_thread
    );

    let main_latency = infer_one(&device);
    let pool_latency = pool(1).install(|| infer_one(&device));
    println!("batch-1 forward + read-back (us, lower is better):");
    println!("  main thread                {main_latency:7.1}");
    println!(
        "  inside a 1-thread pool     {pool_latency:7.1}  x{:.2} vs main thread",
        main_latency / pool_latency
    );
}
