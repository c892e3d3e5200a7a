//! Reading flex tensors as f32 slices.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::tensor::TensorData;

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

/// The tensor itself when it is contiguous and nothing else holds its storage, else a
/// contiguous copy.
pub(crate) fn owned_f32(mut t: FlexTensor) -> FlexTensor {
    if unique_f32_mut(&mut t).is_some() {
        t
    } else {
        t.deep_copy_f32()
    }
}

/// The tensor's values, mutable, when it is contiguous and uniquely owned.
pub(crate) fn unique_f32_mut(t: &mut FlexTensor) -> Option<&mut [f32]> {
    let (start, end) = t.layout().contiguous_offsets()?;
    t.try_storage_mut::<f32>().map(|s| &mut s[start..end])
}

pub(crate) trait DeepCopy {
    fn deep_copy_f32(&self) -> FlexTensor;
}

impl DeepCopy for FlexTensor {
    /// A contiguous copy with storage of its own.
    fn deep_copy_f32(&self) -> FlexTensor {
        let shape = self.layout().shape().clone();
        FlexTensor::from_data(TensorData::new(to_vec_f32(self), shape))
    }
}
