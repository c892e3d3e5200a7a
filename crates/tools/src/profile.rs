//! `train profile TARGET`: where a forward pass spends its time, layer by layer, with each
//! layer's share, MACs and parameters; the whole training step's forward and backward; and a
//! recorded timeline of the last passes and training steps (each layer as it ran, the loss,
//! the backward pass, the batch preparation, on wall-clock time), as a Chrome trace for
//! Perfetto and in TensorBoard's Profile tab ([`crate::timeline`]).
//!
//! Each layer's time is measured between consecutive taps of the model's forward pass with the
//! device synchronised at each tap, and the median over many runs is reported. The sum of the
//! layer medians is compared with the median of plain (untapped) forward passes, so the
//! overhead of measuring is visible rather than hidden. Where `train bench` and a stage's
//! measurement run another path than the model's own layers (an MLP's packed layers, a chain
//! CNN's pixel-major convolutions: `models::Inference`), that path's whole forward is timed
//! beside it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use data::make_batch;
use measure::latency::median;
use measure::summary::group_digits;
use measure::EventLog;
use models::loss::cross_entropy;
use models::{Classifier, Inference, Model, Segment, Tap};
use serde::Serialize;
use serde_json::json;

use crate::bench::{open_target, Target};
use crate::timeline::{write_for_tensorboard, Timeline};
use runner::RunError;
use settings::run_dir::write_atomic;

#[derive(Debug, Clone)]
pub struct ProfileRequest {
    pub target: PathBuf,
    pub config: Option<PathBuf>,
    pub batch: usize,
    pub runs: usize,
    pub threads: usize,
    /// Where the Chrome trace goes (default: `profile.trace.json` in the run folder, or in the
    /// current folder for a model file).
    pub trace: Option<PathBuf>,
    /// Profile on this device instead of the run's (`"cpu"`, `"libtorch"`, `"cuda:N"`).
    pub device: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerProfile {
    pub name: String,
    /// Median milliseconds per forward pass.
    pub ms: f64,
    /// Share of the summed layer times, 0..=1.
    pub share: f64,
    pub macs: u64,
    pub params: usize,
    pub output: Vec<usize>,
    /// Median milliseconds of this layer's part of a backward pass: the backward time of the
    /// graph ending at this layer minus that of the graph ending at the previous one (clamped
    /// at zero: the two are separate measurements).
    pub backward_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileReport {
    pub target: String,
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub runs: usize,
    pub layers: Vec<LayerProfile>,
    /// Sum of the per-layer medians.
    pub layer_sum_ms: f64,
    /// Median of plain forward passes (no taps, one sync at the end).
    pub forward_ms: f64,
    /// Median whole forward through the packed layers, when the model has them: the path
    /// `train bench` and each stage's measurement time, which the per-layer taps cannot see.
    pub packed_forward_ms: Option<f64>,
    /// Median forward (with autodiff) and backward of one training step at the same batch.
    pub train_forward_ms: f64,
    pub train_backward_ms: f64,
    /// The recorded timeline as a Chrome trace (Perfetto, chrome://tracing).
    pub trace: String,
    /// The same timeline where TensorBoard's profile plugin reads it.
    pub tensorboard_trace: String,
}

/// Each time's share of their sum (all zero when the sum is zero).
pub fn shares(times: &[f64]) -> Vec<f64> {
    let total: f64 = times.iter().sum();
    times
        .iter()
        .map(|t| if total > 0.0 { t / total } else { 0.0 })
        .collect()
}

impl ProfileReport {
    pub fn table(&self) -> String {
        let width = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "forward pass of {} ({}), batch {}, {} thread(s), median of {} runs:\n  {:<width$} {:>10} {:>7} {:>12} {:>9} {:>12}  output\n",
            self.target, self.model, self.batch, self.threads, self.runs, "layer", "ms", "share", "MACs/sample", "params", "backward ms"
        );
        for l in &self.layers {
            out += &format!(
                "  {:<width$} {:>10.4} {:>6.1}% {:>12} {:>9} {:>12.4}  {:?}\n",
                l.name,
                l.ms,
                l.share * 100.0,
                group_digits(l.macs),
                group_digits(l.params as u64),
                l.backward_ms,
                l.output
            );
        }
        out += &format!(
            "  sum of layers {:.4} ms; whole forward (no taps) {:.4} ms; sum / whole = {:.3}\n",
            self.layer_sum_ms,
            self.forward_ms,
            self.layer_sum_ms / self.forward_ms
        );
        if let Some(packed) = self.packed_forward_ms {
            out += &format!(
                "  whole forward through the packed layers (what `train bench` runs) {packed:.4} ms; \
                 {:.2}x as fast as through the layers above\n",
                self.forward_ms / packed
            );
        }
        out += &format!(
            "  training step at batch {}: forward {:.4} ms, backward {:.4} ms; per-layer backward \
             sums to {:.4} ms (from cumulative backward times, see the docs)\n  timeline of the \
             last {TRACE_PASSES} passes and training steps: Chrome trace {}; TensorBoard's Profile \
             tab: {}\n",
            self.batch,
            self.train_forward_ms,
            self.train_backward_ms,
            self.layers.iter().map(|l| l.backward_ms).sum::<f64>(),
            self.trace,
            self.tensorboard_trace
        );
        out
    }
}

pub fn profile(request: &ProfileRequest) -> Result<ProfileReport, RunError> {
    let mut timeline = Timeline::new();
    timeline.thread(1, "forward (inference)");
    timeline.thread(2, "training step (autodiff)");
    timeline.thread(3, "data (batch preparation)");
    // An export is profiled as the float model its loader builds (layer by layer, without
    // the activation rounding between layers).
    let Target {
        model_path: _,
        model,
        export: _,
        config: _,
        dataset,
        input,
        prep,
        device,
        run_dir,
    } = open_target(
        &request.target,
        request.config.as_deref(),
        request.device.as_deref(),
    )?;
    // The same weights on the autodiff device, with gradients tracked, for the training step.
    let ad = device.clone().autodiff();
    let trainee = model.copy_to(&input, &ad)?;
    let runs = request.runs.max(1);
    let batch = request.batch.max(1);
    let indices: Vec<usize> = (0..batch).map(|i| i % dataset.test.len()).collect();
    let pool = runner::stage::thread_pool(request.threads)?;

    let (forward, train) = pool.install(|| {
        let input = make_batch(&dataset.test, &indices, &prep, None, &device);
        let ad_input = make_batch(&dataset.test, &indices, &prep, None, &ad);
        let forward = time_forward(&model, &input.images, runs);
        let train = time_training(&trainee, &ad_input, &forward.points, runs);
        // Then, warm, a few passes and steps recorded as they run, one after the other.
        let make = |device: &Device| make_batch(&dataset.test, &indices, &prep, None, device);
        record_timeline(&model, &trainee, (&make, &device, &ad), &mut timeline);
        (forward, train)
    });
    let times: Vec<f64> = (0..forward.points.len())
        .map(|k| {
            median(
                forward
                    .segments
                    .iter()
                    .map(|run| run[k].time.as_secs_f64() * 1e3)
                    .collect(),
            )
        })
        .collect();
    let layers = layer_profiles(&forward.segments[0], &times, &train.cumulative_backward);
    let trace = request.trace.clone().unwrap_or_else(|| {
        run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("profile.trace.json")
    });
    let tensorboard_trace = write_traces(&timeline, request, &trace, run_dir.as_deref())?;
    let report = ProfileReport {
        target: request.target.display().to_string(),
        model: model.kind().to_string(),
        batch,
        threads: request.threads.max(1),
        runs,
        layer_sum_ms: times.iter().sum(),
        layers,
        forward_ms: forward.plain_ms,
        packed_forward_ms: forward.packed_ms,
        train_forward_ms: train.forward_ms,
        train_backward_ms: train.backward_ms,
        trace: trace.display().to_string(),
        tensorboard_trace: tensorboard_trace.display().to_string(),
    };
    if let Some(dir) = &run_dir {
        record_in_run(dir, &report)?;
    }
    Ok(report)
}

/// Warm-up passes before timed ones: a tenth of the runs, at least 3.
fn warmup(runs: usize) -> usize {
    (runs / 10).max(3)
}

/// The forward pass timed: each layer per run (tapped), the whole untapped pass, and the
/// packed path `train bench` times where there is one.
struct ForwardTimes {
    /// Each timed run's layer segments.
    segments: Vec<Vec<Segment>>,
    /// The profiled points, in order.
    points: Vec<String>,
    plain_ms: f64,
    packed_ms: Option<f64>,
}

/// # Shapes
/// - `images`: `[batch, channels, height, width]`
fn time_forward(model: &Model, images: &Tensor<4>, runs: usize) -> ForwardTimes {
    let warmup = warmup(runs);
    // The path `train bench` times; an MLP, LeNet-5 or VGG on flex with AVX-512 is packed.
    let inference = Inference::new(model);
    let mut segments: Vec<Vec<Segment>> = Vec::new();
    let (mut plain, mut packed) = (Vec::new(), Vec::new());
    for i in 0..warmup + runs {
        let start = Instant::now();
        let logits = model.forward(images.clone());
        let _ = logits.device().sync();
        let whole = start.elapsed().as_secs_f64() * 1e3;
        let mut tap = Tap::profile();
        model.forward_tapped(images.clone(), &mut tap);
        let pass = tap.segments.unwrap_or_default();
        if i >= warmup {
            plain.push(whole);
            segments.push(pass);
        }
        if inference.is_packed() {
            let start = Instant::now();
            let logits = inference.classify(images.clone());
            let _ = logits.device().sync();
            if i >= warmup {
                packed.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    ForwardTimes {
        points: segments[0].iter().map(|s| s.name.clone()).collect(),
        segments,
        plain_ms: median(plain),
        packed_ms: (!packed.is_empty()).then(|| median(packed)),
    }
}

/// Passes and training steps recorded on the timeline.
const TRACE_PASSES: usize = 3;

/// One tapped forward pass on thread `tid`: the pass, and each layer inside it as it ran.
fn record_pass(timeline: &mut Timeline, tid: u32, start: Instant, pass: &[Segment]) {
    let end = pass.last().map_or(start, |s| s.end);
    timeline.span(tid, ("forward pass", "forward"), start, end, json!({}));
    for s in pass {
        let args = json!({"macs_per_sample": s.macs, "params": s.params, "output": s.output});
        timeline.span(tid, (&s.name, "layer"), s.end - s.time, s.end, args);
    }
}

/// Prepares the profiled batch on a device.
type MakeBatch<'a> = dyn Fn(&Device) -> data::Batch + 'a;

/// The recorded timeline, after the timed runs (so everything is warm): a batch prepared,
/// [`TRACE_PASSES`] inference passes layer by layer, a batch prepared for training, and
/// [`TRACE_PASSES`] training steps (each layer of the forward, the loss, the backward pass).
/// `make` prepares a batch on a device.
fn record_timeline(
    model: &Model,
    trainee: &Model,
    (make, device, ad): (&MakeBatch, &Device, &Device),
    timeline: &mut Timeline,
) {
    let start = Instant::now();
    let input = make(device);
    let args = json!({"images": input.images.dims()[0]});
    timeline.span(3, ("batch", "data"), start, Instant::now(), args.clone());
    for _ in 0..TRACE_PASSES {
        let start = Instant::now();
        let mut tap = Tap::profile();
        model.forward_tapped(input.images.clone(), &mut tap);
        record_pass(timeline, 1, start, &tap.segments.unwrap_or_default());
    }
    let start = Instant::now();
    let batch = make(ad);
    timeline.span(3, ("batch (autodiff)", "data"), start, Instant::now(), args);
    for _ in 0..TRACE_PASSES {
        let start = Instant::now();
        let mut tap = Tap::profile();
        let logits = trainee.forward_tapped(batch.images.clone(), &mut tap);
        record_pass(timeline, 2, start, &tap.segments.unwrap_or_default());
        let loss_start = Instant::now();
        let loss = cross_entropy(logits, batch.labels.clone());
        let _ = ad.sync();
        let backward_start = Instant::now();
        timeline.span(2, ("loss", "loss"), loss_start, backward_start, json!({}));
        let grads = loss.backward();
        let _ = ad.sync();
        timeline.span(
            2,
            ("backward pass", "backward"),
            backward_start,
            Instant::now(),
            json!({}),
        );
        std::hint::black_box(grads);
    }
}

/// A training step timed: its forward and backward, and the backward through the graph
/// ending at each profiled point.
struct TrainTimes {
    forward_ms: f64,
    backward_ms: f64,
    /// Per point: a backward pass from it. The differences between consecutive points are
    /// the layers' shares of a backward pass.
    cumulative_backward: Vec<f64>,
}

fn time_training(
    trainee: &Model,
    batch: &data::Batch,
    points: &[String],
    runs: usize,
) -> TrainTimes {
    let warmup = warmup(runs);
    let runs = runs.min(50);
    let ad = batch.images.device();
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for i in 0..warmup + runs {
        let start = Instant::now();
        let loss = cross_entropy(trainee.forward(batch.images.clone()), batch.labels.clone());
        let _ = ad.sync();
        let mid = Instant::now();
        let grads = loss.backward();
        let _ = ad.sync();
        std::hint::black_box(grads);
        if i >= warmup {
            fwd.push((mid - start).as_secs_f64() * 1e3);
            bwd.push(mid.elapsed().as_secs_f64() * 1e3);
        }
    }
    let cumulative_backward = points
        .iter()
        .map(|name| {
            let mut times = Vec::new();
            for i in 0..warmup + runs {
                let mut tap = Tap::at(name);
                trainee.forward_tapped(batch.images.clone(), &mut tap);
                let loss = tap.found.expect("every profiled point can be tapped").sum();
                let _ = ad.sync();
                let start = Instant::now();
                let grads = loss.backward();
                let _ = ad.sync();
                std::hint::black_box(grads);
                if i >= warmup {
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            median(times)
        })
        .collect();
    TrainTimes {
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        cumulative_backward,
    }
}

/// Each layer's row: its median time `times[k]` and share, what it computes, and its share of
/// a backward pass (from the cumulative backward times).
fn layer_profiles(
    first: &[Segment],
    times: &[f64],
    cumulative_backward: &[f64],
) -> Vec<LayerProfile> {
    let layer_shares = shares(times);
    first
        .iter()
        .zip(times.iter().zip(&layer_shares))
        .enumerate()
        .map(|(k, (s, (&ms, &share)))| LayerProfile {
            name: s.name.clone(),
            ms,
            share,
            macs: s.macs,
            params: s.params,
            output: s.output.clone(),
            backward_ms: (cumulative_backward[k]
                - if k > 0 {
                    cumulative_backward[k - 1]
                } else {
                    0.0
                })
            .max(0.0),
        })
        .collect()
}

/// Writes the timeline as the Chrome trace `trace` and where TensorBoard's profile plugin reads
/// it (under the run, or beside the trace for a model file); returns the latter.
fn write_traces(
    timeline: &Timeline,
    request: &ProfileRequest,
    trace: &Path,
    run_dir: Option<&Path>,
) -> Result<PathBuf, RunError> {
    let trace_json = timeline.to_json(&format!("train profile {}", request.target.display()));
    let json = serde_json::to_string_pretty(&trace_json).map_err(|e| RunError::Record {
        what: "trace",
        path: trace.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(trace, json.as_bytes()).map_err(RunError::io(trace))?;
    // TensorBoard's log folder: the run's, or the trace's folder for a model file.
    let logdir = match run_dir {
        Some(dir) => dir.to_path_buf(),
        None => trace
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    write_for_tensorboard(&logdir, &trace_json).map_err(RunError::io(&logdir))
}

fn record_in_run(dir: &Path, report: &ProfileReport) -> Result<(), RunError> {
    let mut events = EventLog::create(dir).map_err(RunError::io(dir))?;
    events.text("profile", &format!("```\n{}```", report.table()), 0);
    events.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_one_hundred_percent() {
        let s = shares(&[0.3, 1.2, 0.0, 2.5]);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((s[3] - 0.625).abs() < 1e-12);
        assert_eq!(shares(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
