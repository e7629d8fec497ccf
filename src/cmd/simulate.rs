//! `skyburst simulate`: placeholder until the simulator module lands in this session.

use std::process::ExitCode;

use crate::cli::SimulateArgs;
use crate::config::Config;

/// Runs the simulator.
pub fn run(_config: &Config, _args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not wired yet")
}
