//! One module per subcommand; each exposes `run(&Config, &Args) -> anyhow::Result<ExitCode>`.

pub mod admin;
pub mod aws;
pub mod config_check;
pub mod controller;
pub mod detect;
pub mod dev;
pub mod experiment;
pub mod load;
pub mod render_user_data;
pub mod serve;
pub mod simulate;
pub mod up;
pub mod worker;
