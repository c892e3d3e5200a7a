//! Measurement shared by every stage: end-to-end latency and throughput, run summaries and
//! their table, and TensorBoard event files.

pub mod accuracy;
pub mod hparams;
pub mod latency;
pub mod model_bench;
pub mod pareto;
pub mod plot;
pub mod pool;
pub mod report;
pub mod summary;
pub mod tensorboard;

pub use accuracy::{
    agreement, evaluate, evaluate_parts, largest_difference, top1, Agreement, Evaluation, PartSums,
    RunParts,
};
pub use latency::{measure_latency, measure_throughput, LatencyStats};
pub use model_bench::{batch_latency, bench_model, BenchOptions, BenchResult};
pub use pool::compute_pool;
pub use summary::{ParentSummary, RunSummary};
pub use tensorboard::EventLog;
