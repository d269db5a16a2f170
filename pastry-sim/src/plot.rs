//! SVG plots of a [`Report`]: the hop histogram, the RDP distribution, and for runs that span
//! time, lost and incorrect lookups and control traffic per bucket.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::report::Report;

type PlotResult<T> = Result<T, Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (720, 420);

/// Writes every plot that suits the report into `dir`; returns the files written.
///
/// ```
/// use pastry_sim::Scenario;
/// let mut s = Scenario::new(64, 3);
/// s.lookups = 500;
/// let report = s.run(&mut |_| {}).unwrap();
/// let dir = std::env::temp_dir().join(format!("pastry-plot-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let files = pastry_sim::plot::write_all(&report, &dir).unwrap();
/// assert!(files.iter().any(|f| f.ends_with("hops.svg")));
/// assert!(std::fs::read_to_string(&files[0]).unwrap().starts_with("<svg"));
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_all(report: &Report, dir: &Path) -> PlotResult<Vec<PathBuf>> {
    let mut files = Vec::new();
    let hops = dir.join("hops.svg");
    hop_histogram(report, &hops)?;
    files.push(hops);
    if !report.rdp_cdf.is_empty() {
        let rdp = dir.join("rdp_cdf.svg");
        rdp_cdf(report, &rdp)?;
        files.push(rdp);
    }
    let churn = report.session_median_s.is_some() || report.fail_fraction > 0.0;
    if churn && report.series.len() > 1 {
        let lookups = dir.join("lookups_over_time.svg");
        lookups_over_time(report, &lookups)?;
        files.push(lookups);
        let control = dir.join("control_over_time.svg");
        control_over_time(report, &control)?;
        files.push(control);
    }
    Ok(files)
}

fn title(report: &Report, what: &str) -> String {
    format!(
        "{what} ({} nodes, {}, seed {})",
        report.nodes, report.topology, report.seed
    )
}

/// Share of lookups by hop count, in percent.
pub fn hop_histogram(report: &Report, path: &Path) -> PlotResult<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let n = report.hops_histogram.len().max(1);
    let shares: Vec<f64> = (0..n).map(|h| report.hop_share(h)).collect();
    let top = shares.iter().copied().fold(0.0, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title(report, "hops per lookup"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d((0u32..n as u32).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("hops")
        .y_desc("% of lookups")
        .disable_x_mesh()
        .draw()?;
    // One rectangle per hop count, drawn in order (plotters' histogram series aggregates
    // through a hash map, whose order would make the SVG differ from run to run).
    chart.draw_series(shares.iter().enumerate().map(|(h, s)| {
        let h = h as u32;
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(h), 0.0),
                (SegmentValue::Exact(h + 1), *s),
            ],
            BLUE.mix(0.7).filled(),
        );
        bar.set_margin(0, 0, 8, 8);
        bar
    }))?;
    root.present()?;
    Ok(())
}

/// Cumulative distribution of the route delay penalty.
pub fn rdp_cdf(report: &Report, path: &Path) -> PlotResult<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = report
        .rdp_cdf
        .iter()
        .map(|(x, _)| *x)
        .fold(1.0, f64::max)
        .min(10.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            title(report, "route delay penalty, CDF"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("RDP (overlay latency / direct latency)")
        .y_desc("fraction of lookups")
        .draw()?;
    let series = [
        (&report.rdp_cdf, "measured", BLUE.stroke_width(2)),
        (
            &report.rdp_ideal_cdf,
            "perfect tables, same ring",
            BLACK.stroke_width(1),
        ),
    ];
    for (cdf, label, style) in series.into_iter().filter(|(c, ..)| !c.is_empty()) {
        chart
            .draw_series(LineSeries::new(
                cdf.iter().map(|(x, q)| (x.min(max_x * 1.05), *q)),
                style,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
    }
    if !report.rdp_ideal_cdf.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Lost and incorrect lookups per bucket of sending time, as a fraction of those sent.
pub fn lookups_over_time(report: &Report, path: &Path) -> PlotResult<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let frac = |n: u64, of: u64| n as f64 / of.max(1) as f64;
    let lost: Vec<(f64, f64)> = report
        .series
        .iter()
        .map(|s| (s.end_s, frac(s.lost, s.lookups)))
        .collect();
    let incorrect: Vec<(f64, f64)> = report
        .series
        .iter()
        .map(|s| (s.end_s, frac(s.incorrect, s.lookups)))
        .collect();
    let end = report.series.last().map_or(1.0, |s| s.end_s);
    let top = lost
        .iter()
        .chain(&incorrect)
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(1e-4)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            title(report, "lost and incorrect lookups"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("simulated seconds")
        .y_desc("fraction of lookups sent")
        .draw()?;
    chart
        .draw_series(LineSeries::new(lost, RED.stroke_width(2)))?
        .label("lost")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(incorrect, BLUE.stroke_width(2)))?
        .label("incorrect")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Control messages per node per second, per bucket.
pub fn control_over_time(report: &Report, path: &Path) -> PlotResult<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let pts: Vec<(f64, f64)> = report
        .series
        .iter()
        .map(|s| (s.end_s, s.control_msgs_per_node_per_sec))
        .collect();
    let end = report.series.last().map_or(1.0, |s| s.end_s);
    let top = pts.iter().map(|p| p.1).fold(0.5, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title(report, "control traffic"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("simulated seconds")
        .y_desc("messages per node per second")
        .draw()?;
    chart.draw_series(LineSeries::new(pts, BLUE.stroke_width(2)))?;
    chart.draw_series(LineSeries::new(
        [(0.0, 0.5), (end, 0.5)],
        RED.mix(0.6).stroke_width(1),
    ))?;
    root.present()?;
    Ok(())
}
