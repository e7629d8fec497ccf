//! The run in pictures, next to its CSV (as the NGINX + ML seed draws them): response time
//! over time, throughput over time with the users sending, and a success / failure chart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::Record;
use crate::plot::{bar_chart, save_png, Bar};

const SIZE: (u32, u32) = (1000, 420);
const OK_COLOUR: RGBColor = RGBColor(31, 119, 180);
const FAIL_COLOUR: RGBColor = RGBColor(214, 39, 40);
const USERS_COLOUR: RGBColor = RGBColor(110, 110, 110);

/// Writes `STEM-response-time.png`, `STEM-throughput.png` and `STEM-outcomes.png` beside `csv`
/// and returns their paths. `slo_ms`, if given, is drawn as a line on the response times.
pub fn write_plots(csv: &Path, records: &[Record], slo_ms: Option<f64>) -> anyhow::Result<Vec<PathBuf>> {
    let stem = csv.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "load".into());
    let beside = |name: &str| csv.with_file_name(format!("{stem}-{name}.png"));
    let paths = [beside("response-time"), beside("throughput"), beside("outcomes")];
    save_png(&paths[0], SIZE, |root| response_times(root, records, slo_ms)).map_err(anyhow::Error::msg)?;
    save_png(&paths[1], SIZE, |root| throughput(root, records)).map_err(anyhow::Error::msg)?;
    save_png(&paths[2], SIZE, |root| outcomes(root, records)).map_err(anyhow::Error::msg)?;
    Ok(paths.into())
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// When each request was answered, seconds from the start.
fn finished_s(r: &Record) -> f64 {
    r.started_s + r.latency_ms / 1000.0
}

fn response_times(root: &crate::plot::Area<'_>, records: &[Record], slo_ms: Option<f64>) -> Drawn {
    let end = records.iter().map(finished_s).fold(1.0, f64::max);
    let top = records.iter().map(|r| r.latency_ms).chain(slo_ms).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption("Response time", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart.configure_mesh().x_desc("seconds since start (answered)").y_desc("ms").draw()?;
    for (ok, colour, label) in [(true, OK_COLOUR, "answered"), (false, FAIL_COLOUR, "failed")] {
        let points = records.iter().filter(|r| r.ok() == ok).map(|r| (finished_s(r), r.latency_ms));
        chart
            .draw_series(points.map(|p| Circle::new(p, 2, colour.filled())))?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 8, y), 3, colour.filled()));
    }
    if let Some(slo) = slo_ms {
        chart
            .draw_series(LineSeries::new([(0.0, slo), (end, slo)], FAIL_COLOUR.stroke_width(1)))?
            .label(format!("SLO {slo:.0} ms"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], FAIL_COLOUR));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

fn throughput(root: &crate::plot::Area<'_>, records: &[Record]) -> Drawn {
    let seconds = records.iter().map(finished_s).fold(1.0, f64::max).ceil() as usize;
    let mut per_second = vec![0u32; seconds + 1];
    for r in records.iter().filter(|r| r.ok()) {
        per_second[finished_s(r) as usize] += 1;
    }
    let users: Vec<(f64, f64)> = records.iter().map(|r| (r.started_s, r.users as f64)).collect();
    let top = per_second.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.15;
    let most_users = users.iter().map(|u| u.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(root)
        .caption("Throughput", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds as f64, 0.0..top)?
        .set_secondary_coord(0.0..seconds as f64, 0.0..most_users);
    chart.configure_mesh().x_desc("seconds since start").y_desc("answers per second").draw()?;
    chart.configure_secondary_axes().y_desc("users").draw()?;
    let bars = per_second.iter().enumerate().map(|(s, &n)| (s as f64 + 0.5, n as f64));
    chart
        .draw_series(LineSeries::new(bars, OK_COLOUR.stroke_width(2)))?
        .label("answers per second")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], OK_COLOUR));
    chart
        .draw_secondary_series(LineSeries::new(users, USERS_COLOUR.stroke_width(1)))?
        .label("users")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], USERS_COLOUR));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

/// Requests per outcome: `200`, other statuses, and transport errors.
fn outcome_counts(records: &[Record]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for r in records {
        let name = match (r.ok(), r.status) {
            (true, _) => "answered (200)".to_string(),
            (false, 0) => "transport error".to_string(),
            (false, status) => format!("HTTP {status}"),
        };
        *counts.entry((!r.ok(), name)).or_default() += 1;
    }
    counts.into_iter().map(|((_, name), n)| (name, n)).collect()
}

fn outcomes(root: &crate::plot::Area<'_>, records: &[Record]) -> Drawn {
    let bars: Vec<Bar> = outcome_counts(records)
        .into_iter()
        .map(|(name, n)| {
            let colour = if name.starts_with("answered") { OK_COLOUR } else { FAIL_COLOUR };
            Bar { label: format!("{name}: {n}"), value: n as f64, colour }
        })
        .collect();
    bar_chart(root, &format!("Success and failure ({} requests)", records.len()), "requests", &bars)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(started_s: f64, status: u16, users: usize) -> Record {
        Record::for_test(status, 120.0, users, started_s)
    }

    #[test]
    fn outcomes_put_successes_first_then_each_failure() {
        let records = [record(0.0, 200, 1), record(0.5, 503, 1), record(1.0, 0, 2), record(1.5, 200, 2)];
        let counts = outcome_counts(&records);
        let expected = [("answered (200)".to_string(), 2), ("HTTP 503".into(), 1), ("transport error".into(), 1)];
        assert_eq!(counts, expected);
    }

    #[test]
    fn the_three_pngs_are_written_beside_the_csv() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("run.csv");
        let records: Vec<Record> =
            (0..40).map(|i| record(i as f64 * 0.1, if i == 39 { 503 } else { 200 }, 1 + i / 10)).collect();
        let paths = write_plots(&csv, &records, Some(2000.0)).unwrap();
        let names: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["run-response-time.png", "run-throughput.png", "run-outcomes.png"]);
        for path in &paths {
            let image = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!((image.width(), image.height()), SIZE);
        }
    }
}
