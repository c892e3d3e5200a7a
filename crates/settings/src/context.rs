//! The execution context: how and where a stage runs, as opposed to what it computes.
//!
//! Device, threads, measurement sizes, logging cadence and the storage folders change neither
//! the trained weights' meaning nor the run's identity: they are left out of the hash (so
//! changing the number of latency images never retrains), and a stage's parents run with the
//! context of the stage that was launched (so `COMPRESS_DEVICE=cuda:0` trains the teacher on
//! the GPU too).

use std::path::PathBuf;

use crate::schema::{MeasureConfig, StageConfig};

/// The execution settings of a stage config.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub device: String,
    pub threads: usize,
    pub measure: MeasureConfig,
    pub log_every: usize,
    pub replicas: usize,
    pub eval_batch_size: usize,
    pub cache_dir: Option<PathBuf>,
    pub max_decoded_mb: Option<u64>,
    pub output_dir: PathBuf,
}

impl Execution {
    /// The dotted config keys that hold execution settings: left out of run identity.
    pub const KEYS: [&'static str; 10] = [
        "device",
        "threads",
        "measure",
        "train.log_every",
        "train.replicas",
        "train.eval_batch_size",
        "data.cache_dir",
        "data.max_decoded_mb",
        "output.dir",
        "output.onnx",
    ];

    pub fn of(config: &StageConfig) -> Self {
        Self {
            device: config.device.clone(),
            threads: config.threads,
            measure: config.measure.clone(),
            log_every: config.train.log_every,
            replicas: config.train.replicas,
            eval_batch_size: config.train.eval_batch_size,
            cache_dir: config.data.cache_dir.clone(),
            max_decoded_mb: config.data.max_decoded_mb,
            output_dir: config.output.dir.clone(),
        }
    }

    /// Makes `config` run with these settings (a parent inheriting its child's context).
    pub fn apply_to(&self, config: &mut StageConfig) {
        config.device = self.device.clone();
        config.threads = self.threads;
        config.measure = self.measure.clone();
        config.train.log_every = self.log_every;
        config.train.replicas = self.replicas;
        config.train.eval_batch_size = self.eval_batch_size;
        config.data.cache_dir = self.cache_dir.clone();
        // Only image folders read it (a parent on other data would refuse it).
        if config.data.dataset == crate::schema::DatasetName::ImageFolder {
            config.data.max_decoded_mb = self.max_decoded_mb;
        }
        config.output.dir = self.output_dir.clone();
    }
}

/// Worker threads for `threads` (0 means one per core).
pub fn worker_threads(threads: usize) -> usize {
    match threads {
        0 => cores(),
        n => n,
    }
}

/// Cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most worker threads a setting may ask for: a few per core is the most that ever
/// helps, and an unbounded number makes the OS spend minutes creating threads.
pub fn max_threads() -> usize {
    (4 * cores()).max(8)
}

/// The memory this process may use, in bytes: the least of the machine's (`MemTotal` of
/// /proc/meminfo), its cgroup's limit (a container or a Slurm job) and its address-space limit
/// (`ulimit -v`), or 8 GiB where none can be read. The budget a model and its batches must
/// fit in.
pub fn memory_bytes() -> u64 {
    let read = |path: &str| safeio::read_text(std::path::Path::new(path)).ok();
    let total = read("/proc/meminfo").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    // cgroup v2, then v1 ("max" and v1's huge sentinel mean no limit).
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|&b| b < 1 << 60);
    let address_space = read("/proc/self/limits").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("Max address space"))?;
        line.split_whitespace().nth(3)?.parse::<u64>().ok()
    });
    [total, cgroup, address_space]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(8 << 30)
}

/// The build that compiled this binary, e.g. `"debug profile, opt-level 3"` (cargo's `dev`
/// profile is `debug`): recorded with every measurement, compared when a run is reused.
pub fn build() -> String {
    format!(
        "{} profile, opt-level {}{}",
        env!("COMPRESS_BUILD_PROFILE"),
        env!("COMPRESS_BUILD_OPT_LEVEL"),
        if cfg!(debug_assertions) {
            ", debug assertions"
        } else {
            ""
        }
    )
}
