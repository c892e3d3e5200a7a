//! Latency and throughput of a model on real test images.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use data::{make_batch, Preprocess, Split};
use models::Classifier;

use crate::latency::{measure_latency, measure_throughput, LatencyStats};

/// What to measure and how.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    pub latency_images: usize,
    pub latency_warmup: usize,
    pub latency_threads: usize,
    pub throughput_batch: usize,
    pub throughput_threads: usize,
}

#[derive(Debug, Clone)]
pub struct BenchResult {
    pub latency: LatencyStats,
    pub throughput_samples_per_s: f64,
}

fn pool(threads: usize) -> rayon::ThreadPool {
    crate::compute_pool(threads).expect("a rayon pool of a valid size")
}

/// End-to-end latency of `batch`-image inferences over test images, per batch.
///
/// The phases: *decode* reads and decodes each image's file (an image folder), or copies its
/// bytes out of the loaded IDX or CIFAR file (raw bytes); *preprocess*
/// resizes, normalises and uploads them as a `[batch, c, h, w]` tensor; *forward* runs the model
/// and waits for the device; *postprocess* takes the softmax, reads it back and picks each
/// row's class. Runs in its own pool of `threads` threads (flex on the main thread hands work
/// across threads per op and is erratic; a dedicated pool is what a server would do).
#[allow(clippy::too_many_arguments)]
pub fn batch_latency(
    model: &dyn Classifier,
    test: &Split,
    prep: &Preprocess,
    batch: usize,
    batches: usize,
    warmup: usize,
    threads: usize,
    device: &Device,
) -> LatencyStats {
    let n = test.len();
    let batch = batch.max(1);
    pool(threads).install(|| {
        measure_latency(
            batches,
            warmup,
            |b| {
                (0..batch)
                    .map(|k| test.decode((b * batch + k) % n))
                    .collect::<Vec<_>>()
            },
            |images| {
                let mut values = Vec::with_capacity(images.len() * prep.image_len());
                for bytes in &images {
                    prep.image_into(bytes, (0, 0), &mut values);
                }
                let shape = prep.batch_shape(images.len());
                Tensor::<4>::from_data(TensorData::new(values, shape), device)
            },
            |input| {
                let logits = model.classify(input);
                let _ = device.sync();
                logits
            },
            |logits| {
                let [_, classes] = logits.dims();
                let probs = softmax(logits, 1)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap_or_default();
                probs
                    .chunks(classes.max(1))
                    .map(|row| {
                        row.iter()
                            .enumerate()
                            .max_by(|a, b| a.1.total_cmp(b.1))
                            .map(|(class, p)| (class, *p))
                    })
                    .collect::<Vec<_>>()
            },
        )
    })
}

/// Batch-1 end-to-end latency over test images (see [`batch_latency`]), then inference
/// throughput at batch N.
pub fn bench_model(
    model: &dyn Classifier,
    test: &Split,
    prep: &Preprocess,
    options: &BenchOptions,
    device: &Device,
) -> BenchResult {
    let n = test.len();
    let latency = batch_latency(
        model,
        test,
        prep,
        1,
        options.latency_images,
        options.latency_warmup,
        options.latency_threads,
        device,
    );
    let batch = options.throughput_batch.max(1);
    let batches = n.div_ceil(batch).clamp(1, 20);
    let throughput_samples_per_s = pool(options.throughput_threads).install(|| {
        measure_throughput(batch, batches, 2, |b| {
            let start = (b * batch) % n;
            let indices: Vec<usize> = (start..start + batch).map(|i| i % n).collect();
            let input = make_batch(test, &indices, prep, None, device);
            let classes = model.classify(input.images).argmax(1);
            std::hint::black_box(classes.into_data());
        })
    });
    BenchResult {
        latency,
        throughput_samples_per_s,
    }
}
