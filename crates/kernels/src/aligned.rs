//! Buffers that start on a cache line.

/// The offset into `values` that starts on a 64-byte boundary (a cache line, one AVX-512
/// register): a load or an AMX tile row off the boundary spans two lines. Measured: AMX tiles
/// 2x slower from a misaligned buffer; the pixel-major kernels' weight panels (`direct.rs`)
/// aligned took ResNet-18's convolutions from 2,047 to 1,983 ms forward and backward
/// (`CONV_NET=resnet18 cargo test -p kernels --bench conv_train`, 1 thread, 2026-12-07).
pub(crate) fn aligned_start<T>(values: &[T]) -> usize {
    let misaligned = values.as_ptr() as usize % 64;
    (64 - misaligned) % 64 / std::mem::size_of::<T>()
}

/// `len` floats starting on a 64-byte boundary (a cache line, one AVX-512 load), inside a
/// vector allocated 15 floats longer. The allocator only promises 16 bytes: the panels of the
/// sparse LeNet-300-100's layers, which stay in cache, were read 1.5x slower at batch 1
/// (0.021 against 0.013 ms, `train bench`) in a build whose allocations had shifted by a few
/// bytes, every 64-byte load then spanning two lines.
#[derive(Debug)]
pub(crate) struct CacheAligned {
    values: Vec<f32>,
    start: usize,
    len: usize,
}

impl CacheAligned {
    pub(crate) fn zeros(len: usize) -> Self {
        let values = vec![0.0f32; len + 15];
        Self {
            start: aligned_start(&values),
            values,
            len,
        }
    }

    pub(crate) fn values(&self) -> &[f32] {
        &self.values[self.start..][..self.len]
    }

    pub(crate) fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values[self.start..][..self.len]
    }
}

impl Clone for CacheAligned {
    /// A fresh aligned copy (a cloned vector may start elsewhere on its line).
    fn clone(&self) -> Self {
        let mut copy = Self::zeros(self.len);
        copy.values_mut().copy_from_slice(self.values());
        copy
    }
}
