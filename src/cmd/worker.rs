//! `skyburst worker`: one detector worker.

use std::process::ExitCode;

use crate::cli::WorkerArgs;
use crate::config::Config;
use crate::worker::Stopped;
use crate::{app, shutdown};

/// Exit code of a worker whose detector hung: its supervisor (`up`, the controller's local
/// pool, systemd) starts a fresh one. `EX_SOFTWARE` from sysexits.h.
const DETECTOR_HUNG: u8 = 70;

/// Runs until SIGTERM or Ctrl-C, finishing the batch in hand; exits with 70 when the detector
/// ran past its deadline.
pub fn run(config: &Config, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let instance = args.instance_id.clone().unwrap_or_else(crate::host::process_id);
    let mut config = config.clone();
    if let Some(pool) = &args.pool {
        config.worker.pool = pool.clone();
    }
    let stopped = app::runtime()?.block_on(async {
        let (_signal, mut stop) = shutdown::on_signal();
        if args.boot_delay_seconds > 0.0 {
            let boot = std::time::Duration::from_secs_f64(args.boot_delay_seconds);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return anyhow::Ok(Stopped::Shutdown),
                _ = tokio::time::sleep(boot) => {}
            }
        }
        let worker = app::worker(&config, instance).await?;
        anyhow::Ok(worker.run(stop).await)
    })?;
    match stopped {
        Stopped::Shutdown => Ok(ExitCode::SUCCESS),
        Stopped::DetectorHung => {
            eprintln!(
                "skyburst worker: the detector ran past worker.job_deadline_seconds and cannot be stopped; \
                 exiting so a fresh worker takes over (`skyburst up` and the controller restart it)"
            );
            // The detector thread is stuck: leave without waiting for it.
            std::process::exit(DETECTOR_HUNG.into())
        }
    }
}
