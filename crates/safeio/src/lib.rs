//! I/O with the outside world that an odd file or a vanished reader cannot turn into a hang,
//! an out-of-memory abort or a panic. Its one job: every small file the CLI reads (configs,
//! sweep files, summaries, trial records) is read as a regular file with a size bound, and
//! every line it prints survives a closed stdout or stderr.
//!
//! ```text
//! train check /dev/zero           -> error: /dev/zero: not a regular file
//! train bench RUN | true          -> finishes its work and exits 0, printing nothing more
//! ```

pub mod out;
mod read;

pub use read::{read_bounded, read_tail, read_text, ReadError, MAX_TEXT_BYTES};
