//! The image-folder loader's decode throughput: images per second read from a folder of
//! image files (header pass, then decoding into the dataset's bytes), at 1 thread and at one
//! thread per core, in interleaved rounds, medians. Compare with training's samples/s to see
//! whether streaming (`data.max_decoded_mb`), which decodes each batch on the loader thread,
//! keeps up.
//!
//! ```text
//! cargo test -p data --bench decode                          # a synthetic folder of JPEGs
//! cargo test -p data --bench decode -- target/fashion-rgb-jpeg
//! ```
//! (With no folder it writes 2,000 32x32 RGB JPEGs in 10 classes to a temporary folder.)

use std::path::{Path, PathBuf};
use std::time::Instant;

use data::folder::{self, FolderOptions};

const ROUNDS: usize = 3;

fn synthetic(dir: &Path) {
    for split in ["train", "test"] {
        for class in 0..10u8 {
            let d = dir.join(split).join(format!("class{class}"));
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..100u32 {
                let image = image::RgbImage::from_fn(32, 32, |x, y| {
                    image::Rgb([(x * 8) as u8, (y * 8) as u8, class * 25 + (i % 7) as u8])
                });
                image.save(d.join(format!("{i}.jpg"))).unwrap();
            }
        }
    }
}

/// Images per second for one load of `options` in a pool of `threads`.
fn round(options: &FolderOptions, threads: usize) -> (f64, usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let start = Instant::now();
        let ds = folder::load(options).unwrap();
        let n = ds.train.len() + ds.test.len();
        (n as f64 / start.elapsed().as_secs_f64(), n)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let given = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let temp = tempfile::tempdir().unwrap();
    let path = match given {
        Some(p) => PathBuf::from(p),
        None => {
            synthetic(temp.path());
            temp.path().to_path_buf()
        }
    };
    let options = FolderOptions {
        path: path.clone(),
        channels: None,
        size: None,
        memory_bound: u64::MAX,
        limits: [None, None],
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rates = [Vec::new(), Vec::new()];
    let mut images = 0;
    for _ in 0..ROUNDS {
        for (k, threads) in [1, cores].into_iter().enumerate() {
            let (rate, n) = round(&options, threads);
            rates[k].push(rate);
            images = n;
        }
    }
    println!(
        "{} ({images} images), {ROUNDS} rounds, medians:",
        path.display()
    );
    for (k, threads) in [1, cores].into_iter().enumerate() {
        println!(
            "  {threads} thread(s): {:>8.0} images/s",
            median(rates[k].clone())
        );
    }
}
