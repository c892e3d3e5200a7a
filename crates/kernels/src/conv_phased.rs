//! A large odd kernel at stride 2 over few input channels (ResNet-18's 7x7 stem on RGB) in
//! training, as a stride-1 convolution of the padded input's four phases (even and odd rows
//! and columns, as channels), which the pixel-major kernels run. Through im2col the stem's
//! unfolded batch is 147 values per output pixel (236 MB at batch 32, written, read back by the
//! product and kept for the weight gradient), and the input has too few channels for the
//! pixel-major kernels; its phases have four times as many.
//!
//! `y[oy, ox] = Σ w[ky, kx] · xp[2 oy + ky, 2 ox + kx]` splits by the parity `(a, b)` of
//! `(ky, kx) = (2u + a, 2v + b)`: with `P_ab[i, j] = xp[2i + a, 2j + b]`, `y[oy, ox] =
//! Σ_(a, b, u, v) w[2u + a, 2v + b] · P_ab[oy + u, ox + v]`, an `m x m` kernel (`m = (k + 1)
//! / 2`) over `4 c_in` channels whose taps past the `k x k` are zero. Both rearrangements are
//! burn's own operations on the autodiff tensors, so their gradients come from burn.
//!
//! ResNet-18's training step at 224x224, batch 32: 3,175-3,219 -> 3,086-3,099 ms at 1 thread,
//! 1,590-1,633 -> 1,511-1,592 at 2 replicas (`SPEED_ONLY=resnet-18 SPEED_PARTS=train cargo
//! test -p runner --bench speed`, 2026-12-06). At inference (one sample's unfolding stays in
//! cache there) it measured even, so inference keeps im2col.

use burn::prelude::*;
use burn::tensor::ops::PadMode;

use crate::conv_geometry::Geometry;
use crate::conv_train;

/// Smallest kernel run through phases: at 3x3 the 16 taps for 9 and burn's rearranging
/// passes cost more than im2col's (ResNet-20 and ResNet-18 slower, experiments/speed).
const MIN_KERNEL: usize = 5;

/// The phased convolution of `g`: `[batch, 4 c_in, (h + 2p) / 2, (w + 2p) / 2]` by
/// `[c_out, 4 c_in, m, m]`, stride 1, no padding.
fn phased(g: &Geometry) -> Option<Geometry> {
    let m = g.kernel[0].div_ceil(2);
    let [ph, pw] = [g.height + 2 * g.padding[0], g.width + 2 * g.padding[1]];
    Geometry::new(
        [g.batch, 4 * g.c_in, ph / 2, pw / 2],
        [g.c_out, 4 * g.c_in, m, m],
        [1, 1],
        [0, 0],
    )
}

/// Whether [`conv2d`] computes `g`: a square odd kernel of at least [`MIN_KERNEL`] at stride
/// 2, even padded sizes, input channels too few for the pixel-major kernels themselves (wider
/// inputs are not measured here), and a phased convolution they compute.
pub(crate) fn applies(g: &Geometry) -> bool {
    let [kh, kw] = g.kernel;
    kh == kw
        && !kh.is_multiple_of(2)
        && kh >= MIN_KERNEL
        && g.stride == [2, 2]
        && (g.height + 2 * g.padding[0]).is_multiple_of(2)
        && (g.width + 2 * g.padding[1]).is_multiple_of(2)
        && g.c_in < conv_train::MIN_CHANNELS
        && phased(g).is_some_and(|p| conv_train::applies(&p))
}

/// The convolution through its phases (see the module's documentation), by `conv2d` for the
/// phased one.
///
/// # Shapes
/// - x: `[batch, c_in, h, w]`
/// - weight: `[c_out, c_in, k, k]`
/// - output: `[batch, c_out, (h + 2p - k) / 2 + 1, (w + 2p - k) / 2 + 1]`
pub(crate) fn conv2d(x: &Tensor<4>, weight: &Tensor<4>, padding: [usize; 2]) -> Option<Tensor<4>> {
    let [batch, c_in, h, w] = x.dims();
    let [c_out, _, k, _] = weight.dims();
    let m = k.div_ceil(2);
    let [h2, w2] = [(h + 2 * padding[0]) / 2, (w + 2 * padding[1]) / 2];
    let zero = || PadMode::Constant(0.0);
    let (py, px) = (padding[0], padding[1]);
    let phases = x
        .clone()
        .pad((px, px, py, py), zero())
        .reshape([batch, c_in, h2, 2, w2, 2])
        .permute([0, 3, 5, 1, 2, 4])
        .reshape([batch, 4 * c_in, h2, w2]);
    let kernel = weight
        .clone()
        .pad((0, 2 * m - k, 0, 2 * m - k), zero())
        .reshape([c_out, c_in, m, 2, m, 2])
        .permute([0, 3, 5, 1, 2, 4])
        .reshape([c_out, 4 * c_in, m, m]);
    crate::conv::conv2d(&phases, &kernel, [1, 1], [0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(x: [usize; 4], w: [usize; 4], stride: usize, padding: usize) -> Geometry {
        Geometry::new(x, w, [stride; 2], [padding; 2]).expect("a valid convolution")
    }

    /// ResNet-18's stem runs through phases; 3x3 layers, odd padded sizes, stride 1 and inputs
    /// of 8 channels or more do not.
    #[test]
    fn applies_to_the_stem_only() {
        assert!(applies(&geometry([32, 3, 224, 224], [64, 3, 7, 7], 2, 3)));
        assert!(!applies(&geometry([32, 3, 224, 224], [64, 3, 3, 3], 2, 1)));
        assert!(!applies(&geometry([32, 3, 225, 225], [64, 3, 7, 7], 2, 3)));
        assert!(!applies(&geometry([32, 3, 224, 224], [64, 3, 7, 7], 1, 3)));
        assert!(!applies(&geometry(
            [32, 16, 224, 224],
            [64, 16, 5, 5],
            2,
            2
        )));
    }
}
