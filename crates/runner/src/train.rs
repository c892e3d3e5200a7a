//! The training loop, written once for every technique (see [`technique::Technique`]).
//!
//! Reproducibility: the data order and augmentation of epoch `e` come from RNG streams keyed by
//! `(seed, e)`, and the backend RNG (dropout) is reseeded from `(seed, e)` at the start of each
//! epoch. A run resumed from the checkpoint of epoch `e` therefore replays exactly what an
//! uninterrupted run would have done.
//!
//! Seams: the loop starts from a model the caller gives (fresh, or a parent's weights) or
//! from a checkpoint; one step is [`train_step`]; techniques hook in before training, after
//! each step and after each epoch (a reshaped model rebuilds the optimiser); checkpoints,
//! scalars and progress leave through a [`TrainSink`].

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use data::{Batch, Dataset, HostBatch, Preprocess, SplitMix64};
use measure::EventLog;
use models::{Classifier, ForwardHook, HookedView, Inference, InputShape, Model};
use technique::{CrossEntropy, Loss, StepLoss, Technique, TechniqueError, Trainee};

use crate::checkpoint::{Checkpoint, ScalarPoint, TrainState};
use crate::error::RunError;
pub use crate::optim::build_optimizer;
use crate::progress::Progress;
use crate::replicas::{shard_ranges, Replicas};
use crate::schedule::learning_rate;
use settings::schema::StageConfig;

/// Separates the augmentation stream from the shuffling stream of the same epoch.
const AUGMENT_STREAM: u64 = 0x5eed_a06e;

/// Everything the loop reads.
pub struct TrainSetup<'a> {
    pub config: &'a StageConfig,
    pub dataset: &'a Dataset,
    pub prep: Preprocess,
    pub input: InputShape,
    /// The inference device; training runs on its autodiff twin.
    pub device: Device,
    /// The run's identity, recorded in checkpoints: its hash and the architecture it starts
    /// from (before any technique reshapes it).
    pub hash: String,
    pub start_model: &'a models::ModelSpec,
    /// Model replicas per step (see [`crate::replicas`]); 0 chooses one per worker thread for
    /// convolutional nets (whose serial ops leave threads idle: 1.6x on LeNet-5 at 2 threads)
    /// and 1 for MLPs (matrix products that already use every thread; replicas measured
    /// slightly slower). A stage whose technique learns from batches in order (a quantizer's
    /// observers: [`Technique::batches_in_order`]) trains on one.
    pub replicas: usize,
    /// Worker threads of the stage.
    pub threads: usize,
    /// Fault injection for tests (see [`crate::RunOptions`]).
    pub fault_nonfinite_at_step: Option<usize>,
}

/// Where the loop starts. One value per run: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// A model on the autodiff device: freshly initialised, or a parent's trained weights.
    Fresh(Model),
    /// The checkpoint of an interrupted run.
    Resume(Checkpoint),
}

/// Where the loop's output goes: progress, scalars (TensorBoard), checkpoints.
pub trait TrainSink {
    fn progress(&mut self) -> &mut Progress;
    fn scalar(&mut self, tag: &str, step: usize, value: f64);
    /// Makes everything logged so far durable; an error (a full disk) stops the run before
    /// the next checkpoint, so the last good one is kept.
    fn flush(&mut self) -> Result<(), RunError>;
    fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), RunError>;
    /// Where checkpoints go, for messages.
    fn checkpoint_name(&self) -> String;
}

/// What one optimiser step did.
pub struct StepOutcome {
    pub trainee: Trainee,
    /// The batch's mean loss.
    pub loss: f64,
    pub correct: usize,
    pub parts: Vec<(&'static str, f64)>,
}

/// What a stage's forward passes run: its loss, and its forward hook when a technique
/// supplies one (fake-quantization).
#[derive(Clone, Copy)]
pub struct StageForward<'a> {
    pub loss: &'a dyn Loss,
    pub hook: Option<&'a dyn ForwardHook>,
}

/// Part of a step's batch: what one replica forwards.
pub struct Shard<'a> {
    pub batch: Batch,
    /// The samples' indices in the training split (cached teacher outputs are looked up by
    /// them).
    pub indices: &'a [usize],
    /// Where the shard starts in the step's batch (its samples' dropout streams).
    pub offset: usize,
}

impl<'a> Shard<'a> {
    /// A batch already on its device, `images` `[n, c, h, w]` with `labels` and training-split
    /// `indices` (n each), split into at most `count` shards (benches and tests; the loop's
    /// loader builds shards from the dataset).
    pub fn split(
        images: &Tensor<4>,
        labels: &[i64],
        indices: &'a [usize],
        count: usize,
    ) -> Vec<Shard<'a>> {
        let device = images.device();
        crate::replicas::shard_ranges(labels.len(), count)
            .into_iter()
            .map(|(offset, len)| Shard {
                batch: Batch {
                    images: images.clone().narrow(0, offset, len),
                    labels: Tensor::from_data(
                        burn::tensor::TensorData::new(labels[offset..offset + len].to_vec(), [len]),
                        &device,
                    ),
                },
                indices: &indices[offset..offset + len],
                offset,
            })
            .collect()
    }
}

/// Where a step's randomness comes from: dropout streams keyed by the run's seed, the step,
/// and each sample's position in the batch.
#[derive(Clone, Copy)]
pub struct StepKey {
    pub seed: u64,
    pub step: u64,
}

/// One shard's forward and backward pass.
struct Pass {
    grads: GradientsParams,
    /// The shard's mean loss, unweighted.
    loss: f64,
    correct: usize,
    parts: Vec<(&'static str, f64)>,
}

/// Forward and backward of `shard` through `trainee`, the loss weighted by the shard's share
/// `weight` of the batch (so shards' gradients add up to the batch's).
fn forward_backward(
    trainee: &Trainee,
    stage: StageForward,
    shard: &Shard,
    weight: f64,
    key: StepKey,
    poison: bool,
) -> Result<Pass, f64> {
    let n = shard.indices.len();
    let streams =
        models::dropout::sample_streams(key.seed, key.step, shard.offset..shard.offset + n);
    let StepLoss {
        logits,
        total,
        parts,
    } = models::dropout::with_sample_streams(streams, || {
        stage
            .loss
            .loss(trainee, &shard.batch, shard.indices, stage.hook) // logits: [n, classes]
    });
    let total = if poison {
        total.mul_scalar(f32::NAN)
    } else {
        total
    };
    let loss: f64 = total.clone().into_scalar();
    if !loss.is_finite() {
        return Err(loss);
    }
    let correct = models::loss::correct(logits, shard.batch.labels.clone());
    let parts = parts
        .into_iter()
        .map(|(name, part)| (name, part.into_scalar::<f64>()))
        .collect();
    let total = if weight == 1.0 {
        total
    } else {
        total.mul_scalar(weight)
    };
    Ok(Pass {
        grads: GradientsParams::from_grads(total.backward(), trainee),
        loss,
        correct,
        parts,
    })
}

/// One optimiser step: forward (through the stage's forward hook, if any) and loss, backward,
/// update. One shard runs on the calling thread; several run concurrently on `replicas`, their
/// gradients and BatchNorm statistics combined (see [`crate::replicas`]). A non-finite loss is
/// returned as `Err(value)` and nothing is updated.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    trainee: Trainee,
    optim: &mut ModuleOptimizer,
    stage: StageForward,
    shards: &[Shard],
    replicas: Option<&Replicas>,
    key: StepKey,
    lr: f64,
    poison: bool,
) -> Result<StepOutcome, f64> {
    let n: usize = shards.iter().map(|s| s.indices.len()).sum();
    let weights: Vec<f64> = shards
        .iter()
        .map(|s| s.indices.len() as f64 / n.max(1) as f64)
        .collect();
    let (trainee, passes) = match replicas.filter(|_| shards.len() > 1) {
        None => {
            let passes = shards
                .iter()
                .zip(&weights)
                .enumerate()
                .map(|(r, (shard, &w))| {
                    forward_backward(&trainee, stage, shard, w, key, poison && r == 0)
                })
                .collect::<Result<Vec<_>, _>>()?;
            (trainee, passes)
        }
        Some(replicas) => {
            let views = crate::replicas::views(&trainee, shards.len());
            let passes = replicas
                .run(shards.len(), |r| {
                    forward_backward(
                        &views[r],
                        stage,
                        &shards[r],
                        weights[r],
                        key,
                        poison && r == 0,
                    )
                })
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            let trainee = crate::replicas::combine_running_stats(trainee, &views, &weights);
            (trainee, passes)
        }
    };
    let mut loss = 0.0;
    let mut correct = 0;
    let mut parts: Vec<(&'static str, f64)> = Vec::new();
    let mut grads = Vec::with_capacity(passes.len());
    for (pass, &w) in passes.into_iter().zip(&weights) {
        loss += w * pass.loss;
        correct += pass.correct;
        for (name, value) in pass.parts {
            match parts.iter_mut().find(|(p, _)| *p == name) {
                Some((_, sum)) => *sum += w * value,
                None => parts.push((name, w * value)),
            }
        }
        grads.push(pass.grads);
    }
    let grads = if grads.len() == 1 {
        grads.pop().unwrap_or_else(GradientsParams::new)
    } else {
        crate::replicas::sum_gradients(&trainee, grads)
    };
    Ok(StepOutcome {
        trainee: optim.step(lr, trainee, grads),
        loss,
        correct,
        parts,
    })
}

/// The loss the stage minimises: the one a technique supplies, else cross-entropy.
fn stage_loss<'t>(techniques: &'t [Box<dyn Technique + '_>]) -> &'t dyn Loss {
    techniques
        .iter()
        .find_map(|t| t.loss())
        .unwrap_or(&CrossEntropy)
}

/// The hook the stage's forward passes run through, when a technique supplies one.
fn stage_hook<'t>(techniques: &'t [Box<dyn Technique + '_>]) -> Option<&'t dyn ForwardHook> {
    techniques.iter().find_map(|t| t.forward_hook())
}

fn technique_error(e: TechniqueError) -> RunError {
    RunError::Technique(e)
}

/// The architecture's `kind` the loop starts from.
fn initial_kind(start: &Start) -> &'static str {
    match start {
        Start::Fresh(model) => model.kind(),
        Start::Resume(ckpt) => ckpt.state.model_spec.kind(),
    }
}

/// Builds the trainee skeleton for `model`: the model plus every technique's aux modules.
fn with_aux(model: Model, techniques: &[Box<dyn Technique + '_>], device: &Device) -> Trainee {
    let aux = techniques
        .iter()
        .flat_map(|t| t.aux(&model, device))
        .collect();
    Trainee { model, aux }
}

/// Restores the trainee, optimiser and state from a checkpoint: the model is rebuilt from the
/// spec the checkpoint records (a narrowed model resumes narrowed).
fn resume(
    setup: &TrainSetup,
    ckpt: Checkpoint,
    techniques: &mut [Box<dyn Technique + '_>],
    device: &Device,
    checkpoint_name: &str,
) -> Result<(Trainee, ModuleOptimizer, TrainState), RunError> {
    let record_error = |what: &'static str| {
        let path = checkpoint_name.into();
        move |e: burn::store::RecordError| RunError::Record {
            what,
            path,
            message: e.to_string(),
        }
    };
    let state = ckpt.state;
    let model = Model::new(&state.model_spec, &setup.input, device).map_err(RunError::Model)?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model))
        .map_err(record_error("model in checkpoint"))?;
    let trainee = with_aux(model, techniques, device)
        .try_load_record(record)
        .map_err(record_error("model in checkpoint"))?;
    let optim = build_optimizer(&setup.config.train.optimizer)
        .from_bytes(Bytes::from_bytes_vec(ckpt.optimizer))
        .map_err(record_error("optimizer in checkpoint"))?;
    if state.technique_state.len() != techniques.len() {
        return Err(RunError::Record {
            what: "technique state in checkpoint",
            path: checkpoint_name.into(),
            message: format!(
                "{} techniques saved, {} in this stage",
                state.technique_state.len(),
                techniques.len()
            ),
        });
    }
    for (technique, saved) in techniques.iter_mut().zip(&state.technique_state) {
        technique.restore(saved.clone()).map_err(technique_error)?;
    }
    Ok((trainee, optim, state))
}

/// At most one technique of a stage replaces the loss, and at most one hooks the forward.
fn check_one_each(techniques: &[Box<dyn Technique + '_>]) -> Result<(), RunError> {
    let suppliers = techniques.iter().filter(|t| t.loss().is_some()).count();
    let hooks = techniques
        .iter()
        .filter(|t| t.forward_hook().is_some())
        .count();
    for (count, what) in [
        (suppliers, "replace the loss"),
        (hooks, "hook the forward pass"),
    ] {
        if count > 1 {
            return Err(RunError::Technique(TechniqueError {
                technique: "stage",
                message: format!("{count} techniques each {what}; at most one may"),
            }));
        }
    }
    Ok(())
}

/// Replicas per step: `train.replicas`, where 0 chooses one per thread for convolutional
/// nets and 1 for MLPs; 1 when a technique learns from batches in order.
fn replica_count(
    setup: &TrainSetup,
    start: &Start,
    techniques: &[Box<dyn Technique + '_>],
    sink: &mut dyn TrainSink,
) -> usize {
    let requested = match setup.replicas {
        0 if initial_kind(start) == "mlp" => 1,
        0 => setup.threads,
        n => n,
    };
    let in_order = techniques.iter().find(|t| t.batches_in_order());
    let replicas = if let (Some(technique), true) = (in_order, requested > 1) {
        sink.progress().line(&format!(
            "training on 1 replica: {} learns from batches in order",
            technique.name()
        ));
        1
    } else {
        requested.max(1)
    };
    if replicas > 1 {
        // Every architecture but the MLP has BatchNorm: its statistics in training are each
        // replica's share of the batch, not the whole batch's, which a user comparing with
        // another framework's single-process run needs to know.
        let batch_norm = match initial_kind(start) {
            "mlp" => String::new(),
            _ => format!(
                "; BatchNorm normalises each replica's 1/{replicas} of the batch with its own                  statistics, as DDP without SyncBatchNorm does (train.replicas = 1 for the                  whole batch's)"
            ),
        };
        sink.progress().line(&format!(
            "training on {replicas} replicas, one thread each (train.replicas){batch_norm}"
        ));
    }
    replicas
}

/// A fresh start: the model with the techniques' modules, prepared by each technique (fold
/// BatchNorm, attach quantizers, prune one-shot), a new optimiser and an empty state.
fn fresh_start(
    setup: &TrainSetup,
    model: Model,
    techniques: &mut [Box<dyn Technique + '_>],
    device: &Device,
    sink: &mut dyn TrainSink,
) -> Result<(Trainee, ModuleOptimizer, TrainState), RunError> {
    let mut trainee = with_aux(model, techniques, device);
    for technique in techniques.iter_mut() {
        trainee = technique.prepare(trainee).map_err(technique_error)?;
        for line in technique.take_log() {
            sink.progress().line(&line);
        }
    }
    let state = TrainState {
        run_name: setup.config.name.clone(),
        config_hash: setup.hash.clone(),
        start_model: Some(setup.start_model.clone()),
        model_spec: trainee.model.spec(),
        epochs_done: 0,
        global_step: 0,
        train_seconds: 0.0,
        step_seconds: 0.0,
        samples_seen: 0,
        history: Vec::new(),
        technique_state: Vec::new(),
    };
    Ok((
        trainee,
        build_optimizer(&setup.config.train.optimizer),
        state,
    ))
}

/// Trains from `start`, checkpointing after every epoch. Returns the final model (inference
/// copy) and the final state.
pub fn train(
    setup: &TrainSetup,
    start: Start,
    techniques: &mut [Box<dyn Technique + '_>],
    sink: &mut dyn TrainSink,
) -> Result<(Model, TrainState), RunError> {
    let device = setup.device.clone().autodiff();
    check_one_each(techniques)?;
    for line in techniques.iter().filter_map(|t| t.describe()) {
        sink.progress().line(&line);
    }
    let replicas = replica_count(setup, &start, techniques, sink);
    let checkpoint_name = sink.checkpoint_name();
    let (mut trainee, optim, mut state) = match start {
        Start::Resume(ckpt) => resume(setup, ckpt, techniques, &device, &checkpoint_name)?,
        Start::Fresh(model) => fresh_start(setup, model, techniques, &device, sink)?,
    };
    let epochs = setup.config.train.epochs;
    sink.progress().start_run(epochs, state.epochs_done);
    let mut training = Training {
        setup,
        techniques,
        optim,
        history: History {
            points: std::mem::take(&mut state.history),
            sink,
        },
        state,
        device,
        checkpoint_name,
        replicas: if replicas > 1 {
            Some(Replicas::new(replicas)?)
        } else {
            None
        },
    };
    for epoch in training.state.epochs_done..epochs {
        let epoch_start = Instant::now();
        let (trained, tally) = training.epoch_steps(trainee, epoch)?;
        trainee = training.end_epoch(trained, epoch, tally, epoch_start)?;
    }
    training.history.sink.progress().finish();
    let mut state = training.state;
    state.history = training.history.points;
    Ok((trainee.model.valid(), state))
}

/// The host batch's parts on `device`, each with its samples' indices in the training split.
fn to_shards<'i>(host: Vec<HostBatch>, indices: &'i [usize], device: &Device) -> Vec<Shard<'i>> {
    let mut offset = 0;
    host.into_iter()
        .map(|part| {
            let len = part.labels.len();
            let shard = Shard {
                batch: part.to_device(device),
                indices: &indices[offset..offset + len],
                offset,
            };
            offset += len;
            shard
        })
        .collect()
}

impl EpochTally {
    /// Adds a step's loss parts, each a mean over its `n` samples.
    fn add_parts(&mut self, parts: Vec<(&'static str, f64)>, n: usize) {
        for (name, value) in parts {
            match self.part_sums.iter_mut().find(|(p, _)| *p == name) {
                Some((_, sum)) => *sum += value * n as f64,
                None => self.part_sums.push((name, value * n as f64)),
            }
        }
    }
}

/// What an epoch's steps add up to.
struct EpochTally {
    whole: Tally,
    /// Sums of each loss part over the epoch's samples.
    part_sums: Vec<(&'static str, f64)>,
    step_seconds: f64,
    /// The learning rate of the last step.
    lr: f64,
}

/// The loop's state between epochs (the trainee is passed by value through it).
struct Training<'a, 's, 't> {
    setup: &'a TrainSetup<'a>,
    techniques: &'a mut [Box<dyn Technique + 't>],
    optim: ModuleOptimizer,
    history: History<'s>,
    state: TrainState,
    /// The autodiff device.
    device: Device,
    checkpoint_name: String,
    /// The replicas' pools when a step is split across more than one.
    replicas: Option<Replicas>,
}

impl Training<'_, '_, '_> {
    /// The optimiser steps of epoch `epoch` (0-based), with the techniques' step hooks. A
    /// loader thread prepares the next batches (shuffled, augmented, split into the replicas'
    /// shards) while the current one trains; it draws from the epoch's augmentation stream in
    /// batch order, so what it builds does not depend on when it runs.
    fn epoch_steps(
        &mut self,
        trainee: Trainee,
        epoch: usize,
    ) -> Result<(Trainee, EpochTally), RunError> {
        let config = self.setup.config;
        let tc = &config.train;
        let train = &self.setup.dataset.train;
        self.device
            .seed(SplitMix64::for_stream(config.seed, epoch as u64).next_u64());
        let mut order: Vec<usize> = (0..train.len()).collect();
        SplitMix64::for_stream(config.seed, epoch as u64).shuffle(&mut order);
        let mut augment_rng = SplitMix64::for_stream(config.seed ^ AUGMENT_STREAM, epoch as u64);
        let augment = config.data.augment.augment();
        let shards = self.replicas.as_ref().map_or(1, Replicas::count);
        let prep = self.setup.prep;
        let order = &order;
        std::thread::scope(|scope| {
            // Two batches ahead: enough to hide the loader, little memory.
            let (send, batches) = std::sync::mpsc::sync_channel::<Vec<HostBatch>>(2);
            scope.spawn(move || {
                for indices in order.chunks(tc.batch_size) {
                    let parts = shard_ranges(indices.len(), shards)
                        .into_iter()
                        .map(|(offset, len)| {
                            let part = &indices[offset..offset + len];
                            HostBatch::new(train, part, &prep, Some((&augment, &mut augment_rng)))
                        })
                        .collect();
                    if send.send(parts).is_err() {
                        return; // the epoch stopped early (an error)
                    }
                }
            });
            self.run_steps(trainee, epoch, order, &batches)
        })
    }

    /// The steps of an epoch, on the batches the loader sends in `order`'s chunks.
    fn run_steps(
        &mut self,
        mut trainee: Trainee,
        epoch: usize,
        order: &[usize],
        batches: &std::sync::mpsc::Receiver<Vec<HostBatch>>,
    ) -> Result<(Trainee, EpochTally), RunError> {
        let config = self.setup.config;
        let tc = &config.train;
        let train = &self.setup.dataset.train;
        let steps_per_epoch = train.len().div_ceil(tc.batch_size);
        self.history
            .sink
            .progress()
            .start_epoch(epoch + 1, steps_per_epoch);
        let mut window = Tally::default();
        let mut tally = EpochTally {
            whole: Tally::default(),
            part_sums: Vec::new(),
            step_seconds: 0.0,
            lr: 0.0,
        };
        for (step, indices) in order.chunks(tc.batch_size).enumerate() {
            let host = batches
                .recv()
                .expect("the batch loader sends every batch of the epoch");
            let step_start = Instant::now();
            tally.lr = learning_rate(
                &tc.schedule,
                tc.optimizer.lr(),
                self.state.global_step,
                steps_per_epoch,
                tc.epochs,
            );
            let shards = to_shards(host, indices, &self.device);
            let poison = self.setup.fault_nonfinite_at_step == Some(self.state.global_step + 1);
            let outcome = train_step(
                trainee,
                &mut self.optim,
                StageForward {
                    loss: stage_loss(self.techniques),
                    hook: stage_hook(self.techniques),
                },
                &shards,
                self.replicas.as_ref(),
                StepKey {
                    seed: config.seed,
                    step: self.state.global_step as u64,
                },
                tally.lr,
                poison,
            )
            .map_err(|value| self.diverged(epoch, step, value))?;
            trainee = outcome.trainee;
            if let Some(limit) = tc.max_norm {
                trainee.model = models::params::max_norm(trainee.model, limit);
            }
            self.state.global_step += 1;
            for technique in self.techniques.iter_mut() {
                trainee = technique
                    .after_step(self.state.global_step, trainee)
                    .map_err(technique_error)?;
            }
            tally.step_seconds += step_start.elapsed().as_secs_f64();

            let n = indices.len();
            tally.add_parts(outcome.parts, n);
            self.state.samples_seen += n as u64;
            window.add(outcome.loss, outcome.correct, n);
            tally.whole.add(outcome.loss, outcome.correct, n);
            self.report_step(step, &mut window, &tally);
        }
        Ok((trainee, tally))
    }

    /// The error of a step whose loss became `value` (not finite), naming the checkpoint the
    /// run can resume from.
    fn diverged(&self, epoch: usize, step: usize, value: f64) -> RunError {
        let done = self.state.epochs_done;
        RunError::NonFiniteLoss {
            epoch: epoch + 1,
            step: step + 1,
            value,
            checkpoint: if done > 0 {
                format!("{}, epoch {done}", self.checkpoint_name)
            } else {
                "none yet: the run failed in its first epoch".to_string()
            },
        }
    }

    /// After step `step` (0-based) of an epoch: the window's loss and accuracy to the history
    /// every `train.log_every` steps and at the epoch's end (then the window restarts), and
    /// the progress bar.
    fn report_step(&mut self, step: usize, window: &mut Tally, tally: &EpochTally) {
        let tc = &self.setup.config.train;
        let train_len = self.setup.dataset.train.len();
        let steps_per_epoch = train_len.div_ceil(tc.batch_size);
        let global_step = self.state.global_step;
        let log_now = global_step.is_multiple_of(tc.log_every) || step + 1 == steps_per_epoch;
        if log_now {
            self.history
                .push("train/loss", global_step, window.mean_loss());
            self.history
                .push("train/accuracy", global_step, window.accuracy());
        }
        let seen = (step + 1).min(steps_per_epoch);
        let done_samples = (seen * tc.batch_size).min(train_len);
        self.history.sink.progress().step(
            seen,
            &format!(
                "loss {:.4} acc {:.2}% {:.0} samples/s",
                window.mean_loss(),
                100.0 * window.accuracy(),
                done_samples as f64 / tally.step_seconds.max(1e-9)
            ),
            log_now,
        );
        if log_now {
            *window = Tally::default();
        }
    }

    /// After an epoch's steps: the techniques' epoch hooks (rebuilding the optimiser when the
    /// model was reshaped), evaluation, scalars, and the checkpoint.
    fn end_epoch(
        &mut self,
        mut trainee: Trainee,
        epoch: usize,
        tally: EpochTally,
        epoch_start: Instant,
    ) -> Result<Trainee, RunError> {
        let tc = &self.setup.config.train;
        trainee = self.epoch_hooks(trainee, epoch)?;
        let model = trainee.model.valid();
        let eval = self.evaluate(&model);
        // A streamed image that failed to decode read as zeros: this epoch is not kept.
        for split in [&self.setup.dataset.train, &self.setup.dataset.test] {
            split.stream_failure().map_err(RunError::Data)?;
        }
        let epoch_seconds = epoch_start.elapsed().as_secs_f64();
        let samples_per_second = self.record_epoch(epoch, &tally, &model, &eval, epoch_seconds);
        let checkpoint = self.checkpoint(&trainee, epoch, epoch_seconds, tally.step_seconds)?;
        let history = &mut self.history;
        history.sink.flush()?;
        history.sink.save_checkpoint(&checkpoint)?;
        history.sink.progress().end_epoch(&format!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | lr {:.2e} | {:.1} s, {:.0} samples/s",
            epoch + 1,
            tc.epochs,
            tally.whole.mean_loss(),
            100.0 * tally.whole.accuracy(),
            eval.loss,
            100.0 * eval.accuracy,
            tally.lr,
            epoch_seconds,
            samples_per_second
        ));
        Ok(trainee)
    }

    /// The techniques' epoch hooks; a model they reshaped gets a fresh optimiser.
    fn epoch_hooks(&mut self, mut trainee: Trainee, epoch: usize) -> Result<Trainee, RunError> {
        let tc = &self.setup.config.train;
        let spec_before = trainee.model.spec();
        for technique in self.techniques.iter_mut() {
            trainee = technique
                .after_epoch(epoch, trainee)
                .map_err(technique_error)?;
            for line in technique.take_log() {
                self.history.sink.progress().line(&line);
            }
        }
        let spec_after = trainee.model.spec();
        if spec_after != spec_before {
            // The parameters changed shape: the optimiser's state (momentum, Adam moments)
            // belongs to tensors that no longer exist.
            self.optim = build_optimizer(&tc.optimizer);
            self.history.sink.progress().line(&format!(
                "epoch {}: the model was reshaped to {spec_after:?}; optimiser state reset",
                epoch + 1
            ));
            self.state.model_spec = spec_after;
        }
        Ok(trainee)
    }

    /// The test split's loss and accuracy, with the training's parallelism (one part per
    /// replica).
    fn evaluate(&self, model: &Model) -> measure::Evaluation {
        let tc = &self.setup.config.train;
        // A hooked stage is evaluated as it will be exported (a QAT stage fake-quantized).
        let hooked = stage_hook(self.techniques).map(|hook| HookedView { model, hook });
        let inference;
        let evaluated: &dyn Classifier = match &hooked {
            Some(view) => view,
            None => {
                inference = Inference::new(model);
                &inference
            }
        };
        let replicas = self.replicas.as_ref();
        measure::evaluate_parts(
            evaluated,
            &self.setup.dataset.test,
            &self.setup.prep,
            tc.eval_batch_size,
            &self.setup.device,
            replicas.map_or(1, Replicas::count),
            &|parts, work| match replicas {
                Some(replicas) => replicas.run(parts, work),
                None => (0..parts).map(work).collect(),
            },
        )
    }

    /// The epoch's scalars into the history; returns its training samples per second.
    fn record_epoch(
        &mut self,
        epoch: usize,
        tally: &EpochTally,
        model: &Model,
        eval: &measure::Evaluation,
        epoch_seconds: f64,
    ) -> f64 {
        let step = self.state.global_step;
        let seen = self.setup.dataset.train.len() as f64;
        let history = &mut self.history;
        history.push("epoch", step, (epoch + 1) as f64);
        history.push("train/epoch_loss", step, tally.whole.mean_loss());
        history.push("train/epoch_accuracy", step, tally.whole.accuracy());
        for (name, sum) in &tally.part_sums {
            history.push(name, step, sum / seen);
        }
        for technique in self.techniques.iter_mut() {
            for (name, value) in technique.metrics(model, eval.accuracy) {
                history.push(&name, step, value);
            }
        }
        let samples_per_second = seen / tally.step_seconds.max(1e-9);
        history.push("eval/loss", step, eval.loss);
        history.push("eval/accuracy", step, eval.accuracy);
        history.push("lr", step, tally.lr);
        history.push("epoch_seconds", step, epoch_seconds);
        history.push("samples_per_second", step, samples_per_second);
        samples_per_second
    }

    /// The run's state after epoch `epoch`, with the trainee and the optimiser: what a killed
    /// run resumes from.
    fn checkpoint(
        &mut self,
        trainee: &Trainee,
        epoch: usize,
        epoch_seconds: f64,
        step_seconds: f64,
    ) -> Result<Checkpoint, RunError> {
        let state = &mut self.state;
        state.epochs_done = epoch + 1;
        state.train_seconds += epoch_seconds;
        state.step_seconds += step_seconds;
        state.history = self.history.points.clone();
        state.technique_state = self
            .techniques
            .iter()
            .map(|t| t.state())
            .collect::<Result<_, _>>()
            .map_err(technique_error)?;
        let record_error = |what: &'static str| {
            let path = self.checkpoint_name.clone().into();
            move |e: burn::store::RecordError| RunError::Record {
                what,
                path,
                message: e.to_string(),
            }
        };
        let checkpoint = Checkpoint {
            state: state.clone(),
            model: trainee
                .clone()
                .into_record()
                .into_bytes()
                .map_err(record_error("model for checkpoint"))?
                .to_vec(),
            optimizer: self
                .optim
                .into_bytes()
                .map_err(record_error("optimizer for checkpoint"))?
                .to_vec(),
        };
        Ok(checkpoint)
    }
}

/// Loss and accuracy over a window of steps.
#[derive(Default)]
struct Tally {
    loss: f64,
    correct: usize,
    samples: usize,
}

impl Tally {
    fn add(&mut self, loss: f64, correct: usize, n: usize) {
        self.loss += loss * n as f64;
        self.correct += correct;
        self.samples += n;
    }

    fn mean_loss(&self) -> f64 {
        self.loss / self.samples.max(1) as f64
    }

    fn accuracy(&self) -> f64 {
        self.correct as f64 / self.samples.max(1) as f64
    }
}

/// Records history points and sends them to the sink as they come.
struct History<'s> {
    points: Vec<ScalarPoint>,
    sink: &'s mut dyn TrainSink,
}

impl History<'_> {
    fn push(&mut self, tag: &str, step: usize, value: f64) {
        self.sink.scalar(tag, step, value);
        self.points.push(ScalarPoint {
            tag: tag.to_string(),
            step,
            value,
        });
    }
}

/// Writes a resumed run's history into a fresh event file.
pub fn replay_history(events: &mut EventLog, history: &[ScalarPoint]) {
    for p in history {
        events.scalar(&p.tag, p.value, p.step);
    }
}
