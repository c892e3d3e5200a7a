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
    /// The model this one derives from (the teacher of a distilled student), measured the same
    /// way, for side-by-side comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentSummary>,
    /// SHA-256 (hex) of the run's `model.bpk`: checked whenever the file is read back, so a
    /// changed or corrupted model is never used as this run's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_sha256: String,
    /// The file a technique exported (`model.qnt`, `model.f16`, `model.sparse`), when there is
    /// one: accuracy, latency and size were measured from it, loaded back from disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// SHA-256 (hex) of that file: checked when a later command measures it again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub artifact_sha256: String,
    /// The build that took the measurements, e.g. `release profile, opt-level 3`.
    #[serde(default)]
    pub build: String,
    /// What tells runs of one config apart in a report: the seed, the training-set limit,
    /// the overrides given on the command line or in the environment, and when it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    /// UTC, `YYYY-MM-DD HH:MM`.
    #[serde(default)]
    pub finished_at: String,
    /// The `[mean, std]` its inputs were normalised with, as summaries before
    /// `preprocessing` recorded it (read, no longer written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_normalization: Option<[f32; 2]>,
    /// What its model expects of its input (also inside its model file): whoever loads the
    /// model feeds it these inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<data::Preprocessing>,
    /// What each technique did (e.g. `prune`: its steps), by technique name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub techniques: std::collections::BTreeMap<String, serde_json::Value>,
    /// The run's hyperparameters as TensorBoard's HParams tab shows them: what made it
    /// (`technique`, `parent`) and every key of its resolved config.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub hparams: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The headline numbers of a parent model, and how this run compares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentSummary {
    /// "teacher", later "unpruned", "float" ...
    pub role: String,
    pub name: String,
    pub accuracy: f64,
    pub params: usize,
    pub model_bytes: u64,
    pub macs: u64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub throughput_samples_per_s: f64,
    /// parent / this run: how many times smaller or faster this run is (> 1 is better).
    pub ratios: Ratios,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub params: f64,
    pub model_bytes: f64,
    pub macs: f64,
    pub latency_p50: f64,
    pub throughput: f64,
    /// This run's accuracy minus the parent's, in percentage points.
    pub accuracy_delta_points: f64,
}

impl ParentSummary {
    /// The parent's numbers from its own summary, compared with `child`'s.
    pub fn compare(role: &str, parent: &RunSummary, child: &RunSummary) -> Self {
        let ratio = |p: f64, c: f64| if c > 0.0 { p / c } else { f64::NAN };
        Self {
            role: role.to_string(),
            name: parent.name.clone(),
            accuracy: parent.accuracy,
            params: parent.params,
            model_bytes: parent.model_bytes,
            macs: parent.macs,
            latency_ms_p50: parent.latency_ms_p50,
            latency_ms_p95: parent.latency_ms_p95,
            throughput_samples_per_s: parent.throughput_samples_per_s,
            ratios: Ratios {
                params: ratio(parent.params as f64, child.params as f64),
                model_bytes: ratio(parent.model_bytes as f64, child.model_bytes as f64),
                macs: ratio(parent.macs as f64, child.macs as f64),
                latency_p50: ratio(parent.latency_ms_p50, child.latency_ms_p50),
                throughput: ratio(
                    child.throughput_samples_per_s,
                    parent.throughput_samples_per_s,
                ),
                accuracy_delta_points: (child.accuracy - parent.accuracy) * 100.0,
            },
        }
    }

    fn rows(&self, child: &RunSummary) -> Vec<(String, String)> {
        let r = &self.ratios;
        let role = &self.role;
        vec![
            (
                role.to_string(),
                format!(
                    "{} ({:.2}% test accuracy)",
                    self.name,
                    self.accuracy * 100.0
                ),
            ),
            (
                format!("vs {role}: accuracy"),
                format!(
                    "{:.2}% -> {:.2}% ({:+.2} points)",
                    self.accuracy * 100.0,
                    child.accuracy * 100.0,
                    r.accuracy_delta_points
                ),
            ),
            (
                format!("vs {role}: params"),
                format!(
                    "{} -> {} ({:.2}x fewer)",
                    group_digits(self.params as u64),
                    group_digits(child.params as u64),
                    r.params
                ),
            ),
            (
                format!("vs {role}: size"),
                format!(
                    "{} -> {} bytes ({:.2}x smaller)",
                    group_digits(self.model_bytes),
                    group_digits(child.model_bytes),
                    r.model_bytes
                ),
            ),
            (
                format!("vs {role}: MACs"),
                format!(
                    "{} -> {} ({:.2}x fewer)",
                    group_digits(self.macs),
                    group_digits(child.macs),
                    r.macs
                ),
            ),
            (
                format!("vs {role}: latency p50"),
                format!(
                    "{:.3} -> {:.3} ms ({:.2}x faster)",
                    self.latency_ms_p50, child.latency_ms_p50, r.latency_p50
                ),
            ),
        ]
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM`.
pub fn utc_now() -> String {
    let [year, month, day, hour, minute, _] = utc_parts(unix_secs());
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

/// Seconds since 1970-01-01 UTC, now.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `[year, month, day, hour, minute, second]` (UTC) of `secs` since 1970-01-01.
pub fn utc_parts(secs: u64) -> [i64; 6] {
    let (days, rest) = ((secs / 86_400) as i64, (secs % 86_400) as i64);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    [year, month, day, rest / 3600, rest % 3600 / 60, rest % 60]
}

/// `1 thread`, `2 threads`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

impl RunSummary {
    /// What made the run: the techniques it recorded (`distill+quant`), else `fine-tune` for a
    /// stage that started from a parent and `train` for one from scratch.
    pub fn technique(&self) -> String {
        if !self.techniques.is_empty() {
            // A BTreeMap: names in sorted order.
            return self
                .techniques
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("+");
        }
        match self.parent {
            Some(_) => "fine-tune",
            None => "train",
        }
        .to_string()
    }

    /// Batch-1 latency percentiles, with a warning when they are noisy.
    fn latency_line(&self) -> String {
        format!(
            "p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  (cv {:.2}, {}, {} images){}",
            self.latency_ms_p50,
            self.latency_ms_p95,
            self.latency_ms_p99,
            self.latency_cv,
            plural(self.latency_threads, "thread"),
            self.latency.images,
            if self.latency_cv > 1.0 {
                "  noisy: was the machine busy? `train bench` measures again"
            } else {
                ""
            }
        )
    }

    /// Each phase of a batch-1 call (decode, preprocess, forward, ...) as its share.
    fn phases_line(&self) -> String {
        crate::latency::PHASES
            .iter()
            .zip(self.latency.phase_shares())
            .map(|(p, s)| format!("{p} {:.0}%", s * 100.0))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

impl RunSummary {
    /// The end-of-run table, one metric per line.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
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
            ("latency, batch 1", self.latency_line()),
            ("latency phases", self.phases_line()),
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
                    "{} in {:.1} s, {:.0} samples/s ({}, {})",
                    plural(self.epochs, "epoch"),
                    self.train_seconds,
                    self.train_samples_per_s,
                    self.device,
                    plural(self.threads, "thread")
                ),
            ),
            (
                "build",
                if self.build.is_empty() {
                    "not recorded".to_string()
                } else {
                    self.build.clone()
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if let Some(parent) = &self.parent {
            rows.extend(parent.rows(self));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out: String = rows
            .iter()
            .map(|(k, v)| format!("  {k:<width$}  {v}\n"))
            .collect();
        // Each technique's own table (pruning steps, sparsity), kept in its report.
        for (name, report) in &self.techniques {
            if let Some(table) = report.get(TABLE_KEY).and_then(|t| t.as_str()) {
                out += &format!("\n{name}:\n{table}");
            }
        }
        out
    }
}

/// The key of a technique report (`techniques.<name>`) holding its plain-text table.
pub const TABLE_KEY: &str = "table";

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
