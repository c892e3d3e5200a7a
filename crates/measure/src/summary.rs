//! The per-run summary: what `summary.json` holds and what the end-of-run table prints.

use serde::{Deserialize, Serialize};

use crate::latency::LatencyStats;

/// Every metric a finished run reports. Units are in the field names (`_ms`, `_bytes`,
/// `_per_s`, `_seconds`); `accuracy` is a fraction in 0..=1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub name: String,
    /// Hash of the resolved config: the run folder's name.
    pub hash: String,
    pub model: String,
    pub dataset: String,
    /// Test-split accuracy of the final model, 0..=1.
    pub accuracy: f64,
    pub test_errors: usize,
    pub test_samples: usize,
    pub test_loss: f64,
    /// Numbers stored in the model (weights, biases, BatchNorm running statistics).
    pub params: usize,
    /// Size of the saved model file.
    pub model_bytes: u64,
    /// Multiply-accumulates per sample (convolutions and linear layers).
    pub macs: u64,
    /// Batch-1 end-to-end latency (decode + preprocess + forward + postprocess).
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_mean: f64,
    pub latency_cv: f64,
    /// Threads the batch-1 latency was measured with.
    pub latency_threads: usize,
    pub latency: LatencyStats,
    /// Inference throughput at `throughput_batch` samples per batch.
    pub throughput_samples_per_s: f64,
    pub throughput_batch: usize,
    pub epochs: usize,
    /// Wall time of training (all epochs, including per-epoch evaluation).
    pub train_seconds: f64,
    /// Training samples per second (forward + backward + optimiser step), averaged over epochs.
    pub train_samples_per_s: f64,
    pub device: String,
    pub threads: usize,
}

impl RunSummary {
    /// The end-of-run table, one metric per line.
    pub fn table(&self) -> String {
        let rows: Vec<(&str, String)> = vec![
            ("run", format!("{} ({})", self.name, self.hash)),
            (
                "model / dataset",
                format!("{} / {}", self.model, self.dataset),
            ),
            (
                "test accuracy",
                format!(
                    "{:.2}%  ({} errors of {})",
                    self.accuracy * 100.0,
                    self.test_errors,
                    self.test_samples
                ),
            ),
            ("test loss", format!("{:.4}", self.test_loss)),
            ("params", group_digits(self.params as u64)),
            (
                "model size",
                format!("{} bytes", group_digits(self.model_bytes)),
            ),
            ("MACs / sample", group_digits(self.macs)),
            (
                "latency, batch 1",
                format!(
                    "p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  (cv {:.2}, {} threads, {} images)",
                    self.latency_ms_p50,
                    self.latency_ms_p95,
                    self.latency_ms_p99,
                    self.latency_cv,
                    self.latency_threads,
                    self.latency.images
                ),
            ),
            (
                "latency phases",
                crate::latency::PHASES
                    .iter()
                    .zip(self.latency.phase_shares())
                    .map(|(p, s)| format!("{p} {:.0}%", s * 100.0))
                    .collect::<Vec<_>>()
                    .join("  "),
            ),
            (
                "throughput",
                format!(
                    "{:.0} samples/s (batch {})",
                    self.throughput_samples_per_s, self.throughput_batch
                ),
            ),
            (
                "training",
                format!(
                    "{} epochs in {:.1} s, {:.0} samples/s ({}, {} threads)",
                    self.epochs,
                    self.train_seconds,
                    self.train_samples_per_s,
                    self.device,
                    self.threads
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("  {k:<width$}  {v}\n"))
            .collect()
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1234567), "1,234,567");
    }
}
