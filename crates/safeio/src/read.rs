//! Bounded reads of files named by users or found in run folders.
//!
//! `std::fs::read_to_string("/dev/zero")` never returns and grows without bound; a FIFO
//! blocks; a 10 GB "config" is read whole before the parser sees its first byte. A file the
//! CLI reads is therefore checked to be a regular file and read through `Read::take` with
//! one byte more than the bound, so a file that grew past it is refused too.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The most bytes of a text file the CLI reads whole: configs, sweep files, summaries, trial
/// records and the like. The largest real one (a sweep's summary with its history) is a few
/// hundred KiB.
pub const MAX_TEXT_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The I/O error's text is in the message, not a `source`: one line says it all.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: is {kind}, not a regular file (give the path of a file)", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: larger than {limit} bytes, the most this kind of file may hold", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

impl ReadError {
    /// The message naming what the file was for: `cannot read config file c.toml: ...`,
    /// `config file /dev/zero: is a device, ...`.
    pub fn about(&self, what: &str) -> String {
        match self {
            Self::Io { .. } => {
                self.to_string()
                    .replacen("cannot read ", &format!("cannot read {what} "), 1)
            }
            _ => format!("{what} {self}"),
        }
    }

    /// The underlying I/O error's kind, when there is one (`NotFound` for a missing file).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Self::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        "a folder"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        // Character and block devices, FIFOs, sockets.
        "a device, pipe or socket"
    }
}

/// The regular file `path`, opened, with its metadata. It is checked before it is opened
/// (opening a FIFO blocks until a writer comes) and again through the handle, so the checked
/// file is the one read.
fn open_regular(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let regular = |meta: std::fs::Metadata| {
        if meta.is_file() {
            Ok(meta)
        } else {
            Err(ReadError::NotRegular {
                path: path.to_path_buf(),
                kind: kind_of(&meta),
            })
        }
    };
    regular(std::fs::metadata(path).map_err(io)?)?;
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = regular(file.metadata().map_err(io)?)?;
    Ok((file, meta))
}

/// The bytes of the regular file `path`, refused when longer than `limit`.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let (file, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// The last `limit` bytes (or fewer) of the regular file `path`: the end of a log.
pub fn read_tail(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::{Seek, SeekFrom};
    let io = |error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    let (mut file, meta) = open_regular(path)?;
    file.seek(SeekFrom::Start(meta.len().saturating_sub(limit)))
        .map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// The text of the regular file `path`, at most [`MAX_TEXT_BYTES`] of UTF-8.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = read_bounded(path, MAX_TEXT_BYTES)?;
    String::from_utf8(bytes).map_err(|_| ReadError::NotText {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_and_large_files_are_refused_without_reading_them() {
        let err = read_text(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular { .. }), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = read_text(dir.path()).unwrap_err();
        assert!(err.to_string().contains("a folder"), "{err}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 100]).unwrap();
        let err = read_bounded(&big, 99).unwrap_err();
        assert!(
            matches!(err, ReadError::TooLarge { limit: 99, .. }),
            "{err}"
        );
        assert_eq!(read_bounded(&big, 100).unwrap().len(), 100);
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.toml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            return; // no mkfifo here: nothing to test
        }
        let err = read_text(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn missing_files_and_binary_text_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_text(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.io_kind(), Some(std::io::ErrorKind::NotFound));
        let binary = dir.path().join("b");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            read_text(&binary).unwrap_err(),
            ReadError::NotText { .. }
        ));
    }
}
