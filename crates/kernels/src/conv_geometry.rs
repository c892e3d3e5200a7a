//! The sizes of one convolution, shared by the im2col kernels (`conv.rs`) and the pixel-major
//! training kernels (`conv_train.rs`).

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) batch: usize,
    pub(crate) c_in: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) c_out: usize,
    pub(crate) kernel: [usize; 2],
    pub(crate) stride: [usize; 2],
    pub(crate) padding: [usize; 2],
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
}

impl Geometry {
    pub(crate) fn new(
        [batch, c_in, height, width]: [usize; 4],
        [c_out, w_in, kh, kw]: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> Option<Self> {
        let padded = [height + 2 * padding[0], width + 2 * padding[1]];
        let valid = w_in == c_in
            && [batch, c_in, height, width, c_out, kh, kw]
                .iter()
                .all(|&d| d > 0)
            && stride.iter().all(|&s| s > 0)
            && padded[0] >= kh
            && padded[1] >= kw;
        valid.then(|| Geometry {
            batch,
            c_in,
            height,
            width,
            c_out,
            kernel: [kh, kw],
            stride,
            padding,
            out_h: (padded[0] - kh) / stride[0] + 1,
            out_w: (padded[1] - kw) / stride[1] + 1,
        })
    }

    /// A 1x1 convolution at stride 1 without padding (MobileNetV2's expansions and
    /// projections): each sample's `[c_in, h * w]` input is its own unfolded matrix.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// Rows of the unfolded input: one per (input channel, kernel row, kernel column).
    pub(crate) fn k(&self) -> usize {
        self.c_in * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per sample and channel.
    pub(crate) fn p(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Where each sample's `[K, P]` block lies in im2col's output: `(offset per sample, row
    /// stride)`.
    pub(crate) fn im2col_layout(&self) -> (usize, usize) {
        (self.p(), self.n())
    }

    /// Columns of the unfolded input: every output position of every sample.
    pub(crate) fn n(&self) -> usize {
        self.batch * self.p()
    }
}
