//! `skyburst controller`: the reconcile loop, with `/metrics` beside it.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::ControllerArgs;
use crate::config::Config;
use crate::{app, controller, shutdown};

/// Checks every `controller.tick_seconds` until SIGTERM or Ctrl-C. Prints
/// `skyburst controller: metrics on http://ADDR/metrics` once listening.
pub fn run(config: &Config, args: &ControllerArgs, config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    app::runtime()?.block_on(async {
        let (_signal, stop) = shutdown::on_signal();
        let controller = app::controller(config, config_file, args.dry_run).await?;
        let c = &config.controller;
        let addr = format!("{}:{}", c.metrics_bind, c.metrics_port);
        let extras = controller::serve::Extras {
            #[cfg(feature = "aws")]
            vendor: controller.vendor.clone(),
        };
        let (server, bound) = controller::serve::metrics_server(&addr, controller.metrics.clone(), extras)?;
        let handle = server.handle();
        tokio::spawn(server);
        println!("skyburst controller: metrics on http://{bound}/metrics");
        controller.run(stop).await;
        handle.stop(true).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
