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
//! configs/vgg-teacher.toml (batch 128), ResNet-20 and torchvision's MobileNetV2 on 32x32 RGB
//! (batch 128), torchvision's ResNet-18 on 224x224 RGB (batch 32) and the 784-800-800-10 MLP
//! (batch 128, the Hinton student), each trained with SGD + Nesterov momentum through
//! `runner::train::train_step`, the loop's own step; and inference on one thread through
//! `models::Inference` (what `train bench` measures): batch-1 latency (p50, p95) and batch-32
//! images/s. Rounds alternate between setups so a noisy neighbour hits all of them; medians
//! are reported, with each setup's speed-up over `plain`.
//!
//! ```text
//! cargo bench -p runner --bench speed
//! LIBTORCH="$(scripts/libtorch.sh)" cargo bench -p runner --features tch --bench speed
//! ```
//!
//! `cargo test -p runner --bench speed` runs the same in debug-free dev profile (what users
//! get from `cargo run`). `COMPRESS_CONV=im2col` trains every convolution through im2col (the
//! kernels before issue 31), to compare the two paths in one build. `SPEED_ONLY=resnet` runs
//! only the workloads whose name contains that text (any case); `SPEED_ROUNDS=3` fewer rounds;
//! `SPEED_SETUPS=replicas` (comma-separated) only those setups, to profile one;
//! `SPEED_PARTS=infer` (or `train`) only inference (or training). The bench allocates through
//! the `train` binary's allocator (`crates/block_cache`), as users' runs do.

use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use burn::tensor::Distribution;
use models::{Classifier, Inference, InputShape, Model, ModelSpec};
use runner::replicas::Replicas;
use runner::train::{train_step, Shard, StageForward, StepKey};
use settings::schema::OptimizerConfig;
use technique::{CrossEntropy, Trainee};

/// The `train` binary's allocator, so that steps here allocate as they do there.
#[global_allocator]
static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache;

/// Interleaved rounds per workload, unless `SPEED_ROUNDS` says otherwise.
const ROUNDS: usize = 7;
const STEPS: usize = 12;
/// Batch-1 passes per round of the 28x28 and 32x32 workloads (ResNet-18 at 224x224: 30).
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
    /// Timed training steps per round.
    steps: usize,
    /// Batch-1 passes per round; a thirtieth as many batch-32 passes.
    inferences: usize,
}

const MNIST: [usize; 3] = [1, 28, 28];

const RGB32: [usize; 3] = [3, 32, 32];

const WORKLOADS: [Workload; 6] = [
    Workload {
        name: "LeNet-5 + BN",
        spec: "kind = \"lenet5\"",
        batch: 64,
        input: MNIST,
        steps: STEPS,
        inferences: INFERENCES,
    },
    Workload {
        name: "VGG 32-32/64-64",
        spec: "kind = \"vgg\"\nstages = [[32, 32], [64, 64]]\nfc = [256]\ndropout = 0.3",
        batch: 128,
        input: MNIST,
        steps: STEPS,
        inferences: INFERENCES,
    },
    Workload {
        name: "ResNet-20 RGB",
        spec: "kind = \"resnet\"\nstem = 16\nstages = [16, 32, 64]\nblocks = 3",
        batch: 128,
        input: RGB32,
        steps: STEPS,
        inferences: INFERENCES,
    },
    Workload {
        name: "MobileNetV2 RGB",
        spec: "kind = \"mobilenet-v2\"",
        batch: 128,
        input: RGB32,
        steps: STEPS,
        inferences: INFERENCES,
    },
    Workload {
        name: "ResNet-18 224",
        spec: "kind = \"resnet\"\nstem = 64\nstem_layout = \"imagenet\"\n\
               stages = [64, 128, 256, 512]\nblocks = 2",
        batch: 32,
        input: [3, 224, 224],
        steps: 4,
        inferences: 30,
    },
    Workload {
        name: "MLP 800-800",
        spec: "kind = \"mlp\"\nhidden = [800, 800]",
        batch: 128,
        input: MNIST,
        steps: STEPS,
        inferences: INFERENCES,
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

/// Milliseconds per training step over the workload's steps (after one untimed step).
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
        for step in 0..=work.steps {
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
        start.elapsed().as_secs_f64() * 1e3 / work.steps as f64
    };
    match setup {
        Setup::Plain => run(),
        _ => measure::compute_pool(cores).unwrap().install(run),
    }
}

/// One round of inference on one thread, through [`Inference`] (what `train bench`
/// measures): microseconds of each batch-1 pass (classes read back), and batch-32 images/s.
fn infer_round(work: &Workload, setup: Setup) -> (Vec<f64>, f64) {
    let pool = measure::compute_pool(1).unwrap();
    pool.install(|| {
        let device = setup.device();
        let model = model(work, &device);
        let model = Inference::new(&model);
        let [c, h, w] = work.input;
        let x = Tensor::<4>::random([1, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let warmup = work.inferences / 10;
        let mut times = Vec::with_capacity(work.inferences);
        for i in 0..work.inferences + warmup {
            let start = Instant::now();
            let _ = model.classify(x.clone()).argmax(1).into_data();
            if i >= warmup {
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        let batch = Tensor::<4>::random([32, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let _ = model.classify(batch.clone()).argmax(1).into_data();
        let passes = (work.inferences / 30).max(1);
        let start = Instant::now();
        for _ in 0..passes {
            let _ = model.classify(batch.clone()).argmax(1).into_data();
        }
        let per_second = (passes * 32) as f64 / start.elapsed().as_secs_f64();
        (times, per_second)
    })
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let only = std::env::var("SPEED_ONLY")
        .unwrap_or_default()
        .to_lowercase();
    let rounds = std::env::var("SPEED_ROUNDS").map_or(ROUNDS, |r| {
        r.parse()
            .ok()
            .filter(|r: &usize| (1..=100).contains(r))
            .unwrap_or_else(|| panic!("SPEED_ROUNDS={r}: a whole number from 1 to 100"))
    });
    let parts = std::env::var("SPEED_PARTS").unwrap_or_else(|_| "train,infer".into());
    let names: Vec<&str> = parts.split(',').map(str::trim).collect();
    assert!(
        names.iter().all(|n| ["train", "infer"].contains(n)),
        "SPEED_PARTS={parts}: train, infer or both (comma-separated)"
    );
    let (do_train, do_infer) = (names.contains(&"train"), names.contains(&"infer"));
    let mut setups = vec![Setup::Plain, Setup::Pooled, Setup::Replicas];
    if settings::device::parse_device("libtorch").is_ok() {
        setups.push(Setup::LibTorch);
    } else {
        println!("(built without --features tch: flex alone)");
    }
    // Profiling one setup: the first column stays the one the ratios divide by.
    if let Ok(names) = std::env::var("SPEED_SETUPS") {
        setups.retain(|s| names.split(',').any(|n| n.trim() == s.name()));
        assert!(
            !setups.is_empty(),
            "SPEED_SETUPS={names}: none of plain, pooled, replicas, libtorch"
        );
    }
    println!(
        "training steps on {cores} threads ({cores} replicas), batch-1 inference on 1 thread; \
         medians of {rounds} interleaved rounds ({STEPS} steps, {INFERENCES} batch-1 and \
         {} batch-32 inferences each; ResNet-18: 4 steps and a tenth of those)\n",
        INFERENCES / 30
    );
    let header: String = setups.iter().map(|s| format!("{:>10}", s.name())).collect();
    let speedups: String = setups[1..]
        .iter()
        .map(|s| format!("{:>10}", format!("{}/plain", &s.name()[..3])))
        .collect();
    println!("{:<16} {:<24}{header}{speedups}", "model", "measure");
    for work in WORKLOADS
        .iter()
        .filter(|w| w.name.to_lowercase().contains(&only))
    {
        let mut train = vec![Vec::new(); setups.len()];
        let mut infer = vec![Vec::new(); setups.len()];
        let mut batch32 = vec![Vec::new(); setups.len()];
        for _ in 0..rounds {
            for (k, &setup) in setups.iter().enumerate().filter(|_| do_train) {
                train[k].push(train_round(work, setup, cores));
            }
            // Inference is the same code on flex whatever the training setup: measure flex
            // once (in the `plain` column) and LibTorch.
            for (k, &setup) in setups.iter().enumerate() {
                if do_infer && matches!(setup, Setup::Plain | Setup::LibTorch) {
                    let (times, per_second) = infer_round(work, setup);
                    infer[k].extend(times);
                    batch32[k].push(per_second);
                }
            }
        }
        let step_ms: Vec<Option<f64>> = train
            .iter()
            .map(|t| (!t.is_empty()).then(|| percentile(t.clone(), 0.5)))
            .collect();
        let samples: Vec<Option<f64>> = step_ms
            .iter()
            .map(|ms| ms.map(|ms| work.batch as f64 * 1e3 / ms))
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
        if do_train {
            row(format!("train step b{} (ms)", work.batch), &step_ms, false);
            row("train samples/s".into(), &samples, true);
        }
        for (q, name) in [(0.5, "batch-1 p50 (us)"), (0.95, "batch-1 p95 (us)")]
            .into_iter()
            .filter(|_| do_infer)
        {
            let values: Vec<Option<f64>> = infer
                .iter()
                .map(|t| (!t.is_empty()).then(|| percentile(t.clone(), q)))
                .collect();
            row(name.into(), &values, false);
        }
        let values: Vec<Option<f64>> = batch32
            .iter()
            .map(|t| (!t.is_empty()).then(|| percentile(t.clone(), 0.5)))
            .collect();
        if do_infer {
            row("batch-32 images/s".into(), &values, true);
        }
    }
}
