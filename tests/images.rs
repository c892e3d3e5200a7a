//! The user's own images through the real binary: image folders (PNG, JPEG, BMP; grayscale,
//! RGB, RGBA and 16-bit; two sizes) and CIFAR's binary files, each trained and reloaded from its
//! model file alone; preprocessing carried by model files; bad folders refused before any run
//! folder exists.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};

const CLASSES: [&str; 4] = ["bands_0", "bands_1", "bands_2", "bands_3"];

/// The brightness of pixel `(x, y)` of an image of class `class` (a bright horizontal band at
/// a quarter of the height per class), on a `side`-pixel image, with a little noise.
fn pixel(class: usize, side: u32, y: u32, i: u32) -> u8 {
    let band = (y * 4 / side) as usize == class;
    let noise = ((y * 31 + i * 17) % 23) as u8;
    if band {
        200 + noise
    } else {
        20 + noise
    }
}

/// Image `i` of `class`: every fourth one 16x16 (the rest 12x12), in turn grayscale PNG, RGB
/// JPEG, RGBA PNG and grayscale BMP.
fn write_image(dir: &Path, class: usize, i: u32) -> PathBuf {
    let side = if i % 4 == 3 { 16 } else { 12 };
    let gray = ImageBuffer::from_fn(side, side, |_, y| Luma([pixel(class, side, y, i)]));
    let rgb = ImageBuffer::from_fn(side, side, |_, y| {
        let v = pixel(class, side, y, i);
        Rgb([v, v / 2, 255 - v])
    });
    let (name, image) = match i % 4 {
        0 => (format!("{i}.png"), DynamicImage::ImageLuma8(gray)),
        1 => (format!("{i}.jpg"), DynamicImage::ImageRgb8(rgb)),
        2 => {
            let rgba = ImageBuffer::from_fn(side, side, |x, y| {
                let Rgb([r, g, b]) = *rgb.get_pixel(x, y);
                Rgba([r, g, b, 255])
            });
            (format!("{i}.PNG"), DynamicImage::ImageRgba8(rgba))
        }
        _ => (
            format!("{i}.bmp"),
            DynamicImage::ImageLuma8(gray).to_rgb8().into(),
        ),
    };
    let path = dir.join(name);
    let format = image::ImageFormat::from_path(path.to_string_lossy().to_lowercase()).unwrap();
    image.save_with_format(&path, format).unwrap();
    path
}

/// `root/train/<class>/*` (`train` images per class) and `root/test/<class>/*` (`test`).
fn write_folder(root: &Path, train: u32, test: u32) {
    for (split, n) in [("train", train), ("test", test)] {
        for (class, name) in CLASSES.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                write_image(&dir, class, i + if split == "test" { 1000 } else { 0 });
            }
        }
    }
}

/// [`small_config`] (an MLP, SGD) on the image folder `data` resized to 12x12, 3 epochs.
fn folder_config(name: &str, data: &Path, extra_data: &str) -> String {
    small_config(data)
        .replace("name = \"small\"", &format!("name = \"{name}\""))
        .replace(
            "dataset = \"idx\"",
            &format!("dataset = \"image-folder\"\ninput_size = 12\n{extra_data}"),
        )
        .replace("epochs = 2", "epochs = 3")
}

/// A temp folder with an image folder of `n` train and `n / 2` test images per class in
/// `images/`.
fn with_folder(n: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_folder(&images, n, n / 2);
    (dir, images)
}

/// A folder of 16 train and 8 test images per class, and a stage `folder` training on it with
/// crops and flips.
fn augmented_folder_stage() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (dir, images) = with_folder(16);
    let config = write(
        &dir.path().join("c.toml"),
        &folder_config(
            "folder",
            &images,
            "augment.hflip = true\naugment.crop_padding = 2",
        ),
    );
    (dir, images, config)
}

#[test]
fn an_image_folder_trains_and_its_model_file_alone_measures_the_same() {
    let (dir, images, config) = augmented_folder_stage();
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(
        out.contains("64 train / 32 test images of 3x12x12, 4 classes"),
        "{out}"
    );
    assert!(
        out.contains("images/s"),
        "the decode throughput is reported: {out}"
    );
    let run = only_run_dir(dir.path(), "folder");
    let s = summary(&run);
    let prep = &s["preprocessing"];
    assert_eq!(prep["channels"], 3, "{s}");
    assert_eq!(prep["class_names"], serde_json::json!(CLASSES));
    assert_eq!(prep["mean"].as_array().unwrap().len(), 3);
    assert!(s["accuracy"].as_f64().unwrap() > 0.5, "{s}");
    let recorded = format!("{:.2}%", s["accuracy"].as_f64().unwrap() * 100.0);

    // The model file alone, measured under a config whose own statistics differ (a quarter
    // of the training split): its recorded preprocessing is what it is fed.
    let other = write(
        &dir.path().join("other.toml"),
        &folder_config("other", &images, "train_limit = 16"),
    );
    let model = run.join("model.bpk");
    let bench = bench_ok(dir.path(), &model, &["--config", other.to_str().unwrap()]);
    assert_eq!(bench_accuracy(&bench), recorded, "{bench}");
    // A copy outside the run folder says the same.
    let copy = dir.path().join("copy.bpk");
    std::fs::copy(&model, &copy).unwrap();
    let bench = bench_ok(dir.path(), &copy, &["--config", other.to_str().unwrap()]);
    assert_eq!(bench_accuracy(&bench), recorded, "{bench}");
}

#[test]
fn a_streamed_folder_gives_the_numbers_of_one_held_in_memory() {
    let (dir, _, config) = augmented_folder_stage();
    train_ok(dir.path(), &config, &["--plain"]);
    let out = train_ok(
        dir.path(),
        &config,
        &[
            "--plain",
            "--set",
            "data.max_decoded_mb=0",
            "--set",
            "output.dir=streamed/runs",
        ],
    );
    assert!(out.contains("streaming from disk"), "{out}");
    let held = summary(&only_run_dir(dir.path(), "folder"));
    let streamed = summary(&only_run_dir(&dir.path().join("streamed"), "folder"));
    for key in [
        "accuracy",
        "test_loss",
        "test_errors",
        "preprocessing",
        "hash",
    ] {
        assert_eq!(held[key], streamed[key], "{key}");
    }
    assert_eq!(
        outcome_scalars(&only_run_dir(dir.path(), "folder")),
        outcome_scalars(&only_run_dir(&dir.path().join("streamed"), "folder"))
    );
}

#[test]
fn a_grayscale_folder_is_one_channel_and_channels_can_be_forced() {
    let (dir, images) = with_folder(4);
    // Only the grayscale PNGs kept: every image is grayscale.
    for entry in walk(&images) {
        if !entry.to_string_lossy().ends_with("0.png")
            && !entry.to_string_lossy().ends_with("4.png")
        {
            std::fs::remove_file(entry).unwrap();
        }
    }
    let config = write(
        &dir.path().join("c.toml"),
        &folder_config("gray", &images, ""),
    );
    let out = train(dir.path())
        .args(["check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(out.contains("images of 1x12x12"), "{out}");
    let config = write(
        &dir.path().join("c3.toml"),
        &folder_config("rgb", &images, "channels = 3"),
    );
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(out.contains("images of 3x12x12"), "{out}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// CIFAR-10's binary layout: five training batches and a test batch of `n` records each.
fn write_cifar(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let record = |i: usize| {
        let class = i % 10;
        let mut bytes = vec![class as u8];
        for c in 0..3 {
            for y in 0..32 {
                for _ in 0..32 {
                    let lit = y / 4 == class % 8 && (c == class % 3 || class >= 8);
                    bytes.push(if lit { 220 } else { ((i * 7 + y) % 40) as u8 });
                }
            }
        }
        bytes
    };
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let bytes: Vec<u8> = (0..n).flat_map(record).collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[test]
fn cifar_files_train_and_reload_from_the_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let cifar = dir.path().join("cifar-10-batches-bin");
    write_cifar(&cifar, 40);
    let config = folder_config("cifar", &cifar, "")
        .replace("dataset = \"image-folder\"", "dataset = \"cifar10\"")
        .replace("input_size = 12\n", "");
    let config = write(&dir.path().join("c.toml"), &config);
    let out = train_ok(dir.path(), &config, &["--plain"]);
    assert!(
        out.contains("200 train / 40 test images of 3x32x32, 10 classes"),
        "{out}"
    );
    let run = only_run_dir(dir.path(), "cifar");
    let s = summary(&run);
    assert_eq!(s["preprocessing"]["class_names"][0], "airplane");
    let recorded = format!("{:.2}%", s["accuracy"].as_f64().unwrap() * 100.0);
    let bench = bench_ok(
        dir.path(),
        &run.join("model.bpk"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(bench_accuracy(&bench), recorded, "{bench}");

    // Missing files: where to get them.
    std::fs::remove_file(cifar.join("test_batch.bin")).unwrap();
    let out = train(dir.path()).arg(&config).output().unwrap();
    let t = text(&out);
    assert!(!out.status.success());
    assert!(t.contains("cifar-10-binary.tar.gz"), "{t}");
}

#[test]
fn a_child_stage_reads_inputs_as_its_parent_recorded() {
    // The parent normalises with the statistics of 30 training images; the child, with no
    // limit and no override, measures the parent's model exactly as the parent's run did.
    let (dir, data) = folder_with_data(64);
    let parent = small_config(&data)
        .replace("name = \"small\"", "name = \"parent\"")
        .replace("dataset = \"idx\"", "dataset = \"idx\"\ntrain_limit = 30");
    write(&dir.path().join("parent.toml"), &parent);
    let child = small_config(&data)
        .replace(
            "name = \"small\"",
            "name = \"child\"\nfrom = \"parent.toml\"",
        )
        .replace("[model]\nkind = \"mlp\"\nhidden = [16]\n", "")
        .replace("epochs = 2", "epochs = 0");
    let child = write(&dir.path().join("child.toml"), &child);
    let out = train_ok(dir.path(), &child, &["--plain"]);
    assert!(out.contains("as the parent (from) recorded"), "{out}");
    let parent = summary(&only_run_dir(dir.path(), "parent"));
    let child = summary(&only_run_dir(dir.path(), "child"));
    assert_eq!(parent["test_errors"], child["test_errors"]);
    assert_eq!(parent["accuracy"], child["accuracy"]);
    assert_eq!(parent["test_loss"], child["test_loss"]);
    assert_eq!(parent["preprocessing"], child["preprocessing"]);
}

#[test]
fn a_teacher_at_another_size_teaches_a_student_with_its_own_inputs() {
    let (dir, images) = with_folder(8);
    let teacher =
        folder_config("teacher", &images, "").replace("input_size = 12", "input_size = 16");
    write(&dir.path().join("teacher.toml"), &teacher);
    let student = folder_config("student", &images, "augment.hflip = true")
        + "\n[distill]\nteacher = \"teacher.toml\"\ntemperature = 4.0\nalpha = 0.7\n";
    let student = write(&dir.path().join("student.toml"), &student);
    let out = train_ok(dir.path(), &student, &["--plain"]);
    assert!(
        out.contains("teacher: fed its own inputs, 3x16x16"),
        "{out}"
    );
    let recorded = summary(&only_run_dir(dir.path(), "teacher"))["accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        out.contains(&format!("teacher test accuracy {:.2}%", recorded * 100.0)),
        "{out}"
    );
}

/// Runs a stage on a small image folder after `spoil` changed it; returns whether it succeeded
/// and its output. A failure must leave no run folder behind.
fn run_spoiled(spoil: impl Fn(&Path), extra_data: &str) -> (bool, String) {
    let (dir, images) = with_folder(4);
    spoil(&images);
    let config = write(
        &dir.path().join("c.toml"),
        &folder_config("spoiled", &images, extra_data),
    );
    let out = train(dir.path())
        .arg(&config)
        .arg("--plain")
        .output()
        .unwrap();
    let t = text(&out);
    if !out.status.success() {
        let runs = dir.path().join("runs");
        let left: Vec<_> = walk(&runs).into_iter().collect();
        assert!(left.is_empty(), "a failed run left {left:?}\n{t}");
    }
    (out.status.success(), t)
}

fn fails_naming(spoil: impl Fn(&Path), extra_data: &str, needles: &[&str]) {
    let (ok, t) = run_spoiled(spoil, extra_data);
    assert!(!ok, "should fail: {t}");
    for needle in needles {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
    assert!(!t.contains("panicked"), "{t}");
}

/// The standard CRC-32 of PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG of a few dozen bytes whose header claims `side x side` pixels.
fn png_claiming(side: u32) -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend(side.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IEND", &[]);
    out
}

#[test]
fn a_corrupt_or_truncated_image_is_named() {
    // Its header is whole, its pixels are not: found when decoding.
    fails_naming(
        |root| {
            let path = root.join("train/bands_1/0.png");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        },
        "",
        &["bands_1/0.png", "cannot decode"],
    );
    // Cut inside its header: found when listing.
    fails_naming(
        |root| {
            let path = root.join("train/bands_1/1.jpg");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        },
        "",
        &["bands_1/1.jpg", "not a readable PNG, JPEG or BMP"],
    );
    fails_naming(
        |root| std::fs::write(root.join("test/bands_2/zz.png"), b"not a png at all").unwrap(),
        "",
        &["bands_2/zz.png", "not a readable PNG, JPEG or BMP"],
    );
}

#[test]
fn non_image_files_are_skipped_with_a_note() {
    let (ok, t) = run_spoiled(
        |root| {
            std::fs::write(root.join("train/bands_0/notes.txt"), "hello").unwrap();
            std::fs::write(root.join("train/.DS_Store"), "x").unwrap();
            // A macOS resource fork: named like an image, not one.
            std::fs::write(root.join("train/bands_1/._0.png"), "fork").unwrap();
        },
        "",
    );
    assert!(ok, "{t}");
    assert!(t.contains("skipped 3 entries"), "{t}");
}

#[test]
fn empty_and_mismatched_class_folders_are_refused() {
    fails_naming(
        |root| std::fs::create_dir(root.join("train/bands_9")).unwrap(),
        "",
        &["bands_9", "holds no images"],
    );
    fails_naming(
        |root| std::fs::remove_dir_all(root.join("test/bands_3")).unwrap(),
        "",
        &["different classes", "only in train/: [\"bands_3\"]"],
    );
    // A class in the test split that training never saw.
    fails_naming(
        |root| {
            let dir = root.join("test/bands_x");
            std::fs::create_dir(&dir).unwrap();
            write_image(&dir, 0, 0);
        },
        "",
        &["different classes", "only in test/: [\"bands_x\"]"],
    );
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    fails_naming(
        |root| std::fs::write(root.join("train/bands_0/bomb.png"), png_claiming(100_000)).unwrap(),
        "",
        &["bomb.png"],
    );
}

#[test]
fn sixteen_bit_pngs_are_read_as_eight_bit() {
    let (ok, t) = run_spoiled(
        |root| {
            let deep =
                ImageBuffer::from_fn(12, 12, |_, y| Luma([if y < 3 { 60_000u16 } else { 900 }]));
            DynamicImage::ImageLuma16(deep)
                .save(root.join("train/bands_0/deep.png"))
                .unwrap();
        },
        "",
    );
    assert!(ok, "{t}");
}

#[test]
fn unreadable_files_and_symlink_loops_are_named_not_followed() {
    fails_naming(
        |root| {
            std::os::unix::fs::symlink("/nonexistent/x.png", root.join("train/bands_0/gone.png"))
                .unwrap()
        },
        "",
        &["gone.png", "cannot read"],
    );
    fails_naming(
        |root| {
            let link = root.join("train/bands_0/self.png");
            std::os::unix::fs::symlink(&link, &link).unwrap();
        },
        "",
        &["self.png", "cannot read"],
    );
    // A class folder that links back to its split: one level is walked, never more.
    fails_naming(
        |root| std::os::unix::fs::symlink(root.join("train"), root.join("train/loop")).unwrap(),
        "",
        &["loop", "holds no images"],
    );
}

#[test]
fn many_empty_files_fail_fast_naming_one() {
    let start = std::time::Instant::now();
    fails_naming(
        |root| {
            for i in 0..20_000 {
                std::fs::write(root.join(format!("train/bands_0/e{i:05}.png")), b"").unwrap();
            }
        },
        "",
        &["an empty file, not an image"],
    );
    // Not a timing assertion on the tool: a bound on a walk that must not read the files.
    assert!(start.elapsed().as_secs() < 120);
}

#[test]
fn images_of_different_sizes_need_an_input_size() {
    let (dir, images) = with_folder(4);
    let config = folder_config("sizes", &images, "").replace("input_size = 12\n", "");
    let config = write(&dir.path().join("c.toml"), &config);
    let out = train(dir.path()).arg(&config).output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("data.input_size"), "{t}");
    assert!(t.contains("different sizes"), "{t}");
    assert!(!dir.path().join("runs").exists(), "{t}");
}

#[test]
fn bad_data_settings_name_the_key() {
    let (dir, images) = with_folder(4);
    for (extra, needles) in [
        (
            "channels = 2",
            &["data.channels = 2", "1 (grayscale) or 3 (RGB)"][..],
        ),
        (
            "augment.crop_padding = 2\naugment.shift_pixels = 1",
            &["data.augment.crop_padding", "keep one"][..],
        ),
    ] {
        let config = write(
            &dir.path().join("c.toml"),
            &folder_config("bad", &images, extra),
        );
        let out = train(dir.path()).arg(&config).output().unwrap();
        let t = text(&out);
        assert!(!out.status.success(), "{t}");
        for needle in needles {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
    }
    // A path-less image folder.
    let config = folder_config("bad", &images, "")
        .replace(&format!("path = \"{}\"\n", images.display()), "");
    let config = write(&dir.path().join("c.toml"), &config);
    let out = train(dir.path()).arg(&config).output().unwrap();
    assert!(text(&out).contains("needs data.path"), "{}", text(&out));
}

#[test]
fn a_killed_run_on_augmented_images_resumes_to_the_same_result() {
    // Crops and flips draw from the epoch's seeded stream: a resumed run sees the same images.
    let (_dir, images) = with_folder(64);
    let config = folder_config(
        "resumed",
        &images,
        "augment.hflip = true\naugment.crop_padding = 2",
    )
    .replace("log_every = 4", "log_every = 1");
    kill_and_resume_matches(&config, "resumed", 2);
}

#[test]
fn a_resnet_pytorch_saved_starts_a_stage_and_teaches_with_no_key_map() {
    // ResNet-20 as PyTorch wrote it (crates/models/fixtures/make_fixtures.py: torchvision's
    // BasicBlock and key names), on CIFAR-layout files.
    let dir = tempfile::tempdir().unwrap();
    let cifar = dir.path().join("cifar");
    write_cifar(&cifar, 20);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/resnet20.pt");
    let resnet20 = "kind = \"resnet\"\nstem = 16\nstages = [16, 32, 64]\nblocks = 3";
    let base = folder_config("r20", &cifar, "")
        .replace("dataset = \"image-folder\"", "dataset = \"cifar10\"")
        .replace("input_size = 12\n", "");
    // `from` the file: its architecture is the stage's [model].
    let start = base
        .replace(
            "name = \"r20\"",
            &format!("name = \"r20\"\nfrom = \"{}\"", fixture.display()),
        )
        .replace("kind = \"mlp\"\nhidden = [16]", resnet20)
        .replace("epochs = 3", "epochs = 0");
    let start = write(&dir.path().join("start.toml"), &start);
    let out = train_ok(dir.path(), &start, &["--plain"]);
    assert!(out.contains("recorded no input preprocessing"), "{out}");
    let s = summary(&only_run_dir(dir.path(), "r20"));
    // PyTorch's 272,474 parameters and the 2 x 784 BatchNorm running statistics (buffers in
    // PyTorch), which this tool counts.
    assert_eq!(s["params"], 272_474 + 2 * 784);
    // The same file as a teacher.
    let student = base.replace("name = \"r20\"", "name = \"student\"")
        + &format!(
            "\n[distill]\nteacher = \"{}\"\ntemperature = 4.0\nalpha = 0.5\n\
             [distill.teacher_model]\n{resnet20}\n",
            fixture.display()
        );
    let student = write(&dir.path().join("student.toml"), &student);
    let out = train_ok(dir.path(), &student, &["--plain"]);
    assert!(out.contains("teacher: loaded"), "{out}");
}

#[test]
fn a_model_read_on_data_with_other_class_names_says_so() {
    let (dir, images) = with_folder(4);
    let config = write(
        &dir.path().join("c.toml"),
        &folder_config("named", &images, ""),
    );
    train_ok(dir.path(), &config, &["--plain"]);
    let model = only_run_dir(dir.path(), "named").join("model.bpk");
    // The same images with one class renamed: it now sorts first.
    for split in ["train", "test"] {
        let split = images.join(split);
        std::fs::rename(split.join("bands_3"), split.join("a_band")).unwrap();
    }
    let out = bench_ok(dir.path(), &model, &["--config", config.to_str().unwrap()]);
    assert!(
        out.contains("learned the classes [bands_0, bands_1, bands_2, bands_3], this data has [a_band, bands_0"),
        "{out}"
    );
}
