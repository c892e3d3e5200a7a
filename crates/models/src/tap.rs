//! Taps: named points of a forward pass (probes). A tap can transform the activation at every
//! point (what activation fake-quantization needs), capture the activation at one point, for
//! feature ("hint") distillation (Romero et al. 2015, "FitNets"), and can time every segment
//! between consecutive points, for per-layer profiles.

use std::time::{Duration, Instant};

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;

/// The layer that produced a point's activation, for its MACs and parameter count.
#[derive(Clone, Copy)]
pub enum LayerRef<'a> {
    Conv(&'a Conv2d),
    BatchNorm(&'a BatchNorm),
    Linear(&'a Linear),
    /// Activations, pooling, residual adds: no parameters, no MACs counted.
    Other,
}

impl LayerRef<'_> {
    /// Parameters, counted as burn counts them (BatchNorm running statistics included).
    pub fn params(&self) -> usize {
        match self {
            LayerRef::Conv(c) => {
                c.weight.val().dims().iter().product::<usize>()
                    + c.bias.as_ref().map_or(0, |b| b.val().dims()[0])
            }
            LayerRef::BatchNorm(bn) => 4 * bn.gamma.val().dims()[0],
            LayerRef::Linear(l) => {
                l.weight.val().dims().iter().product::<usize>()
                    + l.bias.as_ref().map_or(0, |b| b.val().dims()[0])
            }
            LayerRef::Other => 0,
        }
    }

    /// Multiply-accumulates per sample, given the layer's output dims `[batch, ...]`.
    pub fn macs(&self, output: &[usize]) -> u64 {
        let per_sample_outputs = output[1..].iter().product::<usize>() as u64;
        match self {
            LayerRef::Conv(c) => {
                let [_, c_in, k0, k1] = c.weight.val().dims();
                per_sample_outputs * (c_in * k0 * k1) as u64
            }
            LayerRef::Linear(l) => l.weight.val().dims()[0] as u64 * per_sample_outputs,
            LayerRef::BatchNorm(_) | LayerRef::Other => 0,
        }
    }
}

/// One timed segment of a forward pass: the work between the previous point and `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub time: Duration,
    pub macs: u64,
    pub params: usize,
    /// Dims of the activation at the point, batch first.
    pub output: Vec<usize>,
}

/// Captures the activation at one named point of a forward pass (flattened per sample), and,
/// when profiling, times every segment between consecutive points.
pub struct Tap<'a> {
    want: Option<&'a str>,
    /// `[batch, features]`, once the forward pass has passed the point.
    pub found: Option<Tensor<2>>,
    /// The timed segments, in order, when profiling.
    pub segments: Option<Vec<Segment>>,
    last: Instant,
    transform: Option<&'a ProbeTransform>,
}

/// Maps the activation at a named point, seen per sample as `[batch, features]`, to the
/// activation the forward pass continues with (same shape).
pub type ProbeTransform = dyn Fn(&str, Tensor<2>) -> Tensor<2> + Sync;

impl<'a> Tap<'a> {
    /// Captures nothing (a plain forward pass).
    pub fn none() -> Self {
        Self {
            want: None,
            found: None,
            segments: None,
            last: Instant::now(),
            transform: None,
        }
    }

    /// Captures the point called `name`.
    pub fn at(name: &'a str) -> Self {
        Self {
            want: Some(name),
            ..Self::none()
        }
    }

    /// Passes every activation through `transform` (and captures nothing).
    pub fn transforming(transform: &'a ProbeTransform) -> Self {
        Self {
            transform: Some(transform),
            ..Self::none()
        }
    }

    /// Times every segment. The device is synchronised at each point, so each segment's time is
    /// its own work; the clock starts now (create the tap right before the forward pass).
    pub fn profile() -> Self {
        Self {
            segments: Some(Vec::new()),
            ..Self::none()
        }
    }

    /// Called by models at each named point, with the layer that produced `x`; returns the
    /// activation the forward pass continues with (`x` itself, or `x` through the tap's
    /// transform, e.g. an activation fake-quantizer).
    pub(crate) fn probe<const D: usize>(
        &mut self,
        name: &str,
        x: Tensor<D>,
        layer: LayerRef,
    ) -> Tensor<D> {
        let x = match &self.transform {
            Some(transform) => {
                let dims = x.dims();
                transform(name, x.flatten::<2>(1, D - 1)).reshape(dims)
            }
            None => x,
        };
        if self.want == Some(name) {
            self.found = Some(x.clone().flatten::<2>(1, D - 1));
        }
        if let Some(segments) = self.segments.as_mut() {
            let _ = x.device().sync();
            let now = Instant::now();
            let output = x.dims().to_vec();
            segments.push(Segment {
                name: name.to_string(),
                time: now - self.last,
                macs: layer.macs(&output),
                params: layer.params(),
                output,
            });
            self.last = now;
        }
        x
    }
}
