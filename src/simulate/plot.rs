//! The run as a picture: one panel per policy, with instances per pool (left axis) and the
//! backlog (right axis) over time, drawn with plotters into memory and saved as a PNG.

use std::path::Path;

use plotters::prelude::*;

use super::{Error, Report, Result};
use crate::plot::{instances_and_backlog, save_png, Area, BACKLOG_COLOUR, POOL_COLOURS};

/// Pixels per panel: 1200 wide gives each 5 s check about a pixel over 90 minutes.
const PANEL: (u32, u32) = (1200, 320);

/// Draws one panel per report (stacked) and writes the PNG to `path`.
pub fn plot_png(reports: &[Report], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let size = (PANEL.0, PANEL.1 * reports.len().max(1) as u32);
    save_png(path, size, |root| {
        let panels = root.split_evenly((reports.len().max(1), 1));
        for (area, report) in panels.iter().zip(reports) {
            panel(area, report)?;
        }
        Ok(())
    })
    .map_err(|message| Error::Write { path: path.to_path_buf(), source: message.into() })
}

fn panel(area: &Area<'_>, r: &Report) -> Result<(), Box<dyn std::error::Error>> {
    let end = r.timeline.last().map_or(1.0, |s| s.t_s).max(1.0);
    // Hours for a day-long trace, minutes for the 10–20 minute ones.
    let (unit, per) = match end {
        e if e > 3.0 * 3600.0 => ("hours", 3600.0),
        e if e > 600.0 => ("minutes", 60.0),
        _ => ("seconds", 1.0),
    };
    let x_max = end / per;
    let y_max =
        r.timeline.iter().flat_map(|s| s.pools.iter().map(|p| p.occupied)).max().unwrap_or(0).max(1) as f64 * 1.1;
    let b_max = r.timeline.iter().map(|s| s.backlog).max().unwrap_or(0).max(1) as f64 * 1.1;
    let caption = format!(
        "{}: cost {:.2}x oracle, wait p95 {:.1} s, {} direction changes, {:.0} % public",
        r.policy,
        r.cost_ratio,
        r.wait_p95_s,
        r.direction_changes,
        100.0 * r.public_share
    );
    let mut chart = instances_and_backlog(area, (&caption, 18), (x_max, unit), (y_max, "instances (capacity)"), b_max)?;
    let columns = PANEL.0 as usize;
    let backlog: Vec<(f64, f64)> = r.timeline.iter().map(|s| (s.t_s / per, s.backlog as f64)).collect();
    chart
        .draw_secondary_series(LineSeries::new(envelope(&backlog, columns), BACKLOG_COLOUR))?
        .label("backlog")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BACKLOG_COLOUR));
    // Lowest priority first, so the private pool's line is drawn on top.
    for (p, pool) in r.pools.iter().enumerate().rev() {
        let colour = POOL_COLOURS[p % POOL_COLOURS.len()];
        let points: Vec<(f64, f64)> =
            r.timeline.iter().map(|s| (s.t_s / per, s.pools.get(p).map_or(0, |x| x.capacity) as f64)).collect();
        // One pixel wide: plotters mitres the joins of wider lines, and a count flipping 0 → 11
        // → 0 within a pixel column draws spikes far outside the panel.
        chart
            .draw_series(LineSeries::new(envelope(&points, columns), colour))?
            .label(pool.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// At most `columns` buckets of (min, max) in time order: a day of 5 s checks (17 280) drawn on
/// 1 200 pixels keeps every peak and trough at a seventh of the points.
fn envelope(points: &[(f64, f64)], columns: usize) -> Vec<(f64, f64)> {
    if points.len() <= 2 * columns {
        return points.to_vec();
    }
    let per = points.len().div_ceil(columns);
    let mut out = Vec::with_capacity(2 * columns);
    for bucket in points.chunks(per) {
        let lowest = bucket.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("chunks are not empty");
        let highest = bucket.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("chunks are not empty");
        let (first, second) = if lowest.0 <= highest.0 { (lowest, highest) } else { (highest, lowest) };
        out.push(*first);
        out.push(*second);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_keeps_extremes_in_time_order() {
        let points: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, if i == 5_001 { 99.0 } else { 1.0 })).collect();
        let thin = envelope(&points, 100);
        assert!(thin.len() <= 200);
        assert!(thin.contains(&(5_001.0, 99.0)));
        assert!(thin.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(envelope(&points[..10], 100), points[..10].to_vec());
    }
}
