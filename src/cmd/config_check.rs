//! `skyburst config check`: by the time this runs, `main` has loaded and validated the config
//! (problems exit 64), so it prints the effective configuration as TOML.

use std::process::ExitCode;

use crate::config::Config;

/// Prints the effective configuration (defaults, file and environment merged).
pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    println!("# configuration is valid; effective values:");
    print!("{}", toml::to_string_pretty(config)?);
    Ok(ExitCode::SUCCESS)
}
