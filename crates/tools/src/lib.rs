//! Tools on top of a finished stage: `train bench` (latency and throughput of what a run
//! saved), `train profile` (per-layer time, MACs and bytes) and the analyses techniques bring
//! (`train sensitivity`). None of them is part of running a stage.

pub mod analysis;
pub mod bench;
pub mod export;
pub mod profile;
pub mod timeline;
