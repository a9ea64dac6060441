//! The report chart: throughput over time, and latency percentiles.

use std::path::Path;

use plotters::prelude::*;

use crate::report::Summary;

/// Draws `chart.svg`: acks per second on top, ack and end-to-end percentiles below.
pub fn draw(path: &Path, s: &Summary) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(380);

    let max_t = s.per_second.last().map_or(1.0, |(t, _)| t + 1.0);
    let max_n = s
        .per_second
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Throughput (acknowledged messages per second)",
            ("sans-serif", 20),
        )
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
        .draw_series(LineSeries::new(
            s.per_second.iter().map(|(t, n)| (*t, *n as f64)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;

    let labels = ["p50", "p95", "p99", "p99.9", "max"];
    let pick = |l: &crate::stats::Latency| [l.p50, l.p95, l.p99, l.p999, l.max];
    let ack = pick(&s.ack_latency_ms);
    let e2e = pick(&s.e2e_latency_ms);
    let max_ms = ack.iter().chain(&e2e).cloned().fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "Latency percentiles (ms): ack (blue), end to end (red)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..labels.len() - 1, 0.0..max_ms)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|i| labels.get(*i).copied().unwrap_or("").to_owned())
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    for (values, color) in [(ack, BLUE), (e2e, RED)] {
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(i, v)| (i, *v)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Circle::new((i, *v), 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
