//! `skyburst load`: the workload generator: a fixed run, a ramp, or a trace replayed open-loop.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::runtime::Runtime;

use crate::cli::LoadArgs;
use crate::load::{self, LoadOptions, Record};
use crate::simulate::Trace;

/// Runs the load and prints the summary. A fixed run or a replay exits 1 unless every request
/// succeeded and every checked answer was correct; a ramp exits 1 when not even its first step
/// was good. With `--csv`, the rows and three PNG charts are written.
pub fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.requests > 0, "--requests must be at least 1");
    anyhow::ensure!((1..=1024).contains(&args.concurrency), "--concurrency must be in 1..=1024");
    anyhow::ensure!(
        args.token.is_none() || args.insecure || !crate::tls::is_cleartext_off_loopback(&args.url),
        "refusing to send the token to {} over plain HTTP: it would cross the network in cleartext. \
         Use the front end's https:// URL (with --ca-cert for a self-signed certificate), or pass --insecure",
        args.url
    );
    let options = LoadOptions {
        url: args.url.clone(),
        images: args.images.clone(),
        requests: args.requests,
        concurrency: args.concurrency,
        mode: args.mode,
        expect: args.expect.clone(),
        zone: args.zone.clone(),
        timeout: Duration::from_secs(args.timeout_seconds.max(1)),
        token: args.token.clone(),
        ca_cert: args.ca_cert.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (records, good, slo_ms) = match &args.replay.trace {
        Some(trace) => replay(&runtime, &options, trace, args)?,
        None if args.ramp.ramp => ramp(&runtime, &options, args)?,
        None => fixed(&runtime, &options, args)?,
    };
    if let Some(path) = &args.csv {
        load::write_csv(path, &records)?;
        for png in load::plot::write_plots(path, &records, slo_ms)? {
            println!("chart: {}", png.display());
        }
    }
    Ok(if good { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The records, whether the run was good, and the SLO line of its charts.
type Outcome = (Vec<Record>, bool, Option<f64>);

/// `--requests` at `--concurrency`.
fn fixed(runtime: &Runtime, options: &LoadOptions, args: &LoadArgs) -> anyhow::Result<Outcome> {
    let bar = ProgressBar::new(args.requests as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}").expect("the template is valid"),
    );
    let (records, summary) = runtime.block_on(load::run(options, progress(&bar, args)))?;
    bar.finish_and_clear();
    println!("{summary}");
    Ok((records, summary.all_good(), None))
}

/// `--ramp`: closed-loop users, step by step.
fn ramp(runtime: &Runtime, options: &LoadOptions, args: &LoadArgs) -> anyhow::Result<Outcome> {
    let plan = args.ramp.plan()?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {pos} requests {per_sec} {msg}").expect("valid"));
    let (records, report) = runtime.block_on(load::ramp::run(options, &plan, progress(&bar, args)))?;
    bar.finish_and_clear();
    println!("{report}");
    Ok((records, report.max_good_users > 0, Some(plan.slo.as_secs_f64() * 1000.0)))
}

/// `--trace`: the trace's jobs, open-loop at their time-scaled times.
fn replay(runtime: &Runtime, options: &LoadOptions, path: &Path, args: &LoadArgs) -> anyhow::Result<Outcome> {
    let plan = args.replay.plan(args.timeout_seconds.max(1))?;
    let trace = Trace::load(path).context("cannot replay the trace")?;
    // Checked before the images are read or anything is sent.
    load::replay::schedule(&trace, &plan)?;
    let options = LoadOptions { concurrency: plan.max_in_flight, ..options.clone() };
    let bar = ProgressBar::new(trace.jobs());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} answered, {per_sec} {msg}").expect("the template is valid"),
    );
    let (records, report) = runtime.block_on(load::replay::run(&options, &trace, &plan, progress(&bar, args)))?;
    bar.finish_and_clear();
    println!("{report}");
    Ok((records, report.summary.all_good(), None))
}

/// Advances `bar` per finished request, printing the result first with `--print-results`.
fn progress(bar: &ProgressBar, args: &LoadArgs) -> impl Fn(&Record) + Send + Sync + 'static {
    let (bar, print_results) = (bar.clone(), args.print_results);
    move |record: &Record| {
        if print_results {
            bar.suspend(|| println!("{}", serde_json::to_string(record).unwrap_or_default()));
        }
        if !record.ok() {
            bar.set_message(format!("last error: HTTP {} {}", record.status, record.error));
        }
        bar.inc(1);
    }
}
