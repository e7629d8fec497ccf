//! `skyburst controller`: the reconcile loop, with `/metrics` beside it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ControllerArgs;
use crate::config::Config;
use crate::{app, controller, shutdown};

/// Checks every `controller.tick_seconds` until SIGTERM or Ctrl-C. Prints
/// `skyburst controller: metrics on http(s)://ADDR/metrics` once listening.
pub fn run(config: &Config, args: &ControllerArgs, config_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let c = &config.controller;
    let certificates = c.tls.load().context("cannot serve HTTPS (controller.tls)")?;
    let cleartext = certificates.is_none() && !args.insecure;
    let ip: std::net::IpAddr = c
        .metrics_bind
        .parse()
        .with_context(|| format!("controller.metrics_bind = {:?} is not an IP address", c.metrics_bind))?;
    anyhow::ensure!(
        ip.is_loopback() || !cleartext,
        "refusing to serve /metrics and /v1/credentials over plain HTTP on {ip}: vended credentials would cross \
         the network in cleartext. Set controller.tls.cert and controller.tls.key (a self-signed pair is enough: \
         workers pin it), or pass --insecure if the network is trusted"
    );
    app::runtime()?.block_on(async {
        let (_signal, stop) = shutdown::on_signal();
        let served = certificates.as_ref().map(|c| c.fingerprint());
        let controller = app::controller(config, config_file, args.dry_run, served).await?;
        let addr = format!("{}:{}", c.metrics_bind, c.metrics_port);
        let extras = controller::serve::Extras {
            #[cfg(feature = "aws")]
            vendor: controller.vendor.clone(),
        };
        let scheme = if certificates.is_some() { "https" } else { "http" };
        if let Some(certificates) = &certificates {
            // Nova workers are given this certificate's SHA-256 when they launch.
            let replaced = "the controller's certificate changed: running Nova workers pinned the old one and \
                            will refuse it, and new ones are given the old pin until the controller restarts; \
                            keep the controller's pair for the deployment's life";
            tokio::spawn(certificates.clone().watch("controller", Some(replaced), stop.clone()));
        }
        let (server, bound) =
            controller::serve::metrics_server(&addr, controller.metrics.clone(), extras, certificates)?;
        let handle = server.handle();
        tokio::spawn(server);
        println!("skyburst controller: metrics on {scheme}://{bound}/metrics");
        controller.run(stop).await;
        handle.stop(true).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
