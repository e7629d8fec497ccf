//! `skyburst worker`: one detector worker.

use std::process::ExitCode;

use crate::cli::WorkerArgs;
use crate::config::Config;
use crate::{app, shutdown};

/// Runs until SIGTERM or Ctrl-C, finishing the batch in hand.
pub fn run(config: &Config, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let instance = args.instance_id.clone().unwrap_or_else(crate::host::process_id);
    let mut config = config.clone();
    if let Some(pool) = &args.pool {
        config.worker.pool = pool.clone();
    }
    app::runtime()?.block_on(async {
        let (_signal, mut stop) = shutdown::on_signal();
        if args.boot_delay_seconds > 0.0 {
            let boot = std::time::Duration::from_secs_f64(args.boot_delay_seconds);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return anyhow::Ok(()),
                _ = tokio::time::sleep(boot) => {}
            }
        }
        let worker = app::worker(&config, instance).await?;
        worker.run(stop).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
