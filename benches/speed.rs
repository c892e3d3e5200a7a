//! Training-step and inference speed on the CPU, every setup side by side in one run:
//!
//! - `plain`: the project's training step called from the main thread (flex hands each op to
//!   rayon's global pool);
//! - `pooled`: the same inside a pool of one thread per core (what `train.replicas = 1` does);
//! - `replicas`: the batch split across one replica per core, each on its own one-thread pool
//!   (`train.replicas`, the default for convolutional nets);
//! - `libtorch`: LibTorch's CPU device, when built with `--features tch`.
//!
//! Workloads: LeNet-5 + BatchNorm (batch 64, configs/teacher.toml), the VGG-style CNN of
//! configs/vgg-teacher.toml (batch 128), ResNet-20 on 32x32 RGB (batch 128) and the
//! 784-800-800-10 MLP (batch 128, the Hinton student), each trained with SGD + Nesterov momentum through `runner::train::train_step`,
//! the loop's own step; and batch-1 inference (p50, p95) on one thread. Rounds alternate
//! between setups so a noisy neighbour hits all of them; medians are reported, with each
//! setup's speed-up over `plain`.
//!
//! ```text
//! cargo bench -p runner --bench speed
//! LIBTORCH="$(scripts/libtorch.sh)" cargo bench -p runner --features tch --bench speed
//! ```
//!
//! `cargo test -p runner --bench speed` runs the same in debug-free dev profile (what users
//! get from `cargo run`). `COMPRESS_CONV=im2col` trains every convolution through im2col (the
//! kernels before issue 31), to compare the two paths in one build.

use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::Distribution;
use models::{Classifier, InputShape, Model, ModelSpec};
use runner::replicas::Replicas;
use runner::train::{train_step, Shard, StageForward, StepKey};
use settings::schema::OptimizerConfig;
use technique::{CrossEntropy, Trainee};

const ROUNDS: usize = 7;
const STEPS: usize = 12;
const INFERENCES: usize = 300;

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Workload {
    name: &'static str,
    spec: &'static str,
    batch: usize,
    /// `[channels, height, width]` of an input.
    input: [usize; 3],
}

const MNIST: [usize; 3] = [1, 28, 28];

const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "LeNet-5 + BN",
        spec: "kind = \"lenet5\"",
        batch: 64,
        input: MNIST,
    },
    Workload {
        name: "VGG 32-32/64-64",
        spec: "kind = \"vgg\"\nstages = [[32, 32], [64, 64]]\nfc = [256]\ndropout = 0.3",
        batch: 128,
        input: MNIST,
    },
    Workload {
        name: "ResNet-20 RGB",
        spec: "kind = \"resnet\"\nstem = 16\nstages = [16, 32, 64]\nblocks = 3",
        batch: 128,
        input: [3, 32, 32],
    },
    Workload {
        name: "MLP 800-800",
        spec: "kind = \"mlp\"\nhidden = [800, 800]",
        batch: 128,
        input: MNIST,
    },
];

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Plain,
    Pooled,
    Replicas,
    LibTorch,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::Pooled => "pooled",
            Setup::Replicas => "replicas",
            Setup::LibTorch => "libtorch",
        }
    }

    fn device(self) -> Device {
        match self {
            Setup::LibTorch => settings::device::parse_device("libtorch").expect("tch build"),
            _ => Device::flex(),
        }
    }
}

fn model(work: &Workload, device: &Device) -> Model {
    let spec: ModelSpec = toml::from_str(work.spec).unwrap();
    let [channels, height, width] = work.input;
    let input = InputShape {
        channels,
        height,
        width,
        classes: 10,
    };
    device.seed(1);
    Model::new(&spec, &input, device).unwrap()
}

fn optimizer() -> ModuleOptimizer {
    let config: OptimizerConfig =
        toml::from_str("kind = \"sgd\"\nlr = 0.01\nmomentum = 0.9\nnesterov = true").unwrap();
    runner::train::build_optimizer(&config)
}

/// Milliseconds per training step over `STEPS` steps (after one untimed step).
fn train_round(work: &Workload, setup: Setup, cores: usize) -> f64 {
    let device = setup.device().autodiff();
    let b = work.batch;
    let shards = if setup == Setup::Replicas { cores } else { 1 };
    let replicas = Replicas::new(shards).unwrap();
    let [c, h, w] = work.input;
    let images = Tensor::<4>::random([b, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..b as i64).map(|i| i % 10).collect();
    let indices: Vec<usize> = (0..b).collect();
    let run = || {
        let mut trainee = Trainee {
            model: model(work, &device),
            aux: Vec::new(),
        };
        let mut optim = optimizer();
        let parts = Shard::split(&images, &labels, &indices, shards);
        let mut start = Instant::now();
        for step in 0..=STEPS {
            if step == 1 {
                start = Instant::now();
            }
            trainee = train_step(
                trainee,
                &mut optim,
                StageForward {
                    loss: &CrossEntropy,
                    hook: None,
                },
                &parts,
                (shards > 1).then_some(&replicas),
                StepKey {
                    seed: 1,
                    step: step as u64,
                },
                0.01,
                false,
            )
            .unwrap_or_else(|loss| panic!("non-finite loss {loss}"))
            .trainee;
        }
        let _ = device.sync();
        start.elapsed().as_secs_f64() * 1e3 / STEPS as f64
    };
    match setup {
        Setup::Plain => run(),
        _ => measure::compute_pool(cores).unwrap().install(run),
    }
}

/// Microseconds of each batch-1 inference (classes read back), on one thread.
fn infer_round(work: &Workload, setup: Setup) -> Vec<f64> {
    let pool = measure::compute_pool(1).unwrap();
    pool.install(|| {
        let device = setup.device();
        let model = model(work, &device);
        let [c, h, w] = work.input;
        let x = Tensor::<4>::random([1, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let mut times = Vec::with_capacity(INFERENCES);
        for i in 0..INFERENCES + 30 {
            let start = Instant::now();
            let _ = model.classify(x.clone()).argmax(1).into_data();
            if i >= 30 {
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        times
    })
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut setups = vec![Setup::Plain, Setup::Pooled, Setup::Replicas];
    if settings::device::parse_device("libtorch").is_ok() {
        setups.push(Setup::LibTorch);
    } else {
        println!("(built without --features tch: flex alone)");
    }
    println!(
        "training steps on {cores} threads ({cores} replicas), batch-1 inference on 1 thread; \
         medians of {ROUNDS} interleaved rounds ({STEPS} steps, {INFERENCES} inferences each)\n"
    );
    let header: String = setups.iter().map(|s| format!("{:>10}", s.name())).collect();
    let speedups: String = setups[1..]
        .iter()
        .map(|s| format!("{:>10}", format!("{}/plain", &s.name()[..3])))
        .collect();
    println!("{:<16} {:<24}{header}{speedups}", "model", "measure");
    for work in &WORKLOADS {
        let mut train = vec![Vec::new(); setups.len()];
        let mut infer = vec![Vec::new(); setups.len()];
        for _ in 0..ROUNDS {
            for (k, &setup) in setups.iter().enumerate() {
                train[k].push(train_round(work, setup, cores));
            }
            // Inference is the same code on flex whatever the training setup: measure flex
            // once (in the `plain` column) and LibTorch.
            for (k, &setup) in setups.iter().enumerate() {
                if matches!(setup, Setup::Plain | Setup::LibTorch) {
                    infer[k].extend(infer_round(work, setup));
                }
            }
        }
        let step_ms: Vec<f64> = train.iter().map(|t| percentile(t.clone(), 0.5)).collect();
        let samples: Vec<f64> = step_ms
            .iter()
            .map(|ms| work.batch as f64 * 1e3 / ms)
            .collect();
        let row = |measure: String, values: &[Option<f64>], higher_is_better: bool| {
            let cells: String = values
                .iter()
                .map(|v| v.map_or(format!("{:>10}", "-"), |v| format!("{v:>10.1}")))
                .collect();
            let ratios: String = match values[0] {
                Some(plain) => values[1..]
                    .iter()
                    .map(|v| match v {
                        Some(v) if higher_is_better => format!("{:>9.2}x", v / plain),
                        Some(v) => format!("{:>9.2}x", plain / v),
                        None => format!("{:>10}", "-"),
                    })
                    .collect(),
                None => String::new(),
            };
            println!("{:<16} {measure:<24}{cells}{ratios}", work.name);
        };
        let some = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        row(
            format!("train step b{} (ms)", work.batch),
            &some(&step_ms),
            false,
        );
        row("train samples/s".into(), &some(&samples), true);
        for (q, name) in [(0.5, "batch-1 p50 (us)"), (0.95, "batch-1 p95 (us)")] {
            let values: Vec<Option<f64>> = infer
                .iter()
                .map(|t| (!t.is_empty()).then(|| percentile(t.clone(), q)))
                .collect();
            row(name.into(), &values, false);
        }
    }
}
