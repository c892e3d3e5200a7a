//! PNG scatter plots of accuracy against a cost, one labelled point per run, the Pareto front
//! drawn as a line. Text is drawn with an embedded DejaVu Sans, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::pareto::pareto_front;

/// A plot that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("drawing {}: {message}", path.display())]
pub struct PlotError {
    pub path: std::path::PathBuf,
    pub message: String,
}

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// One point: a label, the cost (x) and the accuracy (y, 0..=1).
pub struct Point {
    pub label: String,
    pub cost: f64,
    pub accuracy: f64,
}

/// Registers the embedded font as `sans-serif`, once per process.
fn register_font() {
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TTF"));
    });
}

pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 650;

/// Decimals needed to tell ticks `step` apart: 0 for steps of 1 or more, 1 for 0.1, ...
fn decimals_for(step: f64) -> usize {
    if step >= 1.0 || step <= 0.0 || !step.is_finite() {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

/// A tick label for `value` on an axis whose ticks are `step` apart: as many decimals as
/// the step needs, never floating-point noise (`0.30000000000000004`).
pub fn plain_number(value: f64, step: f64) -> String {
    format!("{value:.*}", decimals_for(step * 1.0001).min(9))
}

/// `1234567.0` -> `1.2 MB`: tick labels for byte axes, with the precision ticks `step` apart
/// need (`1.21 MB`, `1.22 MB` on a narrow axis).
pub fn human_bytes(bytes: f64, step: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut scale = 1.0;
    let mut unit = 0;
    while bytes >= scale * 1000.0 && unit + 1 < units.len() {
        scale *= 1000.0;
        unit += 1;
    }
    let value = bytes / scale;
    let decimals = decimals_for(step / scale * 1.0001).min(3);
    let decimals = if decimals == 0 && value < 10.0 && value.fract() > 0.05 {
        1
    } else {
        decimals
    };
    format!("{value:.decimals$} {}", units[unit])
}

/// About `target` round tick values (steps of 1, 2 or 5 times a power of ten) inside
/// `[lo, hi]`, and their step.
pub fn linear_ticks(lo: f64, hi: f64, target: usize) -> (Vec<f64>, f64) {
    let span = (hi - lo).abs().max(hi.abs() * 1e-6).max(1e-12);
    let raw = span / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let ticks = (first..=last).map(|i| i as f64 * step).collect();
    (ticks, step)
}

/// Ticks for a log axis over `[lo, hi]` (both > 0): 1, 2 and 5 times each power of ten when
/// the range spans decades (thinned to powers of ten when that gives too many), round linear
/// steps when it spans less than one. Returns `(value, step)` pairs, the step being what a
/// label needs to tell the tick from its neighbours.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, f64)> {
    if hi / lo < 2.0 {
        let (ticks, step) = linear_ticks(lo, hi, 5);
        return ticks.into_iter().map(|t| (t, step)).collect();
    }
    // Round values spread evenly in log space, as fine as keeps the count readable, so the
    // cheap end of the axis gets ticks too.
    let mantissas: [&[f64]; 3] = [&[1.0, 1.5, 2.0, 3.0, 5.0, 7.0], &[1.0, 2.0, 5.0], &[1.0]];
    let within = |ms: &[f64]| -> Vec<f64> {
        let mut ticks = Vec::new();
        for exp in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
            for m in ms {
                let v = m * 10f64.powi(exp);
                if v >= lo && v <= hi {
                    ticks.push(v);
                }
            }
        }
        ticks
    };
    let ticks = mantissas
        .iter()
        .map(|ms| within(ms))
        .find(|t| t.len() <= 9)
        .unwrap_or_else(|| within(&[1.0]));
    // Each label with the precision of its own round value (`1 MB`, `1.5 MB`, `0.07`).
    ticks.into_iter().map(|t| (t, resolution(t))).collect()
}

/// The largest power of ten that `value` is a whole multiple of: `1.5e6` -> `1e5`.
fn resolution(value: f64) -> f64 {
    let top = value.abs().log10().ceil() as i32;
    (top - 15..=top)
        .rev()
        .map(|k| 10f64.powi(k))
        .find(|unit| {
            let n = value / unit;
            (n - n.round()).abs() < 1e-6 * n.abs().max(1.0)
        })
        .unwrap_or(value)
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
/// a tick label from its value and the step between ticks. The axes fit the data: a first
/// set of runs within one decade gets round linear ticks where the points are, a sweep over
/// decades gets 1-2-5 ticks per decade.
pub fn accuracy_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    x_format: &dyn Fn(f64, f64) -> String,
    points: &[Point],
    log_x: bool,
) -> Result<(), PlotError> {
    register_font();
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;

    let ((lo, hi), y_range) = ranges(points);

    let mut builder = ChartBuilder::on(&root);
    let chart = builder
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .margin_right(150)
        .x_label_area_size(55)
        .y_label_area_size(70);
    let marks = AccuracyMarks::new(points, x_label, x_format);

    if log_x {
        let (lo, hi) = (lo.max(f64::MIN_POSITIVE), hi.max(f64::MIN_POSITIVE));
        // Narrow ranges get a margin proportional to the spread, wide ones a fixed factor;
        // the right margin of the chart leaves room for the labels of the costliest runs.
        let factor = (hi / lo).powf(0.08).clamp(1.02, 1.3);
        let (lo, hi) = if hi / lo < 1.05 {
            (lo / 1.05, hi * 1.05)
        } else {
            (lo / factor, hi * factor)
        };
        let x_ticks = log_ticks(lo, hi);
        let y_range = y_range.clone();
        let chart = chart
            .build_cartesian_2d((lo..hi).log_scale(), y_range.clone())
            .map_err(|e| err(&e))?;
        draw_accuracy(&root, chart, &x_ticks, &y_range, &marks, &err)?;
    } else {
        let span = (hi - lo).max(hi.abs() * 0.1).max(1e-9);
        let range = (lo - span * 0.1).max(0.0)..(hi + span * 0.1);
        let (ticks, step) = linear_ticks(range.start, range.end, 6);
        let x_ticks: Vec<(f64, f64)> = ticks.into_iter().map(|t| (t, step)).collect();
        let y_range = y_range.clone();
        let chart = chart
            .build_cartesian_2d(range, y_range.clone())
            .map_err(|e| err(&e))?;
        draw_accuracy(&root, chart, &x_ticks, &y_range, &marks, &err)?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// What an accuracy plot draws once its axes are built: each run's point `(cost, accuracy
/// in %, label, on the Pareto front)`, the front as a line, and how the x axis is labelled.
struct AccuracyMarks<'p> {
    labels: Vec<(f64, f64, &'p str, bool)>,
    front: Vec<(f64, f64)>,
    x_label: &'p str,
    x_format: &'p dyn Fn(f64, f64) -> String,
}

/// The costs' range `(lo, hi)` (0.1..1 when there are none) and the accuracy axis in %,
/// padded around the points and capped just above 100.
fn ranges(points: &[Point]) -> ((f64, f64), std::ops::Range<f64>) {
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
    ((lo, hi), y_range)
}

impl<'p> AccuracyMarks<'p> {
    /// Each point with its label and whether it is on the Pareto front, and the front.
    fn new(
        points: &'p [Point],
        x_label: &'p str,
        x_format: &'p dyn Fn(f64, f64) -> String,
    ) -> Self {
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
        let mut front: Vec<(f64, f64)> =
            labels.iter().filter(|l| l.3).map(|l| (l.0, l.1)).collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        AccuracyMarks {
            labels,
            front,
            x_label,
            x_format,
        }
    }
}

/// Draws the mesh, our x ticks, the front, the points with their labels and the legend on
/// `chart`, whose x axis is linear or logarithmic (`X`).
fn draw_accuracy<'a, X>(
    root: &DrawingArea<BitMapBackend<'a>, Shift>,
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, RangedCoordf64>>,
    x_ticks: &[(f64, f64)],
    y_range: &std::ops::Range<f64>,
    marks: &AccuracyMarks,
    err: &dyn Fn(&dyn std::fmt::Display) -> PlotError,
) -> Result<(), PlotError>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (x_label, x_format) = (marks.x_label, marks.x_format);
    let (labels, front) = (&marks.labels, &marks.front);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        // plotters still labels a log axis' key points: blank them, ours follow.
        .x_label_formatter(&|_| String::new())
        .x_desc(x_label)
        .y_desc("test accuracy (%)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 19))
        .draw()
        .map_err(|e| err(&e))?;
    // Our own x ticks: plotters' log-axis labels run together on narrow ranges.
    for &(t, step) in x_ticks {
        let top = chart.backend_coord(&(t, y_range.end));
        let (x, y) = chart.backend_coord(&(t, y_range.start));
        root.draw(&PathElement::new(vec![top, (x, y)], BLACK.mix(0.12)))
            .map_err(|e| err(&e))?;
        root.draw(&PathElement::new(vec![(x, y), (x, y + 5)], BLACK))
            .map_err(|e| err(&e))?;
        let label = x_format(t, step);
        let half = label.chars().count() as i32 * 4;
        root.draw(&Text::new(label, (x - half, y + 8), ("sans-serif", 16)))
            .map_err(|e| err(&e))?;
    }
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
    Ok(())
}

/// One curve of a [`line_plot`]: a name for the legend and its `(x, y)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Draws curves of y against x to `path` (PNG), one colour per series with a legend: e.g.
/// accuracy against pruning ratio, one curve per layer.
pub fn line_plot(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
) -> Result<(), PlotError> {
    register_font();
    let err = |e: &dyn std::fmt::Display| PlotError {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let all = series.iter().flat_map(|s| &s.points);
    let (x_lo, x_hi, y_lo, y_hi) = all.fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let (x_lo, x_hi) = if x_lo.is_finite() {
        (x_lo, x_hi.max(x_lo + 1e-9))
    } else {
        (0.0, 1.0)
    };
    let (y_lo, y_hi) = if y_lo.is_finite() {
        (y_lo, y_hi.max(y_lo + 1e-9))
    } else {
        (0.0, 1.0)
    };
    let pad = (y_hi - y_lo) * 0.05;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(x_lo..x_hi, (y_lo - pad)..(y_hi + pad))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 19))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(100_000.0, 100_000.0), "100 kB");
        assert_eq!(human_bytes(1_000_000.0, 1_000_000.0), "1 MB");
        assert_eq!(human_bytes(2_500_000.0, 1_000_000.0), "2.5 MB");
        assert_eq!(human_bytes(512.0, 100.0), "512 B");
        // Narrow axes keep neighbouring ticks apart.
        assert_eq!(human_bytes(1_210_000.0, 10_000.0), "1.21 MB");
        assert_eq!(human_bytes(1_220_000.0, 10_000.0), "1.22 MB");
    }

    /// Tick labels of an axis: distinct, short, inside the range, a handful of them.
    fn assert_readable(lo: f64, hi: f64, format: &dyn Fn(f64, f64) -> String) {
        let ticks = log_ticks(lo, hi);
        assert!(
            (2..=12).contains(&ticks.len()),
            "{lo}..{hi}: {} ticks",
            ticks.len()
        );
        let labels: Vec<String> = ticks.iter().map(|&(t, s)| format(t, s)).collect();
        for (i, label) in labels.iter().enumerate() {
            assert!(label.len() <= 9, "{label}");
            assert!(
                !labels[..i].contains(label),
                "repeated {label} in {labels:?}"
            );
        }
        let inside = |t: f64| t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9);
        assert!(ticks.iter().all(|&(t, _)| inside(t)), "{ticks:?}");
    }

    #[test]
    fn axes_read_well_on_narrow_and_wide_ranges() {
        // A first set of runs: latencies within 20%, sizes within one decade.
        assert_readable(0.028, 0.036, &plain_number);
        assert_readable(0.3, 0.9, &plain_number);
        assert_readable(600_000.0, 1_000_000.0, &human_bytes);
        assert_readable(24_000.0, 26_000.0, &human_bytes);
        // Sweeps over decades.
        assert_readable(0.02, 3.0, &plain_number);
        assert_readable(5_000.0, 250_000_000.0, &human_bytes);
        assert_eq!(plain_number(0.30000000000000004, 0.1), "0.3");
        let labels = |lo, hi, f: &dyn Fn(f64, f64) -> String| -> Vec<String> {
            log_ticks(lo, hi)
                .into_iter()
                .map(|(t, s)| f(t, s))
                .collect()
        };
        assert_eq!(
            labels(5_000.0, 20_000_000.0, &human_bytes),
            ["10 kB", "100 kB", "1 MB", "10 MB"]
        );
        assert!(labels(60_000.0, 300_000.0, &human_bytes).contains(&"150 kB".to_string()));
        assert!(labels(0.06, 0.25, &plain_number).contains(&"0.07".to_string()));
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
