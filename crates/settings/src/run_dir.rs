//! The run folder of one stage result: `<output.dir>/<name>/<hash>/`.
//!
//! The hash ([`crate::identity`]) covers what the config computes, not how or where it runs,
//! so the same config always lands in the same folder: run again and it resumes or reuses,
//! change anything that affects the result and it gets a folder of its own. `summary.json` is
//! written last, so a folder without it is an unfinished run, never a result.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const RESOLVED_CONFIG: &str = "config.resolved.toml";
pub const CHECKPOINT: &str = "checkpoint.bin";
pub const MODEL: &str = "model.bpk";
pub const SUMMARY: &str = "summary.json";
pub const LOG: &str = "train.log";
const LOCK: &str = ".lock";

pub struct RunDir {
    pub path: PathBuf,
    pub hash: String,
    /// Held for the life of the run: a second process on the same folder waits.
    _lock: File,
}

impl RunDir {
    /// Creates (or reopens) the run folder `path` (named by `hash`) and takes its lock,
    /// waiting while another process holds it.
    pub fn open(path: &Path, hash: String, on_wait: impl FnOnce(&Path)) -> std::io::Result<Self> {
        let path = path.to_path_buf();
        std::fs::create_dir_all(&path)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK))?;
        if lock.try_lock().is_err() {
            on_wait(&path);
            lock.lock()?;
        }
        Ok(Self {
            path,
            hash,
            _lock: lock,
        })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn is_complete(&self) -> bool {
        self.file(SUMMARY).exists()
    }
}

/// The SHA-256 a finished run's `summary` recorded for its file `name` (`model.bpk`, or the
/// export it names), when it recorded one.
pub fn recorded_sha256<'a>(summary: &'a measure::RunSummary, name: &str) -> Option<&'a str> {
    let sha256 = if name == MODEL {
        &summary.model_sha256
    } else if summary.artifact.as_deref() == Some(name) {
        &summary.artifact_sha256
    } else {
        return None;
    };
    (!sha256.is_empty()).then_some(sha256.as_str())
}

/// For a model file named by its path that lies in a finished run folder (`RUN/model.bpk`,
/// `RUN/model.sparse`): the SHA-256 its run recorded for it, so a changed or corrupted file is
/// never used as that run's. `None` for files elsewhere (they carry their own checks).
pub fn recorded_for(path: &Path) -> Result<Option<String>, String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let summary = dir.join(SUMMARY);
    if !summary.exists() {
        return Ok(None);
    }
    let text = safeio::read_text(&summary).map_err(|e| e.to_string())?;
    let recorded: measure::RunSummary = serde_json::from_str(&text)
        .map_err(|e| format!("{}: unreadable ({e})", summary.display()))?;
    Ok(recorded_sha256(&recorded, &name.to_string_lossy()).map(str::to_string))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, then
/// renamed over `path`. A crash leaves either the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
