//! Running one stage end to end: its parents, data, run folder, training (or resuming, or
//! reusing a finished result), the final artefacts and measurements, `summary.json` and the
//! end-of-run table.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use data::{Dataset, Preprocess, Preprocessing};
use measure::hparams::{self, HValue};
use measure::tensorboard::remove_event_files;
use measure::{bench_model, evaluate, BenchOptions, EventLog, ParentSummary, RunSummary};
use models::file::{self, LoadOptions};
use models::{Classifier, Inference, InputShape, Model, ModelFormat};
use technique::{ReadyParent, StageContext, Technique};

use crate::checkpoint::{Checkpoint, Owner, TrainState};
use crate::error::RunError;
use crate::progress::Progress;
use crate::train::{replay_history, train, Start, TrainSetup, TrainSink};
use settings::context::worker_threads;
use settings::load::LoadedConfig;
use settings::parents::{Parent, ParentSource};
use settings::run_dir::{write_atomic, RunDir, CHECKPOINT, LOG, MODEL, RESOLVED_CONFIG, SUMMARY};
use settings::schema::StageConfig;
use settings::techniques;

/// A rayon pool of `threads` workers; a failure to start threads is an I/O-level error.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, RunError> {
    measure::compute_pool(threads).map_err(|e| RunError::Threads {
        threads,
        message: e.to_string(),
    })
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plain log lines even on a terminal.
    pub plain: bool,
}

/// What a finished stage left behind.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub dir: PathBuf,
    pub summary: RunSummary,
    /// The result existed already and nothing was trained.
    pub reused: bool,
}

/// Loads the dataset a config names, with its limits applied.
pub fn load_dataset(config: &StageConfig) -> Result<Dataset, RunError> {
    let data = &config.data;
    let source = settings::validate::data_source(config);
    let cache = data
        .cache_dir
        .clone()
        .unwrap_or_else(data::fetch::default_cache_root);
    let mut dataset = Dataset::load(&source, &cache).map_err(RunError::Data)?;
    dataset.train.truncate(data.train_limit);
    dataset.test.truncate(data.test_limit);
    Ok(dataset)
}

/// The model input a dataset gives under a config, and how its bytes are preprocessed when the
/// model has no recorded preprocessing of its own: normalised with the per-channel statistics
/// of the training split, resized to `data.input_size` when set.
pub fn input_for(config: &StageConfig, dataset: &Dataset) -> (InputShape, Preprocess) {
    let (means, stds) = dataset.channel_stats();
    let split = &dataset.train;
    let (rows, cols) = (split.rows, split.cols);
    let (out_rows, out_cols) = config.data.input_size.map_or((rows, cols), |s| (s, s));
    let mut prep = Preprocess {
        channels: split.channels,
        mean: [0.0; data::MAX_CHANNELS],
        std: [1.0; data::MAX_CHANNELS],
        src_rows: rows,
        src_cols: cols,
        out_rows,
        out_cols,
    };
    prep.mean[..means.len()].copy_from_slice(&means);
    prep.std[..stds.len()].copy_from_slice(&stds);
    (InputShape::made_by(&prep, dataset.classes), prep)
}

/// The preprocessing a model recorded, read for data stored at `src` size: `None` when it has
/// none; an error when it cannot read this data (other channels, or another size for a model
/// whose input size is fixed by `input`).
pub fn recorded_prep(
    what: &str,
    recorded: Option<&Preprocessing>,
    own: &Preprocess,
) -> Result<Option<Preprocess>, RunError> {
    let Some(recorded) = recorded else {
        return Ok(None);
    };
    if recorded.channels != own.channels {
        return Err(RunError::Input(format!(
            "{what} reads {}-channel images, this data has {} channels: set data.channels = \
             {} (image folders) or use data of the model's kind",
            recorded.channels, own.channels, recorded.channels
        )));
    }
    Ok(Some(recorded.preprocess(own.src_rows, own.src_cols)))
}

fn read_summary(path: &Path) -> Result<RunSummary, RunError> {
    let text = safeio::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| RunError::Record {
        what: "summary",
        path: path.to_path_buf(),
        message: format!("{e}; delete the run folder to run it again"),
    })
}

/// The data a stage measures on.
pub struct MeasureData<'a> {
    pub dataset: &'a Dataset,
    pub input: InputShape,
    pub prep: Preprocess,
    pub device: &'a Device,
}

/// Measures `model` the way every stage is measured: test accuracy, size, MACs, latency,
/// throughput. Training figures are left at zero for the caller to fill in.
pub fn measure_model(
    (name, hash): (&str, &str),
    model: &dyn Classifier,
    model_bytes: u64,
    config: &StageConfig,
    data: &MeasureData,
) -> Result<RunSummary, RunError> {
    let threads = worker_threads(config.threads);
    let eval = thread_pool(threads)?.install(|| {
        evaluate(
            model,
            &data.dataset.test,
            &data.prep,
            config.train.eval_batch_size,
            data.device,
        )
    });
    let m = &config.measure;
    let bench = bench_model(
        model,
        &data.dataset.test,
        &data.prep,
        &BenchOptions {
            latency_images: m.latency_images,
            latency_warmup: m.latency_warmup,
            latency_threads: m.latency_threads,
            throughput_batch: m.throughput_batch,
            throughput_threads: threads,
        },
        data.device,
    );
    // A test image that failed to decode from its file read as zeros: no result from it.
    data.dataset.test.stream_failure().map_err(RunError::Data)?;
    Ok(RunSummary {
        name: name.to_string(),
        hash: hash.to_string(),
        model: model.kind().to_string(),
        dataset: data.dataset.name.clone(),
        accuracy: eval.accuracy,
        test_errors: eval.errors,
        test_samples: eval.samples,
        test_loss: eval.loss,
        params: model.num_params(),
        model_bytes,
        macs: model.macs(&data.input),
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
        model_sha256: String::new(),
        artifact: None,
        artifact_sha256: String::new(),
        build: settings::context::build(),
        seed: Some(config.seed),
        train_limit: config.data.train_limit,
        overrides: Vec::new(),
        finished_at: measure::summary::utc_now(),
        input_normalization: None,
        preprocessing: Some(Preprocessing::of(&data.prep, &data.dataset.class_names)),
        techniques: Default::default(),
        hparams: Default::default(),
    })
}

/// A parent ready for its child: its model, and its summary when it is a stage.
struct PreparedParent {
    ready: ReadyParent,
    role: String,
    summary: Option<RunSummary>,
    file: Option<(PathBuf, String)>,
    /// How its model reads images, as its run or file recorded it.
    preprocessing: Option<Preprocessing>,
}

/// Runs (or reuses) parent stages and loads parent files, on the stage's device.
fn prepare_parents(
    loaded: &LoadedConfig,
    input: &InputShape,
    options: &RunOptions,
    progress: &mut Progress,
) -> Result<Vec<PreparedParent>, RunError> {
    loaded
        .parents
        .iter()
        .map(|parent| prepare_parent(parent, &loaded.device, input, options, progress))
        .collect()
}

/// The input a parent's model is built for: the one it recorded, else the stage's.
fn input_of(recorded: Option<&Preprocessing>, stage: &InputShape) -> InputShape {
    recorded.map_or(*stage, |p| InputShape::read_by(p, stage.classes))
}

/// What a summary says its model reads: its `preprocessing`, or for a summary written before
/// that was recorded, the grayscale statistics it kept (at this stage's input size).
fn summary_preprocessing(summary: &RunSummary, input: &InputShape) -> Option<Preprocessing> {
    if let Some(p) = &summary.preprocessing {
        return Some(p.clone());
    }
    let [mean, std] = summary.input_normalization?;
    Some(Preprocessing {
        channels: 1,
        height: input.height,
        width: input.width,
        resize: data::preprocessing::RESIZE_RULE.into(),
        mean: vec![mean],
        std: vec![std],
        // Not recorded: nothing to compare with the data's.
        class_names: Vec::new(),
    })
}

/// A note when a model's recorded class names are not the data's (another order, or other
/// classes of the same count): its outputs are then read as other classes than it learned.
pub fn class_names_note(what: &str, recorded: &Preprocessing, names: &[String]) -> Option<String> {
    if recorded.class_names.is_empty() || recorded.class_names == names {
        return None;
    }
    let show = |v: &[String]| {
        let mut s = v.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 4 {
            s += ", ...";
        }
        s
    };
    Some(format!(
        "note: {what} learned the classes [{}], this data has [{}]: its outputs are read in \
         this data's order",
        show(&recorded.class_names),
        show(names)
    ))
}

/// The stage's preprocessing once its parents are known: the `from` parent's recorded one
/// (the stage trains that model further, so it reads what the model was trained to read),
/// else the stage's own. Every other parent (a teacher) that recorded a different one is
/// given its own.
fn settle_preprocessing(
    loaded: &LoadedConfig,
    parents: &mut [PreparedParent],
    (own, class_names): (Preprocess, &[String]),
    progress: &mut Progress,
) -> Result<Preprocess, RunError> {
    let from_key = loaded.from_parent().map(|p| p.key.clone());
    let describe = |p: &Preprocess| Preprocessing::of(p, &[]).describe();
    for parent in parents.iter() {
        let what = format!("the {} ({})", parent.role, parent.ready.key);
        if let Some(note) = parent
            .preprocessing
            .as_ref()
            .and_then(|p| class_names_note(&what, p, class_names))
        {
            progress.line(&note);
        }
    }
    let mut prep = own;
    if let Some(parent) = parents
        .iter()
        .find(|p| Some(&p.ready.key) == from_key.as_ref())
    {
        let what = format!("the {} ({})", parent.role, parent.ready.key);
        match recorded_prep(&what, parent.preprocessing.as_ref(), &own)? {
            Some(recorded)
                if (recorded.out_rows, recorded.out_cols) != (own.out_rows, own.out_cols) =>
            {
                return Err(RunError::Input(format!(
                    "{what} reads {}x{} images, this stage's data gives {}x{}: set \
                     data.input_size = {} (the stage trains the parent's model further)",
                    recorded.out_rows,
                    recorded.out_cols,
                    own.out_rows,
                    own.out_cols,
                    recorded.out_rows
                )));
            }
            Some(recorded) => {
                if recorded != own {
                    progress.line(&format!(
                        "input: {} as {what} recorded (this stage's data alone would give {})",
                        describe(&recorded),
                        describe(&own)
                    ));
                }
                prep = recorded;
            }
            None => progress.line(&format!(
                "note: {what} recorded no input preprocessing (a file from before it was \
                 recorded, or from PyTorch): normalising with this stage's statistics, {}",
                describe(&own)
            )),
        }
    }
    for parent in parents.iter_mut() {
        if Some(&parent.ready.key) == from_key.as_ref() {
            continue;
        }
        let what = format!("the {} ({})", parent.role, parent.ready.key);
        if let Some(recorded) = recorded_prep(&what, parent.preprocessing.as_ref(), &prep)? {
            if recorded != prep {
                progress.line(&format!(
                    "{}: fed its own inputs, {}",
                    parent.role,
                    describe(&recorded)
                ));
                parent.ready.prep = Some(recorded);
            }
        }
    }
    Ok(prep)
}

fn prepare_parent(
    parent: &Parent,
    device: &Device,
    input: &InputShape,
    options: &RunOptions,
    progress: &mut Progress,
) -> Result<PreparedParent, RunError> {
    let role = parent.role().to_string();
    let (model, summary, file, preprocessing) = match &parent.source {
        ParentSource::Stage(stage) => {
            let outcome = run_stage(stage, options)?;
            progress.line(&format!(
                "{role}: stage {} {} {} ({:.2}% test accuracy)",
                stage.config.name,
                if outcome.reused {
                    "reused the finished run"
                } else {
                    "trained"
                },
                outcome.dir.display(),
                outcome.summary.accuracy * 100.0
            ));
            let path = outcome.dir.join(MODEL);
            if !outcome.summary.model_sha256.is_empty() {
                file::verify_sha256(&path, &outcome.summary.model_sha256)?;
            }
            let options = LoadOptions {
                spec: None,
                key_map: &[],
            };
            let preprocessing = summary_preprocessing(&outcome.summary, input);
            let input = &input_of(preprocessing.as_ref(), input);
            let model = file::load(&path, ModelFormat::Burnpack, options, input, device)?;
            (model, Some(outcome.summary), None, preprocessing)
        }
        ParentSource::File {
            path,
            format,
            spec,
            key_map,
            sha256,
            preprocessing,
        } => {
            let options = LoadOptions {
                spec: Some(spec),
                key_map,
            };
            let input = &input_of(preprocessing.as_deref(), input);
            let model = file::load(path, *format, options, input, device)?;
            progress.line(&format!("{role}: loaded {} ({format:?})", path.display()));
            (
                model,
                None,
                Some((path.clone(), sha256.clone())),
                preprocessing.as_deref().cloned(),
            )
        }
    };
    Ok(PreparedParent {
        ready: ReadyParent {
            key: parent.key.clone(),
            model,
            recorded_accuracy: summary.as_ref().map(|s| s.accuracy),
            prep: None,
        },
        role,
        summary,
        file,
        preprocessing,
    })
}

/// Sends the loop's output to the run folder: TensorBoard, the log, the checkpoint file.
struct RunSink<'a> {
    progress: &'a mut Progress,
    events: &'a mut EventLog,
    checkpoint: PathBuf,
    /// Fault injection for tests: the event file's writes fail from this epoch on.
    events_full_at_epoch: Option<usize>,
    epochs_flushed: usize,
}

impl TrainSink for RunSink<'_> {
    fn progress(&mut self) -> &mut Progress {
        self.progress
    }

    fn scalar(&mut self, tag: &str, step: usize, value: f64) {
        self.events.scalar(tag, value, step);
    }

    fn flush(&mut self) -> Result<(), RunError> {
        self.epochs_flushed += 1;
        if self.events_full_at_epoch == Some(self.epochs_flushed) {
            let full = Path::new("/dev/full");
            self.events
                .redirect_writes(full)
                .map_err(RunError::io(full))?;
        }
        Ok(self.events.flush()?)
    }

    fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), RunError> {
        checkpoint
            .save(&self.checkpoint)
            .map_err(RunError::io(&self.checkpoint))
    }

    fn checkpoint_name(&self) -> String {
        self.checkpoint.display().to_string()
    }
}

/// The finished result of `loaded`, when there is one.
fn finished(loaded: &LoadedConfig) -> Result<Option<StageOutcome>, RunError> {
    let dir = loaded.run_path();
    let summary = dir.join(SUMMARY);
    if !summary.exists() {
        return Ok(None);
    }
    Ok(Some(StageOutcome {
        summary: read_summary(&summary)?,
        dir,
        reused: true,
    }))
}

/// Why the finished run in `dir` cannot be used as it is: its model file (or its export) is
/// missing or is not the file the run recorded. `None` when its files are its own.
pub fn stale_reason(dir: &Path, summary: &RunSummary) -> Option<String> {
    let names = std::iter::once(MODEL).chain(summary.artifact.as_deref());
    for name in names {
        let Some(sha256) = settings::run_dir::recorded_sha256(summary, name) else {
            continue;
        };
        let path = dir.join(name);
        if !path.exists() {
            return Some(format!("its {name} is missing"));
        }
        if let Err(e) = file::verify_sha256(&path, sha256) {
            return Some(e.to_string());
        }
    }
    None
}

/// What running `loaded` now would do, in words (for `train check`).
pub fn planned(loaded: &LoadedConfig) -> String {
    let dir = loaded.run_path();
    match read_summary(&dir.join(SUMMARY)) {
        Ok(summary) => match stale_reason(&dir, &summary) {
            None => "finished: it would be reused".into(),
            Some(reason) => format!("finished, but {reason}: it would be trained again"),
        },
        Err(_) if dir.join(SUMMARY).exists() => {
            "finished, but its summary.json is unreadable: delete the run folder".into()
        }
        Err(_) if dir.join(CHECKPOINT).exists() => match Checkpoint::load(&dir.join(CHECKPOINT)) {
            Ok(ckpt) => match ckpt.state.check_owner(&Owner::of(loaded)) {
                Ok(()) => format!(
                    "interrupted: it would resume from the end of epoch {}",
                    ckpt.state.epochs_done
                ),
                Err(reason) => format!("its checkpoint.bin would be refused: {reason}"),
            },
            Err(e) => format!("its checkpoint would be refused: {}", e.reason),
        },
        Err(_) => "not run yet: it would be trained".into(),
    }
}

/// The finished run of this stage when it can be reused; a finished run whose model went
/// missing or changed has its summary set aside (`summary.stale.json`) and is trained again.
fn reusable(
    loaded: &LoadedConfig,
    progress: &mut Progress,
) -> Result<Option<StageOutcome>, RunError> {
    let reusable = match finished(loaded)? {
        Some(outcome) => match stale_reason(&outcome.dir, &outcome.summary) {
            None => Some(outcome),
            Some(reason) => {
                // Not this run's result any more: set its summary aside and train again.
                let stale = outcome.dir.join("summary.stale.json");
                std::fs::rename(outcome.dir.join(SUMMARY), &stale).map_err(RunError::io(&stale))?;
                progress.line(&format!(
                    "the finished run {} cannot be reused: {reason}. Training it again (its old \
                     summary is kept as {})",
                    outcome.dir.display(),
                    stale.display()
                ));
                None
            }
        },
        None => None,
    };
    let Some(outcome) = reusable else {
        return Ok(None);
    };
    progress.line(&format!(
        "reusing the finished run {} (delete it to train again)",
        outcome.dir.display()
    ));
    let build = settings::context::build();
    if outcome.summary.build != build {
        progress.line(&format!(
            "note: its latency and throughput were measured by another build ({}); this \
             binary is a {build} build. `train bench {}` measures it again with this one",
            if outcome.summary.build.is_empty() {
                "not recorded"
            } else {
                &outcome.summary.build
            },
            outcome.dir.display()
        ));
    }
    Ok(Some(outcome))
}

/// A stage's techniques, as the registry built them.
type Techniques<'a> = Vec<Box<dyn Technique + 'a>>;

/// Trains the stage in a pool of its worker threads: builds its techniques, starts fresh or
/// from the checkpoint, and runs the loop. Returns the model, its state and the techniques
/// (whose reports and exports the summary needs).
fn train_stage<'a>(
    loaded: &LoadedConfig,
    ctx: &StageContext<'a>,
    parents: &[PreparedParent],
    resume: Option<Checkpoint>,
    sink: &mut RunSink,
) -> Result<(Model, TrainState, Techniques<'a>), RunError> {
    let config = &loaded.config;
    let threads = worker_threads(config.threads);
    thread_pool(threads)?.install(|| {
        let mut techniques = techniques::build(config, ctx)?;
        techniques.extend(crate::test_technique::from_hooks(&loaded.hooks));
        let start = match resume {
            Some(ckpt) => Start::Resume(ckpt),
            None => Start::Fresh(initial_model(loaded, parents, &ctx.input)?),
        };
        let setup = TrainSetup {
            config,
            dataset: ctx.dataset,
            prep: ctx.prep,
            input: ctx.input,
            device: loaded.device.clone(),
            hash: loaded.hash.clone(),
            start_model: &loaded.model,
            replicas: replicas(config),
            threads,
            fault_nonfinite_at_step: loaded.hooks.fault_nonfinite_at_step,
        };
        let (model, state) = train(&setup, start, &mut techniques, sink)?;
        Ok((model, state, techniques))
    })
}

/// Whether this machine has the device the stage names (a GPU LibTorch can see).
fn check_device(loaded: &LoadedConfig) -> Result<(), RunError> {
    let device = &loaded.config.device;
    settings::device::check_present(device).map_err(|problem| RunError::Device {
        device: device.clone(),
        config: loaded.path.display().to_string(),
        problem,
    })
}

/// What the stage's techniques are built from: its data, device, seed and ready parents.
fn stage_context<'a>(
    loaded: &LoadedConfig,
    (dataset, input, prep): (&'a Dataset, InputShape, Preprocess),
    parents: &'a [&'a ReadyParent],
) -> StageContext<'a> {
    let config = &loaded.config;
    StageContext {
        dataset,
        prep,
        input,
        device: loaded.device.clone(),
        eval_batch_size: config.train.eval_batch_size,
        seed: config.seed,
        augmented: !config.data.augment.augment().is_identity(),
        parents,
    }
}

/// Runs (or resumes, or reuses) the stage `loaded` describes; its parents run (or are
/// reused) first.
pub fn run_stage(loaded: &LoadedConfig, options: &RunOptions) -> Result<StageOutcome, RunError> {
    let config = &loaded.config;
    let mut progress = Progress::new(options.plain);
    progress.line(&format!(
        "stage {} ({})",
        config.name,
        loaded.path.display()
    ));
    if let Some(outcome) = reusable(loaded, &mut progress)? {
        return Ok(outcome);
    }
    // The config was checked where it was written; the GPU it names must be here.
    check_device(loaded)?;

    let dataset = load_stage_data(config, &mut progress)?;
    let (input, own_prep) = input_for(config, &dataset);
    let mut parents = prepare_parents(loaded, &input, options, &mut progress)?;
    log_data(&dataset, &input, &mut progress);
    let prep = settle_preprocessing(
        loaded,
        &mut parents,
        (own_prep, &dataset.class_names),
        &mut progress,
    )?;

    let OpenRun {
        run,
        mut events,
        resume,
    } = match open_run(loaded, &mut progress)? {
        Opened::Finished(outcome) => return Ok(outcome),
        Opened::Run(open) => open,
    };
    let checkpoint_path = run.file(CHECKPOINT);
    let resume_epochs = resume.as_ref().map_or(0, |c| c.state.epochs_done);

    let ready: Vec<&ReadyParent> = parents.iter().map(|p| &p.ready).collect();
    let ctx = stage_context(loaded, (&dataset, input, prep), &ready);
    let mut sink = RunSink {
        progress: &mut progress,
        events: &mut events,
        checkpoint: checkpoint_path,
        events_full_at_epoch: loaded.hooks.fault_events_full_at_epoch,
        epochs_flushed: resume_epochs,
    };
    let trained = train_stage(loaded, &ctx, &parents, resume, &mut sink);
    let (model, state, mut techniques) = logged(&mut progress, trained)?;

    let data = MeasureData {
        dataset: &dataset,
        input,
        prep,
        device: &loaded.device,
    };
    let summary = finish(
        loaded,
        &run,
        (&model, &state),
        &mut techniques,
        &parents,
        &data,
        &mut progress,
        events,
    );
    let summary = logged(&mut progress, summary)?;
    Ok(StageOutcome {
        dir: run.path.clone(),
        summary,
        reused: false,
    })
}

/// `result`, its error also kept in the run's log (beside the history it stopped).
fn logged<T>(progress: &mut Progress, result: Result<T, RunError>) -> Result<T, RunError> {
    result.inspect_err(|e| progress.log_only(&format!("error: {}", error_chain(e))))
}

/// What the stage reads: its splits, input shape and classes, and what reading them noted.
fn log_data(dataset: &Dataset, input: &InputShape, progress: &mut Progress) {
    progress.line(&format!(
        "data: {} ({} train / {} test images of {}x{}x{}, {} classes)",
        dataset.name,
        dataset.train.len(),
        dataset.test.len(),
        input.channels,
        input.height,
        input.width,
        input.classes
    ));
    for note in &dataset.notes {
        progress.line(&format!("data: {note}"));
    }
}

/// The stage's dataset, saying where it comes from first (a first use downloads it).
fn load_stage_data(config: &StageConfig, progress: &mut Progress) -> Result<Dataset, RunError> {
    let data = &config.data;
    let name = serde_json::to_value(data.dataset).map_or("?".into(), |v| v.to_string());
    progress.line(&match &data.path {
        Some(path) => format!("data: reading {name} from {}", path.display()),
        None => format!(
            "data: loading {name} (fetched into {} on first use)",
            data.cache_dir
                .clone()
                .unwrap_or_else(data::fetch::default_cache_root)
                .display()
        ),
    });
    load_dataset(config)
}

/// What [`save_model`] wrote: the float model's bytes, and the artefact a technique exported.
struct Saved {
    bytes: Vec<u8>,
    /// The size of what the stage delivers: the artefact when there is one, else the model.
    model_bytes: u64,
    artifact_name: Option<String>,
    artifact_sha256: String,
}

/// Writes `model.bpk`, and each technique's export beside it.
fn save_model(
    run: &RunDir,
    model: &Model,
    techniques: &[Box<dyn Technique + '_>],
    preprocessing: &Preprocessing,
) -> Result<Saved, RunError> {
    let model_path = run.file(MODEL);
    let bytes = file::model_file_bytes(model, Some(preprocessing))?;
    write_atomic(&model_path, &bytes).map_err(RunError::io(&model_path))?;
    let mut model_bytes = bytes.len() as u64;
    let mut artifact_name = None;
    let mut artifact_sha256 = String::new();
    for technique in techniques.iter() {
        if let Some(artifact) = technique.export(model) {
            let artifact = artifact?;
            let path = run.file(&artifact.file_name);
            write_atomic(&path, &artifact.bytes).map_err(RunError::io(&path))?;
            model_bytes = artifact.bytes.len() as u64;
            artifact_sha256 = file::sha256_hex(&artifact.bytes);
            artifact_name = Some(artifact.file_name);
        }
    }
    Ok(Saved {
        bytes,
        model_bytes,
        artifact_name,
        artifact_sha256,
    })
}

/// Records every technique of the stage by name (what `train report` groups runs by), with
/// its report when it has one.
fn record_techniques(summary: &mut RunSummary, techniques: &[Box<dyn Technique + '_>]) {
    for technique in techniques.iter() {
        let json = match technique.report() {
            Some(report) => {
                let mut json = report.json;
                if let Some(fields) = json.as_object_mut() {
                    fields.insert(measure::summary::TABLE_KEY.into(), report.table.into());
                }
                json
            }
            None => serde_json::json!({}),
        };
        summary
            .techniques
            .insert(technique.name().to_string(), json);
    }
}

/// This run against its parent: the one the stage started from, else the first. A parent
/// that is a model file is measured here, the same way.
fn compare_with_parent(
    loaded: &LoadedConfig,
    parents: &[PreparedParent],
    summary: &RunSummary,
    data: &MeasureData,
) -> Result<Option<ParentSummary>, RunError> {
    let config = &loaded.config;
    let compared = loaded
        .from_parent()
        .and_then(|p| parents.iter().find(|r| r.ready.key == p.key))
        .or(parents.first());
    let Some(parent) = compared else {
        return Ok(None);
    };
    let parent_summary = match (&parent.summary, &parent.file) {
        (Some(summary), _) => summary.clone(),
        (None, Some((path, sha))) => {
            let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
            let name = path.display().to_string();
            let parent_model = Inference::new(&parent.ready.model);
            measure_model((&name, sha), &parent_model, bytes, config, data)?
        }
        (None, None) => summary.clone(),
    };
    Ok(Some(ParentSummary::compare(
        &parent.role,
        &parent_summary,
        summary,
    )))
}

/// Writes the summary's numbers and table to TensorBoard at `step`, and the run's HParams
/// session (`hparams` against those numbers as metrics), and closes the log; returns the table.
fn log_summary(
    mut events: EventLog,
    summary: &RunSummary,
    hparams: &[(String, HValue)],
    step: usize,
) -> Result<String, RunError> {
    for (tag, value) in [
        ("summary/accuracy", summary.accuracy),
        ("summary/test_errors", summary.test_errors as f64),
        ("summary/train_seconds", summary.train_seconds),
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
        events.scalar(
            &format!("summary/{}_accuracy", parent.role),
            parent.accuracy,
            step,
        );
        let r = &parent.ratios;
        for (tag, value) in [
            ("summary/params_ratio", r.params),
            ("summary/model_bytes_ratio", r.model_bytes),
            ("summary/macs_ratio", r.macs),
            ("summary/latency_p50_ratio", r.latency_p50),
            ("summary/accuracy_delta_points", r.accuracy_delta_points),
        ] {
            events.scalar(tag, value, step);
        }
    }
    // Each run its own session group (`name/hash`): two seeds of a config are two rows.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let group = format!("{}/{}", summary.name, summary.hash);
    events.plugin(
        hparams::SESSION_START_TAG,
        hparams::PLUGIN,
        hparams::session_start(hparams, &group, now - summary.train_seconds),
        step,
    );
    events.plugin(
        hparams::SESSION_END_TAG,
        hparams::PLUGIN,
        hparams::session_end(true, now),
        step,
    );
    let table = summary.table();
    events.text("summary", &format!("```\n{table}```"), step);
    events.close()?;
    Ok(table)
}

/// An error with its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// Removes the temporaries a killed process left in `dir` (`.NAME.tmp-PID` from atomic
/// writes). Called with the run's lock held, so no live writer owns them.
fn remove_stale_temporaries(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A run folder ready to train in: its lock held, the resolved config written, the log
/// attached, a fresh event file (with a resumed run's history replayed into it).
struct OpenRun {
    run: RunDir,
    events: EventLog,
    resume: Option<Checkpoint>,
}

/// One value per stage run: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Opened {
    /// Another process finished the run while we waited for its lock.
    Finished(StageOutcome),
    Run(OpenRun),
}

fn open_run(loaded: &LoadedConfig, progress: &mut Progress) -> Result<Opened, RunError> {
    let config = &loaded.config;
    let run = RunDir::open(&loaded.run_path(), loaded.hash.clone(), |path| {
        safeio::outln!(
            "waiting for another process that is running {}",
            path.display()
        )
    })
    .map_err(RunError::io(loaded.run_path()))?;
    if run.is_complete() {
        return Ok(Opened::Finished(StageOutcome {
            dir: run.path.clone(),
            summary: read_summary(&run.file(SUMMARY))?,
            reused: true,
        }));
    }
    // A checkpoint is read and its owner checked before anything in the folder is touched:
    // one that another run wrote is refused with the folder as it was.
    let checkpoint_path = run.file(CHECKPOINT);
    let resume = if checkpoint_path.exists() {
        let ckpt = Checkpoint::load(&checkpoint_path)?;
        ckpt.state
            .check_owner(&Owner::of(loaded))
            .map_err(|reason| crate::checkpoint::CheckpointError {
                path: checkpoint_path.display().to_string(),
                reason,
            })?;
        Some(ckpt)
    } else {
        None
    };
    remove_stale_temporaries(&run.path).map_err(RunError::io(&run.path))?;
    let resolved = toml::to_string(config).map_err(|e| RunError::Record {
        what: "resolved config",
        path: run.file(RESOLVED_CONFIG),
        message: e.to_string(),
    })?;
    write_atomic(&run.file(RESOLVED_CONFIG), resolved.as_bytes())
        .map_err(RunError::io(run.file(RESOLVED_CONFIG)))?;
    progress
        .log_to(&run.file(LOG))
        .map_err(RunError::io(run.file(LOG)))?;

    match &resume {
        Some(ckpt) => progress.line(&format!(
            "resuming {} from the end of epoch {}",
            run.path.display(),
            ckpt.state.epochs_done
        )),
        None => progress.line(&format!("run folder {}", run.path.display())),
    }

    // One event file per run folder: a resumed run rewrites its history into a new file.
    remove_event_files(&run.path).map_err(RunError::io(&run.path))?;
    let mut events = EventLog::create(&run.path).map_err(RunError::io(&run.path))?;
    events.text("config", &format!("```toml\n{resolved}\n```"), 0);
    if !loaded.overrides.is_empty() {
        // What differs from the config file, for telling quick tries from real runs.
        let list: Vec<String> = loaded
            .overrides
            .iter()
            .map(|o| format!("- `{o}`"))
            .collect();
        events.text("overrides", &list.join("\n"), 0);
    }
    if let Some(ckpt) = &resume {
        replay_history(&mut events, &ckpt.state.history);
    }

    Ok(Opened::Run(OpenRun {
        run,
        events,
        resume,
    }))
}

/// The model a fresh run starts from, on the autodiff device: the `from` parent's weights,
/// or a new model initialised from the seed.
fn initial_model(
    loaded: &LoadedConfig,
    parents: &[PreparedParent],
    input: &InputShape,
) -> Result<Model, RunError> {
    let device = loaded.device.clone().autodiff();
    device.seed(loaded.config.seed);
    let from = loaded
        .from_parent()
        .and_then(|p| parents.iter().find(|r| r.ready.key == p.key));
    match from {
        Some(parent) => Ok(parent.ready.model.copy_to(input, &device)?),
        None => Model::new(&loaded.model, input, &device).map_err(RunError::Model),
    }
}

/// The ONNX export a run writes with `output.onnx = true`.
pub const ONNX_FILE: &str = "model.onnx";

/// `output.onnx`: what the run measured (its artefact `artifact`, else `model.bpk`) as
/// [`ONNX_FILE`] in the run folder.
fn write_onnx(
    run: &RunDir,
    model: &Model,
    artifact: Option<&str>,
    data: &MeasureData,
    progress: &mut Progress,
) -> Result<(), RunError> {
    let measured = run.file(artifact.unwrap_or(MODEL));
    let preprocessing = Preprocessing::of(&data.prep, &data.dataset.class_names);
    let source = crate::onnx_file::source(&measured, model, &data.input, Some(preprocessing))?;
    let out = run.file(ONNX_FILE);
    let size = crate::onnx_file::write(&source, &onnx::Options::default(), &out)?;
    progress.line(&format!(
        "wrote {} ({size} bytes, output.onnx)",
        out.display()
    ));
    Ok(())
}

/// Saves the final model (and a technique's artefact), measures it, compares it with its
/// parent, and writes `summary.json` last.
#[allow(clippy::too_many_arguments)]
fn finish(
    loaded: &LoadedConfig,
    run: &RunDir,
    (model, state): (&Model, &TrainState),
    techniques: &mut [Box<dyn Technique + '_>],
    parents: &[PreparedParent],
    data: &MeasureData,
    progress: &mut Progress,
    events: EventLog,
) -> Result<RunSummary, RunError> {
    let config = &loaded.config;
    let Saved {
        bytes,
        model_bytes,
        artifact_name,
        artifact_sha256,
    } = save_model(
        run,
        model,
        techniques,
        &Preprocessing::of(&data.prep, &data.dataset.class_names),
    )?;
    // An export is measured as users will run it: loaded back from its file.
    let export = match &artifact_name {
        Some(name) => Some(crate::artifacts::open_artifact(
            &run.file(name),
            config,
            &data.input,
            data.device,
        )?),
        None => None,
    };
    progress.line(&match &artifact_name {
        Some(name) => format!("measuring {name} (loaded from disk): accuracy, latency, throughput"),
        None => "measuring accuracy, latency and throughput".to_string(),
    });
    let measured = crate::artifacts::Measured::new(export, model);
    let measured = measured.classifier();
    let mut summary = measure_model(
        (&config.name, &run.hash),
        measured,
        model_bytes,
        config,
        data,
    )?;
    if config.output.onnx {
        write_onnx(run, model, artifact_name.as_deref(), data, progress)?;
    }
    summary.model_sha256 = file::sha256_hex(&bytes);
    summary.artifact = artifact_name;
    summary.artifact_sha256 = artifact_sha256;
    summary.overrides = loaded.overrides.clone();
    record_techniques(&mut summary, techniques);
    summary.epochs = state.epochs_done;
    summary.train_seconds = state.train_seconds;
    summary.train_samples_per_s = state.samples_seen as f64 / state.step_seconds.max(1e-9);
    summary.parent = compare_with_parent(loaded, parents, &summary, data)?;

    let hparams = settings::identity::run_hparams(loaded, Some(&summary));
    summary.hparams = hparams
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    let table = log_summary(events, &summary, &hparams, state.global_step)?;

    let json = serde_json::to_string_pretty(&summary).map_err(|e| RunError::Record {
        what: "summary",
        path: run.file(SUMMARY),
        message: e.to_string(),
    })?;
    write_atomic(&run.file(SUMMARY), json.as_bytes()).map_err(RunError::io(run.file(SUMMARY)))?;
    let _ = std::fs::remove_file(run.file(CHECKPOINT));
    progress.line(&format!(
        "\nresult of {} ({}):\n{table}",
        config.name,
        run.path.display()
    ));
    Ok(summary)
}

/// The replicas a training step splits across: `train.replicas`, 0 to let the loop choose
/// by model (see [`crate::train::TrainSetup::replicas`]), or 1 on LibTorch, which parallelises
/// inside each op on its own (process-wide) threads: replicas there would only oversubscribe
/// them.
fn replicas(config: &StageConfig) -> usize {
    match settings::device::Backend::parse(&config.device) {
        Ok(settings::device::Backend::Flex) => config.train.replicas,
        _ => 1,
    }
}
