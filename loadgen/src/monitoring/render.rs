//! Draws the dashboard's panels from a live Prometheus into one SVG: what an operator on call
//! would see in Grafana, made without Grafana.

use std::path::Path;

use plotters::prelude::*;

use super::dashboard::{Panel, legend};
use super::prom::{PromError, Prometheus, Series};

/// Panels per line of the picture.
const COLUMNS: usize = 3;
/// Size of one panel, pixels.
const PANEL: (u32, u32) = (540, 300);
/// Series drawn per panel at most, so that legends stay readable.
const MAX_SERIES: usize = 6;

/// One panel's data, fetched.
pub struct Drawn {
    /// The panel.
    pub panel: Panel,
    /// (legend, samples) per series.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Fetches every panel's series over `[start, end]` (unix seconds).
pub async fn fetch(
    prom: &Prometheus,
    panels: &[Panel],
    start: f64,
    end: f64,
) -> Result<Vec<Drawn>, PromError> {
    let step = ((end - start) / 240.0).max(5.0).round();
    let mut drawn = Vec::new();
    for panel in panels {
        let mut series = Vec::new();
        for target in &panel.targets {
            let got: Vec<Series> = prom.range(&target.expr, start, end, step).await?;
            series.extend(got.into_iter().filter(|s| !s.samples.is_empty()).map(|s| {
                let name = match legend(&target.legend, &s.labels) {
                    l if l.trim().is_empty() => target.legend.clone(),
                    l => l,
                };
                let points = s.samples.iter().map(|(t, v)| ((t - start) / 60.0, *v));
                (name, points.collect())
            }));
        }
        series.truncate(MAX_SERIES);
        drawn.push(Drawn {
            panel: panel.clone(),
            series,
        });
    }
    Ok(drawn)
}

/// Writes the panels as an SVG grid at `path`, `minutes` wide on the time axis.
pub fn draw(path: &Path, title: &str, drawn: &[Drawn], minutes: f64) -> Result<(), String> {
    let lines = drawn.len().div_ceil(COLUMNS) as u32;
    let size = (PANEL.0 * COLUMNS as u32, PANEL.1 * lines + 40);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (header, body) = root.split_vertically(40);
    header
        .draw(&Text::new(title, (12, 10), ("sans-serif", 22)))
        .map_err(|e| e.to_string())?;
    let cells = body.split_evenly((lines as usize, COLUMNS));
    for (cell, d) in cells.iter().zip(drawn) {
        panel(cell, d, minutes).map_err(|e| format!("panel {:?}: {e}", d.panel.title))?;
    }
    root.present().map_err(|e| e.to_string())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    d: &Drawn,
    minutes: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let max_y = d
        .series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|(_, v)| *v))
        .fold(0.0f64, f64::max);
    let top = if max_y > 0.0 { max_y * 1.15 } else { 1.0 };
    let unit = match d.panel.unit.as_str() {
        "reqps" | "ops" => " (per second)",
        "s" => " (seconds)",
        _ => "",
    };
    let caption = format!("{} / {}{unit}", d.panel.row, d.panel.title);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(22)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..minutes.max(1.0), 0.0..top)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(5)
        .label_style(("sans-serif", 11))
        .draw()?;
    if d.series.is_empty() {
        area.draw(&Text::new(
            "no data",
            (PANEL.0 as i32 / 2 - 25, PANEL.1 as i32 / 2),
            ("sans-serif", 16),
        ))?;
        return Ok(());
    }
    for (i, (name, points)) in d.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 10))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()
}
