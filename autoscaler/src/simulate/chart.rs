//! The simulation chart: queue depth, in-flight tasks, desired and busy workers over time,
//! as an SVG (plotters' SVG backend only, to keep the build small).

use std::path::Path;

use plotters::prelude::*;

use super::Row;

pub fn draw(path: &Path, rows: &[Row], title: &str) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t_max = rows.last().map_or(1, |r| r.time_s).max(1);
    let y_max =
        rows.iter().map(|r| r.queue_depth.max(r.in_flight).max(u64::from(r.desired_workers))).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..t_max, 0u64..(y_max + y_max / 10 + 1))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc("time (s)").y_desc("tasks / workers").draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    type Series = (&'static str, RGBColor, u32, fn(&Row) -> u64);
    // With one task per worker, in-flight equals busy workers: drawn wider underneath so
    // both stay visible.
    let series: [Series; 4] = [
        ("queue depth", RGBColor(31, 119, 180), 2, |r| r.queue_depth),
        ("in flight", RGBColor(255, 127, 14), 6, |r| r.in_flight),
        ("desired workers", RGBColor(44, 160, 44), 2, |r| u64::from(r.desired_workers)),
        ("busy workers", RGBColor(214, 39, 40), 2, |r| u64::from(r.busy_workers)),
    ];
    for (name, color, width, value) in series {
        let points = rows.iter().map(|r| (r.time_s, value(r)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(width)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
