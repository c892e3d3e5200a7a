//! Reading and making flex tensors of f32 values.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::tensor::{Shape, TensorData};

/// A flex tensor of these row-major values.
pub(crate) fn flex_f32(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The tensor's values in row-major order: borrowed when already contiguous, else copied.
pub(crate) fn contiguous_f32(x: &FlexTensor) -> Cow<'_, [f32]> {
    // `as_slice` is `Some` exactly for contiguous layouts.
    match x.as_slice::<f32>() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(to_vec_f32(x)),
    }
}

/// The tensor's values in row-major order, copied.
pub(crate) fn to_vec_f32(x: &FlexTensor) -> Vec<f32> {
    x.to_contiguous()
        .as_slice::<f32>()
        .expect("a contiguous f32 tensor reads as a slice")
        .to_vec()
}

/// A contiguous copy with storage of its own.
pub(crate) fn copy_f32(x: &FlexTensor) -> FlexTensor {
    flex_f32(to_vec_f32(x), x.layout().shape().clone())
}

/// The tensor itself when it is contiguous and nothing else holds its storage, else a
/// contiguous copy.
pub(crate) fn owned_f32(mut t: FlexTensor) -> FlexTensor {
    if unique_f32_mut(&mut t).is_some() {
        t
    } else {
        copy_f32(&t)
    }
}

/// The tensor's values, mutable, when it is contiguous and uniquely owned.
pub(crate) fn unique_f32_mut(t: &mut FlexTensor) -> Option<&mut [f32]> {
    let (start, end) = t.layout().contiguous_offsets()?;
    t.try_storage_mut::<f32>().map(|s| &mut s[start..end])
}

/// Asserts each pair of named results equal within `tolerance` (the kernels' tests compare
/// every output and gradient with burn's this way).
#[cfg(test)]
pub(crate) fn assert_all_close(
    names: &[&str],
    ours: &[TensorData],
    burns: &[TensorData],
    tolerance: f32,
) {
    assert_eq!((names.len(), ours.len()), (burns.len(), burns.len()));
    for (name, (a, b)) in names.iter().zip(ours.iter().zip(burns)) {
        println!("{name}");
        a.assert_approx_eq::<f32>(b, burn::tensor::Tolerance::absolute(tolerance));
    }
}
