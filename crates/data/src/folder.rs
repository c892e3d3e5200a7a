//! A folder of image files in torchvision's `ImageFolder` layout: `train/<class>/<image>` and
//! `test/<class>/<image>` (or `val/` for the second split), PNG, JPEG or BMP.
//!
//! Reading is two passes. The first lists the files and reads only each image's header (its
//! format, size and colour type), so every bound is checked before a pixel is allocated: a
//! decompression bomb (a tiny PNG claiming 100000x100000 pixels), a million empty files. The
//! second decodes every image on all cores into one `u8` buffer per split, converted to the
//! dataset's channel count and size. A folder whose decoded pixels are over the memory bound
//! (`data.max_decoded_mb`, default a quarter of the machine's memory) is streamed instead: the
//! second pass decodes every image once to check it and keeps nothing, and training decodes
//! each batch's images from their files on the loader thread that prefetches batches. The
//! bytes are the same either way, so a run gives the same numbers streamed or not.
//!
//! Choices, documented for users in the README:
//! - class names are the class folders' names, sorted; train and test must have the same set;
//! - files whose extension is not `.png`, `.jpg`, `.jpeg` or `.bmp` (any case), hidden files
//!   (`.DS_Store`, macOS's `._photo.png`), and folders inside a class folder are skipped with a
//!   note (torchvision skips the first silently); a file with an image extension that does not
//!   decode is an error naming it;
//! - grayscale, RGB, RGBA and 16-bit images may be mixed: each is converted to the dataset's
//!   channels (RGB unless every image is grayscale; alpha dropped; 16 bits scaled to 8);
//! - images of different sizes need `data.input_size`; with it every image is resized to
//!   `input_size x input_size` as it is decoded (a triangle filter: bilinear, antialiased
//!   when shrinking, like torchvision's `Resize` with `antialias=True`).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use rayon::prelude::*;

use crate::preprocessing::{MAX_CLASSES, MAX_SIDE};
use crate::{DataError, Dataset, Split};

/// Extensions read as images (compared without case).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// The most image files a folder may hold over both splits (ImageNet's training set is 1.28
/// million): bounds the walk's time and the memory its file list takes.
pub const MAX_FILES: usize = 5_000_000;

/// The most entries (files, folders, anything) the walk looks at over both splits.
const MAX_ENTRIES: usize = 2 * MAX_FILES;

/// The longest side an image file may claim (checked from its header, before decoding).
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// The largest image file read.
const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// How to read an image folder: where it is and what the dataset's images become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderOptions {
    pub path: PathBuf,
    /// 1 or 3; `None`: 3 unless every image is grayscale.
    pub channels: Option<usize>,
    /// Every image is resized to `size x size` as it is decoded; required when sizes differ.
    pub size: Option<usize>,
    /// The most bytes the decoded pixels of both splits may take in memory; a larger folder is
    /// streamed from disk.
    pub memory_bound: u64,
    /// Only the first N images of each split (`data.train_limit`, `data.test_limit`), classes
    /// taking turns: the rest are listed and their headers checked, but not decoded.
    pub limits: [Option<usize>; 2],
}

/// One image file and its class.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    label: u16,
}

/// What the header pass found: enough to size the model and every buffer.
#[derive(Debug, Clone)]
pub struct Scan {
    pub class_names: Vec<String>,
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    pub train_len: usize,
    pub test_len: usize,
    /// The second split's folder name (`test` or `val`).
    pub test_dir: String,
    pub notes: Vec<String>,
    train: Vec<Entry>,
    test: Vec<Entry>,
}

impl Scan {
    /// Bytes the decoded pixels of both splits take.
    pub fn decoded_bytes(&self) -> u64 {
        (self.train_len + self.test_len) as u64 * (self.channels * self.rows * self.cols) as u64
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::corrupt(path, reason)
}

/// Lists a folder's entries, sorted by name, counting them against `budget`.
fn sorted_entries(dir: &Path, budget: &mut usize) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir))? {
        let entry = entry.map_err(DataError::io(dir))?;
        *budget = budget.checked_sub(1).ok_or_else(|| {
            corrupt(
                dir,
                format!(
                    "more than {MAX_ENTRIES} entries under the split folders: an image folder \
                     holds at most {MAX_FILES} images"
                ),
            )
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

fn is_image_name(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The classes of one split folder: each class folder's name and its image files, sorted.
type Classes = Vec<(String, Vec<PathBuf>)>;

/// Walks `split/<class>/<file>`: one level of class folders, one of files, nothing deeper
/// (so a symlink loop cannot make the walk endless).
fn walk_split(
    split: &Path,
    budget: &mut usize,
    skipped: &mut Vec<PathBuf>,
) -> Result<Classes, DataError> {
    let mut classes = Vec::new();
    for (name, path) in sorted_entries(split, budget)? {
        // Hidden entries (`.DS_Store`, macOS's `._photo.png` resource forks) are not data.
        if name.starts_with('.') {
            skipped.push(path);
            continue;
        }
        let meta = std::fs::metadata(&path)
            .map_err(|e| corrupt(&path, format!("cannot read it ({e})")))?;
        if !meta.is_dir() {
            skipped.push(path);
            continue;
        }
        let mut files = Vec::new();
        for (file_name, file) in sorted_entries(&path, budget)? {
            if is_image_name(&file_name) && !file_name.starts_with('.') {
                files.push(file);
            } else {
                skipped.push(file);
            }
        }
        if files.is_empty() {
            return Err(corrupt(
                &path,
                format!(
                    "class folder {name:?} holds no images (.png, .jpg, .jpeg or .bmp): \
                     remove it or add its images"
                ),
            ));
        }
        classes.push((name, files));
    }
    if classes.is_empty() {
        return Err(corrupt(
            split,
            "no class folders: expected <split>/<class>/<image> (torchvision's ImageFolder layout)",
        ));
    }
    Ok(classes)
}

/// The header of one image: its size and whether it is grayscale, bounded before decoding.
fn read_header(path: &Path) -> Result<((u32, u32), bool), DataError> {
    let decoder = open(path)?
        .into_decoder()
        .map_err(|e| corrupt(path, format!("not a readable PNG, JPEG or BMP image ({e})")))?;
    let (w, h) = decoder.dimensions();
    let gray = !decoder.color_type().has_color();
    Ok(((w, h), gray))
}

/// An image reader for `path` with the format guessed from its bytes and the size bounds set.
fn open(path: &Path) -> Result<ImageReader<BufReader<std::fs::File>>, DataError> {
    // A FIFO or device named like an image would block or never end; a huge file is refused.
    let meta =
        std::fs::metadata(path).map_err(|e| corrupt(path, format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(corrupt(path, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(corrupt(path, "an empty file, not an image"));
    }
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(corrupt(
            path,
            format!("larger than {MAX_IMAGE_FILE_BYTES} bytes, the most an image file may hold"),
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| corrupt(path, format!("cannot read it ({e})")))?;
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| corrupt(path, format!("cannot read it ({e})")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    Ok(reader)
}

/// Lists the folder and reads every image's header: the checks that need no pixels.
pub fn scan(options: &FolderOptions) -> Result<Scan, DataError> {
    let root = &options.path;
    if !root.is_dir() {
        return Err(corrupt(
            root,
            "not a folder: data.path must be a folder holding train/<class>/<image> and \
             test/<class>/<image> (or val/)",
        ));
    }
    let mut notes = Vec::new();
    let train_dir = root.join("train");
    let test_dir = match (root.join("test").is_dir(), root.join("val").is_dir()) {
        (true, true) => {
            notes.push("both test/ and val/ exist: test/ is the test split".to_string());
            "test"
        }
        (true, false) => "test",
        (false, true) => "val",
        (false, false) => return Err(corrupt(
            root,
            "no test/ (or val/) folder: expected train/<class>/<image> and test/<class>/<image>",
        )),
    };
    if !train_dir.is_dir() {
        return Err(corrupt(
            root,
            "no train/ folder: expected train/<class>/<image> and test/<class>/<image>",
        ));
    }
    let mut budget = MAX_ENTRIES;
    let mut skipped = Vec::new();
    let train = walk_split(&train_dir, &mut budget, &mut skipped)?;
    let test = walk_split(&root.join(test_dir), &mut budget, &mut skipped)?;
    let class_names = check_classes(root, test_dir, &train, &test)?;
    if !skipped.is_empty() {
        notes.push(format!(
            "skipped {} entries that are not images (.png, .jpg, .jpeg, .bmp) or not in a class \
             folder, e.g. {}",
            skipped.len(),
            skipped[0].display()
        ));
    }
    let (train, test) = (interleaved(train), interleaved(test));
    if train.len() + test.len() > MAX_FILES {
        return Err(corrupt(
            root,
            format!(
                "{} images: an image folder holds at most {MAX_FILES}",
                train.len() + test.len()
            ),
        ));
    }
    // Every header is read (cheap), so the shape and the checks do not depend on the limits;
    // only the kept images are decoded.
    let (channels, rows, cols) = shape_of(options, &train, &test)?;
    let [train_limit, test_limit] = options.limits;
    let keep = |mut entries: Vec<Entry>, limit: Option<usize>| {
        entries.truncate(limit.unwrap_or(usize::MAX));
        entries
    };
    let (train, test) = (keep(train, train_limit), keep(test, test_limit));
    let scan = Scan {
        class_names,
        channels,
        rows,
        cols,
        train_len: train.len(),
        test_len: test.len(),
        test_dir: test_dir.to_string(),
        notes,
        train,
        test,
    };
    Ok(scan)
}

/// The samples of a split, classes taken in turn (the first image of every class, then the
/// second, ...; a class that runs out drops out), so that the first N samples
/// (`data.train_limit`, `data.test_limit`) cover every class in proportion instead of the
/// first classes alone. Within a class, files keep their sorted order.
fn interleaved(classes: Classes) -> Vec<Entry> {
    let total: usize = classes.iter().map(|(_, files)| files.len()).sum();
    let mut iters: Vec<_> = classes
        .into_iter()
        .map(|(_, files)| files.into_iter())
        .collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for (label, files) in iters.iter_mut().enumerate() {
            if let Some(path) = files.next() {
                out.push(Entry {
                    path,
                    label: label as u16,
                });
            }
        }
    }
    out
}

/// The class names: the same sorted folder names in both splits.
fn check_classes(
    root: &Path,
    test_dir: &str,
    train: &Classes,
    test: &Classes,
) -> Result<Vec<String>, DataError> {
    let names = |c: &Classes| c.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let (train_names, test_names) = (names(train), names(test));
    if train_names.len() > MAX_CLASSES {
        return Err(corrupt(
            root,
            format!("{} class folders: at most {MAX_CLASSES}", train_names.len()),
        ));
    }
    if train_names != test_names {
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|n| !b.contains(n))
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
        };
        return Err(corrupt(
            root,
            format!(
                "train/ and {test_dir}/ have different classes (only in train/: {:?}; only in \
                 {test_dir}/: {:?}): both splits need the same class folders",
                only(&train_names, &test_names),
                only(&test_names, &train_names)
            ),
        ));
    }
    Ok(train_names)
}

/// The stored image shape: channels from the option or the headers, size from the option or
/// the (equal) sizes of every image.
fn shape_of(
    options: &FolderOptions,
    train: &[Entry],
    test: &[Entry],
) -> Result<(usize, usize, usize), DataError> {
    let headers: Vec<((u32, u32), bool)> = train
        .par_iter()
        .chain(test.par_iter())
        .map(|e| read_header(&e.path))
        .collect::<Result<_, _>>()?;
    let channels = options
        .channels
        .unwrap_or(if headers.iter().all(|(_, gray)| *gray) {
            1
        } else {
            3
        });
    let (rows, cols) = match options.size {
        Some(size) => (size, size),
        None => {
            let all = train.iter().chain(test);
            let first = headers[0].0;
            if let Some((entry, (dims, _))) = all.zip(&headers).find(|(_, (d, _))| *d != first) {
                return Err(corrupt(
                    &options.path,
                    format!(
                        "images have different sizes ({} is {}x{}, {} is {}x{}): set \
                         data.input_size to resize them all",
                        train[0].path.display(),
                        first.0,
                        first.1,
                        entry.path.display(),
                        dims.0,
                        dims.1
                    ),
                ));
            }
            (first.1 as usize, first.0 as usize)
        }
    };
    if rows > MAX_SIDE || cols > MAX_SIDE {
        return Err(corrupt(
            &train[0].path,
            format!("{cols}x{rows} images: set data.input_size (at most {MAX_SIDE})"),
        ));
    }
    Ok((channels, rows, cols))
}

/// Decodes one image into `out` (`channels x rows x cols` bytes, channel planes in order).
fn decode_into(
    path: &Path,
    (channels, rows, cols): (usize, usize, usize),
    out: &mut [u8],
) -> Result<(), DataError> {
    let image = open(path)?
        .decode()
        .map_err(|e| corrupt(path, format!("cannot decode it ({e})")))?;
    let (w, h) = (cols as u32, rows as u32);
    let resized = |image: DynamicImage| {
        if (image.width(), image.height()) == (w, h) {
            image
        } else {
            image.resize_exact(w, h, image::imageops::FilterType::Triangle)
        }
    };
    if channels == 1 {
        out.copy_from_slice(resized(DynamicImage::ImageLuma8(image.to_luma8())).as_bytes());
    } else {
        let rgb = resized(DynamicImage::ImageRgb8(image.to_rgb8()));
        let plane = rows * cols;
        for (i, pixel) in rgb.as_bytes().chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = pixel[c];
            }
        }
    }
    Ok(())
}

/// A split's image files and how they decode: what a streamed split reads its images from,
/// and what the latency harness decodes as a deployment would.
#[derive(Debug)]
pub struct Stream {
    paths: Vec<PathBuf>,
    shape: (usize, usize, usize),
    /// The first image that failed to decode after the folder was checked (its file changed or
    /// went away during the run): it read as zeros, and the run stops at its next check.
    failure: Mutex<Option<String>>,
}

impl Stream {
    fn of(entries: &[Entry], shape: (usize, usize, usize)) -> Arc<Self> {
        Arc::new(Stream {
            paths: entries.iter().map(|e| e.path.clone()).collect(),
            shape,
            failure: Mutex::new(None),
        })
    }

    /// The bytes of image `i`, decoded from its file.
    pub fn decode(&self, i: usize) -> Vec<u8> {
        let (c, h, w) = self.shape;
        let mut out = vec![0u8; c * h * w];
        if let Err(e) = decode_into(&self.paths[i], self.shape, &mut out) {
            let message = match e {
                DataError::Corrupt { path, reason } => format!("{}: {reason}", path.display()),
                other => other.to_string(),
            };
            let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
            failure.get_or_insert(message);
        }
        out
    }

    /// See [`Stream::failure`]'s field.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One split streamed from its files, after every image was decoded once (on all cores, nothing
/// kept) so that a corrupt file is found now, not in the middle of training.
fn stream_split(entries: &[Entry], shape: (usize, usize, usize)) -> Result<Split, DataError> {
    let len = shape.0 * shape.1 * shape.2;
    entries.par_iter().try_for_each_init(
        || vec![0u8; len],
        |buffer, entry| decode_into(&entry.path, shape, buffer),
    )?;
    Ok(Split {
        channels: shape.0,
        rows: shape.1,
        cols: shape.2,
        pixels: Vec::new(),
        labels: entries.iter().map(|e| e.label).collect(),
        files: Some(Stream::of(entries, shape)),
    })
}

/// Decodes one split's images on all cores.
fn decode_split(entries: &[Entry], shape: (usize, usize, usize)) -> Result<Split, DataError> {
    let len = shape.0 * shape.1 * shape.2;
    let mut pixels = vec![0u8; entries.len() * len];
    pixels
        .par_chunks_mut(len)
        .zip(entries.par_iter())
        .try_for_each(|(out, entry)| decode_into(&entry.path, shape, out))?;
    Ok(Split {
        channels: shape.0,
        rows: shape.1,
        cols: shape.2,
        pixels,
        labels: entries.iter().map(|e| e.label).collect(),
        files: Some(Stream::of(entries, shape)),
    })
}

/// Reads an image folder whole.
pub fn load(options: &FolderOptions) -> Result<Dataset, DataError> {
    let scan = scan(options)?;
    let shape = (scan.channels, scan.rows, scan.cols);
    let streamed = scan.decoded_bytes() > options.memory_bound;
    let read = if streamed { stream_split } else { decode_split };
    let start = Instant::now();
    let train = read(&scan.train, shape)?;
    let test = read(&scan.test, shape)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut notes = scan.notes.clone();
    let images = scan.train_len + scan.test_len;
    notes.push(format!(
        "decoded {} train and {} {} images ({}x{}x{}) in {seconds:.1} s: {:.0} images/s on {} \
         threads",
        scan.train_len,
        scan.test_len,
        scan.test_dir,
        shape.0,
        shape.1,
        shape.2,
        images as f64 / seconds.max(1e-9),
        rayon::current_num_threads()
    ));
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    if streamed {
        notes.push(format!(
            "streaming from disk: the decoded images would take {:.0} MiB, over the bound of \
             {:.0} MiB (data.max_decoded_mb); each batch is decoded on the loader thread",
            mib(scan.decoded_bytes()),
            mib(options.memory_bound)
        ));
    }
    let files = [&scan.train, &scan.test]
        .iter()
        .flat_map(|e| e.iter().map(|e| e.path.clone()))
        .collect();
    Ok(Dataset {
        name: "image-folder".into(),
        train,
        test,
        classes: scan.class_names.len(),
        class_names: scan.class_names,
        notes,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// Two classes, three images each per split: grayscale PNGs and one RGB JPEG per class.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for split in ["train", "val"] {
            for (class, name) in ["cat", "dog"].iter().enumerate() {
                let d = dir.path().join(split).join(name);
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..2u8 {
                    GrayImage::from_pixel(4, 4, Luma([40 * i + 100 * class as u8]))
                        .save(d.join(format!("{i}.png")))
                        .unwrap();
                }
                RgbImage::from_pixel(4, 4, Rgb([200, 10, 10]))
                    .save(d.join("c.jpg"))
                    .unwrap();
            }
        }
        dir
    }

    fn options(dir: &Path, bound: u64) -> FolderOptions {
        FolderOptions {
            path: dir.to_path_buf(),
            channels: None,
            size: None,
            memory_bound: bound,
            limits: [None, None],
        }
    }

    #[test]
    fn a_folder_reads_in_class_order_as_planes() {
        let dir = folder();
        let ds = load(&options(dir.path(), 1 << 20)).unwrap();
        assert_eq!(ds.class_names, ["cat", "dog"]);
        // Classes in turn: the first N samples cover every class.
        assert_eq!(ds.train.labels, [0, 1, 0, 1, 0, 1]);
        assert_eq!((ds.train.channels, ds.train.rows), (3, 4));
        // A grayscale image becomes three equal planes; the JPEG's red plane is bright.
        let gray = ds.train.image(2);
        assert!(gray.iter().all(|&p| p == 40), "{gray:?}");
        let red = ds.train.image(4);
        assert!(red[..16].iter().all(|&p| p > 180) && red[16..].iter().all(|&p| p < 60));
        assert!(ds.notes.iter().any(|n| n.contains("images/s")));
    }

    #[test]
    fn limits_keep_the_first_images_of_every_class_and_decode_no_other() {
        let dir = folder();
        let limited = FolderOptions {
            limits: [Some(3), Some(2)],
            ..options(dir.path(), 1 << 20)
        };
        let ds = load(&limited).unwrap();
        assert_eq!(ds.train.labels, [0, 1, 0]);
        assert_eq!(ds.test.labels, [0, 1]);
        // The shape is the whole folder's (its JPEGs make it RGB), whatever the limits keep.
        assert_eq!(ds.train.channels, 3);
        let images = |o: &FolderOptions| scan(o).unwrap().decoded_bytes() / (3 * 4 * 4);
        assert_eq!(images(&limited), 5);
        assert_eq!(images(&options(dir.path(), 1 << 20)), 12);
    }

    #[test]
    fn a_streamed_folder_reads_the_same_bytes_and_reports_a_file_that_went_away() {
        let dir = folder();
        let held = load(&options(dir.path(), 1 << 20)).unwrap();
        let streamed = load(&options(dir.path(), 0)).unwrap();
        assert!(streamed.train.is_streamed() && !held.train.is_streamed());
        for i in 0..held.train.len() {
            assert_eq!(held.train.image(i), streamed.train.image(i));
        }
        assert_eq!(held.channel_stats(), streamed.channel_stats());
        assert!(streamed.train.stream_failure().is_ok());
        std::fs::remove_file(dir.path().join("train/dog/0.png")).unwrap();
        assert!(streamed.train.image(1).iter().all(|&p| p == 0));
        let err = streamed.train.stream_failure().unwrap_err().to_string();
        assert!(
            err.contains("dog/0.png") && err.contains("changed while"),
            "{err}"
        );
    }
}
