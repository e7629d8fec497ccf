//! Per-policy results of a run ([`Report`]) and their outputs: the plain-text summary table, the
//! summary CSV (one row per policy) and the timeline CSV (one row per policy and check).

use std::path::Path;

use serde::Serialize;

use super::{Error, Result};

/// What one policy did with one trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The policy's name.
    pub policy: String,
    /// Per pool, in scenario order.
    pub pools: Vec<PoolReport>,
    /// Jobs in the trace.
    pub jobs: u64,
    /// Jobs completed; equals `jobs` unless the run hit its time bound.
    pub jobs_done: u64,
    /// Launch-to-gone seconds over all instances.
    pub instance_seconds: f64,
    /// Money over all pools.
    pub cost: f64,
    /// Total service seconds ÷ slots per instance: the fleet that is never idle, boots in zero
    /// time and has no cap.
    pub oracle_instance_seconds: f64,
    /// The oracle's instance-seconds at the cheapest price per slot.
    pub oracle_cost: f64,
    /// Billed instance-seconds (each launch rounded by its pool's billing) over
    /// `oracle_instance_seconds`: at least 1, lower is cheaper. Thrashing shows here: a launch
    /// released within EC2's minute is billed the minute.
    pub cost_ratio: f64,
    /// Median seconds from arrival to a worker taking the job.
    pub wait_p50_s: f64,
    /// 95th percentile of the same.
    pub wait_p95_s: f64,
    /// Longest wait.
    pub wait_max_s: f64,
    /// Most jobs queued or in service at once.
    pub peak_backlog: u64,
    /// Checks that changed capacity in the other direction than the previous such check.
    pub direction_changes: u32,
    /// Share of service seconds on pools other than the highest-priority one.
    pub public_share: f64,
    /// Simulated seconds at the end of the run.
    pub end_s: f64,
    /// The fleet settled at the policy's level; false if the run hit its time bound.
    pub settled: bool,
    /// Events processed (arrivals, completions, boots, shutdowns, checks).
    pub events: u64,
    /// One sample per check.
    pub timeline: Vec<Sample>,
    /// High-water marks and counts the invariant tests check.
    pub invariants: Invariants,
}

/// One pool's part of a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolReport {
    /// The pool's name.
    pub name: String,
    /// Its priority (lower fills first).
    pub priority: u32,
    /// Launch-to-gone seconds of its instances.
    pub instance_seconds: f64,
    /// What the cloud bills of them: each launch rounded up to the pool's billing increment
    /// and minimum (EC2: per second, at least 60 s), so a launch released within a minute
    /// costs a minute.
    pub billed_seconds: f64,
    /// `billed_seconds` at its price per hour.
    pub cost: f64,
    /// Seconds of jobs served here.
    pub service_seconds: f64,
    /// Instances launched here.
    pub launches: u64,
}

/// The fleet at one check, after its actions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Simulated seconds.
    pub t_s: f64,
    /// Jobs queued or in service.
    pub backlog: u64,
    /// Per pool, in scenario order.
    pub pools: Vec<PoolSample>,
}

/// One pool at one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolSample {
    /// Instances booting or running, not draining.
    pub capacity: u32,
    /// Instances counting toward the quota, stopping ones included.
    pub occupied: u32,
}

/// What the invariant tests check, measured as the run goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Invariants {
    /// Most instances at once over all pools, stopping ones included (at most `scaling.max`).
    pub max_occupied: u32,
    /// The same per pool, scenario order (each at most its quota).
    pub max_occupied_per_pool: Vec<u32>,
    /// Launches into a pool while a higher-priority pool had quota room and was healthy.
    pub private_full_violations: u64,
    /// Launches the modelled cloud refused for lack of capacity (each followed by a re-plan).
    pub capacity_refusals: u64,
    /// Jobs returned to the queue because their instance was stopped mid-job.
    pub requeued_jobs: u64,
}

/// The clairvoyant reference among `reports`, if it was run.
fn clairvoyant(reports: &[Report]) -> Option<&Report> {
    reports.iter().find(|r| r.policy == super::CLAIRVOYANT)
}

/// A report's billed instance-seconds over the clairvoyant reference's (the measure of
/// `cost_ratio`, so `x oracle` = `x clairvoyant` × the reference's `x oracle`), if the reference
/// was run and billed anything.
pub fn cost_vs_clairvoyant(report: &Report, reports: &[Report]) -> Option<f64> {
    clairvoyant(reports)
        .filter(|c| c.cost_ratio > 0.0 && c.cost_ratio.is_finite())
        .map(|c| report.cost_ratio / c.cost_ratio)
}

/// A plain-text table, one row per report (reports of one scenario: pools are named after the
/// first), and the oracle underneath. With the clairvoyant reference among them, a column gives
/// each cost over its cost.
pub fn summary_table(reports: &[Report]) -> String {
    let pool_names: Vec<&str> =
        reports.first().map_or(Vec::new(), |r| r.pools.iter().map(|p| p.name.as_str()).collect());
    let mut header: Vec<String> = vec!["policy".into(), "jobs done".into()];
    header.extend(pool_names.iter().map(|name| format!("{name} inst-s")));
    header.extend(
        [
            "cost",
            "x oracle",
            "x clairvoyant",
            "wait p50 s",
            "p95 s",
            "max s",
            "peak backlog",
            "dir changes",
            "public %",
        ]
        .map(String::from),
    );
    let mut rows = vec![header];
    for r in reports {
        let mut row = vec![r.policy.clone(), format!("{}/{}", r.jobs_done, r.jobs)];
        row.extend(r.pools.iter().map(|p| format!("{:.0}", p.instance_seconds)));
        row.extend([
            format!("{:.4}", r.cost),
            format!("{:.2}", r.cost_ratio),
            cost_vs_clairvoyant(r, reports).map_or("-".into(), |x| format!("{x:.2}")),
            format!("{:.2}", r.wait_p50_s),
            format!("{:.2}", r.wait_p95_s),
            format!("{:.2}", r.wait_max_s),
            r.peak_backlog.to_string(),
            r.direction_changes.to_string(),
            format!("{:.1}", 100.0 * r.public_share),
        ]);
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|row| row.get(c).map_or(0, String::len)).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| if c == 0 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(r) = reports.first() {
        out.push_str(&format!(
            "oracle: {:.0} instance-seconds, cost {:.4} (service time / slots per instance, zero boot, no cap)\n",
            r.oracle_instance_seconds, r.oracle_cost
        ));
    }
    if clairvoyant(reports).is_some() {
        out.push_str(
            "clairvoyant: a plan made from the whole trace, with the same pools, boots, caps, billing and \
             objective (docs/simulator.md)\n",
        );
    }
    out
}

/// Writes one CSV row per report: the summary numbers, then three columns per pool.
pub fn write_csv(reports: &[Report], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let pool_names: Vec<&str> =
        reports.first().map_or(Vec::new(), |r| r.pools.iter().map(|p| p.name.as_str()).collect());
    let mut header: Vec<String> = [
        "policy",
        "jobs",
        "jobs_done",
        "instance_seconds",
        "cost",
        "oracle_instance_seconds",
        "oracle_cost",
        "cost_ratio",
        "cost_vs_clairvoyant",
        "wait_p50_s",
        "wait_p95_s",
        "wait_max_s",
        "peak_backlog",
        "direction_changes",
        "public_share",
        "end_s",
        "settled",
    ]
    .map(String::from)
    .to_vec();
    for name in &pool_names {
        header.extend(["instance_seconds", "cost", "service_seconds"].map(|k| format!("{name}_{k}")));
    }
    let rows = reports.iter().map(|r| {
        let mut row = vec![
            r.policy.clone(),
            r.jobs.to_string(),
            r.jobs_done.to_string(),
            r.instance_seconds.to_string(),
            r.cost.to_string(),
            r.oracle_instance_seconds.to_string(),
            r.oracle_cost.to_string(),
            r.cost_ratio.to_string(),
            cost_vs_clairvoyant(r, reports).map_or(String::new(), |x| x.to_string()),
            r.wait_p50_s.to_string(),
            r.wait_p95_s.to_string(),
            r.wait_max_s.to_string(),
            r.peak_backlog.to_string(),
            r.direction_changes.to_string(),
            r.public_share.to_string(),
            r.end_s.to_string(),
            r.settled.to_string(),
        ];
        for p in &r.pools {
            row.extend([p.instance_seconds.to_string(), p.cost.to_string(), p.service_seconds.to_string()]);
        }
        row
    });
    write_rows(path, header, rows)
}

/// Writes the timelines: one CSV row per report and check, with capacity and occupancy per pool.
pub fn write_timeline_csv(reports: &[Report], path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let pool_names: Vec<&str> =
        reports.first().map_or(Vec::new(), |r| r.pools.iter().map(|p| p.name.as_str()).collect());
    let mut header: Vec<String> = ["policy", "t_s", "backlog"].map(String::from).to_vec();
    for name in &pool_names {
        header.extend(["capacity", "occupied"].map(|k| format!("{name}_{k}")));
    }
    let rows = reports.iter().flat_map(|r| {
        r.timeline.iter().map(move |s| {
            let mut row = vec![r.policy.clone(), s.t_s.to_string(), s.backlog.to_string()];
            for p in &s.pools {
                row.extend([p.capacity.to_string(), p.occupied.to_string()]);
            }
            row
        })
    });
    write_rows(path, header, rows)
}

fn write_rows(path: &Path, header: Vec<String>, rows: impl Iterator<Item = Vec<String>>) -> Result<()> {
    let fail = |source: csv::Error| Error::Write { path: path.to_path_buf(), source: Box::new(source) };
    let mut writer = csv::Writer::from_path(path).map_err(fail)?;
    writer.write_record(&header).map_err(fail)?;
    for row in rows {
        writer.write_record(&row).map_err(fail)?;
    }
    writer.flush().map_err(|source| Error::Write { path: path.to_path_buf(), source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(policy: &str) -> Report {
        let pool = |name: &str, priority| PoolReport {
            name: name.into(),
            priority,
            instance_seconds: 120.0,
            billed_seconds: 120.0,
            cost: 0.01,
            service_seconds: 50.0,
            launches: 2,
        };
        Report {
            policy: policy.into(),
            pools: vec![pool("private", 1), pool("public", 2)],
            jobs: 100,
            jobs_done: 100,
            instance_seconds: 240.0,
            cost: 0.02,
            oracle_instance_seconds: 50.0,
            oracle_cost: 0.001,
            cost_ratio: 4.8,
            wait_p50_s: 1.5,
            wait_p95_s: 30.25,
            wait_max_s: 41.0,
            peak_backlog: 100,
            direction_changes: 1,
            public_share: 0.5,
            end_s: 300.0,
            settled: true,
            events: 400,
            timeline: vec![Sample {
                t_s: 0.0,
                backlog: 100,
                pools: vec![PoolSample { capacity: 8, occupied: 8 }, PoolSample { capacity: 2, occupied: 2 }],
            }],
            invariants: Invariants::default(),
        }
    }

    #[test]
    fn the_table_has_a_row_per_policy_and_a_column_per_pool() {
        let table = summary_table(&[report("seed-hybrid"), report("queue-minus-running")]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("private inst-s") && lines[0].contains("public inst-s"), "{table}");
        assert!(lines[1].starts_with("seed-hybrid") && lines[1].contains("100/100") && lines[1].contains("4.80"));
        assert!(lines[3].starts_with("oracle: 50 instance-seconds"));
    }

    #[test]
    fn csv_files_have_a_header_and_a_row_each() {
        let dir = std::env::temp_dir().join(format!("skyburst-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_csv(&[report("a"), report("b")], dir.join("summary.csv")).unwrap();
        let text = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.starts_with("policy,jobs,jobs_done,")
                && text.lines().next().unwrap().ends_with("public_service_seconds")
        );
        write_timeline_csv(&[report("a")], dir.join("timeline.csv")).unwrap();
        let text = std::fs::read_to_string(dir.join("timeline.csv")).unwrap();
        assert_eq!(
            text,
            "policy,t_s,backlog,private_capacity,private_occupied,public_capacity,public_occupied\na,0,100,8,8,2,2\n"
        );
        let err = write_csv(&[], dir.join("missing").join("x.csv")).unwrap_err().to_string();
        assert!(err.contains("x.csv"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
