//! The `skyburst` binary: parse the command line, load and validate the config (exit 64 with
//! every problem), set up logging, then dispatch. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use skyburst::app::logging;
use skyburst::cli::{Cli, Command, ConfigCommand};
use skyburst::config::{self, Config};

/// `EX_CONFIG` from sysexits.h: the configuration is wrong, not the program.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(mut config) => {
            if let Some(dir) = &cli.data_dir {
                config.embedded.data_dir = dir.clone();
            }
            config
        }
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log_file = match &cli.command {
        Command::Up(args) => match skyburst::cmd::up::open_log(&config, args) {
            Ok(file) => Some(file),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    logging::init(log_file.clone());
    for name in config::ignored_env_vars(std::env::vars()) {
        tracing::warn!(%name, "ignoring an environment variable that names no config section (config keys look like SKYBURST_FRONTEND__PORT)");
    }
    let config_file = cli.config.as_deref();
    let outcome = match &cli.command {
        Command::Up(args) => skyburst::cmd::up::run(&config, args, config_file, log_file),
        Command::Serve(args) => skyburst::cmd::serve::run(&config, args),
        Command::Worker(args) => skyburst::cmd::worker::run(&config, args),
        Command::Controller(args) => skyburst::cmd::controller::run(&config, args, config_file),
        Command::Simulate(args) => skyburst::cmd::simulate::run(&config, args),
        Command::Load(args) => skyburst::cmd::load::run(args),
        Command::Experiment(args) => skyburst::cmd::experiment::run(args, config_file),
        Command::Detect(args) => skyburst::cmd::detect::run(&config, args),
        Command::Config(ConfigCommand::Check) => skyburst::cmd::config_check::run(&config),
        Command::RenderUserData(args) => skyburst::cmd::render_user_data::run(&config, args),
        Command::Aws(command) => skyburst::cmd::aws::run(&config, command),
        Command::Admin(args) => skyburst::cmd::admin::run(args),
        Command::Dev(command) => skyburst::cmd::dev::run(&config, command, config_file),
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
