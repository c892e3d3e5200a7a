//! End-to-end latency, measured the way a deployment sees it: each image is decoded,
//! preprocessed, run through the model and postprocessed, and every phase is timed. Warm-up
//! iterations are run first and not counted.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The four phases of one inference, in order.
pub const PHASES: [&str; 4] = ["decode", "preprocess", "forward", "postprocess"];

/// Latency over many single-image inferences, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub images: usize,
    pub warmup: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Coefficient of variation (standard deviation / mean) of the per-image totals.
    pub cv: f64,
    /// Mean milliseconds per image of each phase of [`PHASES`].
    pub phase_mean_ms: [f64; 4],
}

impl LatencyStats {
    /// Share of the mean total spent in each phase (sums to 1).
    pub fn phase_shares(&self) -> [f64; 4] {
        let total: f64 = self
            .phase_mean_ms
            .iter()
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        self.phase_mean_ms.map(|p| p / total)
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of unsorted times (the lower one of an even count, as `percentile` picks).
pub fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    percentile(&times, 0.5)
}

/// Runs `warmup + images` inferences of image indices `0, 1, 2, ...` (wrapping is the
/// caller's business) through the four phases and reports the last `images` of them.
///
/// `forward` must not return before the device has finished (sync it), or its time would be
/// charged to `postprocess`.
pub fn measure_latency<Raw, Input, Output, Answer>(
    images: usize,
    warmup: usize,
    mut decode: impl FnMut(usize) -> Raw,
    mut preprocess: impl FnMut(Raw) -> Input,
    mut forward: impl FnMut(Input) -> Output,
    mut postprocess: impl FnMut(Output) -> Answer,
) -> LatencyStats {
    let mut totals = Vec::with_capacity(images);
    let mut phase_sum = [Duration::ZERO; 4];
    for i in 0..warmup + images {
        let t0 = Instant::now();
        let raw = decode(i);
        let t1 = Instant::now();
        let input = preprocess(raw);
        let t2 = Instant::now();
        let output = forward(input);
        let t3 = Instant::now();
        std::hint::black_box(postprocess(output));
        let t4 = Instant::now();
        if i >= warmup {
            for (sum, d) in phase_sum
                .iter_mut()
                .zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3])
            {
                *sum += d;
            }
            totals.push((t4 - t0).as_secs_f64() * 1e3);
        }
    }
    let n = images.max(1) as f64;
    let mean = totals.iter().sum::<f64>() / n;
    let var = totals.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n;
    totals.sort_by(f64::total_cmp);
    LatencyStats {
        images,
        warmup,
        mean_ms: mean,
        p50_ms: percentile(&totals, 0.50),
        p95_ms: percentile(&totals, 0.95),
        p99_ms: percentile(&totals, 0.99),
        cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        phase_mean_ms: phase_sum.map(|d| d.as_secs_f64() * 1e3 / n),
    }
}

/// Samples per second of `run_batch`, which processes one batch of `batch_size` samples, over
/// `batches` timed calls after `warmup` untimed ones.
pub fn measure_throughput(
    batch_size: usize,
    batches: usize,
    warmup: usize,
    mut run_batch: impl FnMut(usize),
) -> f64 {
    for i in 0..warmup {
        run_batch(i);
    }
    let start = Instant::now();
    for i in 0..batches {
        run_batch(warmup + i);
    }
    (batch_size * batches) as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.5), 3.0);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn a_slow_phase_is_seen_and_charged_to_that_phase() {
        let stats = measure_latency(
            20,
            2,
            |i| i,
            |i| {
                std::thread::sleep(Duration::from_millis(3));
                i
            },
            |i| i * 2,
            |i| i + 1,
        );
        assert_eq!(stats.images, 20);
        assert!(stats.p50_ms >= 3.0, "{stats:?}");
        assert!(stats.phase_mean_ms[1] >= 3.0, "{stats:?}");
        let shares = stats.phase_shares();
        assert!(shares[1] > 0.9, "{shares:?}");
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}
