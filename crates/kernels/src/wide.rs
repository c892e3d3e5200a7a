//! Plain loops compiled for AVX-512 where the CPU has it.
//!
//! The crate is compiled for baseline x86-64, whose vectors are SSE's four floats, so a loop
//! the compiler vectorises (BatchNorm's passes) runs four floats
//! at a time. Run through [`avx512`], the loop is inlined into a function compiled with
//! AVX-512 (pulp's `vectorize`, chosen at run time) and runs sixteen at a time. Results are
//! the same bit for bit: every lane does the same operations in the same order (Rust never
//! fuses a multiply and an add), and sums that run in lanes name their lanes explicitly.

/// `f()`, compiled with AVX-512 where the CPU has it. `f`'s loops must be inlined into it
/// (closures called once are; functions they call need `#[inline(always)]`).
#[inline(always)]
pub(crate) fn avx512<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = crate::linear::Isa::try_new() {
        return simd.vectorize(f);
    }
    f()
}
