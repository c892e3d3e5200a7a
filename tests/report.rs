//! `train report DIR`: every run of a folder in one table and two plots; broken runs are
//! skipped with a warning.

mod common;

use common::*;
use measure::tensorboard::{read_events, EventValue};

#[test]
fn reports_every_run_and_skips_broken_ones() {
    let (dir, data) = folder_with_data(64);
    let path = write(&dir.path().join("c.toml"), &small_config(&data));
    for seed in ["1", "2"] {
        let out = train(dir.path())
            .arg(&path)
            .args(["--set", &format!("seed={seed}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let broken = dir.path().join("runs/small/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("summary.json"), "{ not json").unwrap();

    let out = train(dir.path()).args(["report", "runs"]).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("warning: skipped runs/small/broken"), "{t}");
    assert!(t.contains("2 runs"), "{t}");

    let runs = dir.path().join("runs");
    let md = std::fs::read_to_string(runs.join("report.md")).unwrap();
    let rows = md.lines().filter(|l| l.starts_with("| small/")).count();
    assert_eq!(rows, 2, "{md}");
    assert!(md.contains("broken"), "{md}");
    for png in ["report-accuracy-latency.png", "report-accuracy-size.png"] {
        let bytes = std::fs::read(runs.join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{png} is not a PNG"
        );
        // IHDR: width and height, big-endian, at bytes 16..24.
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!(
            (width, height),
            (measure::plot::WIDTH, measure::plot::HEIGHT)
        );
    }
    let images: Vec<_> = read_events(&runs.join("report"))
        .unwrap()
        .into_iter()
        .filter_map(|(tag, _, v)| match v {
            EventValue::Image { width, height, .. } => Some((tag, width, height)),
            _ => None,
        })
        .collect();
    assert_eq!(images.len(), 2, "{images:?}");
    assert_eq!(images[0].1, measure::plot::WIDTH as i32);
    assert_eq!(images[0].2, measure::plot::HEIGHT as i32);
}
