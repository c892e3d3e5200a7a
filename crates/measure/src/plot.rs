//! PNG scatter plots of accuracy against a cost, one labelled point per run, the Pareto front
//! drawn as a line. Text is drawn with an embedded DejaVu Sans, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::pareto::pareto_front;

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

/// Draws the plot to `path` (PNG). `x_label` names the cost with its unit.
pub fn accuracy_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    points: &[Point],
    log_x: bool,
) -> Result<(), String> {
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TTF"));
    });
    let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
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
                .draw_series(labels.iter().map(|&(x, y, label, on_front)| {
                    let color = if on_front { RED } else { BLUE };
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 6, color.filled())
                        + Text::new(label.to_string(), (9, -18), ("sans-serif", 15))
                }))
                .map_err(|e| err(&e))?;
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
        let range = (lo / 1.5).max(f64::MIN_POSITIVE)..(hi * 3.0);
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
