//! The run folder of one stage result: `<output.dir>/<name>/<hash>/`.
//!
//! The hash covers the resolved config (minus where things are stored), so the same config
//! always lands in the same folder: run again and it resumes or reuses, change anything that
//! affects the result and it gets a folder of its own. `summary.json` is written last, so a
//! folder without it is an unfinished run, never a result.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::schema::StageConfig;

pub const RESOLVED_CONFIG: &str = "config.resolved.toml";
pub const CHECKPOINT: &str = "checkpoint.bin";
pub const MODEL: &str = "model.bpk";
pub const SUMMARY: &str = "summary.json";
pub const LOG: &str = "train.log";
const LOCK: &str = ".lock";

/// The hash naming a config's run folder: 12 hex digits of SHA-256 over its canonical JSON,
/// with the storage locations (`data.cache_dir`, `output.dir`) left out and the teacher's path
/// replaced by the teacher's own hash (`parent`), so a changed teacher means a new student.
pub fn config_hash(config: &StageConfig, parent: Option<&str>) -> String {
    let mut canonical = config.clone();
    canonical.data.cache_dir = None;
    canonical.output.dir = PathBuf::new();
    if let (Some(distill), Some(parent)) = (canonical.distill.as_mut(), parent) {
        distill.teacher = PathBuf::from(format!("hash:{parent}"));
    }
    let json = serde_json::to_vec(&canonical).expect("configs serialise");
    hex::encode(&Sha256::digest(&json)[..6])
}

pub struct RunDir {
    pub path: PathBuf,
    pub hash: String,
    /// Held for the life of the run: a second process on the same folder waits.
    _lock: File,
}

impl RunDir {
    /// Creates (or reopens) the folder of `config` under `hash` and takes its lock, waiting
    /// while another process holds it.
    pub fn open(
        config: &StageConfig,
        hash: String,
        on_wait: impl FnOnce(&Path),
    ) -> std::io::Result<Self> {
        let path = config.output.dir.join(&config.name).join(&hash);
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
