//! Shared test helpers: where the model, images and fixtures are, and how to run the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use skyburst_detector::{Detector, DetectorOptions};

/// The model directory the binary uses by default (`detector.model_dir`).
pub fn model_dir() -> PathBuf {
    let dir = skyburst::config::default_model_dir();
    let weights = dir.join("yolov3-tiny.weights");
    assert!(weights.is_file(), "missing {}: run `scripts/fetch-assets.sh` first", weights.display());
    dir
}

/// A test image fetched from the ultralytics wheel (`bus.jpg`, `zidane.jpg`).
pub fn image(name: &str) -> PathBuf {
    let path = skyburst::config::cache_dir().join("images").join(name);
    assert!(path.is_file(), "missing {}: run `scripts/fetch-assets.sh` first", path.display());
    path
}

/// A file committed under `tests/fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// Reads a `.npy` fixture as a tensor.
pub fn npy(relative: &str) -> Tensor {
    Tensor::read_npy(fixture(relative)).unwrap_or_else(|e| panic!("cannot read fixture {relative}: {e}"))
}

/// The detector with default options (letterbox), loaded once per test binary.
pub fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| Detector::load(&model_dir(), DetectorOptions::default(), &Device::Cpu).unwrap())
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// A program from a venv the test command makes (`scripts/install-<script>.sh`): `$VAR`, or
/// `~/.cache/skyburst/<venv>`, then `bin/<program>`; panics naming the script when it is missing.
pub fn venv_program(var: &str, venv: &str, program: &str, script: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| skyburst::config::cache_dir().join(venv))
        .join("bin")
        .join(program);
    assert!(path.is_file(), "missing {}: run `scripts/{script}` first", path.display());
    path
}

/// The real `skyburst` binary with a clean environment: no `SKYBURST_*` variables leak in.
pub fn skyburst() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_skyburst"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SKYBURST_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run(command: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = command.output().expect("the skyburst binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
pub mod browser;
#[cfg(feature = "aws")]
pub mod moto;
#[cfg(feature = "openstack")]
pub mod openstack;
pub mod service;
pub mod tls;
