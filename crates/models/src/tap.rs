//! Taps: named points of a forward pass whose activation can be captured, for feature
//! ("hint") distillation (Romero et al. 2015, "FitNets") and, later, per-layer profiles.

use burn::prelude::*;

/// Captures the activation at one named point of a forward pass, flattened per sample.
pub struct Tap<'a> {
    want: Option<&'a str>,
    /// `[batch, features]`, once the forward pass has passed the point.
    pub found: Option<Tensor<2>>,
}

impl<'a> Tap<'a> {
    /// Captures nothing (a plain forward pass).
    pub fn none() -> Self {
        Self {
            want: None,
            found: None,
        }
    }

    /// Captures the point called `name`.
    pub fn at(name: &'a str) -> Self {
        Self {
            want: Some(name),
            found: None,
        }
    }

    /// Called by models at each named point.
    pub(crate) fn offer<const D: usize>(&mut self, name: &str, x: &Tensor<D>) {
        if self.want == Some(name) {
            self.found = Some(x.clone().flatten::<2>(1, D - 1));
        }
    }
}
