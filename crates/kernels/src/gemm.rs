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
/// A matrix written by [`matmul`]: element `(i, j)` at `values[i * row_stride + j *
/// col_stride]`, no two elements at one place.
#[derive(Debug)]
pub(crate) struct MatrixMut<'a> {
    values: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatrixMut<'a> {
    pub(crate) fn row_major(values: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(values, rows, cols, cols, 1)
    }

    /// # Panics
    /// If an element lies outside `values`, or two elements at one place (one stride must
    /// step over the whole other dimension).
    pub(crate) fn strided(
        values: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert!(
            fits(values.len(), rows, cols, row_stride, col_stride),
            "matrix {rows}x{cols} (strides {row_stride}, {col_stride}) outside its {} values",
            values.len()
        );
        let distinct = rows <= 1
            || cols <= 1
            || (col_stride >= 1 && row_stride >= cols * col_stride)
            || (row_stride >= 1 && col_stride >= rows * row_stride);
        assert!(
            distinct,
            "matrix {rows}x{cols} (strides {row_stride}, {col_stride}) overlaps itself"
        );
        MatrixMut {
            values,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

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
        for i in 0..m {
            for j in 0..n {
                dst.values[i * dst.row_stride + j * dst.col_stride] = 0.0;
            }
        }
        return;
    }
    let stride = |s: usize| isize::try_from(s).expect("stride fits isize");
    // SAFETY: `Matrix::strided` and `MatrixMut::strided` checked that every element addressed
    // by these shapes and strides lies inside its slice, and that no two elements of `dst`
    // share a place; `dst` is a unique borrow, so it aliases neither input; `read_dst` is
    // false, so `dst`'s old values are not read.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.values.as_mut_ptr(),
            stride(dst.col_stride),
            stride(dst.row_stride),
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
    fn a_strided_destination_leaves_the_other_places_alone() {
        // The same product written column-major, two floats apart, into a wider buffer.
        let lhs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let rhs_t = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut dst = [9.0; 9];
        matmul(
            MatrixMut::strided(&mut dst, 2, 2, 2, 4),
            Matrix::row_major(&lhs, 2, 3),
            Matrix::strided(&rhs_t, 3, 2, 1, 3),
        );
        assert_eq!(dst, [4.0, 9.0, 10.0, 9.0, 2.0, 9.0, 5.0, 9.0, 9.0]);
    }

    #[test]
    #[should_panic(expected = "overlaps itself")]
    fn a_destination_over_itself_is_refused() {
        let mut values = [0.0; 8];
        MatrixMut::strided(&mut values, 2, 3, 2, 1);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_matrix_past_its_slice_is_refused() {
        let values = [0.0; 5];
        Matrix::strided(&values, 2, 3, 3, 1);
    }
}
