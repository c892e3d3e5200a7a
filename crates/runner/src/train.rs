//! The training loop, written once for every technique (see [`Objective`]).
//!
//! Reproducibility: the data order and augmentation of epoch `e` come from RNG streams keyed by
//! `(seed, e)`, and the backend RNG (dropout) is reseeded from `(seed, e)` at the start of each
//! epoch. A run resumed from the checkpoint of epoch `e` therefore replays exactly what an
//! uninterrupted run would have done.

use std::time::Instant;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use data::{make_batch, Dataset, Preprocess, SplitMix64};
use measure::{evaluate, EventLog};
use models::{InputShape, Model};

use crate::checkpoint::{Checkpoint, ScalarPoint, TrainState};
use crate::error::RunError;
use crate::objective::{Objective, StepLoss, Trainee};
use crate::optim::build_optimizer;
use crate::progress::Progress;
use crate::run_dir::{RunDir, CHECKPOINT};
use crate::schedule::learning_rate;
use crate::schema::StageConfig;

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
    pub run: &'a RunDir,
    /// Fault injection for tests (see [`crate::RunOptions`]).
    pub fault_nonfinite_at_step: Option<usize>,
}

/// Records history points and writes them to TensorBoard as they come.
struct History<'a> {
    points: Vec<ScalarPoint>,
    events: &'a mut EventLog,
}

impl History<'_> {
    fn push(&mut self, tag: &str, step: usize, value: f64) {
        self.events.scalar(tag, value, step);
        self.points.push(ScalarPoint {
            tag: tag.to_string(),
            step,
            value,
        });
    }
}

/// Trains from scratch or from `resume`, checkpointing after every epoch. Returns the final
/// model (inference copy) and the final state.
pub fn train(
    setup: &TrainSetup,
    objective: &mut dyn Objective,
    resume: Option<Checkpoint>,
    progress: &mut Progress,
    events: &mut EventLog,
) -> Result<(Model, TrainState), RunError> {
    let config = setup.config;
    let tc = &config.train;
    let device = setup.device.clone().autodiff();
    device.seed(config.seed);
    let model = Model::new(&config.model, &setup.input, &device).map_err(RunError::Model)?;
    let adapter = objective
        .adapter_dims()
        .map(|[d_in, d_out]| LinearConfig::new(d_in, d_out).init(&device));
    let mut trainee = Trainee { model, adapter };
    let mut optim: ModuleOptimizer = build_optimizer(&tc.optimizer);
    let checkpoint_path = setup.run.file(CHECKPOINT);
    let record_error = |what: &'static str| {
        let path = checkpoint_path.clone();
        move |e: burn::store::RecordError| RunError::Record {
            what,
            path,
            message: e.to_string(),
        }
    };

    let mut state = match resume {
        Some(ckpt) => {
            let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(ckpt.model))
                .map_err(record_error("model in checkpoint"))?;
            trainee = trainee
                .try_load_record(record)
                .map_err(record_error("model in checkpoint"))?;
            optim = optim
                .from_bytes(Bytes::from_bytes_vec(ckpt.optimizer))
                .map_err(record_error("optimizer in checkpoint"))?;
            ckpt.state
        }
        None => TrainState {
            config_hash: setup.run.hash.clone(),
            epochs_done: 0,
            global_step: 0,
            train_seconds: 0.0,
            step_seconds: 0.0,
            samples_seen: 0,
            history: Vec::new(),
        },
    };

    let train = &setup.dataset.train;
    let steps_per_epoch = train.len().div_ceil(tc.batch_size);
    let mut history = History {
        points: std::mem::take(&mut state.history),
        events,
    };
    progress.start_run(tc.epochs, state.epochs_done);

    for epoch in state.epochs_done..tc.epochs {
        let epoch_start = Instant::now();
        device.seed(SplitMix64::for_stream(config.seed, epoch as u64).next_u64());
        let mut order: Vec<usize> = (0..train.len()).collect();
        SplitMix64::for_stream(config.seed, epoch as u64).shuffle(&mut order);
        let mut augment_rng = SplitMix64::for_stream(config.seed ^ AUGMENT_STREAM, epoch as u64);
        let augment = data::Augment {
            shift_pixels: config.data.augment.shift_pixels,
            noise_std: config.data.augment.noise_std,
        };

        progress.start_epoch(epoch + 1, steps_per_epoch);
        let (mut window_loss, mut window_correct, mut window_samples) = (0.0, 0usize, 0usize);
        let (mut epoch_loss, mut epoch_correct) = (0.0, 0usize);
        let mut part_sums: Vec<(&'static str, f64)> = Vec::new();
        let mut step_seconds = 0.0;
        let mut lr = 0.0;
        for (step, indices) in order.chunks(tc.batch_size).enumerate() {
            let step_start = Instant::now();
            lr = learning_rate(
                &tc.schedule,
                tc.optimizer.lr(),
                state.global_step,
                steps_per_epoch,
                tc.epochs,
            );
            let batch = make_batch(
                train,
                indices,
                &setup.prep,
                Some((&augment, &mut augment_rng)),
                &device,
            );
            let StepLoss {
                logits,
                total: loss,
                parts,
            } = objective.loss(&trainee, &batch, indices); // logits: [batch, classes]
            let loss = match setup.fault_nonfinite_at_step {
                Some(at) if at == state.global_step + 1 => loss.mul_scalar(f32::NAN),
                _ => loss,
            };
            let loss_value: f64 = loss.clone().into_scalar();
            if !loss_value.is_finite() {
                return Err(RunError::NonFiniteLoss {
                    epoch: epoch + 1,
                    step: step + 1,
                    value: loss_value,
                    checkpoint: if state.epochs_done > 0 {
                        format!("{}, epoch {}", checkpoint_path.display(), state.epochs_done)
                    } else {
                        "none yet: the run failed in its first epoch".to_string()
                    },
                });
            }
            let correct = logits
                .argmax(1)
                .flatten::<1>(0, 1)
                .equal(batch.labels.clone())
                .int()
                .sum()
                .into_scalar::<i64>() as usize;
            for (name, part) in parts {
                let value: f64 = part.into_scalar();
                match part_sums.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, sum)) => *sum += value * indices.len() as f64,
                    None => part_sums.push((name, value * indices.len() as f64)),
                }
            }
            let grads = GradientsParams::from_grads(loss.backward(), &trainee);
            trainee = optim.step(lr, trainee, grads);
            step_seconds += step_start.elapsed().as_secs_f64();

            let n = indices.len();
            state.global_step += 1;
            state.samples_seen += n as u64;
            window_loss += loss_value * n as f64;
            window_correct += correct;
            window_samples += n;
            epoch_loss += loss_value * n as f64;
            epoch_correct += correct;
            let log_now = state.global_step % tc.log_every == 0 || step + 1 == steps_per_epoch;
            if log_now {
                history.push(
                    "train/loss",
                    state.global_step,
                    window_loss / window_samples as f64,
                );
                history.push(
                    "train/accuracy",
                    state.global_step,
                    window_correct as f64 / window_samples as f64,
                );
            }
            let seen = (step + 1).min(steps_per_epoch);
            let done_samples = (seen * tc.batch_size).min(train.len());
            progress.step(
                seen,
                &format!(
                    "epoch {} step {seen}/{steps_per_epoch} loss {:.4} acc {:.2}% {:.0} samples/s",
                    epoch + 1,
                    window_loss / window_samples.max(1) as f64,
                    100.0 * window_correct as f64 / window_samples.max(1) as f64,
                    done_samples as f64 / step_seconds.max(1e-9)
                ),
                log_now,
            );
            if log_now {
                (window_loss, window_correct, window_samples) = (0.0, 0, 0);
            }
        }

        trainee.model = objective.after_epoch(epoch, trainee.model);
        let model = trainee.model.valid();
        let eval = evaluate(
            &model,
            &setup.dataset.test,
            &setup.prep,
            tc.eval_batch_size,
            &setup.device,
        );
        let epoch_seconds = epoch_start.elapsed().as_secs_f64();
        let step = state.global_step;
        let seen = train.len() as f64;
        history.push("epoch", step, (epoch + 1) as f64);
        history.push("train/epoch_loss", step, epoch_loss / seen);
        history.push("train/epoch_accuracy", step, epoch_correct as f64 / seen);
        for (name, sum) in &part_sums {
            history.push(name, step, sum / seen);
        }
        for (name, value) in objective.epoch_metrics(&model) {
            history.push(name, step, value);
        }
        history.push("eval/loss", step, eval.loss);
        history.push("eval/accuracy", step, eval.accuracy);
        history.push("lr", step, lr);
        history.push("epoch_seconds", step, epoch_seconds);
        history.push("samples_per_second", step, seen / step_seconds.max(1e-9));

        state.epochs_done = epoch + 1;
        state.train_seconds += epoch_seconds;
        state.step_seconds += step_seconds;
        state.history = history.points.clone();
        let checkpoint = Checkpoint {
            state: state.clone(),
            model: trainee
                .clone()
                .into_record()
                .into_bytes()
                .map_err(record_error("model for checkpoint"))?
                .to_vec(),
            optimizer: optim
                .into_bytes()
                .map_err(record_error("optimizer for checkpoint"))?
                .to_vec(),
        };
        checkpoint
            .save(&checkpoint_path)
            .map_err(RunError::io(&checkpoint_path))?;
        progress.end_epoch(&format!(
            "epoch {}/{}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | lr {:.2e} | {:.1} s, {:.0} samples/s",
            epoch + 1,
            tc.epochs,
            epoch_loss / seen,
            100.0 * epoch_correct as f64 / seen,
            eval.loss,
            100.0 * eval.accuracy,
            lr,
            epoch_seconds,
            seen / step_seconds.max(1e-9)
        ));
    }
    progress.finish();
    state.history = history.points;
    Ok((trainee.model.valid(), state))
}

/// Writes a resumed run's history into a fresh event file.
pub fn replay_history(events: &mut EventLog, history: &[ScalarPoint]) {
    for p in history {
        events.scalar(&p.tag, p.value, p.step);
    }
}
