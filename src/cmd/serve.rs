//! `skyburst serve`: the HTTP front end alone.

use std::net::{IpAddr, TcpListener};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{ListenArgs, ServeArgs};
use crate::config::Config;
use crate::{app, frontend, shutdown};

/// Binds, prints `listening on http://ADDR` on stdout, serves until SIGTERM or Ctrl-C.
pub fn run(config: &Config, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let tokens = app::tokens(config)?;
    let certificates = config.frontend.tls.load().context("cannot serve HTTPS (frontend.tls)")?;
    let listener = bind(config, &args.listen, tokens.enabled())?;
    let scheme = if certificates.is_some() { "https" } else { "http" };
    let address = listener.local_addr()?;
    let url = format!("{scheme}://{address}");
    app::runtime()?.block_on(async {
        let (_signal, stop) = shutdown::on_signal();
        // Bound first: the default instance id names the port, 0 included.
        let state = app::frontend(config, address.port(), stop).await?;
        println!("skyburst serve: listening on {url}");
        frontend::serve(state, listener, tokens, certificates).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Binds the configured (or overridden) address; refuses a non-loopback one without tokens or
/// without TLS, unless `--insecure`.
pub fn bind(config: &Config, listen: &ListenArgs, authenticated: bool) -> anyhow::Result<TcpListener> {
    let host = listen.bind.clone().unwrap_or_else(|| config.frontend.bind.clone());
    let port = listen.port.unwrap_or(config.frontend.port);
    let ip: IpAddr = host.parse().with_context(|| format!("frontend.bind = {host:?} is not an IP address"))?;
    let guarded = ip.is_loopback() || listen.insecure;
    anyhow::ensure!(
        guarded || authenticated,
        "refusing to listen on {ip} without authentication: anyone who can reach it could use it. \
         Set SKYBURST_FRONTEND__TOKENS (or frontend.tokens_file), or pass --insecure if the network is trusted"
    );
    anyhow::ensure!(
        guarded || config.frontend.tls.pair().is_some(),
        "refusing to serve plain HTTP on {ip}: tokens, images and results would cross the network in cleartext. \
         Set frontend.tls.cert and frontend.tls.key (PEM files; see the README's Security section), \
         or pass --insecure if the network is trusted"
    );
    TcpListener::bind((ip, port)).with_context(|| format!("cannot listen on {ip}:{port}; is the port taken?"))
}
