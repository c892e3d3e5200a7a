//! Integer inference side by side: each architecture's float model (through
//! `models::Inference`, what a float run measures), its 8-bit `.qnt` as the simulation
//! (dequantized weights on the float kernels, activations rounded: what every `.qnt` ran as
//! before the integer kernels) and as the integer program on the VNNI and the portable
//! kernels, input quantized too (`quantize_input`: every layer integer). Random weights, grids calibrated on random images as a QAT stage calibrates them;
//! 1 thread, batch 1 and 32, logits read back. Rounds alternate between the four so a noisy
//! neighbour hits all of them; medians in microseconds per call, and images per second.
//!
//! ```text
//! cargo test -p quant --bench int8
//! cargo test -p quant --bench int8 -- VGG     # the models whose name contains VGG
//! cargo test -p quant --bench int8 -- --int8  # the int8 column alone (to profile it)
//! ```

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use kernels::Int8Path;
use measure::latency::median;
use models::{Classifier, Inference, InputShape, Model, ModelSpec, Tap};
use quant::int_file::{self, IntFile};
use quant::integer::IntegerModel;
use quant::quantizer::FakeQuant;
use quant::QuantConfig;
use quant::QuantizedModel;

const ROUNDS: usize = 5;

/// Microseconds per call of `classifier` on `x`, after a warm-up.
fn round(classifier: &dyn Classifier, x: &Tensor<4>, calls: usize) -> f64 {
    for _ in 0..calls / 10 + 1 {
        let _ = classifier.classify(x.clone()).into_data();
    }
    let start = Instant::now();
    for _ in 0..calls {
        let _ = classifier.classify(x.clone()).into_data();
    }
    start.elapsed().as_secs_f64() * 1e6 / calls as f64
}

/// The integer program on the portable kernels, as a classifier.
struct Portable<'m>(&'m QuantizedModel, IntegerModel);

impl Classifier for Portable<'_> {
    fn kind(&self) -> &str {
        self.0.kind()
    }
    fn classify(&self, images: Tensor<4>) -> Tensor<2> {
        self.1.forward(images)
    }
    fn num_params(&self) -> usize {
        self.0.num_params()
    }
    fn macs(&self, input: &InputShape) -> u64 {
        self.0.macs(input)
    }
}

fn main() {
    let device = Device::flex();
    let input = InputShape {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    println!(
        "8-bit inference on 1 thread ({}), medians of {ROUNDS} interleaved rounds, us per call\n",
        Int8Path::detect().name()
    );
    println!(
        "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "model", "batch", "float", "simulated", "int8", "portable", "vs float", "int8 img/s"
    );
    let pool = measure::compute_pool(1).expect("a one-thread pool");
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let int8_only = std::env::args().any(|a| a == "--int8");
    let rgb = InputShape {
        channels: 3,
        height: 32,
        width: 32,
        classes: 10,
    };
    for (name, spec, input) in [
        ("LeNet-5", "kind = \"lenet5\"", input),
        (
            "MLP 1200-1200",
            "kind = \"mlp\"\nhidden = [1200, 1200]",
            input,
        ),
        (
            "VGG",
            "kind = \"vgg\"\nstages = [[32, 32], [64, 64]]\nfc = [256]\ndropout = 0.3",
            input,
        ),
        (
            "ResNet-20",
            "kind = \"resnet\"\nstem = 16\nstages = [16, 32, 64]\nblocks = 3",
            rgb,
        ),
    ] {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let spec: ModelSpec = toml::from_str(spec).unwrap();
        device.seed(1);
        let model = Model::new(&spec, &input, &device).unwrap();
        let config: QuantConfig = toml::from_str("bits = 8\nquantize_input = true").unwrap();
        let quant = FakeQuant::new(&config, quant::config::weight_layers(&model).keys());
        quant.set_fold(true);
        for _ in 0..2 {
            let shape = [32, input.channels, input.height, input.width];
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            model.forward_tapped(x, &mut Tap::hooked(&quant, true));
        }
        let bytes = int_file::export(&model, &quant, &input).unwrap().to_bytes();
        let path = Path::new("bench.qnt");
        let loaded = QuantizedModel::from_bytes(&bytes, path, &input, &device).unwrap();
        let (file, _) = IntFile::from_bytes(&bytes, path, &input, &device).unwrap();
        let portable = IntegerModel::new(&loaded.model, &file, &input, Int8Path::Portable)
            .expect("a chain model runs in integer");
        let portable = Portable(&loaded, portable);
        let float = Inference::new(&model);
        let simulated = loaded
            .specification()
            .expect("a chain model has its simulation");
        for batch in [1, 32] {
            let shape = [batch, input.channels, input.height, input.width];
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let calls = (4000
                / batch
                / if name.starts_with("LeNet") || name.starts_with("MLP") {
                    1
                } else {
                    8
                })
            .max(10);
            let mut times = [(); 4].map(|_| Vec::new());
            pool.install(|| {
                for _ in 0..ROUNDS {
                    let runs: [&dyn Classifier; 4] =
                        [&float, simulated.as_ref(), &loaded, &portable];
                    for (i, (t, classifier)) in times.iter_mut().zip(runs).enumerate() {
                        let skipped = int8_only && i != 2;
                        t.push(if skipped {
                            f64::NAN
                        } else {
                            round(classifier, &x, calls)
                        });
                    }
                }
            });
            let [float, simulated, int8, portable] = times.map(median);
            println!(
                "{name:<14} {batch:>5} {float:>10.1} {simulated:>10.1} {int8:>10.1} {portable:>10.1} {:>7.2}x {:>12.0}",
                float / int8,
                batch as f64 * 1e6 / int8
            );
        }
    }
}
