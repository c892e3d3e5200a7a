//! Buffers the training convolutions keep for their backward pass, handed back to a pool when
//! dropped and taken from it again, unzeroed, by the next step's forward.
//!
//! A fresh `vec![0.0; n]` from the allocator's cache is zeroed first, then written again by
//! its user: the pixel-major training convolution's padded batch and im2col's unfolded one,
//! each written in full, cost ResNet-20 about 3% of a one-thread step in `memset` alone
//! (`perf`, 2026-12-07). Their sizes repeat from step to step, so last step's buffers serve
//! the next one as they are.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::aligned::{CacheAligned, ALIGN_FLOATS};

/// Most buffers a thread's pool keeps (a ResNet-20 step hands back 23).
const POOL_BUFFERS: usize = 64;
/// Most floats a thread's pool keeps (1 GiB).
const POOL_FLOATS: usize = 1 << 28;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of floats whose values, when taken, are whatever its last user left: its user
/// writes every one it reads. Dropped, it goes back to the pool of the thread that drops it.
///
/// Its values start on a 64-byte boundary (a cache line, one AVX-512 register): the allocator
/// promises 16 bytes, and the weight gradient's kernel (`conv_weight_grad.rs`) read a padded
/// batch whose pixels straddled two lines at 115-165 GFLOP/s where aligned ones ran at
/// 149-195 (ResNet-18's 512 -> 512 at 7x7 and ResNet-20's 32 -> 32 at 16x16, 1 thread).
#[derive(Debug)]
pub(crate) struct Recycled(CacheAligned);

impl Recycled {
    /// `len` floats: the pool's smallest buffer that holds them (and is at most twice their
    /// size), else a new one.
    pub(crate) fn take(len: usize) -> Self {
        let need = len + ALIGN_FLOATS;
        let taken = POOL.with_borrow_mut(|pool| {
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= need && v.capacity() <= 2 * need)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        });
        // Only values past the old length are written here (zeros).
        Self(CacheAligned::within(taken.unwrap_or_default(), len))
    }
}

impl std::ops::Deref for Recycled {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.0.values()
    }
}

impl std::ops::DerefMut for Recycled {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.0.values_mut()
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let values = self.0.take_vec();
        if values.capacity() == 0 {
            return;
        }
        // During the thread's exit the pool may be gone: the buffer is then freed.
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                let held: usize = pool.iter().map(Vec::capacity).sum();
                if pool.len() < POOL_BUFFERS && held + values.capacity() <= POOL_FLOATS {
                    pool.push(values);
                }
            }
        });
    }
}

/// `len` floats written chunk by chunk, `write(index, chunk)` for chunks of `chunk` floats
/// (the last one shorter), with what each call returns, in order. On a pool of one thread
/// (each replica's, or `threads = 1`) each chunk is written into a scratch buffer and
/// appended, so the result's memory is written once; a fresh `vec![0.0; len]` is zeroed
/// first (a `memset`), then written again. On several threads the chunks are written in
/// parallel into a zeroed vector. `write` must write every value of its chunk.
pub(crate) fn written_in_chunks<T: Send>(
    len: usize,
    chunk: usize,
    write: impl Fn(usize, &mut [f32]) -> T + Sync + Send,
) -> (Vec<f32>, Vec<T>) {
    let chunk = chunk.max(1);
    if rayon::current_num_threads() > 1 {
        let mut values = vec![0.0f32; len];
        let results = values
            .par_chunks_mut(chunk)
            .enumerate()
            .map(|(i, values)| write(i, values))
            .collect();
        return (values, results);
    }
    let mut values = Vec::with_capacity(len);
    let mut scratch = vec![0.0f32; chunk.min(len)];
    let results = (0..len.div_ceil(chunk))
        .map(|i| {
            let scratch = &mut scratch[..chunk.min(len - i * chunk)];
            let result = write(i, scratch);
            values.extend_from_slice(scratch);
            result
        })
        .collect();
    (values, results)
}

/// Fills this thread's pool with NaN buffers of every power-of-two length up to 2^22 floats,
/// so that the next buffers taken hold NaN wherever their users leave a value unwritten.
#[cfg(test)]
pub(crate) fn poison_pool() {
    for bits in 4..=22 {
        let mut buffer = Recycled::take(1 << bits);
        buffer.fill(f32::NAN);
        drop(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_serves_the_next_take_of_its_size() {
        let mut first = Recycled::take(1000);
        first.fill(7.0);
        let address = first.as_ptr();
        drop(first);
        let again = Recycled::take(1000);
        assert_eq!(again.as_ptr(), address);
        assert_eq!(again.len(), 1000);
        // Unzeroed: its user writes every value.
        assert_eq!(again[999], 7.0);
        // Too large for a small request, so that one gets a buffer of its own.
        drop(again);
        let small = Recycled::take(10);
        assert_ne!(small.as_ptr(), address);
        assert_eq!(&small[..], &[0.0; 10]);
    }

    #[test]
    fn chunks_are_written_in_order_on_one_thread_and_on_several() {
        let write = |i: usize, chunk: &mut [f32]| {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v = (i * 10 + j) as f32;
            }
            chunk.len()
        };
        let expected: Vec<f32> = (0..23).map(|v| ((v / 10) * 10 + v % 10) as f32).collect();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a pool");
            let (values, lengths) = pool.install(|| written_in_chunks(23, 10, write));
            assert_eq!(values, expected, "{threads} threads");
            assert_eq!(lengths, [10, 10, 3], "{threads} threads");
        }
        let (values, lengths) = written_in_chunks(0, 10, write);
        assert!(values.is_empty() && lengths.is_empty());
    }

    #[test]
    fn values_past_a_shorter_take_come_back_as_zeros() {
        let mut first = Recycled::take(1200);
        first.fill(3.0);
        let start = first.0.start();
        drop(first);
        // The same buffer, shortened, then lengthened again: what lies past the short
        // length (the alignment's floats with it) is zeroed, the rest kept.
        drop(Recycled::take(700));
        let longer = Recycled::take(1100);
        assert_eq!((longer.len(), longer.0.start()), (1100, start));
        let kept = 700 + ALIGN_FLOATS - start;
        assert!(longer[..kept].iter().all(|&v| v == 3.0));
        assert!(longer[kept..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn buffers_start_on_a_cache_line() {
        let taken: Vec<Recycled> = [1, 15, 16, 17, 1000, 1 << 20]
            .into_iter()
            .map(Recycled::take)
            .collect();
        for buffer in &taken {
            assert_eq!(buffer.as_ptr() as usize % 64, 0, "{} floats", buffer.len());
        }
    }
}
