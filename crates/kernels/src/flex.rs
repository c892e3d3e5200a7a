//! Reading and making flex tensors of f32 values.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::{DType, Shape, TensorData};

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

/// `t` with its values rewritten in place by `rewrite` (all of them, row-major): its own
/// storage when nothing else holds it, else a contiguous copy's ([`owned_f32`]).
pub(crate) fn rewritten_f32(t: FlexTensor, rewrite: impl FnOnce(&mut [f32])) -> FlexTensor {
    let mut t = owned_f32(t);
    rewrite(unique_f32_mut(&mut t).expect("owned_f32 makes it unique"));
    t
}

/// `x` (flex without autodiff, f32) as a flex tensor whose values a pass may rewrite in place:
/// its own storage when nothing else holds it, else a contiguous copy; `Err(x)` for any other
/// tensor, handed back.
// Both sides are the tensor itself (the error hands the input back, not a report).
#[allow(clippy::result_large_err)]
pub(crate) fn writable_f32<const D: usize>(x: Tensor<D>) -> Result<FlexTensor, Tensor<D>> {
    // Checked on a clone of the handle, dropped at once, so that `x` is again the storage's
    // only owner when it converts.
    if x.dtype() != DType::F32
        || x.device().is_autodiff()
        || x.clone().try_into_primitive::<Flex>().is_err()
    {
        return Err(x);
    }
    let primitive = x.try_into_primitive::<Flex>().expect("the clone converted");
    Ok(owned_f32(primitive))
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

/// A tensor's values, row-major, when it is f32 on flex without autodiff (what the inference
/// kernels run on); `None` for any other backend or dtype.
pub fn flex_values<const D: usize>(t: Tensor<D>) -> Option<Vec<f32>> {
    if t.dtype() != DType::F32 || t.device().is_autodiff() {
        return None;
    }
    let primitive = t.try_into_primitive::<Flex>().ok()?;
    Some(contiguous_f32(&primitive).into_owned())
}
