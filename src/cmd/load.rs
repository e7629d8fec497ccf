//! `skyburst load`: the workload generator.

use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::LoadArgs;
use crate::load::{self, LoadOptions};

/// Runs the load, prints the summary; exits 1 unless every request succeeded and every checked
/// answer was correct.
pub fn run(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.requests > 0, "--requests must be at least 1");
    anyhow::ensure!((1..=1024).contains(&args.concurrency), "--concurrency must be in 1..=1024");
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
    };
    let bar = ProgressBar::new(args.requests as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}").expect("the template is valid"),
    );
    let print_results = args.print_results;
    let progress = {
        let bar = bar.clone();
        move |record: &load::Record| {
            if print_results {
                bar.suspend(|| println!("{}", serde_json::to_string(record).unwrap_or_default()));
            }
            if !record.ok() {
                bar.set_message(format!("last error: HTTP {} {}", record.status, record.error));
            }
            bar.inc(1);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (records, summary) = runtime.block_on(load::run(&options, progress))?;
    bar.finish_and_clear();
    if let Some(path) = &args.csv {
        load::write_csv(path, &records)?;
    }
    println!("{summary}");
    Ok(if summary.all_good() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
