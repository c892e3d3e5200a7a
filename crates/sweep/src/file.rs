//! The sweep file: a base stage config, a grid and/or a list of trials, and a launcher.
//!
//! ```toml
//! name = "sweep-prune"
//! base = "prune.toml"              # relative to this file
//! [grid]                           # every combination, keys in sorted order
//! "prune.macs_ratio" = [0.3, 0.5, 0.7]
//! seed = [1, 2]
//! [[trials]]                       # and/or explicit trials
//! "prune.macs_ratio" = 0.9
//! [launcher]
//! kind = "local"                   # or "slurm"
//! parallel = 2
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use settings::LoadedConfig;

/// At most this many trials in one sweep (each is a process and a run folder).
pub const MAX_TRIALS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LauncherKind {
    Local,
    Slurm,
}

/// `[launcher]`: how trials run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LauncherConfig {
    pub kind: LauncherKind,
    /// Local: trials at a time (their threads split the machine's cores).
    #[serde(default = "one")]
    pub parallel: usize,
    /// Slurm: `--partition`.
    #[serde(default)]
    pub partition: Option<String>,
    /// Slurm: GPUs per trial (`--gres=gpu:N`).
    #[serde(default)]
    pub gpus: usize,
    /// Slurm: `--cpus-per-task` (each trial's threads).
    #[serde(default = "one")]
    pub cpus: usize,
    /// Slurm: `--mem`, e.g. `"8G"`.
    #[serde(default)]
    pub mem: Option<String>,
    /// Slurm: `--time`, e.g. `"01:00:00"`.
    #[serde(default)]
    pub time: Option<String>,
    /// Slurm: `--account`.
    #[serde(default)]
    pub account: Option<String>,
    /// Slurm: at most this many array tasks at once (`--array=...%N`); 0: no limit.
    #[serde(default)]
    pub throttle: usize,
    /// Slurm: extra `#SBATCH` options, e.g. `["--qos=normal"]`.
    #[serde(default)]
    pub extra: Vec<String>,
}

fn one() -> usize {
    1
}

impl Default for LauncherConfig {
    fn default() -> Self {
        Self {
            kind: LauncherKind::Local,
            parallel: 1,
            partition: None,
            gpus: 0,
            cpus: 1,
            mem: None,
            time: None,
            account: None,
            throttle: 0,
            extra: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    name: String,
    base: PathBuf,
    /// The sweep folder; default `runs/sweeps/<name>`.
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    grid: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    trials: Vec<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    launcher: LauncherConfig,
}

/// One trial: the swept keys' values, applied to the base config as overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub index: usize,
    pub values: Vec<(String, toml::Value)>,
}

impl Trial {
    /// `key=value,key=value`: the trial's name in tables and TensorBoard.
    pub fn label(&self) -> String {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={}", raw(v)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The overrides that make the base config this trial (`key=value`, as `--set` takes).
    pub fn overrides(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={}", raw(v)))
            .collect()
    }
}

/// A value as `--set` reads it and a person writes it: strings bare, floats in their
/// shortest form (`1e30`, not thirty zeros; still a TOML float), the rest as TOML writes them.
pub fn raw(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) if f.is_finite() => {
            let text = measure::hparams::human_number(*f);
            if text.contains(['.', 'e']) {
                text
            } else {
                text + ".0"
            }
        }
        other => other.to_string(),
    }
}

/// A parsed sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub name: String,
    /// The sweep file.
    pub path: PathBuf,
    pub base: PathBuf,
    pub dir: PathBuf,
    /// The swept keys, in column order.
    pub keys: Vec<String>,
    pub trials: Vec<Trial>,
    pub launcher: LauncherConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: trial {index} ({label}): {source}", path.display())]
    Trial {
        path: PathBuf,
        index: usize,
        label: String,
        #[source]
        source: Box<settings::ConfigError>,
    },
    #[error(transparent)]
    Run(#[from] Box<runner::RunError>),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.about("sweep file"))]
    Read(safeio::ReadError),
    #[error("{0}")]
    Slurm(String),
    #[error("writing the results: {0}")]
    Results(String),
    #[error("{failed} of {total} trials failed (see {})", results.display())]
    TrialsFailed {
        failed: usize,
        total: usize,
        results: PathBuf,
    },
}

pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SweepError {
    let what = what.into();
    move |source| SweepError::Io { what, source }
}

/// A sweep's name names its folder.
fn check_name(name: &str) -> Result<(), String> {
    let valid_name = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid_name {
        return Err(format!(
            "name = {:?}: a folder name: letters, digits, '-', '_' or '.', not starting \
                 with '.'",
            name
        ));
    }
    Ok(())
}

/// The grid and the listed trials; returns how many trials the grid makes.
fn check_grid(file: &SweepFile) -> Result<usize, String> {
    for (key, values) in &file.grid {
        if values.is_empty() {
            return Err(format!("grid.{key:?} = []: give at least one value"));
        }
        if let Some(twice) = values
            .iter()
            .enumerate()
            .find(|(i, v)| values[..*i].contains(v))
            .map(|(_, v)| v)
        {
            return Err(format!(
                "grid.{key:?} lists {twice} twice: each value makes its own trials, and \
                     a repeated one would run the same trials again"
            ));
        }
    }
    let combinations = file
        .grid
        .values()
        .try_fold(1usize, |n, v| n.checked_mul(v.len()))
        .filter(|&n| n <= MAX_TRIALS);
    let grid_trials = match (file.grid.is_empty(), combinations) {
        (true, _) => 0,
        (false, Some(n)) => n,
        (false, None) => return Err(format!("the grid has more than {MAX_TRIALS} combinations")),
    };
    if grid_trials + file.trials.len() == 0 {
        return Err(String::from(
            "no trials: give a [grid] of KEY = [values] and/or [[trials]] of KEY = value",
        ));
    }
    if grid_trials + file.trials.len() > MAX_TRIALS {
        return Err(format!("more than {MAX_TRIALS} trials"));
    }
    for (i, trial) in file.trials.iter().enumerate() {
        if trial.is_empty() {
            return Err(format!("trials[{i}] is empty: give the keys it sets"));
        }
    }
    Ok(grid_trials)
}

/// The launcher's settings, bounded: they size thread pools and go into `#SBATCH` lines.
fn check_launcher(l: &LauncherConfig) -> Result<(), String> {
    let bounds = [
        ("launcher.parallel", l.parallel, 1, 256),
        ("launcher.cpus", l.cpus, 1, 4096),
        ("launcher.gpus", l.gpus, 0, 64),
        ("launcher.throttle", l.throttle, 0, MAX_TRIALS),
    ];
    for (key, value, lo, hi) in bounds {
        if !(lo..=hi).contains(&value) {
            return Err(format!("{key} = {value}: must be in {lo}..={hi}"));
        }
    }
    let words = [
        ("launcher.partition", &l.partition),
        ("launcher.mem", &l.mem),
        ("launcher.time", &l.time),
        ("launcher.account", &l.account),
    ];
    for (key, value) in words {
        if let Some(v) = value {
            // Written into an `#SBATCH` line: one word, at most a line's worth.
            if v.is_empty() || v.len() > 256 || v.chars().any(|c| c.is_whitespace()) {
                return Err(format!(
                    "{key} = {v:?}: one word without spaces, e.g. \"gpu\" or \"8G\""
                ));
            }
        }
    }
    for option in &l.extra {
        if !option.starts_with("--") || option.contains('\n') {
            return Err(format!(
                "launcher.extra: {option:?} is not one sbatch option like \"--qos=normal\""
            ));
        }
    }
    Ok(())
}

/// Every trial's `(key, value)` list: the grid's combinations (the last key varying
/// fastest), then the listed trials.
fn expand(file: &SweepFile, grid_trials: usize) -> Vec<Vec<(String, toml::Value)>> {
    let mut trials = Vec::new();
    let keys: Vec<&String> = file.grid.keys().collect();
    for n in 0..grid_trials {
        let mut rest = n;
        let mut values = Vec::new();
        // The last key varies fastest.
        for key in keys.iter().rev() {
            let options = &file.grid[*key];
            values.push(((*key).clone(), options[rest % options.len()].clone()));
            rest /= options.len();
        }
        values.reverse();
        trials.push(values);
    }
    trials.extend(
        file.trials
            .iter()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
    );
    trials
}

fn file_error(path: &Path, message: impl Into<String>) -> SweepError {
    SweepError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Sweep {
    /// Reads and checks a sweep file (not yet its trials' configs: see [`Sweep::load_trials`]).
    pub fn read(path: &Path) -> Result<Self, SweepError> {
        let text = safeio::read_text(path).map_err(SweepError::Read)?;
        let file: SweepFile = toml::from_str(&text).map_err(|e| file_error(path, e.to_string()))?;
        let checked = check_name(&file.name)
            .and_then(|()| check_grid(&file))
            .and_then(|grid_trials| check_launcher(&file.launcher).map(|()| grid_trials));
        let grid_trials = checked.map_err(|message| file_error(path, message))?;
        let trials = expand(&file, grid_trials);
        let mut columns: Vec<String> = Vec::new();
        for values in &trials {
            for (k, _) in values {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        Ok(Self {
            dir: file
                .dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs/sweeps").join(&file.name)),
            name: file.name,
            path: path.to_path_buf(),
            base: settings::parents::resolve_path(&file.base, path),
            keys: columns,
            trials: trials
                .into_iter()
                .enumerate()
                .map(|(index, values)| Trial { index, values })
                .collect(),
            launcher: file.launcher,
        })
    }

    /// Every trial's stage config, validated (with its parents resolved): the first bad one
    /// is an error naming the trial. A trial on a CUDA device submitted to Slurm without a GPU
    /// (`launcher.gpus = 0`) is refused too: it could only fail on the node.
    pub fn load_trials(
        &self,
        env: &HashMap<String, String>,
    ) -> Result<Vec<LoadedConfig>, SweepError> {
        let loaded = self
            .trials
            .iter()
            .map(|t| self.load_trial(t, env))
            .collect::<Result<Vec<_>, _>>()?;
        // Two trials that resolve to one run would share a run folder and a result.
        for (i, a) in loaded.iter().enumerate() {
            if let Some(j) = loaded[..i]
                .iter()
                .position(|b| b.run_path() == a.run_path())
            {
                return Err(file_error(
                    &self.path,
                    format!(
                        "trials {j} ({}) and {i} ({}) are the same run ({}): remove one of them",
                        self.trials[j].label(),
                        self.trials[i].label(),
                        a.run_path().display()
                    ),
                ));
            }
        }
        if self.launcher.kind == LauncherKind::Slurm && self.launcher.gpus == 0 {
            let on_gpu = self.trials.iter().zip(&loaded).find(|(_, l)| {
                settings::device::Backend::parse(&l.config.device)
                    .is_ok_and(|b| matches!(b, settings::device::Backend::Cuda(_)))
            });
            if let Some((trial, l)) = on_gpu {
                return Err(file_error(
                    &self.path,
                    format!(
                        "trial {} ({}) trains on device {:?}, but launcher.gpus is 0: set \
                         launcher.gpus = 1 (one GPU per trial) or use device \"cpu\"",
                        trial.index,
                        trial.label(),
                        l.config.device
                    ),
                ));
            }
        }
        Ok(loaded)
    }

    pub fn load_trial(
        &self,
        trial: &Trial,
        env: &HashMap<String, String>,
    ) -> Result<LoadedConfig, SweepError> {
        settings::load(&self.base, &trial.overrides(), env).map_err(|source| SweepError::Trial {
            path: self.path.clone(),
            index: trial.index,
            label: trial.label(),
            source: Box::new(source),
        })
    }

    pub fn trial(&self, index: usize) -> Result<&Trial, SweepError> {
        self.trials.get(index).ok_or_else(|| {
            file_error(
                &self.path,
                format!(
                    "no trial {index}: the sweep has {} (0..{})",
                    self.trials.len(),
                    self.trials.len()
                ),
            )
        })
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn log_file(&self, index: usize) -> PathBuf {
        self.logs_dir().join(format!("{index}.log"))
    }

    pub fn status_file(&self, index: usize) -> PathBuf {
        self.dir.join("trials").join(format!("{index}.json"))
    }

    /// `env` with the output folder the sweep's trials run in: recorded in the sweep folder
    /// (`output.json`, [`Sweep::record_output`]) the first time it runs, and used by every
    /// later command on it (status, wait, run-trial, the Slurm tasks), so they find the
    /// trials' runs where they are whatever the shell they run in sets. A different
    /// `COMPRESS_OUTPUT__DIR` now is named in a note, not followed.
    pub fn settle_env(
        &self,
        env: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>, SweepError> {
        let path = self.dir.join(OUTPUT_RECORD);
        let mut env = env.clone();
        if path.exists() {
            let text = safeio::read_text(&path).map_err(SweepError::Read)?;
            let recorded: OutputRecord = serde_json::from_str(&text)
                .map_err(|e| file_error(&path, format!("unreadable ({e}); delete it")))?;
            let now = env.remove(OUTPUT_DIR_VAR);
            if now != recorded.output_dir {
                safeio::errln!(
                    "note: this sweep's trials run with {OUTPUT_DIR_VAR}={} (recorded in {} when it \
                     started), not {}",
                    recorded.output_dir.as_deref().unwrap_or("(unset)"),
                    path.display(),
                    now.as_deref().unwrap_or("(unset)")
                );
            }
            if let Some(dir) = recorded.output_dir {
                env.insert(OUTPUT_DIR_VAR.into(), dir);
            }
        }
        Ok(env)
    }

    /// Records the output folder of `env` (see [`Sweep::settle_env`]) unless one is recorded.
    /// Relative folders are kept as given: trials run in the sweep's working directory.
    pub fn record_output(&self, env: &HashMap<String, String>) -> Result<(), SweepError> {
        let path = self.dir.join(OUTPUT_RECORD);
        if path.exists() {
            return Ok(());
        }
        let record = OutputRecord {
            output_dir: env.get(OUTPUT_DIR_VAR).cloned(),
        };
        std::fs::create_dir_all(&self.dir).map_err(io(self.dir.display().to_string()))?;
        let text = serde_json::to_string_pretty(&record).unwrap_or_default();
        std::fs::write(&path, text).map_err(io(path.display().to_string()))
    }
}

/// Where a sweep's trials keep their runs (`output.json` in the sweep folder).
const OUTPUT_RECORD: &str = "output.json";

/// The environment override of `output.dir` that the record keeps.
const OUTPUT_DIR_VAR: &str = "COMPRESS_OUTPUT__DIR";

#[derive(Debug, Serialize, Deserialize)]
struct OutputRecord {
    /// `COMPRESS_OUTPUT__DIR` when the sweep started (`None`: each trial's config decides).
    output_dir: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(text: &str) -> Result<Sweep, SweepError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, text).unwrap();
        Sweep::read(&path)
    }

    #[test]
    fn a_grid_expands_to_every_combination_last_key_fastest_then_the_listed_trials() {
        let s = sweep(
            "name = \"s\"\nbase = \"b.toml\"\n[grid]\n\"prune.ratio\" = [0.3, 0.5]\nseed = [1, 2, 3]\n\
             [[trials]]\n\"prune.ratio\" = 0.9\n",
        )
        .unwrap();
        let labels: Vec<String> = s.trials.iter().map(Trial::label).collect();
        assert_eq!(
            labels,
            [
                "prune.ratio=0.3,seed=1",
                "prune.ratio=0.3,seed=2",
                "prune.ratio=0.3,seed=3",
                "prune.ratio=0.5,seed=1",
                "prune.ratio=0.5,seed=2",
                "prune.ratio=0.5,seed=3",
                "prune.ratio=0.9",
            ]
        );
        assert_eq!(s.keys, ["prune.ratio", "seed"]);
        assert_eq!(s.trials[6].overrides(), ["prune.ratio=0.9"]);
    }

    #[test]
    fn empty_or_oversized_sweeps_and_bad_launchers_are_refused() {
        for (text, expected) in [
            ("name = \"s\"\nbase = \"b.toml\"\n", "no trials"),
            ("name = \"s\"\nbase = \"b.toml\"\n[grid]\nseed = []\n", "at least one value"),
            (
                "name = \"s\"\nbase = \"b.toml\"\n[grid]\na = [1,2,3,4,5,6,7,8,9,10]\nb = [1,2,3,4,5,6,7,8,9,10]\nc = [1,2,3,4,5,6,7,8,9,10]\nd = [1,2,3,4,5,6,7,8,9,10]\ne = [1, 2]\n",
                "more than 10000",
            ),
            (
                "name = \"s\"\nbase = \"b.toml\"\n[grid]\nseed = [1]\n[launcher]\nkind = \"local\"\nparallel = 0\n",
                "launcher.parallel = 0",
            ),
            (
                "name = \"s\"\nbase = \"b.toml\"\n[grid]\nseed = [1]\n[launcher]\nkind = \"pbs\"\n",
                "unknown variant `pbs`",
            ),
            ("name = \"a/b\"\nbase = \"b.toml\"\n[grid]\nseed = [1]\n", "a folder name"),
            (
                "name = \"s\"\nbase = \"b.toml\"\n[grid]\nseed = [1]\n[launcher]\nkind = \"slurm\"\npartition = \"gpu\\n#SBATCH --x\"\n",
                "launcher.partition",
            ),
        ] {
            let message = sweep(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
