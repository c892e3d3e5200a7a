//! Flex against LibTorch on the CPU, side by side in one run: a training step (SGD with
//! Nesterov momentum, the configs' batch sizes: 64 for LeNet-5 as configs/teacher.toml, 128
//! for the MLP as experiments/hinton-mnist) and batch-1 inference, for LeNet-5 + BatchNorm and
//! the 784-800-800-10 MLP. Rounds alternate between the backends so that a noisy neighbour
//! hits both; medians are reported, and the ratios flex / LibTorch (above 1: flex is slower).
//!
//! ```text
//! LIBTORCH="$(scripts/libtorch.sh)" LD_LIBRARY_PATH="$LIBTORCH/lib" \
//!     cargo bench -p runner --features tch --bench backends
//! ```
//!
//! Without `--features tch` it times flex alone.

use std::time::Instant;

use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use models::loss::cross_entropy;
use models::{Classifier, InputShape, Model, ModelSpec};

const ROUNDS: usize = 7;
const STEPS: usize = 20;
const INFERENCES: usize = 300;

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

struct Workload {
    name: &'static str,
    spec: &'static str,
    batch: usize,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        name: "LeNet-5 + BN",
        spec: "kind = \"lenet5\"",
        batch: 64,
    },
    Workload {
        name: "MLP 800-800",
        spec: "kind = \"mlp\"\nhidden = [800, 800]",
        batch: 128,
    },
];

fn model(work: &Workload, device: &Device) -> Model {
    let spec: ModelSpec = toml::from_str(work.spec).unwrap();
    let input = InputShape {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    device.seed(1);
    Model::new(&spec, &input, device).unwrap()
}

/// Milliseconds per training step, averaged over `STEPS` steps (after one untimed step).
fn train_round(work: &Workload, device: &Device, threads: usize) -> f64 {
    let pool = measure::compute_pool(threads).unwrap();
    pool.install(|| {
        let device = device.clone().autodiff();
        let mut model = model(work, &device);
        let mut optim = SgdConfig::new()
            .with_momentum(Some(
                burn::optim::momentum::MomentumConfig::new()
                    .with_momentum(0.9)
                    .with_nesterov(true),
            ))
            .init();
        let b = work.batch;
        let x = Tensor::<4>::random([b, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let labels: Vec<i64> = (0..b as i64).map(|i| i % 10).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), &device);
        let mut start = Instant::now();
        for step in 0..=STEPS {
            if step == 1 {
                start = Instant::now();
            }
            let loss = cross_entropy(model.forward(x.clone()), y.clone());
            // Read the loss, as the training loop does when it logs: it also waits for the
            // device.
            let _: f32 = loss.clone().into_scalar();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.01, model, grads);
        }
        let _ = device.sync();
        start.elapsed().as_secs_f64() * 1e3 / STEPS as f64
    })
}

/// Microseconds of each batch-1 inference (classes read back), on one thread.
fn infer_round(work: &Workload, device: &Device) -> Vec<f64> {
    let pool = measure::compute_pool(1).unwrap();
    pool.install(|| {
        let model = model(work, device);
        let x = Tensor::<4>::random([1, 1, 28, 28], Distribution::Normal(0.0, 1.0), device);
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

/// flex, and LibTorch's CPU device when it is compiled in.
fn devices() -> Vec<(&'static str, Device)> {
    ["flex", "libtorch"]
        .into_iter()
        .filter_map(|name| Some((name, runner::device::parse_device(name).ok()?)))
        .collect()
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let devices = devices();
    if devices.len() == 1 {
        println!("(built without --features tch: flex alone)");
    }
    println!(
        "training steps on {cores} threads, batch-1 inference on 1 thread; medians of {ROUNDS} \
         rounds (training: {STEPS} steps each; inference: {INFERENCES} calls each)\n"
    );
    let header = devices
        .iter()
        .map(|(name, _)| format!("{name:>10}"))
        .collect::<String>();
    println!(
        "{:<14} {:<26}{header}  {}",
        "model",
        "measure",
        if devices.len() > 1 {
            "flex / libtorch"
        } else {
            ""
        }
    );
    for work in &WORKLOADS {
        let mut train = vec![Vec::new(); devices.len()];
        let mut infer = vec![Vec::new(); devices.len()];
        for _ in 0..ROUNDS {
            for (k, (_, device)) in devices.iter().enumerate() {
                train[k].push(train_round(work, device, cores));
                infer[k].extend(infer_round(work, device));
            }
        }
        let rows: [(String, Vec<f64>); 3] = [
            (
                format!("train step, batch {} (ms)", work.batch),
                train.iter().map(|t| percentile(t.clone(), 0.5)).collect(),
            ),
            (
                "batch-1 p50 (us)".into(),
                infer.iter().map(|t| percentile(t.clone(), 0.5)).collect(),
            ),
            (
                "batch-1 p95 (us)".into(),
                infer.iter().map(|t| percentile(t.clone(), 0.95)).collect(),
            ),
        ];
        for (measure, values) in rows {
            let cells = values
                .iter()
                .map(|v| format!("{v:>10.3}"))
                .collect::<String>();
            let ratio = match values.as_slice() {
                [flex, torch] => format!("{:>14.2}x", flex / torch),
                _ => String::new(),
            };
            println!("{:<14} {measure:<26}{cells}  {ratio}", work.name);
        }
        if let [flex, torch] = train.as_slice() {
            println!(
                "{:<14} {:<26}{:>10.0}{:>10.0}",
                work.name,
                "train samples/s",
                work.batch as f64 * 1e3 / percentile(flex.clone(), 0.5),
                work.batch as f64 * 1e3 / percentile(torch.clone(), 0.5),
            );
        }
    }
}
