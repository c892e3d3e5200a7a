//! Reading flex tensors as f32 slices.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;

/// The tensor's values in row-major order: borrowed when already contiguous, else copied.
pub(crate) fn contiguous_f32(x: &FlexTensor) -> Cow<'_, [f32]> {
    match x.as_slice::<f32>() {
        Some(values) if x.is_contiguous() => Cow::Borrowed(values),
        _ => Cow::Owned(to_vec_f32(x)),
    }
}

/// The tensor's values in row-major order, copied.
pub(crate) fn to_vec_f32(x: &FlexTensor) -> Vec<f32> {
    x.to_contiguous()
        .as_slice::<f32>()
        .expect("a contiguous f32 tensor reads as a slice")
        .to_vec()
}
