//! The report chart: throughput over time, and the latency percentile distribution.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;
use crate::stats::{PercentilePoint, percentile_axis, percentile_label};

/// Decades the percentile axis shows at least: 0% to 99.999%.
const MIN_DECADES: u32 = 5;

/// Draws `chart.svg`: acknowledgements per second in 100 ms buckets on top, the ack and
/// end-to-end latency percentile distributions (HdrHistogram style) below.
pub fn draw(path: &Path, s: &Summary) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(380);
    draw_throughput(&top, s)?;
    draw_percentiles(&bottom, s)?;
    root.present().map_err(|e| e.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Acknowledgements per second over the run, with the offered rate as a line.
fn draw_throughput(area: &Area<'_>, s: &Summary) -> Result<(), String> {
    // Per 100 ms: bursts and stalls a per-second average would smooth away stay visible.
    let rate: Vec<(f64, f64)> = s
        .per_100ms
        .iter()
        .map(|(t, n)| (*t, *n as f64 * 10.0))
        .collect();
    let max_t = rate.last().map_or(1.0, |(t, _)| t + 0.1);
    let max_n = rate.iter().map(|(_, n)| *n).fold(1.0, f64::max) * 1.1;
    let caption = match s.offered_per_sec {
        Some(r) => format!("Throughput (acks/s in 100 ms buckets; {r:.0} msg/s offered)"),
        None => "Throughput (acks/s in 100 ms buckets)".to_owned(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_n)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("msg/s")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(rate, BLUE.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    if let Some(r) = s.offered_per_sec {
        chart
            .draw_series(LineSeries::new(
                [(0.0, r), (max_t, r)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The ack and end-to-end latency at each percentile, the tail spread out by decades.
fn draw_percentiles(area: &Area<'_>, s: &Summary) -> Result<(), String> {
    let curves = [(&s.ack_percentiles, BLUE), (&s.e2e_percentiles, RED)];
    let axis = |p: &PercentilePoint| percentile_axis(p.quantile);
    let needed = curves
        .iter()
        .flat_map(|(c, _)| c.iter().map(axis))
        .fold(0.0, f64::max)
        .ceil() as u32;
    let decades = needed.max(MIN_DECADES);
    let max_ms = curves
        .iter()
        .flat_map(|(c, _)| c.iter().map(|p| p.ms))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Latency by percentile (ms): ack (blue), end to end (red); {}",
                if s.offered_per_sec.is_some() {
                    "from intended send"
                } else {
                    "from send"
                }
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..decades as f64, 0.0..max_ms)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(decades as usize + 1)
        .x_label_formatter(&|x| {
            // Only whole decades carry a label; plotters may place ticks in between.
            let d = x.round();
            if (x - d).abs() < 1e-6 && d >= 0.0 {
                percentile_label(d as u32)
            } else {
                String::new()
            }
        })
        .x_desc("percentile")
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    for (curve, color) in curves {
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|p| (axis(p), p.ms)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
