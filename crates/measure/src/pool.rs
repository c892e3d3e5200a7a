//! Thread budgets for compute. Every backend gets the same budget from one place: flex runs
//! its ops on the rayon pool it is called from, LibTorch on its own OpenMP threads, whose
//! count is process-wide in LibTorch (`at::set_num_threads`).

/// A rayon pool of `threads` workers (at least one). With the `tch` feature it also sets
/// LibTorch's intra-op thread count to `threads`: the most recently built pool decides it,
/// which matches how the runner and the benches use pools (one phase at a time: training,
/// then evaluation, then latency at 1 thread, then throughput).
pub fn compute_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    let threads = threads.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    backend_threads(threads);
    Ok(pool)
}

#[cfg(feature = "tch")]
fn backend_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
}

#[cfg(not(feature = "tch"))]
fn backend_threads(_threads: usize) {}
