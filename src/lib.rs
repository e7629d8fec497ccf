//! Skyburst: an elastic hybrid-cloud image-recognition service. Images go in, YOLOv3-tiny
//! (COCO) on candle finds the objects, and the fleet of workers grows on the private cloud
//! first and bursts to the public cloud.
//!
//! # Layout
//! - [`detector`]: YOLOv3-tiny from darknet's files: parse, load, preprocess, run, decode.
//! - [`result`]: the result JSON shape shared by every entry point.
//! - [`config`]: the typed, layered, validated configuration.
//! - [`cli`]: the command-line definition; [`cmd`]: one module per subcommand.
//! - [`app`]: the composition root, the only place that turns config into concrete parts.

pub mod app;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod detector;
pub mod result;
