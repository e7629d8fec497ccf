//! One module per subcommand; each exposes `run(&Config, &Args) -> anyhow::Result<ExitCode>`.

pub mod config_check;
pub mod detect;
