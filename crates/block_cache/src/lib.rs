//! A global allocator for training processes: the system's, with glibc told to keep freed
//! memory, and a few freed blocks too large for its heaps kept for the next request of exactly
//! their size.
//!
//! A training step allocates and frees the same large buffers every step (activations, their
//! gradients, a convolution's padded or unfolded input: 8-20 MB at ResNet-20's batch 128,
//! 25-100 MB at ResNet-18's 224x224 batch 32). By default glibc maps a block above its
//! (adaptive) threshold of its own and unmaps it on free, and hands a heap's freed top back
//! to the kernel, so the next step faults every page in again and the kernel zeroes each one
//! first: 40,000 page faults per 1-thread ResNet-20 step, 8% of its time (`perf`). Here:
//!
//! - before the first allocation, glibc's `M_MMAP_THRESHOLD` is set to 32 MB (the most it
//!   takes), `M_TRIM_THRESHOLD` to its largest and `M_ARENA_MAX` to 1, so blocks under 32 MB
//!   come from its main heap, for every thread, and freed memory stays there (a thread's own
//!   arena unmaps each of its 64 MB heaps once it is wholly free; small blocks still come
//!   from each thread's lock-free cache);
//! - a freed block of at least [`MIN_BLOCK`] (32 MB, what glibc still maps on its own) is
//!   kept, at most [`SLOTS`] blocks and [`MAX_BYTES`] in all (the oldest given back first),
//!   and handed to the next request of the same size and alignment, the last freed first
//!   (likeliest still in cache).
//!
//! Measured (the speed bench, `SPEED_PARTS=train`, interleaved with the build before it,
//! 2026-12-06; experiments/speed/README.md, "fourth part"): ResNet-20 1 thread 432-434 ->
//! 416-417 ms per step, 2 replicas 224 -> 207-209; ResNet-18 1 thread 2,903-2,910 ->
//! 2,747-2,793, 2 replicas 1,528-1,533 -> 1,459-1,462. Page faults of a ResNet-18 bench run
//! 1.03 M -> 0.39 M, its peak resident memory 1.36-1.39 -> 1.45-1.47 GB. Inference unchanged.
//! One arena for all threads on top of that: ResNet-18 2 replicas 1,515-1,636 -> 1,424-1,431
//! ms, the VGG 78-79 -> 72; the others within noise (MobileNetV2 139-140 -> 141-142).
//!
//! The binaries that train or time models (`train`, the speed and inference benches)
//! install it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache;
//! ```
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// The smallest block kept: below it, the system allocator's own free lists serve it.
pub const MIN_BLOCK: usize = 32 << 20;
/// The most blocks kept at once.
pub const SLOTS: usize = 32;
/// The most bytes kept at once: memory the process holds beyond what it uses.
pub const MAX_BYTES: usize = 1 << 30;

/// One kept block: its address, its layout's size and alignment, and when it was freed (a
/// count of frees, to give back the oldest first).
#[derive(Clone, Copy)]
struct Block {
    address: usize,
    size: usize,
    align: usize,
    freed: u64,
}

struct Kept {
    blocks: [Option<Block>; SLOTS],
    bytes: usize,
    frees: u64,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept {
    blocks: [None; SLOTS],
    bytes: 0,
    frees: 0,
});

impl Kept {
    /// A kept block for `layout`, taken out of the cache: the one freed last, whose lines are
    /// likeliest to be still in cache.
    fn take(&mut self, layout: Layout) -> Option<*mut u8> {
        let slot = self
            .blocks
            .iter_mut()
            .filter(|b| b.is_some_and(|b| b.size == layout.size() && b.align == layout.align()))
            .max_by_key(|b| b.map_or(0, |b| b.freed))?;
        let block = slot.take()?;
        self.bytes -= block.size;
        Some(block.address as *mut u8)
    }

    /// Keeps `block`, returning the blocks to give back so that the cache stays within its
    /// bounds (the oldest first, the block itself where it alone exceeds them).
    fn keep(&mut self, block: Block, evicted: &mut [Option<Block>; SLOTS]) {
        if block.size > MAX_BYTES {
            evicted[0] = Some(block);
            return;
        }
        let mut n = 0;
        loop {
            let free_slot = self.blocks.iter().any(Option::is_none);
            if free_slot && self.bytes + block.size <= MAX_BYTES {
                break;
            }
            let oldest = self
                .blocks
                .iter_mut()
                .filter(|b| b.is_some())
                .min_by_key(|b| b.map_or(u64::MAX, |b| b.freed))
                .expect("a full cache holds blocks");
            let old = oldest.take().expect("filtered to kept blocks");
            self.bytes -= old.size;
            evicted[n] = Some(old);
            n += 1;
        }
        self.frees += 1;
        let slot = self
            .blocks
            .iter_mut()
            .find(|b| b.is_none())
            .expect("a free slot was made");
        *slot = Some(Block {
            freed: self.frees,
            ..block
        });
        self.bytes += block.size;
    }
}

/// The system allocator, keeping large freed blocks for reuse (see the crate's note).
pub struct BlockCache;

/// glibc's own settings, made once, at the first allocation (before any other thread runs):
/// blocks under 32 MB (the most `M_MMAP_THRESHOLD` takes) come from its heaps; freed memory at
/// a heap's top stays there (`M_TRIM_THRESHOLD`) instead of going back to the kernel to be
/// faulted in again; and every thread allocates from the one main heap (`M_ARENA_MAX`), as a
/// thread's own arena is a chain of 64 MB heaps, each unmapped once it is wholly free, which
/// for ResNet-18's replicas happened every step.
fn tune_glibc() {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: `mallopt` only sets these parameters (it returns 0 for a value it
        // refuses, which then keeps glibc's default).
        unsafe {
            // glibc maps blocks of `MIN_BLOCK` and more itself: those are the cache's.
            libc::mallopt(libc::M_MMAP_THRESHOLD, MIN_BLOCK as i32);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    });
}

impl BlockCache {
    fn take(layout: Layout) -> Option<*mut u8> {
        tune_glibc();
        if layout.size() < MIN_BLOCK {
            return None;
        }
        // A poisoned lock (a panic cannot happen inside it) is passed by: the system serves.
        KEPT.lock().ok()?.take(layout)
    }
}

// SAFETY: every block handed out is either fresh from `System` or one that was allocated by
// `System` with exactly this size and alignment and then freed by its owner, so it is unused;
// each is handed out at most once (taken out of the cache under its lock); blocks given back
// to `System` carry the layout they were allocated with.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::take(layout) {
            Some(block) => block,
            // SAFETY: the caller's contract (a non-zero size) is `System`'s.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::take(layout) {
            Some(block) => {
                // SAFETY: the block is `layout.size()` writable bytes, unused (see above).
                unsafe { std::ptr::write_bytes(block, 0, layout.size()) };
                block
            }
            // SAFETY: as in `alloc`.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= MIN_BLOCK {
            let block = Block {
                address: ptr as usize,
                size: layout.size(),
                align: layout.align(),
                freed: 0,
            };
            let mut evicted = [None; SLOTS];
            if let Ok(mut kept) = KEPT.lock() {
                kept.keep(block, &mut evicted);
                drop(kept);
                // Given back outside the lock: `System` may take its own.
                for block in evicted.into_iter().flatten() {
                    let layout = Layout::from_size_align(block.size, block.align)
                        .expect("the layout it was allocated with");
                    // SAFETY: allocated by `System` with this layout and no longer in use.
                    unsafe { System.dealloc(block.address as *mut u8, layout) };
                }
                return;
            }
        }
        // SAFETY: the caller's `ptr` was allocated by this allocator with `layout`: by
        // `System`, with that layout.
        unsafe { System.dealloc(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < MIN_BLOCK && new_size < MIN_BLOCK {
            // SAFETY: the caller's contract is `System`'s, and `ptr` is `System`'s block.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Across the threshold, or between large sizes: a new block (perhaps a kept one) and a
        // copy, so that every block the cache holds has the size `System` gave it.
        let new_layout = Layout::from_size_align(new_size, layout.align())
            .expect("the caller's contract: a valid layout");
        // SAFETY: a non-zero size (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks hold at least the smaller size, and they are distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(address: usize, size: usize) -> Block {
        Block {
            address,
            size,
            align: 8,
            freed: 0,
        }
    }

    fn empty() -> Kept {
        Kept {
            blocks: [None; SLOTS],
            bytes: 0,
            frees: 0,
        }
    }

    #[test]
    fn a_kept_block_serves_its_exact_layout_once() {
        let mut kept = empty();
        let mut evicted = [None; SLOTS];
        kept.keep(block(0x1000, 4 << 20), &mut evicted);
        assert!(evicted.iter().all(Option::is_none));
        let other_size = Layout::from_size_align(4 << 20 | 8, 8).unwrap();
        let other_align = Layout::from_size_align(4 << 20, 64).unwrap();
        assert_eq!(kept.take(other_size), None);
        assert_eq!(kept.take(other_align), None);
        let same = Layout::from_size_align(4 << 20, 8).unwrap();
        assert_eq!(kept.take(same), Some(0x1000 as *mut u8));
        assert_eq!(kept.take(same), None);
        assert_eq!(kept.bytes, 0);
    }

    #[test]
    fn the_oldest_blocks_go_back_past_either_bound() {
        let mut kept = empty();
        let mut evicted = [None; SLOTS];
        for i in 0..SLOTS {
            kept.keep(block(i + 1, MIN_BLOCK), &mut evicted);
        }
        assert!(evicted.iter().all(Option::is_none));
        kept.keep(block(1000, MIN_BLOCK), &mut evicted);
        assert!(kept.bytes <= MAX_BYTES);
        let gone: Vec<usize> = evicted.iter().flatten().map(|b| b.address).collect();
        assert_eq!(gone, [1], "the first freed goes first");

        let mut evicted = [None; SLOTS];
        kept.keep(block(2000, MAX_BYTES - 2 * MIN_BLOCK), &mut evicted);
        assert!(kept.bytes <= MAX_BYTES);
        let gone: Vec<usize> = evicted.iter().flatten().map(|b| b.address).collect();
        assert_eq!(gone.len(), SLOTS - 2, "room made by the oldest, {gone:?}");
        assert!(gone.iter().all(|&a| a != 2000 && a != 1000 && a != 64));
        assert_eq!(kept.blocks.iter().flatten().count(), 3);

        let mut evicted = [None; SLOTS];
        kept.keep(block(3000, MAX_BYTES + 1), &mut evicted);
        let gone: Vec<usize> = evicted.iter().flatten().map(|b| b.address).collect();
        assert_eq!(gone, [3000], "a block past the byte bound is not kept");
    }

    #[test]
    fn vectors_round_trip_through_the_allocator() {
        // The allocator itself, as a program would use it (not installed globally here).
        let layout = Layout::from_size_align(MIN_BLOCK + 4096, 64).unwrap();
        // SAFETY: a non-zero layout; each block is written within its size and freed once
        // with the layout it was allocated with.
        unsafe {
            let a = BlockCache.alloc(layout);
            a.write_bytes(7, layout.size());
            BlockCache.dealloc(a, layout);
            let b = BlockCache.alloc_zeroed(layout);
            assert_eq!(b, a, "the kept block serves the next request of its layout");
            let bytes = std::slice::from_raw_parts(b, layout.size());
            assert!(
                bytes.iter().all(|&v| v == 0),
                "alloc_zeroed zeroes a kept block"
            );
            b.write(5);
            b.add(layout.size() - 1).write(6);
            let c = BlockCache.realloc(b, layout, 2 * MIN_BLOCK);
            assert!(!c.is_null());
            assert_eq!(
                (c.read(), c.add(layout.size() - 1).read()),
                (5, 6),
                "realloc copies"
            );
            BlockCache.dealloc(c, Layout::from_size_align(2 * MIN_BLOCK, 64).unwrap());
        }
    }
}
