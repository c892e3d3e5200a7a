//! PNG scatter plots of accuracy against a cost, one labelled point per run, the Pareto front
//! drawn as a line. Text is drawn with an embedded DejaVu Sans, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::pareto::pareto_front;
use crate::report::ReportError;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// One point: a label, the cost (x) and the accuracy (y, 0..=1).
pub struct Point {
    pub label: String,
    pub cost: f64,
    pub accuracy: f64,
}

pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 650;

/// `1234567.0` -> `1.2 MB`: tick labels for byte axes.
pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value >= 10.0 || value.fract() == 0.0 {
        format!("{value:.0} {}", units[unit])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Places labels (pixel anchors, text) so that none overlaps another: each label goes to the
/// right of its point and moves down (then up) in steps until its box is free. Returns the top
/// left corner of each label.
fn place_labels(
    anchors: &[(i32, i32)],
    texts: &[&str],
    char_width: i32,
    height: i32,
) -> Vec<(i32, i32)> {
    let mut placed: Vec<(i32, i32, i32)> = Vec::new(); // x, y, width
    let mut out = vec![(0, 0); anchors.len()];
    let mut order: Vec<usize> = (0..anchors.len()).collect();
    order.sort_by_key(|&i| (anchors[i].1, anchors[i].0));
    for i in order {
        let (ax, ay) = anchors[i];
        let width = texts[i].chars().count() as i32 * char_width;
        let free = |x: i32, y: i32| {
            placed.iter().all(|&(px, py, pw)| {
                x + width <= px || px + pw <= x || y + height <= py || py + height <= y
            })
        };
        let x = ax + 9;
        let mut y = ay - height / 2;
        for step in 0..40 {
            let dy = if step % 2 == 0 {
                step / 2
            } else {
                -(step / 2 + 1)
            } * height;
            if free(x, ay - height / 2 + dy) {
                y = ay - height / 2 + dy;
                break;
            }
        }
        placed.push((x, y, width));
        out[i] = (x, y);
    }
    out
}

/// Draws the plot to `path` (PNG). `x_label` names the cost with its unit; `x_format` writes
/// the tick labels.
pub fn accuracy_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    x_format: &dyn Fn(f64) -> String,
    points: &[Point],
    log_x: bool,
) -> Result<(), ReportError> {
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TTF"));
    });
    let err = |e: &dyn std::fmt::Display| ReportError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;

    let (mut lo, mut hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.cost), hi.max(p.cost))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.1, 1.0);
    }
    let (alo, ahi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.accuracy * 100.0), hi.max(p.accuracy * 100.0))
        });
    let (alo, ahi) = if alo.is_finite() {
        (alo, ahi)
    } else {
        (0.0, 100.0)
    };
    let pad = ((ahi - alo) * 0.15).max(0.1);
    let y_range = (alo - pad)..(ahi + pad).min(100.5);

    let mut builder = ChartBuilder::on(&root);
    let chart = builder
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(70);
    let labels: Vec<(f64, f64, &str, bool)> = {
        let front = pareto_front(
            &points
                .iter()
                .map(|p| (p.cost, p.accuracy))
                .collect::<Vec<_>>(),
        );
        points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    p.cost,
                    p.accuracy * 100.0,
                    p.label.as_str(),
                    front.contains(&i),
                )
            })
            .collect()
    };
    let mut front: Vec<(f64, f64)> = labels.iter().filter(|l| l.3).map(|l| (l.0, l.1)).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));

    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_label_formatter(&|v| x_format(*v))
                .x_desc(x_label)
                .y_desc("test accuracy (%)")
                .label_style(("sans-serif", 16))
                .axis_desc_style(("sans-serif", 19))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(LineSeries::new(front.clone(), RED.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label("Pareto front")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
            chart
                .draw_series(labels.iter().map(|&(x, y, _, on_front)| {
                    let color = if on_front { RED } else { BLUE };
                    Circle::new((x, y), 6, color.filled())
                }))
                .map_err(|e| err(&e))?;
            let anchors: Vec<(i32, i32)> = labels
                .iter()
                .map(|l| chart.backend_coord(&(l.0, l.1)))
                .collect();
            let texts: Vec<&str> = labels.iter().map(|l| l.2).collect();
            let spots = place_labels(&anchors, &texts, 8, 17);
            for ((&(ax, ay), (x, y)), text) in anchors.iter().zip(spots).zip(&texts) {
                if (y + 8 - ay).abs() > 8 {
                    // A label moved away from its point gets a leader line back to it.
                    let line = PathElement::new(vec![(ax, ay), (x - 2, y + 8)], BLACK.mix(0.35));
                    root.draw(&line).map_err(|e| err(&e))?;
                }
                root.draw(&Text::new(text.to_string(), (x, y), ("sans-serif", 14)))
                    .map_err(|e| err(&e))?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.9))
                .label_font(("sans-serif", 16))
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    if log_x {
        // Room on the right for the labels of the costliest runs.
        let range = (lo / 1.5).max(f64::MIN_POSITIVE)..(hi * 6.0);
        draw!(chart
            .build_cartesian_2d(range.log_scale(), y_range)
            .map_err(|e| err(&e))?);
    } else {
        let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
        let range = (lo - span * 0.15).max(0.0)..(hi + span * 0.25);
        draw!(chart
            .build_cartesian_2d(range, y_range)
            .map_err(|e| err(&e))?);
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(100_000.0), "100 kB");
        assert_eq!(human_bytes(1_000_000.0), "1 MB");
        assert_eq!(human_bytes(2_500_000.0), "2.5 MB");
        assert_eq!(human_bytes(512.0), "512 B");
    }

    #[test]
    fn labels_of_close_points_do_not_overlap() {
        let anchors = [(100, 100), (102, 103), (101, 98), (400, 100)];
        let texts = ["alpha", "beta", "gamma", "far away"];
        let spots = place_labels(&anchors, &texts, 8, 17);
        for i in 0..3 {
            for j in i + 1..3 {
                assert!((spots[i].1 - spots[j].1).abs() >= 17, "{spots:?}");
            }
        }
        assert_eq!(spots[3], (409, 100 - 8));
    }
}
