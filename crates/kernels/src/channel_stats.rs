//! Per-channel mean and variance of a convolution's output, gathered by the convolution itself
//! for the BatchNorm after it.
//!
//! BatchNorm's training forward reads its whole input twice for the batch's statistics (the
//! mean, then the squares about it) before the pass that writes its output: on ResNet-20 at
//! batch 128 that input is 8 MB per layer, from memory each time. The pixel-major training
//! convolution (`conv_train.rs`) holds each sample's output in a buffer of its thread's, in
//! cache, just before transposing it out; the same two passes over that buffer cost little
//! there. Each sample's mean and squared deviations are combined over the batch in `f64` by
//! Chan et al.'s formula for pairwise updates, in sample order (so results do not depend on
//! the thread count).

use crate::pixels::Pixels;

/// Channels summed side by side: one AVX-512 register.
const LANES: usize = 16;

/// A convolution output's per-channel statistics over the batch, for
/// [`crate::batch_norm_train`] to use instead of reading the output again.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStats {
    /// Values per channel (batch times pixels).
    pub(crate) count: usize,
    pub(crate) mean: Vec<f64>,
    /// Sums of squared deviations from `mean`.
    pub(crate) squares: Vec<f64>,
}

/// One sample's per-channel mean and sum of squared deviations from it.
#[derive(Debug, Clone)]
pub(crate) struct SampleStats {
    mean: Vec<f32>,
    squares: Vec<f32>,
}

impl SampleStats {
    /// Over the real pixels of a pixel-major image (`layout.w` of each row of `layout.pitch`).
    pub(crate) fn of(x: &[f32], layout: Pixels) -> Self {
        let Pixels { h, w, c, pitch } = layout;
        let rows = || (0..h).map(move |y| &x[y * pitch * c..][..w * c]);
        // Sixteen channels at a time in arrays of that length (one register each), where a
        // loop over all `c` channels per pixel did not vectorise as well.
        let mut sum = vec![0.0f32; c];
        let mut squares = vec![0.0f32; c];
        let groups = c / LANES * LANES;
        for g in (0..groups).step_by(LANES) {
            let mut acc = [0.0f32; LANES];
            for row in rows() {
                for pixel in row.chunks_exact(c) {
                    let v: &[f32; LANES] = pixel[g..g + LANES].try_into().expect("16 channels");
                    for (a, &v) in acc.iter_mut().zip(v) {
                        *a += v;
                    }
                }
            }
            sum[g..g + LANES].copy_from_slice(&acc);
        }
        for row in rows() {
            for pixel in row.chunks_exact(c) {
                for (s, &v) in sum[groups..].iter_mut().zip(&pixel[groups..]) {
                    *s += v;
                }
            }
        }
        let pixels = (h * w) as f32;
        let mean: Vec<f32> = sum.iter().map(|s| s / pixels).collect();
        for g in (0..groups).step_by(LANES) {
            let m: &[f32; LANES] = mean[g..g + LANES].try_into().expect("16 channels");
            let mut acc = [0.0f32; LANES];
            for row in rows() {
                for pixel in row.chunks_exact(c) {
                    let v: &[f32; LANES] = pixel[g..g + LANES].try_into().expect("16 channels");
                    for ((a, &v), &m) in acc.iter_mut().zip(v).zip(m) {
                        *a += (v - m) * (v - m);
                    }
                }
            }
            squares[g..g + LANES].copy_from_slice(&acc);
        }
        for row in rows() {
            for pixel in row.chunks_exact(c) {
                let rest = squares[groups..].iter_mut().zip(&pixel[groups..]);
                for ((s, &v), &m) in rest.zip(&mean[groups..]) {
                    *s += (v - m) * (v - m);
                }
            }
        }
        Self { mean, squares }
    }
}

impl ChannelStats {
    /// The batch's statistics from each sample's, every sample of `per_sample` values per
    /// channel.
    pub(crate) fn combined(samples: &[SampleStats], per_sample: usize) -> Self {
        let channels = samples.first().map_or(0, |s| s.mean.len());
        let batch = samples.len() as f64;
        let mut mean = vec![0.0f64; channels];
        for s in samples {
            for (m, &v) in mean.iter_mut().zip(&s.mean) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= batch);
        // Within the samples, plus the samples' means about the batch's.
        let mut squares = vec![0.0f64; channels];
        for s in samples {
            for (((q, &within), &m), &total) in
                squares.iter_mut().zip(&s.squares).zip(&s.mean).zip(&mean)
            {
                let apart = m as f64 - total;
                *q += within as f64 + per_sample as f64 * apart * apart;
            }
        }
        Self {
            count: samples.len() * per_sample,
            mean,
            squares,
        }
    }

    /// Channels these are statistics of.
    pub(crate) fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Per channel `(mean, biased variance)`, as BatchNorm uses them.
    pub(crate) fn mean_variance(&self) -> (Vec<f32>, Vec<f32>) {
        let count = self.count as f64;
        let variance = self.squares.iter().map(|q| (q / count) as f32).collect();
        (self.mean.iter().map(|&m| m as f32).collect(), variance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Combined per-sample statistics equal the batch's computed directly, with a pitch wider
    /// than the rows (its extra pixels are not counted).
    #[test]
    fn combined_samples_give_the_batchs_mean_and_variance() {
        let (h, w, c, pitch) = (3, 4, 5, 6);
        let value = |b: usize, i: usize| ((b * 131 + i * 17) % 23) as f32 * 0.37 - 2.0 + b as f32;
        let samples: Vec<Vec<f32>> = (0..4)
            .map(|b| (0..h * pitch * c).map(|i| value(b, i)).collect())
            .collect();
        let layout = Pixels { h, w, c, pitch };
        let each: Vec<SampleStats> = samples.iter().map(|x| SampleStats::of(x, layout)).collect();
        let (mean, variance) = ChannelStats::combined(&each, h * w).mean_variance();
        for ch in 0..c {
            let values: Vec<f64> = samples
                .iter()
                .flat_map(|x| {
                    (0..h)
                        .flat_map(move |y| (0..w).map(move |p| x[(y * pitch + p) * c + ch] as f64))
                })
                .collect();
            let n = values.len() as f64;
            let m = values.iter().sum::<f64>() / n;
            let v = values.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
            assert!((mean[ch] as f64 - m).abs() < 1e-5, "{ch}: {} {m}", mean[ch]);
            assert!(
                (variance[ch] as f64 - v).abs() < 1e-5,
                "{ch}: {} {v}",
                variance[ch]
            );
        }
    }

    /// Through the public entry points: a stride-1 convolution of 16 channels gathers the
    /// statistics, and BatchNorm given them computes what it computes without (values and
    /// gradients); a strided 1x1 one (im2col) gathers none.
    #[test]
    fn batch_norm_with_the_convolutions_statistics_matches_batch_norm_without() {
        use crate::{batch_norm_train, conv2d_with_stats, BatchNormThen};
        use burn::prelude::*;
        use burn::tensor::Distribution;
        let device = Device::flex().autodiff();
        device.seed(5);
        let x = Tensor::<4>::random([3, 16, 9, 7], Distribution::Normal(0.3, 1.0), &device);
        let w = Tensor::<4>::random([12, 16, 3, 3], Distribution::Normal(0.0, 0.3), &device);
        let gamma = Tensor::<1>::random([12], Distribution::Normal(1.0, 0.2), &device);
        let beta = Tensor::<1>::random([12], Distribution::Normal(0.0, 0.2), &device);
        let pointwise = Tensor::<4>::random([12, 16, 1, 1], Distribution::Default, &device);
        let strided = conv2d_with_stats(&x, &pointwise, [2, 2], [0, 0]).expect("flex f32");
        assert!(strided.1.is_none(), "im2col gathers no statistics");
        let run = |use_stats: bool| {
            let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
            let (y, stats) = conv2d_with_stats(&x, &w, [1, 1], [1, 1]).expect("flex f32");
            let stats = stats.expect("the pixel-major kernel gathers statistics");
            let stats = use_stats.then_some(&stats);
            let then = BatchNormThen::Relu;
            let out = batch_norm_train(&y, &gamma, &beta, 1e-5, then, stats).expect("applies");
            let grads = (out.output.clone() * out.output.clone()).sum().backward();
            [
                out.output.into_data(),
                out.mean.into_data(),
                out.variance.into_data(),
                x.grad(&grads).unwrap().into_data(),
                w.grad(&grads).unwrap().into_data(),
            ]
        };
        let names = ["output", "mean", "variance", "x grad", "weight grad"];
        crate::flex::assert_all_close(&names, &run(true), &run(false), 1e-4);
    }
}
