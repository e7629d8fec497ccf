//! One module per subcommand; each exposes `run(&Config, &Args) -> anyhow::Result<ExitCode>`.

pub mod config_check;
pub mod detect;
pub mod load;
pub mod serve;
pub mod up;
pub mod worker;
