//! Taps: named points of a forward pass (probes). A tap can carry a [`ForwardHook`] that rewrites
//! every layer's weights and the activation at every point (what fake-quantization and integer
//! exports need), capture the activation at one point, for
//! feature ("hint") distillation (Romero et al. 2015, "FitNets"), and can time every segment
//! between consecutive points, for per-layer profiles.

use std::time::{Duration, Instant};

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;

/// A forward hook: what a hooked forward pass asks at each layer and each point (the weights
/// and bias a layer computes with, the activation the pass continues with). Implemented by
/// fake-quantization (training, calibration) and by integer exports (inference); the models
/// know nothing of quantization, only that a technique may change these. Every method
/// defaults to the float forward pass.
/// The point a forward hook sees the model's input at, before the first layer.
pub const INPUT_POINT: &str = "input";

pub trait ForwardHook: Sync {
    /// Whether each convolution runs with its BatchNorm folded in, from the running
    /// statistics (Jacob et al. 2018), as an integer model computes it.
    fn fold_batchnorm(&self) -> bool {
        false
    }

    /// The weights layer `layer` computes with, given its float weights as
    /// `[out_channels, fan_in]` (a conv's kernel flattened per output channel, a linear layer's
    /// matrix transposed to PyTorch's layout). Same shape out.
    fn weight(&self, _layer: &str, w: Tensor<2>) -> Tensor<2> {
        w
    }

    /// The bias layer `layer` adds (a linear layer's, or a conv's folded from BatchNorm),
    /// `[out_channels]`. Kept in float by fake-quantization; exporters record it here.
    fn bias(&self, _layer: &str, b: Tensor<1>) -> Tensor<1> {
        b
    }

    /// The activation the forward pass continues with at `point`, seen per sample as
    /// `[batch, features]` (same shape out). `observe` is set on training and calibration
    /// passes, so observers learn ranges there and nowhere else.
    fn activation(&self, _point: &str, x: Tensor<2>, _observe: bool) -> Tensor<2> {
        x
    }

    /// As [`Self::activation`], at a point the model has just clipped to `range` (ReLU6:
    /// `(0.0, 6.0)`). A quantizer may take the clip's range as its grid, so that the grid's
    /// top level is the clip itself and an integer model's clamp to its levels computes it.
    fn clipped_activation(
        &self,
        point: &str,
        x: Tensor<2>,
        observe: bool,
        _range: (f32, f32),
    ) -> Tensor<2> {
        self.activation(point, x, observe)
    }
}

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
    /// When the segment ended (the device synchronised at its point): it began `time` before.
    pub end: Instant,
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
    hook: Option<&'a dyn ForwardHook>,
    observe: bool,
}

impl<'a> Tap<'a> {
    /// Captures nothing (a plain forward pass).
    pub fn none() -> Self {
        Self {
            want: None,
            found: None,
            segments: None,
            last: Instant::now(),
            hook: None,
            observe: false,
        }
    }

    /// Captures the point called `name`.
    pub fn at(name: &'a str) -> Self {
        Self {
            want: Some(name),
            ..Self::none()
        }
    }

    /// Runs every layer and point through `hook` (and captures nothing); `observe` lets
    /// its observers learn from this pass.
    pub fn hooked(hook: &'a dyn ForwardHook, observe: bool) -> Self {
        Self::none().with_hook(Some(hook), observe)
    }

    /// This tap, with its layers and points also run through `hook` (when given).
    pub fn with_hook(self, hook: Option<&'a dyn ForwardHook>, observe: bool) -> Self {
        Self {
            hook,
            observe,
            ..self
        }
    }

    /// The hook this pass runs through, if any.
    pub(crate) fn hook(&self) -> Option<&'a dyn ForwardHook> {
        self.hook
    }

    /// Whether [`Self::probe`] at `name` would neither change the activation nor look at
    /// it (no hook, not the captured point, not profiling), so a layer may fuse past it.
    pub(crate) fn passes(&self, name: &str) -> bool {
        self.hook.is_none() && self.want != Some(name) && self.segments.is_none()
    }

    /// A linear layer, its weights through the hook when there is one.
    ///
    /// # Shapes
    /// - input: `[batch, d_in]`
    /// - output: `[batch, d_out]`
    pub(crate) fn linear(&self, layer: &Linear, name: &str, x: Tensor<2>) -> Tensor<2> {
        match self.hook {
            Some(q) => {
                // burn stores `[d_in, d_out]`; quantizers see `[out, fan_in]`.
                let w = q.weight(name, layer.weight.val().transpose()).transpose();
                let bias = layer.bias.as_ref().map(|b| q.bias(name, b.val()));
                burn::tensor::module::linear(x, w, bias)
            }
            None => layer.forward(x),
        }
    }

    /// The model's input through the hook, as the point [`INPUT_POINT`] (a quantizer that
    /// quantizes inputs puts it on a grid; nothing is captured or timed here).
    ///
    /// # Shapes
    /// - input: `[batch, c, h, w]`; output: the same
    pub(crate) fn input(&self, x: Tensor<4>) -> Tensor<4> {
        let Some(hook) = self.hook else {
            return x;
        };
        let dims = x.dims();
        hook.activation(INPUT_POINT, x.flatten::<2>(1, 3), self.observe)
            .reshape(dims)
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
    /// quantizer).
    pub(crate) fn probe<const D: usize>(
        &mut self,
        name: &str,
        x: Tensor<D>,
        layer: LayerRef,
    ) -> Tensor<D> {
        self.probe_point(name, x, layer, None)
    }

    /// [`Self::probe`] at a point whose activation the model has just clipped to `range`
    /// (ReLU6's `(0.0, 6.0)`), so that a quantizer can match its grid to the clip.
    pub(crate) fn probe_clipped<const D: usize>(
        &mut self,
        name: &str,
        x: Tensor<D>,
        range: (f32, f32),
    ) -> Tensor<D> {
        self.probe_point(name, x, LayerRef::Other, Some(range))
    }

    fn probe_point<const D: usize>(
        &mut self,
        name: &str,
        x: Tensor<D>,
        layer: LayerRef,
        clipped: Option<(f32, f32)>,
    ) -> Tensor<D> {
        let x = match self.hook {
            Some(q) => {
                let dims = x.dims();
                let flat = x.flatten::<2>(1, D - 1);
                match clipped {
                    Some(range) => q.clipped_activation(name, flat, self.observe, range),
                    None => q.activation(name, flat, self.observe),
                }
                .reshape(dims)
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
                end: now,
                macs: layer.macs(&output),
                params: layer.params(),
                output,
            });
            self.last = now;
        }
        x
    }
}
