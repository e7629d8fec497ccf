//! `skyburst simulate`: replays an arrival trace against the named policies on the configured
//! pools, in simulated time, and reports cost, waits and flapping per policy.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use skyburst_policies::{PolicyName, ScalingPolicy};

use crate::cli::SimulateArgs;
use crate::config::{Config, Distribution};
use crate::simulate::{self, Scenario, ServiceTime, SimPool, Trace};

/// Prints the summary table and writes `<out>/<trace>.csv` (time series),
/// `<out>/<trace>-summary.csv` and `<out>/<trace>.png`. Exit 1 if a job was left undone.
pub fn run(config: &Config, args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let names = policy_names(&args.policies)?;
    let policies: Vec<Box<dyn ScalingPolicy + Send + Sync>> =
        names.iter().map(|&n| config.scaling.policy_named(n, config.controller.tick_seconds)).collect();
    let borrowed: Vec<&(dyn ScalingPolicy + Sync)> = policies.iter().map(|p| p.as_ref() as _).collect();
    let trace = Trace::load(&args.trace)?;
    let scenario = scenario(config);
    let started = Instant::now();
    let mut reports = simulate::simulate_each(&scenario, &trace, &borrowed)?;
    reports.push(simulate::simulate_clairvoyant(&scenario, &trace)?);
    let took = started.elapsed().as_secs_f64();
    let stem = args.trace.file_stem().and_then(|s| s.to_str()).unwrap_or("trace");
    println!(
        "== {stem}: {} jobs over {:.0} s, {} pools, {} policies and the clairvoyant reference, simulated in {took:.2} s",
        trace.jobs(),
        trace.duration_s(),
        scenario.pools.len(),
        reports.len() - 1
    );
    print!("{}", simulate::summary_table(&reports));
    write_outputs(&args.out, stem, &reports)?;
    let undone: Vec<&str> = reports.iter().filter(|r| r.jobs_done < r.jobs).map(|r| r.policy.as_str()).collect();
    if undone.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: jobs left undone under {}: the pools cannot serve this trace", undone.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

fn policy_names(given: &[String]) -> anyhow::Result<Vec<PolicyName>> {
    if given.is_empty() {
        return Ok(PolicyName::ALL.to_vec());
    }
    given.iter().map(|s| s.parse::<PolicyName>().map_err(anyhow::Error::msg)).collect()
}

/// The configured pools, caps, planner and workload model as a simulation scenario.
pub fn scenario(config: &Config) -> Scenario {
    let sim = &config.simulate;
    let mean_s = sim.service_mean_seconds;
    let service = match sim.service {
        Distribution::Constant => ServiceTime::Constant { mean_s },
        Distribution::Exponential => ServiceTime::Exponential { mean_s },
        Distribution::Lognormal => ServiceTime::LogNormal { mean_s, sigma: sim.service_sigma },
    };
    let pools = config
        .pools
        .iter()
        .map(|p| SimPool {
            name: p.name.clone(),
            priority: p.priority,
            quota: p.quota,
            boot_s: p.boot_seconds,
            shutdown_s: p.shutdown_seconds,
            price_per_hour: p.price_per_hour,
            billing: p.billing(),
            workers_per_instance: p.workers_per_instance,
            cloud_capacity: None,
        })
        .collect();
    Scenario {
        pools,
        service,
        tick_s: config.controller.tick_seconds,
        caps: config.scaling.caps(),
        planner: config.scaling.planner(),
        seed: sim.seed,
    }
}

fn write_outputs(out: &Path, stem: &str, reports: &[simulate::Report]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let timeline = out.join(format!("{stem}.csv"));
    let summary = out.join(format!("{stem}-summary.csv"));
    let png = out.join(format!("{stem}.png"));
    simulate::write_timeline_csv(reports, &timeline)?;
    simulate::write_csv(reports, &summary)?;
    simulate::plot_png(reports, &png)?;
    println!("wrote {}, {} and {}", timeline.display(), summary.display(), png.display());
    Ok(())
}
