//! The command line: one binary, one subcommand per job (../shared/DESIGN.md).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Skyburst: elastic hybrid-cloud image recognition (YOLOv3-tiny on candle).
#[derive(Debug, Parser)]
#[command(name = "skyburst", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML config file; `SKYBURST_*` environment variables override it (e.g.
    /// SKYBURST_DETECTOR__THRESHOLD=0.4).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect objects in image files and print (or draw) what was found.
    Detect(DetectArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `skyburst detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Image files (JPEG, PNG, BMP, GIF, WebP).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Print one JSON result per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Minimum score to report, in (0, 1]; overrides detector.threshold.
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,
    /// Write each image with its boxes and labels drawn into this directory.
    #[arg(long, value_name = "OUT_DIR")]
    pub annotate: Option<PathBuf>,
}

/// `skyburst config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration, print every problem (exit 64) or the effective config.
    Check,
}
