//! CIFAR-10 and CIFAR-100 in their official binary form (Krizhevsky 2009,
//! <https://www.cs.toronto.edu/~kriz/cifar.html>, "binary version").
//!
//! Each record is its label byte(s) then 3072 pixel bytes: the 1024 red values of the 32x32
//! image row by row, then the green, then the blue: channel planes, as a model reads them, so
//! the bytes are stored as they are. CIFAR-10's records have one label byte; CIFAR-100's two
//! (the coarse label, then the fine label, which is the one used).
//!
//! Files: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin` (CIFAR-10's archive,
//! `cifar-10-batches-bin/`), or `train.bin` and `test.bin` (CIFAR-100's, `cifar-100-binary/`).
//! The class names come from `batches.meta.txt` / `fine_label_names.txt` when present.

use std::path::{Path, PathBuf};

use crate::{DataError, Dataset, Split};

const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cifar10,
    Cifar100,
}

impl Kind {
    pub fn classes(self) -> usize {
        match self {
            Kind::Cifar10 => 10,
            Kind::Cifar100 => 100,
        }
    }

    /// Label bytes before each image.
    fn label_bytes(self) -> usize {
        match self {
            Kind::Cifar10 => 1,
            Kind::Cifar100 => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Cifar10 => "cifar10",
            Kind::Cifar100 => "cifar100",
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            Kind::Cifar10 => "batches.meta.txt",
            Kind::Cifar100 => "fine_label_names.txt",
        }
    }

    /// Where users get the files (not on the package registries this tool fetches from).
    pub fn url(self) -> &'static str {
        match self {
            Kind::Cifar10 => "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            Kind::Cifar100 => "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        }
    }
}

const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The train and test files of `dir`: either layout, checked to exist.
pub fn files(dir: &Path, kind: Kind) -> Result<(Vec<PathBuf>, PathBuf), DataError> {
    let batches: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    let missing = || DataError::MissingFile {
        path: dir.to_path_buf(),
        file: "train.bin".into(),
        expected: format!(
            "{}'s binary files: data_batch_1.bin .. data_batch_5.bin and test_batch.bin, or \
             train.bin and test.bin. It is not on a package registry: download {} and point \
             data.path at the folder it unpacks to",
            kind.name(),
            kind.url()
        ),
    };
    if batches[0].is_file() {
        if let Some(absent) = batches.iter().find(|p| !p.is_file()) {
            return Err(DataError::corrupt(
                absent,
                "missing: data_batch_1.bin .. data_batch_5.bin are all needed",
            ));
        }
        let test = dir.join("test_batch.bin");
        if !test.is_file() {
            return Err(missing());
        }
        return Ok((batches, test));
    }
    let (train, test) = (dir.join("train.bin"), dir.join("test.bin"));
    if train.is_file() && test.is_file() {
        return Ok((vec![train], test));
    }
    Err(missing())
}

/// Reads records from `files` into one split.
fn read_split(files: &[PathBuf], kind: Kind) -> Result<Split, DataError> {
    let record = kind.label_bytes() + IMAGE_BYTES;
    let mut split = Split {
        channels: 3,
        rows: SIDE,
        cols: SIDE,
        pixels: Vec::new(),
        labels: Vec::new(),
        files: None,
    };
    for path in files {
        let bytes = DataError::read(path)?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(DataError::corrupt(
                path,
                format!(
                    "{} bytes is not a whole number of {}-byte {} records (truncated, or the \
                     other CIFAR's file?)",
                    bytes.len(),
                    record,
                    kind.name()
                ),
            ));
        }
        for (n, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[kind.label_bytes() - 1] as usize;
            if label >= kind.classes() {
                return Err(DataError::corrupt(
                    path,
                    format!(
                        "record {n} has label {label}; {} has {} classes (the other CIFAR's \
                         file?)",
                        kind.name(),
                        kind.classes()
                    ),
                ));
            }
            split.labels.push(label as u16);
            split.pixels.extend_from_slice(&rec[kind.label_bytes()..]);
        }
    }
    Ok(split)
}

/// The class names from the archive's names file, or CIFAR-10's known names / numbers.
fn class_names(dir: &Path, kind: Kind) -> Vec<String> {
    let from_file = safeio::read_text(&dir.join(kind.names_file()))
        .ok()
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|names| names.len() == kind.classes());
    from_file.unwrap_or_else(|| match kind {
        Kind::Cifar10 => CIFAR10_CLASSES.iter().map(|c| c.to_string()).collect(),
        Kind::Cifar100 => crate::numbered_classes(100),
    })
}

/// Reads CIFAR-10 or CIFAR-100 from the folder its binary archive unpacks to.
pub fn load(dir: &Path, kind: Kind) -> Result<Dataset, DataError> {
    let (train_files, test_file) = files(dir, kind)?;
    let train = read_split(&train_files, kind)?;
    let test = read_split(std::slice::from_ref(&test_file), kind)?;
    let mut files = train_files;
    files.push(test_file);
    Ok(Dataset {
        name: kind.name().into(),
        train,
        test,
        classes: kind.classes(),
        class_names: class_names(dir, kind),
        notes: Vec::new(),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, labels: &[u8], label_bytes: usize) {
        let mut bytes = Vec::new();
        for (i, &l) in labels.iter().enumerate() {
            bytes.extend(std::iter::repeat_n(l / 5, label_bytes - 1));
            bytes.push(l);
            bytes.extend((0..IMAGE_BYTES).map(|p| ((p + i) % 251) as u8));
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_both_layouts_and_planes_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        for i in 1..=5 {
            write(&dir.path().join(format!("data_batch_{i}.bin")), &[i, 9], 1);
        }
        write(&dir.path().join("test_batch.bin"), &[3], 1);
        let ds = load(dir.path(), Kind::Cifar10).unwrap();
        assert_eq!((ds.train.len(), ds.test.len(), ds.classes), (10, 1, 10));
        assert_eq!(ds.train.labels[..2], [1, 9]);
        assert_eq!(ds.class_names[3], "cat");
        assert_eq!(ds.train.image(1)[..2], [1, 2]);

        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("train.bin"), &[42, 99], 2);
        write(&dir.path().join("test.bin"), &[7], 2);
        let ds = load(dir.path(), Kind::Cifar100).unwrap();
        assert_eq!(ds.train.labels, [42, 99]);
    }

    #[test]
    fn truncated_and_missing_files_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path(), Kind::Cifar10).unwrap_err().to_string();
        assert!(err.contains("cifar-10-binary.tar.gz"), "{err}");
        write(&dir.path().join("train.bin"), &[1], 1);
        write(&dir.path().join("test.bin"), &[1], 1);
        std::fs::write(dir.path().join("test.bin"), [1u8; 100]).unwrap();
        let err = load(dir.path(), Kind::Cifar10).unwrap_err().to_string();
        assert!(err.contains("not a whole number"), "{err}");
        // CIFAR-100's two label bytes read as CIFAR-10's: labels out of range.
        write(&dir.path().join("test.bin"), &[1], 1);
        let mut record = vec![77u8];
        record.extend(vec![0u8; IMAGE_BYTES]);
        std::fs::write(dir.path().join("train.bin"), record).unwrap();
        let err = load(dir.path(), Kind::Cifar10).unwrap_err().to_string();
        assert!(err.contains("label 77"), "{err}");
    }
}
