//! `train bench TARGET`: a trained model's latency measured the way practitioners measure it:
//! end to end per image (decode, preprocess, forward, postprocess), after a warm-up, at batch 1
//! and batch N, with percentiles, the spread, the share of each phase and the threads used.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use measure::latency::PHASES;
use measure::{batch_latency, EventLog, LatencyStats};
use models::Model;

use models::file;
use models::Classifier;
use runner::artifacts::{load_float, Measured};
use runner::stage::{input_for, load_dataset};
use runner::RunError;
use settings::device::open_device;
use settings::run_dir::{write_atomic, MODEL, RESOLVED_CONFIG, SUMMARY};
use settings::schema::StageConfig;
use settings::techniques::artifact_format;

/// What to benchmark and how.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// A finished run folder, or a model file (`.bpk`) with `config`.
    pub target: PathBuf,
    /// The stage config describing a model file's architecture and dataset.
    pub config: Option<PathBuf>,
    pub images: usize,
    pub warmup: usize,
    pub batch: usize,
    pub threads: usize,
    /// Measure on this device instead of the run's (`"cpu"`, `"libtorch"`, `"cuda:N"`).
    pub device: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchReport {
    pub target: String,
    pub model: String,
    pub threads: usize,
    /// The device measured on, as the config names it.
    #[serde(default)]
    pub device: String,
    /// Per-image latency at batch 1.
    pub batch1: LatencyStats,
    pub batch: usize,
    /// Per-batch latency at `batch`.
    pub batch_n: LatencyStats,
    pub images_per_s_batch1: f64,
    pub images_per_s_batch_n: f64,
    /// Test accuracy of what was benchmarked (an export: loaded from its file).
    #[serde(default)]
    pub accuracy: f64,
    #[serde(default)]
    pub test_samples: usize,
    /// The kernels each measurement ran: `(batch 1, batch N)`.
    #[serde(default)]
    pub kernels: (String, String),
    /// Against its specification, where what ran computes it another way (an integer model
    /// against its simulation), on the same test images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specification: Option<measure::Agreement>,
}

impl BenchReport {
    /// Whether batch-1 throughput reaches the real-time band (5 to 30 images/s and above).
    pub fn realtime(&self) -> String {
        let ips = self.images_per_s_batch1;
        match ips {
            x if x >= 30.0 => {
                format!("yes: {ips:.0} images/s at batch 1, above the 30/s video rate")
            }
            x if x >= 5.0 => format!("yes: {ips:.1} images/s at batch 1, inside the 5-30/s band"),
            _ => format!("no: {ips:.2} images/s at batch 1, below 5/s"),
        }
    }

    pub fn table(&self) -> String {
        let row = |name: String, s: &LatencyStats, per: usize| {
            let shares = s.phase_shares();
            format!(
                "  {name:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>6.2}  {}\n",
                s.mean_ms,
                s.p50_ms,
                s.p95_ms,
                s.p99_ms,
                s.cv,
                PHASES
                    .iter()
                    .zip(shares)
                    .map(|(p, x)| format!("{p} {:.0}%", x * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + &format!("  ({} runs of {per})", s.images)
            )
        };
        let mut out = format!(
            "latency of {} ({}) on {}, {} thread(s), end to end per call, ms:\n  {:<10} {:>9} {:>9} {:>9} {:>9} {:>6}  phases\n",
            self.target, self.model, self.device, self.threads, "batch", "mean", "p50", "p95", "p99", "cv"
        );
        out += &format!(
            "  test accuracy: {:.2}% of {} images\n",
            100.0 * self.accuracy,
            self.test_samples
        );
        out += &format!(
            "  kernels: {} at batch 1, {} at batch {}\n",
            self.kernels.0, self.kernels.1, self.batch
        );
        if let Some(a) = &self.specification {
            out += &format!(
                "  against the simulation it implements: top-1 agreement {:.2}% of {} images, \
                 largest logit difference {:.1e}\n",
                100.0 * a.share(),
                a.samples,
                a.largest_logit_difference
            );
        }
        out += &row("1".into(), &self.batch1, 1);
        out += &row(self.batch.to_string(), &self.batch_n, self.batch);
        out += &format!(
            "  throughput: {:.0} images/s at batch 1, {:.0} images/s at batch {}\n  real time: {}\n",
            self.images_per_s_batch1,
            self.images_per_s_batch_n,
            self.batch,
            self.realtime()
        );
        out
    }
}

fn error(path: &Path, message: impl Into<String>) -> RunError {
    RunError::Record {
        what: "target",
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Finds the model file and the config of a target.
fn resolve(target: &Path, config: Option<&Path>) -> Result<(PathBuf, StageConfig, bool), RunError> {
    if target.is_dir() {
        let model = target.join(MODEL);
        let config = target.join(RESOLVED_CONFIG);
        if !model.exists() || !config.exists() {
            return Err(error(
                target,
                format!("not a finished run folder (expected {MODEL} and {RESOLVED_CONFIG} in it)"),
            ));
        }
        let text = safeio::read_text(&config)?;
        let parsed = toml::from_str(&text).map_err(|e| error(&config, e.to_string()))?;
        // A finished run records its model's checksum: a changed file is not this run's.
        let summary = target.join(SUMMARY);
        if let Ok(text) = safeio::read_text(&summary) {
            let recorded: measure::RunSummary =
                serde_json::from_str(&text).map_err(|e| error(&summary, e.to_string()))?;
            if let Some(sha256) = settings::run_dir::recorded_sha256(&recorded, MODEL) {
                file::verify_sha256(&model, sha256)?;
            }
            // A quantized or sparse run is measured from its export, the file its run
            // recorded (as the stage measured it).
            let export = recorded.artifact.as_deref().map(|name| target.join(name));
            let sparse =
                |p: &Path| models::ModelFormat::from_path(p) == Some(models::ModelFormat::Sparse);
            if let Some(export) = export.filter(|p| artifact_format(p).is_some() || sparse(p)) {
                let name = export.file_name().unwrap_or_default().to_string_lossy();
                if let Some(sha256) = settings::run_dir::recorded_sha256(&recorded, &name) {
                    file::verify_sha256(&export, sha256)?;
                }
                return Ok((export, parsed, true));
            }
        }
        return Ok((model, parsed, true));
    }
    if !target.exists() {
        return Err(error(target, "no such file or folder"));
    }
    let Some(config) = config else {
        return Err(error(
            target,
            "a model file needs --config CONFIG, the stage config naming its architecture and \
             dataset (or pass the run folder instead)",
        ));
    };
    if let Some(sha256) =
        settings::run_dir::recorded_for(target).map_err(|message| error(target, message))?
    {
        file::verify_sha256(target, &sha256)?;
    }
    let loaded = settings::load::load(config, &[], &Default::default())?;
    Ok((target.to_path_buf(), loaded.config, false))
}

/// The input preprocessing the model at `path` recorded: a run folder's summary says it for
/// its model and its export; a model file of ours holds it.
fn recorded_preprocessing(
    path: &Path,
    run_dir: Option<&Path>,
) -> Result<Option<data::Preprocessing>, RunError> {
    if let Some(dir) = run_dir {
        let summary = dir.join(SUMMARY);
        if let Ok(text) = safeio::read_text(&summary) {
            let recorded: measure::RunSummary =
                serde_json::from_str(&text).map_err(|e| error(&summary, e.to_string()))?;
            if let Some(p) = recorded.preprocessing {
                p.check()
                    .map_err(|e| error(&summary, format!("preprocessing: {e}")))?;
                return Ok(Some(p));
            }
        }
    }
    if let Some(format) = artifact_format(path) {
        return Ok((format.preprocessing)(path)?);
    }
    match models::ModelFormat::from_path(path) {
        Some(format) => Ok(file::read_preprocessing(path, format)?),
        None => Ok(None),
    }
}

/// A trained model ready to be measured, with its data.
pub struct Target {
    /// The file measured: the run's export when it has one, else its model file.
    pub model_path: PathBuf,
    /// The float model (for an export: the one its loader built, weights dequantized).
    pub model: Model,
    /// The export, when the target is one: what latency and accuracy are measured on.
    pub export: Option<Box<dyn Classifier>>,
    pub config: StageConfig,
    pub dataset: data::Dataset,
    pub input: models::InputShape,
    pub prep: data::Preprocess,
    pub device: Device,
    /// The run folder, when the target is one (results are recorded there).
    pub run_dir: Option<PathBuf>,
}

/// Opens a run folder, or a model file described by `config`, on `device` (default: the
/// config's). Model files and exports load on any device, whichever one trained them.
pub fn open_target(
    target: &Path,
    config: Option<&Path>,
    device: Option<&str>,
) -> Result<Target, RunError> {
    let (model_path, mut config, is_run) = resolve(target, config)?;
    if let Some(device) = device {
        config.device = device.to_string();
    }
    let device = open_device(&config.device)
        .map_err(|e| error(&model_path, format!("device {:?}: {e}", config.device)))?;
    let dataset = load_dataset(&config)?;
    let (own_input, own_prep) = input_for(&config, &dataset);
    let recorded = recorded_preprocessing(&model_path, is_run.then_some(target))?;
    let what = format!("the model {}", model_path.display());
    if let Some(note) = recorded
        .as_ref()
        .and_then(|p| runner::stage::class_names_note(&what, p, &dataset.class_names))
    {
        eprintln!("{note}");
    }
    let (input, prep) = match runner::stage::recorded_prep(&what, recorded.as_ref(), &own_prep)? {
        Some(prep) => (models::InputShape::made_by(&prep, own_input.classes), prep),
        None => {
            eprintln!(
                "note: {what} recorded no input preprocessing (saved before models recorded \
                 it, or not by this tool): normalising with the statistics of its config's \
                 training split"
            );
            (own_input, own_prep)
        }
    };
    let (model, export) = if let Some(format) = artifact_format(&model_path) {
        let opened = (format.open)(&model_path, &input, &device)?;
        (opened.model, Some(opened.classifier))
    } else {
        (load_float(&model_path, &config, &input, &device)?, None)
    };
    // An execution setting: a run recorded at the default batch, too large for this machine's
    // memory at this input size, is evaluated at what fits.
    let eval = &mut config.train.eval_batch_size;
    *eval = settings::validate::eval_batch_for(&model.spec(), &input, *eval);
    Ok(Target {
        model_path,
        model,
        export,
        config,
        dataset,
        input,
        prep,
        device,
        run_dir: is_run.then(|| target.to_path_buf()),
    })
}

/// Benchmarks the target; for a run folder, the results also go to its TensorBoard run and
/// its `summary.json` (under `bench`).
pub fn bench(request: &BenchRequest) -> Result<BenchReport, RunError> {
    let Target {
        model,
        export,
        config,
        dataset,
        prep,
        device,
        run_dir,
        ..
    } = open_target(
        &request.target,
        request.config.as_deref(),
        request.device.as_deref(),
    )?;
    let measured = Measured::new(export, &model);
    let kernels = (measured.kernels(1), measured.kernels(request.batch));
    let model = measured.classifier();

    let eval = measure::evaluate(
        model,
        &dataset.test,
        &prep,
        config.train.eval_batch_size,
        &device,
    );
    let specification = model.specification().map(|reference| {
        measure::agreement(
            model,
            reference.as_ref(),
            &dataset.test,
            &prep,
            config.train.eval_batch_size,
            &device,
        )
    });
    let batches_n = request.images.div_ceil(request.batch.max(1)).max(1);
    let batch1 = batch_latency(
        model,
        &dataset.test,
        &prep,
        1,
        request.images,
        request.warmup,
        request.threads,
        &device,
    );
    let batch_n = batch_latency(
        model,
        &dataset.test,
        &prep,
        request.batch,
        batches_n,
        request.warmup.div_ceil(request.batch.max(1)).max(2),
        request.threads,
        &device,
    );
    let report = BenchReport {
        target: request.target.display().to_string(),
        model: model.kind().to_string(),
        threads: request.threads,
        device: config.device.clone(),
        images_per_s_batch1: 1e3 / batch1.mean_ms,
        images_per_s_batch_n: request.batch as f64 * 1e3 / batch_n.mean_ms,
        accuracy: eval.accuracy,
        test_samples: eval.samples,
        kernels,
        specification,
        batch1,
        batch: request.batch,
        batch_n,
    };

    if let Some(dir) = &run_dir {
        record_in_run(dir, &report)?;
    }
    Ok(report)
}

/// Writes the report into the run: TensorBoard scalars and table, and `bench` in its
/// `summary.json`.
fn record_in_run(dir: &Path, report: &BenchReport) -> Result<(), RunError> {
    let mut events = EventLog::create(dir).map_err(RunError::io(dir))?;
    for (tag, value) in [
        ("bench/latency_ms_mean_batch1", report.batch1.mean_ms),
        ("bench/latency_ms_p50_batch1", report.batch1.p50_ms),
        ("bench/latency_ms_p95_batch1", report.batch1.p95_ms),
        ("bench/latency_ms_p99_batch1", report.batch1.p99_ms),
        ("bench/latency_cv_batch1", report.batch1.cv),
        ("bench/latency_ms_p50_batch_n", report.batch_n.p50_ms),
        ("bench/images_per_s_batch1", report.images_per_s_batch1),
        ("bench/images_per_s_batch_n", report.images_per_s_batch_n),
        ("bench/accuracy", report.accuracy),
    ] {
        events.scalar(tag, value, 0);
    }
    if let Some(a) = &report.specification {
        events.scalar("bench/simulation_agreement", a.share(), 0);
    }
    events.text("bench", &format!("```\n{}```", report.table()), 0);
    events.close()?;
    let summary_path = dir.join(SUMMARY);
    if summary_path.exists() {
        let text = safeio::read_text(&summary_path)?;
        let mut summary: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| error(&summary_path, e.to_string()))?;
        summary["bench"] =
            serde_json::to_value(report).map_err(|e| error(&summary_path, e.to_string()))?;
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| error(&summary_path, e.to_string()))?;
        write_atomic(&summary_path, json.as_bytes()).map_err(RunError::io(&summary_path))?;
    }
    Ok(())
}
