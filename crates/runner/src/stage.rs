//! Running one stage end to end: data, run folder, training (or resuming, or reusing a
//! finished result), the final measurements, `summary.json` and the end-of-run table.

use std::path::PathBuf;

use burn::module::Module;
use data::{Dataset, Preprocess, Source};
use measure::tensorboard::remove_event_files;
use measure::{bench_model, evaluate, BenchOptions, EventLog, ParentSummary, RunSummary};
use models::InputShape;

use crate::checkpoint::Checkpoint;
use crate::device::parse_device;
use crate::distillation::{Distillation, Hint};
use crate::error::RunError;
use crate::load::LoadedConfig;
use crate::objective::CrossEntropy;
use crate::progress::Progress;
use crate::run_dir::{write_atomic, RunDir, CHECKPOINT, LOG, MODEL, RESOLVED_CONFIG, SUMMARY};
use crate::schema::{DatasetName, StageConfig};
use crate::teacher::{load_model_file, TeacherFormat, TeacherSource};
use crate::train::{replay_history, train, TrainSetup};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plain log lines even on a terminal.
    pub plain: bool,
    /// Fault injection for tests: make the loss of this global step (1-based) NaN.
    pub fault_nonfinite_at_step: Option<usize>,
}

/// What a finished stage left behind.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub dir: PathBuf,
    pub summary: RunSummary,
    /// The result existed already and nothing was trained.
    pub reused: bool,
}

fn worker_threads(config: &StageConfig) -> usize {
    match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Loads the dataset a config names, with its limits applied.
pub fn load_dataset(config: &StageConfig) -> Result<Dataset, RunError> {
    let data = &config.data;
    let source = match data.dataset {
        DatasetName::Mnist => Source::Mnist,
        DatasetName::FashionMnist => Source::FashionMnist,
        DatasetName::Digits => Source::Digits,
        DatasetName::Idx => {
            Source::IdxFolder(data.path.clone().expect("validated: idx has a path"))
        }
    };
    let cache = data
        .cache_dir
        .clone()
        .unwrap_or_else(data::fetch::default_cache_root);
    let mut dataset = Dataset::load(&source, &cache).map_err(RunError::Data)?;
    dataset.train.truncate(data.train_limit);
    dataset.test.truncate(data.test_limit);
    Ok(dataset)
}

/// The model input a dataset gives under a config, and how its bytes are preprocessed.
pub fn input_for(config: &StageConfig, dataset: &Dataset) -> (InputShape, Preprocess) {
    let (mean, std) = dataset.pixel_stats();
    let (rows, cols) = (dataset.train.rows, dataset.train.cols);
    let (out_rows, out_cols) = config.data.input_size.map_or((rows, cols), |s| (s, s));
    let input = InputShape {
        channels: 1,
        height: out_rows,
        width: out_cols,
        classes: dataset.classes,
    };
    let prep = Preprocess {
        mean,
        std,
        src_rows: rows,
        src_cols: cols,
        out_rows,
        out_cols,
    };
    (input, prep)
}

fn read_summary(path: &std::path::Path) -> Result<RunSummary, RunError> {
    let text = std::fs::read_to_string(path).map_err(RunError::io(path))?;
    serde_json::from_str(&text).map_err(|e| RunError::Record {
        what: "summary",
        path: path.to_path_buf(),
        message: format!("{e}; delete the run folder to run it again"),
    })
}

/// Measures `model` the way every stage is measured: test accuracy, size, MACs, latency,
/// throughput. Training figures are left at zero for the caller to fill in.
#[allow(clippy::too_many_arguments)]
fn measure_model(
    name: &str,
    hash: &str,
    model: &models::Model,
    model_bytes: u64,
    config: &StageConfig,
    dataset: &Dataset,
    input: &InputShape,
    prep: &Preprocess,
    device: &burn::tensor::Device,
    threads: usize,
) -> RunSummary {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool of a valid size");
    let eval = pool.install(|| {
        evaluate(
            model,
            &dataset.test,
            prep,
            config.train.eval_batch_size,
            device,
        )
    });
    let m = &config.measure;
    let bench = bench_model(
        model,
        &dataset.test,
        prep,
        &BenchOptions {
            latency_images: m.latency_images,
            latency_warmup: m.latency_warmup,
            latency_threads: m.latency_threads,
            throughput_batch: m.throughput_batch,
            throughput_threads: threads,
        },
        device,
    );
    RunSummary {
        name: name.to_string(),
        hash: hash.to_string(),
        model: model.kind().to_string(),
        dataset: dataset.name.clone(),
        accuracy: eval.accuracy,
        test_errors: eval.errors,
        test_samples: eval.samples,
        test_loss: eval.loss,
        params: model.num_params(),
        model_bytes,
        macs: model.macs(input),
        latency_ms_p50: bench.latency.p50_ms,
        latency_ms_p95: bench.latency.p95_ms,
        latency_ms_p99: bench.latency.p99_ms,
        latency_ms_mean: bench.latency.mean_ms,
        latency_cv: bench.latency.cv,
        latency_threads: m.latency_threads,
        latency: bench.latency,
        throughput_samples_per_s: bench.throughput_samples_per_s,
        throughput_batch: m.throughput_batch,
        epochs: 0,
        train_seconds: 0.0,
        train_samples_per_s: 0.0,
        device: config.device.clone(),
        threads,
        parent: None,
    }
}

/// A teacher ready to teach: its inference model, and its summary (measured or read back).
struct ReadyTeacher {
    model: models::Model,
    summary: Option<RunSummary>,
    file: Option<(std::path::PathBuf, String)>,
}

/// Runs (or reuses) a teacher stage, or loads a teacher file.
fn prepare_teacher(
    source: &TeacherSource,
    input: &InputShape,
    options: &RunOptions,
    progress: &mut Progress,
) -> Result<ReadyTeacher, RunError> {
    let device = burn::tensor::Device::flex();
    match source {
        TeacherSource::Stage(teacher) => {
            let outcome = run_stage(teacher, options)?;
            progress.line(&format!(
                "teacher {}: {} {} ({:.2}% test accuracy)",
                teacher.config.name,
                if outcome.reused {
                    "reused the finished run"
                } else {
                    "trained"
                },
                outcome.dir.display(),
                outcome.summary.accuracy * 100.0
            ));
            let device = parse_device(&teacher.config.device).expect("validated device");
            let path = outcome.dir.join(MODEL);
            let model = load_model_file(
                &path,
                TeacherFormat::Burnpack,
                &teacher.config.model,
                &[],
                input,
                &device,
            )
            .map_err(|message| RunError::Record {
                what: "teacher model",
                path: path.clone(),
                message,
            })?;
            Ok(ReadyTeacher {
                model,
                summary: Some(outcome.summary),
                file: None,
            })
        }
        TeacherSource::File {
            path,
            format,
            spec,
            key_map,
            sha256,
        } => {
            let model = load_model_file(path, *format, spec, key_map, input, &device).map_err(
                |message| RunError::Record {
                    what: "teacher file",
                    path: path.clone(),
                    message,
                },
            )?;
            progress.line(&format!(
                "teacher: loaded {} ({:?})",
                path.display(),
                format
            ));
            Ok(ReadyTeacher {
                model,
                summary: None,
                file: Some((path.clone(), sha256.clone())),
            })
        }
    }
}

/// Runs (or resumes, or reuses) the stage `loaded` describes; a distillation stage first
/// runs (or reuses) its teacher.
pub fn run_stage(loaded: &LoadedConfig, options: &RunOptions) -> Result<StageOutcome, RunError> {
    let config = &loaded.config;
    let device = parse_device(&config.device).expect("validated device");
    let threads = worker_threads(config);
    let mut progress = Progress::new(options.plain);
    let hash = loaded.hash();

    progress.line(&format!(
        "stage {} ({})",
        config.name,
        loaded.path.display()
    ));
    let finished = config
        .output
        .dir
        .join(&config.name)
        .join(&hash)
        .join(SUMMARY);
    if finished.exists() {
        let summary = read_summary(&finished)?;
        progress.line(&format!(
            "reusing the finished run {} (delete it to train again)",
            finished.parent().expect("run folder").display()
        ));
        return Ok(StageOutcome {
            dir: finished.parent().expect("run folder").to_path_buf(),
            summary,
            reused: true,
        });
    }

    progress.line(&format!(
        "data: loading {} (fetched into {} on first use)",
        serde_json::to_value(config.data.dataset).map_or("?".into(), |v| v.to_string()),
        config
            .data
            .cache_dir
            .clone()
            .unwrap_or_else(data::fetch::default_cache_root)
            .display()
    ));
    let dataset = load_dataset(config)?;
    let (input, prep) = input_for(config, &dataset);
    let teacher = match &loaded.teacher {
        Some(source) => Some(prepare_teacher(source, &input, options, &mut progress)?),
        None => None,
    };
    progress.line(&format!(
        "data: {} ({} train / {} test images of {}x{}, {} classes)",
        dataset.name,
        dataset.train.len(),
        dataset.test.len(),
        input.height,
        input.width,
        input.classes
    ));

    let run = RunDir::open(config, hash, |path| {
        println!(
            "waiting for another process that is running {}",
            path.display()
        )
    })
    .map_err(RunError::io(config.output.dir.join(&config.name)))?;
    if run.is_complete() {
        // Another process finished it while we waited for the lock.
        return Ok(StageOutcome {
            dir: run.path.clone(),
            summary: read_summary(&run.file(SUMMARY))?,
            reused: true,
        });
    }

    let resolved = toml::to_string(config).expect("configs serialise to TOML");
    write_atomic(&run.file(RESOLVED_CONFIG), resolved.as_bytes())
        .map_err(RunError::io(run.file(RESOLVED_CONFIG)))?;
    progress
        .log_to(&run.file(LOG))
        .map_err(RunError::io(run.file(LOG)))?;

    let checkpoint_path = run.file(CHECKPOINT);
    let resume = if checkpoint_path.exists() {
        let ckpt = Checkpoint::load(&checkpoint_path)?;
        progress.line(&format!(
            "resuming {} from the end of epoch {}",
            run.path.display(),
            ckpt.state.epochs_done
        ));
        Some(ckpt)
    } else {
        progress.line(&format!("run folder {}", run.path.display()));
        None
    };

    // One event file per run folder: a resumed run rewrites its history into a new file.
    remove_event_files(&run.path).map_err(RunError::io(&run.path))?;
    let mut events = EventLog::create(&run.path).map_err(RunError::io(&run.path))?;
    events.text("config", &format!("```toml\n{resolved}\n```"), 0);
    if let Some(ckpt) = &resume {
        replay_history(&mut events, &ckpt.state.history);
    }

    let setup = TrainSetup {
        config,
        dataset: &dataset,
        prep,
        input,
        device: device.clone(),
        run: &run,
        fault_nonfinite_at_step: options.fault_nonfinite_at_step,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool of a valid size");
    let (model, state) = pool.install(|| match (&teacher, &config.distill) {
        (Some(teacher), Some(distill)) => {
            let augmented =
                config.data.augment.shift_pixels > 0 || config.data.augment.noise_std > 0.0;
            let flex = burn::tensor::Device::flex();
            let hint = distill.hint.as_ref().map(|hint| {
                let student = models::Model::new(&config.model, &input, &flex).expect("validated");
                Hint {
                    config: hint.clone(),
                    student_width: student
                        .tap_width(&hint.student_layer, &input, &flex)
                        .expect("validated tap"),
                    teacher_width: teacher
                        .model
                        .tap_width(&hint.teacher_layer, &input, &flex)
                        .expect("validated tap"),
                }
            });
            let mut objective = Distillation::new(
                teacher.model.clone(),
                distill,
                hint,
                &dataset,
                prep,
                augmented,
                config.train.eval_batch_size,
                burn::tensor::Device::flex(),
            );
            progress.line(&format!(
                "distilling at T = {}, alpha = {}; teacher test accuracy {:.2}%{}",
                distill.temperature,
                distill.alpha,
                objective.teacher_accuracy * 100.0,
                if objective.caches_train_logits() {
                    ", teacher logits cached (inputs not augmented)"
                } else {
                    ""
                }
            ));
            train(&setup, &mut objective, resume, &mut progress, &mut events)
        }
        _ => train(
            &setup,
            &mut CrossEntropy,
            resume,
            &mut progress,
            &mut events,
        ),
    })?;

    // The final model, then its measurements.
    let model_path = run.file(MODEL);
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| RunError::Record {
            what: "final model",
            path: model_path.clone(),
            message: e.to_string(),
        })?;
    write_atomic(&model_path, &bytes).map_err(RunError::io(&model_path))?;
    progress.line("measuring accuracy, latency and throughput");
    let mut summary = measure_model(
        &config.name,
        &run.hash,
        &model,
        bytes.len() as u64,
        config,
        &dataset,
        &input,
        &prep,
        &device,
        threads,
    );
    summary.epochs = state.epochs_done;
    summary.train_seconds = state.train_seconds;
    summary.train_samples_per_s = state.samples_seen as f64 / state.step_seconds.max(1e-9);
    if let Some(teacher) = &teacher {
        let parent = match (&teacher.summary, &teacher.file) {
            (Some(parent), _) => parent.clone(),
            (None, Some((path, sha))) => {
                let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
                let name = path.display().to_string();
                measure_model(
                    &name,
                    sha,
                    &teacher.model,
                    bytes,
                    config,
                    &dataset,
                    &input,
                    &prep,
                    &burn::tensor::Device::flex(),
                    threads,
                )
            }
            (None, None) => unreachable!("a teacher is a stage or a file"),
        };
        summary.parent = Some(ParentSummary::compare("teacher", &parent, &summary));
    }

    let step = state.global_step;
    for (tag, value) in [
        ("summary/accuracy", summary.accuracy),
        ("summary/latency_ms_p50", summary.latency_ms_p50),
        ("summary/latency_ms_p95", summary.latency_ms_p95),
        (
            "summary/throughput_samples_per_s",
            summary.throughput_samples_per_s,
        ),
        ("summary/model_bytes", summary.model_bytes as f64),
        ("summary/params", summary.params as f64),
        ("summary/macs", summary.macs as f64),
    ] {
        events.scalar(tag, value, step);
    }
    if let Some(parent) = &summary.parent {
        events.scalar("summary/teacher_accuracy", parent.accuracy, step);
        events.scalar("summary/params_ratio", parent.ratios.params, step);
        events.scalar("summary/latency_p50_ratio", parent.ratios.latency_p50, step);
    }
    let table = summary.table();
    events.text("summary", &format!("```\n{table}```"), step);
    events.close();

    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    write_atomic(&run.file(SUMMARY), json.as_bytes()).map_err(RunError::io(run.file(SUMMARY)))?;
    let _ = std::fs::remove_file(&checkpoint_path);
    progress.line(&format!(
        "\nresult of {} ({}):\n{table}",
        config.name,
        run.path.display()
    ));
    Ok(StageOutcome {
        dir: run.path.clone(),
        summary,
        reused: false,
    })
}
