//! Bounds-checked matrix products on slices, through the `gemm` crate.
//!
//! `gemm::gemm` takes raw pointers and strides. Every matrix here is a slice with its shape and
//! strides, checked to lie inside the slice before the one `unsafe` call, so callers stay safe.

/// A read-only matrix: element `(i, j)` at `values[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Matrix<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    pub(crate) fn row_major(values: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(values, rows, cols, cols, 1)
    }

    pub(crate) fn strided(
        values: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        let matrix = Matrix {
            values,
            rows,
            cols,
            row_stride,
            col_stride,
        };
        assert!(
            fits(values.len(), rows, cols, row_stride, col_stride),
            "matrix {rows}x{cols} (strides {row_stride}, {col_stride}) outside its {} values",
            values.len()
        );
        matrix
    }
}

/// A matrix written to, row-major.
#[derive(Debug)]
pub(crate) struct MatrixMut<'a> {
    values: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatrixMut<'a> {
    pub(crate) fn row_major(values: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(
            fits(values.len(), rows, cols, cols, 1),
            "matrix {rows}x{cols} outside its {} values",
            values.len()
        );
        MatrixMut { values, rows, cols }
    }
}

/// Whether every element of a `rows x cols` matrix with these strides lies in `len` values.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    rows == 0
        || cols == 0
        || (rows - 1)
            .checked_mul(row_stride)
            .and_then(|r| {
                (cols - 1)
                    .checked_mul(col_stride)
                    .and_then(|c| r.checked_add(c))
            })
            .is_some_and(|last| last < len)
}

/// `dst = lhs · rhs` (overwriting `dst`), on the calling thread.
///
/// # Panics
/// If the shapes do not chain (`lhs` is `m x k`, `rhs` `k x n`, `dst` `m x n`).
pub(crate) fn matmul(dst: MatrixMut<'_>, lhs: Matrix<'_>, rhs: Matrix<'_>) {
    assert!(
        lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows,
        "matmul shapes: {}x{} = {}x{} · {}x{}",
        dst.rows,
        dst.cols,
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.values[..m * n].fill(0.0);
        return;
    }
    let stride = |s: usize| isize::try_from(s).expect("stride fits isize");
    // SAFETY: `Matrix::strided` and `MatrixMut::row_major` checked that every element
    // addressed by these shapes and strides lies inside its slice; `dst` is a unique borrow,
    // so it aliases neither input; `read_dst` is false, so `dst`'s old values are not read.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.values.as_mut_ptr(),
            1,
            stride(n),
            false,
            lhs.values.as_ptr(),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.values.as_ptr(),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_follow_the_strides() {
        // lhs 2x3 row-major, rhs 3x2 given transposed (column-major).
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs_t = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut dst = [9.0; 4];
        matmul(
            MatrixMut::row_major(&mut dst, 2, 2),
            Matrix::row_major(&lhs, 2, 3),
            Matrix::strided(&rhs_t, 3, 2, 1, 3),
        );
        assert_eq!(dst, [4.0, 2.0, 10.0, 5.0]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_matrix_past_its_slice_is_refused() {
        let values = [0.0; 5];
        Matrix::strided(&values, 2, 3, 3, 1);
    }
}
