//! Between channel-major planes (`[c][h][w]`, burn's layout) and pixel-major rows (`[w][c]`,
//! the pixel-major kernels'), eight channels by eight pixels at a time.
//!
//! One value at a time, the training convolution's layout changes were a tenth of a VGG
//! training step (four per layer: the input, the output, the output's gradient and the input's
//! gradient). An 8x8 block moves in 8 loads, 24 shuffles and 8 stores.
#![allow(unsafe_code)]

/// Writes `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`.
///
/// # Panics
/// If either matrix lies past its slice.
pub(crate) fn transpose(
    src: &[f32],
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
    [rows, cols]: [usize; 2],
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * src_stride + cols <= src.len() && (cols - 1) * dst_stride + rows <= dst.len(),
        "a {rows}x{cols} transpose past its slices"
    );
    // Whole 8x8 blocks where AVX runs them; everything left, one value at a time.
    let (whole_rows, whole_cols) = match avx() {
        true => (rows / 8 * 8, cols / 8 * 8),
        false => (0, 0),
    };
    // SAFETY: `whole_rows` is nonzero only where AVX was detected; the assert above puts
    // every whole block of `src` and its transposed place in `dst` inside the slices, and
    // `dst` is a unique borrow, so the two do not overlap.
    #[cfg(target_arch = "x86_64")]
    if whole_rows > 0 && whole_cols > 0 {
        unsafe { blocks(src, src_stride, dst, dst_stride, [whole_rows, whole_cols]) }
    }
    // What the blocks left: the last columns of the whole rows, then the last rows.
    for i in 0..rows {
        let first = if i < whole_rows { whole_cols } else { 0 };
        for j in first..cols {
            dst[j * dst_stride + i] = src[i * src_stride + j];
        }
    }
}

fn avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The whole 8x8 blocks of a transpose (`rows` and `cols` multiples of 8), compiled with AVX so
/// that each block's code is inlined into the loop (a call per block, its registers saved and
/// restored, measured slower).
///
/// # Safety
/// AVX must be available, and every block, and its transposed place, inside the slices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn blocks(
    src: &[f32],
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
    [rows, cols]: [usize; 2],
) {
    for i in (0..rows).step_by(8) {
        for j in (0..cols).step_by(8) {
            // SAFETY: as the caller promises for every block.
            unsafe {
                block_8x8(
                    src.as_ptr().add(i * src_stride + j),
                    src_stride,
                    dst.as_mut_ptr().add(j * dst_stride + i),
                    dst_stride,
                )
            }
        }
    }
}

/// One 8x8 block: `dst[j * dst_stride + i] = src[i * src_stride + j]`.
///
/// # Safety
/// AVX must be available, the 8 rows of 8 floats from `src` (`src_stride` apart) readable and
/// those from `dst` writable, not overlapping them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn block_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_stride)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        for (j, row) in out.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(j * dst_stride), row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size around the 8x8 blocks, with strides wider than the rows.
    #[test]
    fn transposes_match_the_definition() {
        for rows in [1, 7, 8, 9, 16, 19] {
            for cols in [1, 5, 8, 13, 24] {
                let (src_stride, dst_stride) = (cols + 3, rows + 2);
                let src: Vec<f32> = (0..rows * src_stride).map(|v| v as f32).collect();
                let mut dst = vec![-1.0f32; cols * dst_stride];
                transpose(&src, src_stride, &mut dst, dst_stride, [rows, cols]);
                for j in 0..cols {
                    for i in 0..dst_stride {
                        let expected = match i < rows {
                            true => src[i * src_stride + j],
                            false => -1.0,
                        };
                        assert_eq!(
                            dst[j * dst_stride + i],
                            expected,
                            "{rows}x{cols} at {i},{j}"
                        );
                    }
                }
            }
        }
    }
}
