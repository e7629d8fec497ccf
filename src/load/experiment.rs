//! The capacity experiment's results (`skyburst experiment`, driven from `cmd/experiment.rs`):
//! per fixed fleet, the most concurrent users served with 100 % success within the SLO, as
//! CloudDetect reports it, written as a Markdown table and a chart.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::plot::{bar_chart, save_png, Bar};

/// One fleet size's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetResult {
    /// Worker processes (`up --workers N`).
    pub workers: usize,
    /// The most users of a good step in the ramp.
    pub ramp_users: usize,
    /// The most users of a good step in the confirmation run (users added 1 per second, the
    /// last level held): the figure the table reports.
    pub max_users: usize,
    /// Mean response time at `max_users` in the confirmation run, ms.
    pub mean_ms: f64,
    /// Its p95, ms.
    pub p95_ms: f64,
    /// Its answers per second.
    pub throughput: f64,
    /// Why the ramp stopped.
    pub ramp_stop: String,
    /// Why the confirmation run stopped.
    pub confirm_stop: String,
}

/// The results as a Markdown table, one row per fleet size.
pub fn markdown_table(results: &[FleetResult], slo_ms: f64) -> String {
    let mut table = format!(
        "| workers | max users (100 % success, p95 ≤ {slo_ms:.0} ms) | mean response ms | p95 ms | images/s | ramp reached |\n\
         |---:|---:|---:|---:|---:|---:|\n"
    );
    for r in results {
        table.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {} |\n",
            r.workers, r.max_users, r.mean_ms, r.p95_ms, r.throughput, r.ramp_users
        ));
    }
    table
}

/// A bar per fleet size (most users) with its mean response time written above it.
pub fn plot(results: &[FleetResult], slo_ms: f64, path: &Path) -> Result<(), String> {
    let bars: Vec<Bar> = results
        .iter()
        .map(|r| Bar {
            label: format!("{} worker{}", r.workers, if r.workers == 1 { "" } else { "s" }),
            value: r.max_users as f64,
            colour: RGBColor(31, 119, 180),
        })
        .collect();
    let above = results.iter().map(|r| r.max_users).max().unwrap_or(0).max(1) as f64 * 0.05;
    save_png(path, (900, 480), |root| {
        let caption = format!("Most users with 100 % success, p95 ≤ {slo_ms:.0} ms");
        let mut chart = bar_chart(root, &caption, "concurrent users", &bars)?;
        chart.draw_series(results.iter().enumerate().map(|(i, r)| {
            let label = format!("{} users, mean {:.0} ms", r.max_users, r.mean_ms);
            Text::new(label, (SegmentValue::Exact(i as u32), r.max_users as f64 + above), ("sans-serif", 16))
        }))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(workers: usize, max_users: usize) -> FleetResult {
        FleetResult {
            workers,
            ramp_users: max_users + 1,
            max_users,
            mean_ms: 123.4,
            p95_ms: 180.6,
            throughput: 16.25,
            ramp_stop: "p95 passed the SLO".into(),
            confirm_stop: "reached --users-max within the SLO".into(),
        }
    }

    #[test]
    fn the_table_has_a_row_per_fleet_size() {
        let table = markdown_table(&[result(1, 8), result(2, 15)], 2000.0);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| workers | max users (100 % success, p95 ≤ 2000 ms) |"));
        assert_eq!(lines[2], "| 1 | 8 | 123 | 181 | 16.2 | 9 |");
        assert_eq!(lines[3], "| 2 | 15 | 123 | 181 | 16.2 | 16 |");
    }

    #[test]
    fn the_chart_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("experiment.png");
        plot(&[result(1, 8), result(2, 15), result(4, 17)], 2000.0, &path).unwrap();
        let image = image::open(&path).unwrap();
        assert_eq!((image.width(), image.height()), (900, 480));
    }
}
