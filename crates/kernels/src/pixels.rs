//! Pixel-major (NHWC) images for the inference kernels: their layout, what a convolution layer
//! brings to be packed, scratch buffers that only grow, and max-pooling.

/// A pixel-major image: `h` rows of `pitch` pixels (the first `w` real), `c` floats each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pixels {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Pixels per stored row (at least `w`).
    pub pitch: usize,
}

impl Pixels {
    /// A dense image (pitch `w`).
    pub fn dense(h: usize, w: usize, c: usize) -> Self {
        Self { h, w, c, pitch: w }
    }

    /// Floats the image spans.
    pub fn len(&self) -> usize {
        match self.h {
            0 => 0,
            h => ((h - 1) * self.pitch + self.w) * self.c,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The first `len` values of `buffer`, grown to hold them (never shrunk: a chain's buffers
/// hold layers of different sizes in turn, and growing one back would zero it each time, 7% of
/// the VGG's inference).
pub(crate) fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// `dst` (`hp` rows of `wp` pixels of `c` floats) as an `h x w` image placed `pad` pixels in
/// from the top and left with zeros around it: `row(y, pixels)` writes the image's row `y`
/// into its `w * c` floats, and only the border is zeroed (a buffer this size is written twice
/// otherwise, a tenth of a layer's time at these widths).
pub(crate) fn pad_image(
    dst: &mut [f32],
    [h, w, c]: [usize; 3],
    pad: usize,
    [hp, wp]: [usize; 2],
    mut row: impl FnMut(usize, &mut [f32]),
) {
    let row_len = wp * c;
    dst[..pad * row_len].fill(0.0);
    dst[(pad + h) * row_len..hp * row_len].fill(0.0);
    for y in 0..h {
        let padded_row = &mut dst[(y + pad) * row_len..][..row_len];
        padded_row[..pad * c].fill(0.0);
        padded_row[(pad + w) * c..].fill(0.0);
        row(y, &mut padded_row[pad * c..][..w * c]);
    }
}

/// What [`crate::PackedConv::new`] packs: the weight `[n, c, kernel, kernel]` (burn's layout), the
/// window `[kernel, stride, padding]`, the affine `y = sum * scale + shift` per output channel,
/// and whether ReLU follows.
pub struct ConvWeights<'a> {
    pub weight: &'a [f32],
    pub shape: [usize; 4],
    pub window: [usize; 3],
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

/// The larger of `a` and `b`, NaN when either is (a NaN in a window stays NaN).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// 2x2 windows at stride 2 of pixel-major rows `pitch` values apart into `out` (`[oh][ow][c]`,
/// dense), `larger` picking each pair's value: the two rows' larger values first (one
/// vectorised loop over whole rows), then each pair of neighbours. The window loop took 4.6 us
/// for LeNet-5's first pool in float, this 1.9; on levels it had been a fifth of LeNet-5's
/// integer pass.
pub(crate) fn pool_2x2<T: Copy>(
    x: &[T],
    pitch: usize,
    [oh, ow, c]: [usize; 3],
    larger: impl Fn(T, T) -> T,
    out: &mut [T],
) {
    let mut rows = Vec::with_capacity(2 * ow * c);
    for (oy, dst) in out[..oh * ow * c].chunks_exact_mut(ow * c).enumerate() {
        let top = &x[2 * oy * pitch..][..2 * ow * c];
        let bottom = &x[(2 * oy + 1) * pitch..][..2 * ow * c];
        rows.clear();
        rows.extend(top.iter().zip(bottom).map(|(&a, &b)| larger(a, b)));
        for (d, pair) in dst.chunks_exact_mut(c).zip(rows.chunks_exact(2 * c)) {
            let (left, right) = pair.split_at(c);
            for ((d, &a), &b) in d.iter_mut().zip(left).zip(right) {
                *d = larger(a, b);
            }
        }
    }
}

/// Max-pooling over `kernel x kernel` windows at `stride`, no padding, of a pixel-major image
/// into `out` (dense); returns the output's layout.
pub fn max_pool_pixels(
    x: &[f32],
    input: Pixels,
    [kernel, stride]: [usize; 2],
    out: &mut Vec<f32>,
) -> Pixels {
    let window = [kernel, stride, 0];
    let (oh, ow, c) = (
        crate::window_out(input.h, window),
        crate::window_out(input.w, window),
        input.c,
    );
    let out = grown(out, oh * ow * c);
    if kernel == 2 && stride == 2 {
        pool_2x2(x, input.pitch * c, [oh, ow, c], nan_max, out);
        return Pixels::dense(oh, ow, c);
    }
    out.fill(f32::NEG_INFINITY);
    for oy in 0..oh {
        for ox in 0..ow {
            let dst = &mut out[(oy * ow + ox) * c..][..c];
            for ky in 0..kernel {
                for kx in 0..kernel {
                    let (y, xx) = (oy * stride + ky, ox * stride + kx);
                    let src = &x[(y * input.pitch + xx) * c..][..c];
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = nan_max(*d, v);
                    }
                }
            }
        }
    }
    Pixels::dense(oh, ow, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_takes_each_windows_largest_value() {
        // 3 rows of 4 pixels (pitch 5), 2 channels; 2x2 windows at stride 2.
        let input = Pixels {
            h: 3,
            w: 4,
            c: 2,
            pitch: 5,
        };
        let x: Vec<f32> = (0..3 * 5 * 2).map(|v| ((v * 7) % 11) as f32).collect();
        let mut out = Vec::new();
        let o = max_pool_pixels(&x, input, [2, 2], &mut out);
        assert_eq!(o, Pixels::dense(1, 2, 2));
        let at = |y: usize, xx: usize, ch: usize| x[(y * 5 + xx) * 2 + ch];
        for ox in 0..2 {
            for ch in 0..2 {
                let want = [
                    at(0, 2 * ox, ch),
                    at(0, 2 * ox + 1, ch),
                    at(1, 2 * ox, ch),
                    at(1, 2 * ox + 1, ch),
                ]
                .into_iter()
                .fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(out[ox * 2 + ch], want);
            }
        }
        // A 3x3 window at stride 2 (the general loop) over a 5x5 image of 1 channel.
        let x: Vec<f32> = (0..25).map(|v| ((v * 7) % 13) as f32).collect();
        let o = max_pool_pixels(&x, Pixels::dense(5, 5, 1), [3, 2], &mut out);
        assert_eq!(o, Pixels::dense(2, 2, 1));
        for (i, &got) in out[..4].iter().enumerate() {
            let (oy, ox) = (i / 2, i % 2);
            let want = (0..9)
                .map(|t| x[(2 * oy + t / 3) * 5 + 2 * ox + t % 3])
                .fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(got, want, "output {i}");
        }
        let nan = [f32::NAN, 1.0, 2.0, 3.0];
        max_pool_pixels(&nan, Pixels::dense(2, 2, 1), [2, 2], &mut out);
        assert!(out[0].is_nan(), "a NaN in the window stays NaN");
    }
}
