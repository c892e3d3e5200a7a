//! Turning stored bytes into model inputs: resize, normalise, augment, and stack into tensors.

use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::rng::SplitMix64;
use crate::Split;

/// Random input perturbations applied to training batches only.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Augment {
    /// Each image is translated by up to this many pixels in x and y (zero fill). This is the
    /// "jitter" of Hinton et al. 2015: small shifts of the input.
    pub shift_pixels: usize,
    /// Standard deviation of Gaussian noise added to the normalised pixels.
    pub noise_std: f32,
    /// Mirror each image left to right with probability 1/2.
    pub hflip: bool,
}

impl Augment {
    pub fn is_identity(&self) -> bool {
        self.shift_pixels == 0 && self.noise_std == 0.0 && !self.hflip
    }
}

/// The most channels an input may have (grayscale or RGB).
pub const MAX_CHANNELS: usize = 3;

/// How stored `channels x rows x cols` bytes become a normalised `[channels, out_rows,
/// out_cols]` input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Per-channel mean and standard deviation on the 0..1 scale (the first `channels` used).
    pub mean: [f32; MAX_CHANNELS],
    pub std: [f32; MAX_CHANNELS],
    pub src_rows: usize,
    pub src_cols: usize,
    /// Output height and width (bilinear resize when it differs from the source).
    pub out_rows: usize,
    pub out_cols: usize,
}

impl Preprocess {
    /// Values per image after preprocessing.
    pub fn image_len(&self) -> usize {
        self.channels * self.out_rows * self.out_cols
    }

    /// The input tensor's shape for `batch` images.
    pub fn batch_shape(&self, batch: usize) -> [usize; 4] {
        [batch, self.channels, self.out_rows, self.out_cols]
    }

    /// Appends the normalised (and, with `shift`, translated) image to `out`.
    pub fn image_into(&self, bytes: &[u8], shift: (isize, isize), out: &mut Vec<f32>) {
        self.image_into_flipped(bytes, shift, false, out)
    }

    /// [`Self::image_into`], mirrored left to right first when `flip`.
    pub fn image_into_flipped(
        &self,
        bytes: &[u8],
        shift: (isize, isize),
        flip: bool,
        out: &mut Vec<f32>,
    ) {
        let plane = self.src_rows * self.src_cols;
        for c in 0..self.channels {
            let bytes = &bytes[c * plane..(c + 1) * plane];
            self.plane_into(bytes, shift, flip, (self.mean[c], self.std[c]), out);
        }
    }

    /// One channel plane: translated, mirrored, resized and normalised.
    fn plane_into(
        &self,
        bytes: &[u8],
        shift: (isize, isize),
        flip: bool,
        (mean, std): (f32, f32),
        out: &mut Vec<f32>,
    ) {
        let (rows, cols) = (self.src_rows as isize, self.src_cols as isize);
        let at = |y: isize, x: isize| -> f32 {
            let (sy, sx) = (y - shift.0, x - shift.1);
            let sx = if flip { cols - 1 - sx } else { sx };
            if sy < 0 || sx < 0 || sy >= rows || sx >= cols {
                0.0
            } else {
                bytes[(sy * cols + sx) as usize] as f32 / 255.0
            }
        };
        let inv_std = 1.0 / std;
        let same_size = self.out_rows == self.src_rows && self.out_cols == self.src_cols;
        if same_size && shift == (0, 0) && !flip {
            // Every pixel in place: one loop the compiler vectorises (the general loop below,
            // a bounds check and a push per pixel, was a fifth of a batch-32 MLP's time in
            // `train bench`), the same operations so the same values.
            out.extend(bytes.iter().map(|&b| (b as f32 / 255.0 - mean) * inv_std));
            return;
        }
        if same_size {
            for y in 0..rows {
                for x in 0..cols {
                    out.push((at(y, x) - mean) * inv_std);
                }
            }
            return;
        }
        // Bilinear with aligned pixel centres, the convention of most image libraries.
        let sy = self.src_rows as f32 / self.out_rows as f32;
        let sx = self.src_cols as f32 / self.out_cols as f32;
        for oy in 0..self.out_rows {
            let fy = ((oy as f32 + 0.5) * sy - 0.5).max(0.0);
            let (y0, wy) = (fy.floor() as isize, fy.fract());
            let y1 = (y0 + 1).min(rows - 1);
            for ox in 0..self.out_cols {
                let fx = ((ox as f32 + 0.5) * sx - 0.5).max(0.0);
                let (x0, wx) = (fx.floor() as isize, fx.fract());
                let x1 = (x0 + 1).min(cols - 1);
                let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
                let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
                out.push((top * (1.0 - wy) + bottom * wy - mean) * inv_std);
            }
        }
    }
}

impl Preprocess {
    /// Images preprocessed by `self` as `to` preprocesses the same stored images: each channel
    /// renormalised, then resized (bilinear, half-pixel centres, like [`Self::image_into`])
    /// when the sizes differ. Augmentation already applied (shifts, flips, noise) is kept, so
    /// a teacher sees what its student sees.
    ///
    /// # Shapes
    /// - images: `[batch, channels, self.out_rows, self.out_cols]`
    /// - returns: `[batch, channels, to.out_rows, to.out_cols]`
    pub fn convert(&self, images: Tensor<4>, to: &Preprocess) -> Tensor<4> {
        if self == to {
            return images;
        }
        let device = images.device();
        let c = self.channels;
        // (x * s_from + m_from - m_to) / s_to = x * scale + shift, per channel.
        let scale: Vec<f32> = (0..c).map(|i| self.std[i] / to.std[i]).collect();
        let shift: Vec<f32> = (0..c)
            .map(|i| (self.mean[i] - to.mean[i]) / to.std[i])
            .collect();
        let per_channel =
            |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, c, 1, 1]), &device);
        let images = images * per_channel(scale) + per_channel(shift);
        if (self.out_rows, self.out_cols) == (to.out_rows, to.out_cols) {
            return images;
        }
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([to.out_rows, to.out_cols]);
        burn::tensor::module::interpolate(images, options)
    }
}

/// A batch ready for a model: `images` is `[batch, channels, rows, cols]`, `labels` is `[batch]`.
pub struct Batch {
    pub images: Tensor<4>,
    pub labels: Tensor<1, Int>,
}

/// A batch prepared on the host: what a loader thread can build ahead of the compute.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// `[batch, channels, rows, cols]`, row-major.
    pub values: Vec<f32>,
    pub labels: Vec<i64>,
    /// `[batch, channels, rows, cols]`
    pub shape: [usize; 4],
}

impl HostBatch {
    /// The samples `indices` of `split`, preprocessed. With `augment` (and its RNG), each
    /// image is shifted (or cropped from a zero-padded copy: the same thing), mirrored and
    /// noised; the RNG is advanced the same way on every run, one sample
    /// after another, so building a batch in parts gives the same images as building it whole.
    pub fn new(
        split: &Split,
        indices: &[usize],
        prep: &Preprocess,
        augment: Option<(&Augment, &mut SplitMix64)>,
    ) -> Self {
        let mut values = Vec::with_capacity(indices.len() * prep.image_len());
        let mut labels = Vec::with_capacity(indices.len());
        let mut augment = augment.filter(|(a, _)| !a.is_identity());
        for &i in indices {
            let start = values.len();
            match augment.as_mut() {
                Some((aug, rng)) => {
                    let s = aug.shift_pixels as isize;
                    let span = 2 * aug.shift_pixels + 1;
                    let shift = (rng.below(span) as isize - s, rng.below(span) as isize - s);
                    // Drawn only when asked for, so runs without it keep their streams.
                    let flip = aug.hflip && rng.below(2) == 1;
                    prep.image_into_flipped(&split.image(i), shift, flip, &mut values);
                    if aug.noise_std > 0.0 {
                        for v in &mut values[start..] {
                            *v += aug.noise_std * rng.normal() as f32;
                        }
                    }
                }
                None => prep.image_into(&split.image(i), (0, 0), &mut values),
            }
            labels.push(split.labels[i] as i64);
        }
        let shape = prep.batch_shape(indices.len());
        Self {
            values,
            labels,
            shape,
        }
    }

    /// The batch as tensors on `device`.
    pub fn to_device(self, device: &Device) -> Batch {
        let n = self.labels.len();
        Batch {
            images: Tensor::from_data(TensorData::new(self.values, self.shape), device),
            labels: Tensor::from_data(TensorData::new(self.labels, [n]), device),
        }
    }
}

/// Stacks the samples `indices` of `split` into a batch on `device` (see [`HostBatch::new`]).
pub fn make_batch(
    split: &Split,
    indices: &[usize],
    prep: &Preprocess,
    augment: Option<(&Augment, &mut SplitMix64)>,
    device: &Device,
) -> Batch {
    HostBatch::new(split, indices, prep, augment).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Split;

    fn prep(out: usize) -> Preprocess {
        Preprocess {
            channels: 1,
            mean: [0.0; 3],
            std: [1.0; 3],
            src_rows: 2,
            src_cols: 2,
            out_rows: out,
            out_cols: out,
        }
    }

    #[test]
    fn shift_moves_pixels_and_fills_zero() {
        let bytes = [255, 0, 0, 0];
        let mut out = Vec::new();
        prep(2).image_into(&bytes, (1, 1), &mut out);
        assert_eq!(out, vec![0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn flip_mirrors_each_channel_and_normalises_it_with_its_own_statistics() {
        let prep = Preprocess {
            channels: 2,
            mean: [0.0, 1.0, 0.0],
            std: [1.0, 0.5, 1.0],
            ..prep(2)
        };
        let bytes = [255, 0, 0, 0, 0, 255, 0, 0];
        let mut out = Vec::new();
        prep.image_into_flipped(&bytes, (0, 0), true, &mut out);
        assert_eq!(out, vec![0.0, 1.0, 0.0, 0.0, 0.0, -2.0, -2.0, -2.0]);
    }

    #[test]
    fn converting_a_batch_equals_preprocessing_it_the_other_way() {
        let device = Device::flex();
        let split = Split {
            channels: 3,
            rows: 4,
            cols: 4,
            pixels: (0..2 * 48).map(|i| (i * 37 % 256) as u8).collect(),
            labels: vec![0, 1],
            files: None,
        };
        let from = Preprocess {
            channels: 3,
            mean: [0.5, 0.4, 0.3],
            std: [0.2, 0.25, 0.3],
            src_rows: 4,
            src_cols: 4,
            ..prep(4)
        };
        let to = Preprocess {
            mean: [0.1, 0.2, 0.6],
            std: [0.5, 0.1, 0.2],
            ..from
        };
        let batch = |p: &Preprocess| make_batch(&split, &[0, 1], p, None, &device).images;
        let converted = from.convert(batch(&from), &to).into_data();
        converted.assert_approx_eq::<f32>(&batch(&to).into_data(), Default::default());
        // Another size: the shape a teacher at 6x6 reads.
        let bigger = Preprocess {
            out_rows: 6,
            out_cols: 6,
            ..to
        };
        assert_eq!(from.convert(batch(&from), &bigger).dims(), [2, 3, 6, 6]);
    }

    #[test]
    fn resize_keeps_a_constant_image_constant() {
        let bytes = [51; 4];
        let mut out = Vec::new();
        prep(5).image_into(&bytes, (0, 0), &mut out);
        assert_eq!(out.len(), 25);
        assert!(out.iter().all(|v| (v - 0.2).abs() < 1e-6), "{out:?}");
    }
}
