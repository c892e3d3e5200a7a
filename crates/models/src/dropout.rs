//! Dropout with masks drawn from per-sample random streams.
//!
//! burn's dropout draws from the backend's one RNG, shared by every thread: when model replicas
//! train concurrently, which replica draws first decides every mask, so a run would depend on
//! thread timing. A training step instead installs one stream per sample of the batch (keyed by
//! the run's seed, the step and the sample's position in the batch) with
//! [`with_sample_streams`]; each dropout layer draws a sample's mask from that sample's stream.
//! The masks therefore depend on neither the thread nor how the batch is split across
//! replicas. Outside such a scope (inference, profiles, callers that set nothing) dropout falls
//! back to burn's own.

use std::cell::RefCell;

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::TensorData;
use data::SplitMix64;
use rayon::prelude::*;

thread_local! {
    static STREAMS: RefCell<Option<Vec<SplitMix64>>> = const { RefCell::new(None) };
}

/// The random streams of a batch's samples: sample `i` of the whole batch draws from stream
/// `(seed, step, i)`. `positions` are the samples of the batch this forward pass sees (one
/// replica's share).
pub fn sample_streams(seed: u64, step: u64, positions: std::ops::Range<usize>) -> Vec<SplitMix64> {
    let base = SplitMix64::for_stream(seed ^ 0xd80f_0a75, step).next_u64();
    positions
        .map(|i| SplitMix64::for_stream(base, i as u64))
        .collect()
}

/// Runs `f` with `streams` (one per sample of the batch `f` forwards) installed for this
/// thread's dropout layers, and removes them afterwards.
pub fn with_sample_streams<R>(streams: Vec<SplitMix64>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            STREAMS.with(|s| s.borrow_mut().take());
        }
    }
    STREAMS.with(|s| *s.borrow_mut() = Some(streams));
    let _reset = Reset;
    f()
}

/// Dropout on `[batch, features]`: with sample streams installed (and a training pass: an
/// autodiff input), each row's mask comes from its sample's stream, `p` resolved to 1/65536;
/// otherwise burn's dropout.
///
/// # Shapes
/// - input: `[batch, features]`
/// - output: `[batch, features]`
pub(crate) fn forward(dropout: &Dropout, x: Tensor<2>) -> Tensor<2> {
    let p = dropout.prob;
    if p == 0.0 || !x.device().is_autodiff() || !dropout.training.is_enabled() {
        return x;
    }
    let [batch, features] = x.dims();
    let mask = STREAMS.with(|s| {
        let mut streams = s.borrow_mut();
        let streams = streams.as_mut().filter(|s| s.len() == batch)?;
        let scale = (1.0 / (1.0 - p)) as f32;
        // Keep with probability 1 - p: each 64-bit draw gives four 16-bit uniforms, compared
        // against p in steps of 1/65536 (drawing is otherwise a visible share of an MLP step).
        let threshold = (p * 65536.0).round() as u64;
        let mut values = vec![0.0f32; batch * features];
        // Each sample's row from its own stream: rows fill in parallel, in any order, with the
        // same masks.
        let rows = values.par_chunks_mut(features.max(1));
        rows.zip(streams.par_iter_mut()).for_each(|(row, stream)| {
            for quad in row.chunks_mut(4) {
                let bits = stream.next_u64();
                for (i, value) in quad.iter_mut().enumerate() {
                    let keep = (bits >> (16 * i)) & 0xffff >= threshold;
                    *value = if keep { scale } else { 0.0 };
                }
            }
        });
        Some(values)
    });
    match mask {
        Some(values) => {
            let device = x.device();
            x * Tensor::<2>::from_data(TensorData::new(values, [batch, features]), &device)
        }
        None => dropout.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;

    fn masked(streams: Vec<SplitMix64>, rows: usize) -> Vec<f32> {
        let device = Device::default().autodiff();
        let x = Tensor::<2>::ones([rows, 64], &device);
        let dropout = DropoutConfig::new(0.5).init();
        with_sample_streams(streams, || forward(&dropout, x))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn masks_follow_samples_not_batches() {
        let whole = masked(sample_streams(7, 3, 0..4), 4);
        let first = masked(sample_streams(7, 3, 0..2), 2);
        let second = masked(sample_streams(7, 3, 2..4), 2);
        assert_eq!(whole, [first, second].concat());
        assert_ne!(whole, masked(sample_streams(7, 4, 0..4), 4), "steps differ");
        let kept = whole.iter().filter(|&&v| v == 2.0).count();
        assert!(kept > 90 && kept < 166, "about half of 256 kept: {kept}");
        assert!(whole.iter().all(|&v| v == 0.0 || v == 2.0));
    }

    #[test]
    fn no_streams_or_inference_falls_back() {
        let dropout = DropoutConfig::new(0.5).init();
        let plain = Tensor::<2>::ones([2, 8], &Device::default());
        let out = with_sample_streams(sample_streams(1, 1, 0..2), || {
            forward(&dropout, plain.clone())
        });
        assert_eq!(out.into_data(), plain.into_data(), "inference: identity");
    }
}
