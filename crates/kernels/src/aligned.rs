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

/// Floats past a 16-byte-aligned allocation's start to its first 64-byte boundary, at most.
pub(crate) const ALIGN_FLOATS: usize = 15;

/// `len` floats starting on a 64-byte boundary (a cache line, one AVX-512 load), inside a
/// vector [`ALIGN_FLOATS`] longer. The allocator only promises 16 bytes: the panels of the
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
        Self::within(vec![0.0f32; len + ALIGN_FLOATS], len)
    }

    /// `len` floats inside `values`, which keeps what it holds and is grown (with zeros) or
    /// shortened to `len + ALIGN_FLOATS` first.
    pub(crate) fn within(mut values: Vec<f32>, len: usize) -> Self {
        values.resize(len + ALIGN_FLOATS, 0.0);
        Self {
            start: aligned_start(&values),
            values,
            len,
        }
    }

    /// The vector the values lie in, leaving `self` empty.
    pub(crate) fn take_vec(&mut self) -> Vec<f32> {
        self.len = 0;
        self.start = 0;
        std::mem::take(&mut self.values)
    }

    /// Where the values start in the vector.
    #[cfg(test)]
    pub(crate) fn start(&self) -> usize {
        self.start
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
