//! `skyburst experiment`: the classic capacity experiment. For each fleet size N it starts
//! `skyburst up --workers N` (fresh data directory, free port), warms the workers, ramps users
//! up to the most served with 100 % success within the SLO, confirms that level by a second run
//! that adds users at 1 per second and holds the level (as CloudDetect prescribes), stops the
//! fleet, and finally prints the table and draws the chart. Every run is bounded by
//! `--seconds-per-size`, so the experiment ends by itself.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use crate::cli::ExperimentArgs;
use crate::load::experiment::{self, FleetResult};
use crate::load::ramp::{self, RampPlan, RampReport};
use crate::load::{self, LoadOptions, Mode, Record};

/// The confirmation holds its level at least this long.
const MIN_HOLD: Duration = Duration::from_secs(5);

/// Runs every fleet size in turn; exits 1 if a size served no user at all.
pub fn run(args: &ExperimentArgs, config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.workers.is_empty(), "--workers needs at least one fleet size");
    anyhow::ensure!(args.workers.iter().all(|n| (1..=64).contains(n)), "each fleet size must be in 1..=64");
    anyhow::ensure!(args.seconds_per_size >= 6.0, "--seconds-per-size must be at least 6");
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let runtime = crate::app::runtime()?;
    let mut results = Vec::new();
    for &workers in &args.workers {
        println!("fleet of {workers} worker(s): starting");
        let result = runtime.block_on(measure(args, workers, config_file))?;
        println!(
            "fleet of {workers} worker(s): {} users (ramp {}; {}; confirmation: {})",
            result.max_users, result.ramp_users, result.ramp_stop, result.confirm_stop
        );
        results.push(result);
    }
    let slo_ms = args.slo_ms as f64;
    let table = experiment::markdown_table(&results, slo_ms);
    println!("\n{table}");
    std::fs::write(args.out.join("experiment.md"), &table).context("cannot write experiment.md")?;
    std::fs::write(args.out.join("experiment.json"), serde_json::to_string_pretty(&results)?)
        .context("cannot write experiment.json")?;
    let chart = args.out.join("experiment.png");
    experiment::plot(&results, slo_ms, &chart).map_err(anyhow::Error::msg)?;
    println!("table: {}\nchart: {}", args.out.join("experiment.md").display(), chart.display());
    Ok(if results.iter().all(|r| r.max_users > 0) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One fleet size: start it, measure, stop it (also when measuring fails).
async fn measure(args: &ExperimentArgs, workers: usize, config_file: Option<&Path>) -> anyhow::Result<FleetResult> {
    // A fresh data directory (queue, store, index), removed afterwards: a 90 s run stores
    // ≈ 3000 images.
    let data = args.out.join(format!(".data-workers-{workers}"));
    let _ = std::fs::remove_dir_all(&data);
    let mut command = Command::new(std::env::current_exe().context("cannot find this program's path")?);
    if let Some(file) = config_file {
        command.arg("--config").arg(file);
    }
    command.arg("--data-dir").arg(&data).args(["up", "--workers", &workers.to_string(), "--port", "0"]);
    // The fleet's per-job log lines would drown the experiment's own: warnings and errors only,
    // unless RUST_LOG says otherwise.
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    let mut up = command.stdout(Stdio::piped()).stdin(Stdio::null()).kill_on_drop(true).spawn()?;
    let measured = match super::up::read_url(&mut up).await {
        Ok(url) => ramp_and_confirm(args, workers, &url).await,
        Err(e) => Err(e.context("the fleet did not start")),
    };
    super::up::stop_all(vec![up]).await;
    if let Err(e) = std::fs::remove_dir_all(&data) {
        tracing::warn!(dir = %data.display(), error = %e, "cannot remove the fleet's data directory");
    }
    measured
}

async fn ramp_and_confirm(args: &ExperimentArgs, workers: usize, url: &str) -> anyhow::Result<FleetResult> {
    let options = LoadOptions {
        url: url.to_string(),
        images: args.images.clone(),
        requests: 2 * workers,
        concurrency: workers,
        mode: Mode::Json,
        expect: None,
        zone: None,
        timeout: Duration::from_secs(30),
        token: std::env::var("BEARER_TOKEN").ok(),
        ca_cert: None,
    };
    // Every worker loads its model before it takes a job: the first answers are slow.
    let (_, warm) = load::run(&options, |_: &Record| {}).await?;
    anyhow::ensure!(warm.failed == 0, "the fleet of {workers} failed its warm-up requests: {warm}");
    let budget = Duration::from_secs_f64(args.seconds_per_size);
    let slo = Duration::from_millis(args.slo_ms);
    let step = Duration::from_secs_f64(args.step_seconds);
    let plan = RampPlan {
        start_users: 1,
        step_users: args.users_step,
        step_interval: step,
        max_users: args.users_max,
        hold: step,
        think: Duration::from_millis(args.think_ms),
        slo,
        max_duration: budget * 2 / 3,
    };
    let (records, report) = ramp::run(&options, &plan, |_: &Record| {}).await?;
    save_run(&args.out, &format!("workers-{workers}-ramp"), &records, slo)?;
    let found = report.max_good_users;
    if found == 0 {
        return Ok(result(workers, &report, None, "not run: the ramp found no good step".into(), slo));
    }
    // Users added at 1 per second up to the level found, which is then held.
    let confirm_budget = budget - plan.max_duration;
    let climb = Duration::from_secs(found as u64 - 1);
    let hold = confirm_budget.saturating_sub(climb).max(MIN_HOLD);
    let confirm = RampPlan {
        step_users: 1,
        step_interval: Duration::from_secs(1),
        max_users: found,
        hold,
        max_duration: climb + hold,
        ..plan
    };
    let (records, confirmed) = ramp::run(&options, &confirm, |_: &Record| {}).await?;
    save_run(&args.out, &format!("workers-{workers}-confirm"), &records, slo)?;
    Ok(result(workers, &report, Some(&confirmed), confirmed.stop.to_string(), slo))
}

fn result(workers: usize, ramp: &RampReport, confirm: Option<&RampReport>, why: String, slo: Duration) -> FleetResult {
    let best = confirm.and_then(|c| c.best_step(slo));
    FleetResult {
        workers,
        ramp_users: ramp.max_good_users,
        max_users: best.map_or(0, |s| s.users),
        mean_ms: best.map_or(0.0, |s| s.mean_ms),
        p95_ms: best.map_or(0.0, |s| s.p95_ms),
        throughput: best.map_or(0.0, |s| s.throughput),
        ramp_stop: ramp.stop.to_string(),
        confirm_stop: why,
    }
}

/// The run's CSV and charts in `out`.
fn save_run(out: &Path, name: &str, records: &[Record], slo: Duration) -> anyhow::Result<()> {
    let csv = out.join(format!("{name}.csv"));
    load::write_csv(&csv, records)?;
    load::plot::write_plots(&csv, records, Some(slo.as_secs_f64() * 1000.0))?;
    Ok(())
}
