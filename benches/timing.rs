//! Timing helpers shared by the kernel benches (`conv.rs`, `depthwise.rs`).

use std::time::Instant;

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Microseconds per call of `f`, after a warm-up.
pub fn time(mut f: impl FnMut(), calls: usize) -> f64 {
    for _ in 0..calls / 10 + 1 {
        f();
    }
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / calls as f64
}

/// Runs every parallel kernel on one thread (rayon's global pool), as the benches measure.
pub fn one_thread() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("one thread");
}
