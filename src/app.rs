//! The composition root: turns the validated [`Config`] into concrete parts. The only module
//! that knows which implementation stands behind each seam.

use anyhow::Context;
use candle_core::Device;

use crate::config::{Config, DeviceKind};
use crate::detector::{self, ConvPath, Detector, DetectorOptions};

/// Logs to stderr; `RUST_LOG` filters (default `info`). Stdout stays free for results.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The compute device named by `detector.device`.
pub fn device(kind: DeviceKind) -> anyhow::Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(0).context("detector.device = \"cuda\" but no CUDA GPU could be opened"),
    }
}

/// Loads the detector the config describes, with its thread pool sized.
pub fn detector(config: &Config) -> anyhow::Result<Detector> {
    let d = &config.detector;
    detector::set_threads(d.threads);
    let options = DetectorOptions {
        threshold: d.threshold,
        nms_iou: d.nms_iou,
        resize: d.resize,
        max_pixels: d.max_pixels,
        conv_path: ConvPath::Fused,
    };
    let started = std::time::Instant::now();
    let detector = Detector::load(&d.model_dir, options, &device(d.device)?)?;
    tracing::info!(
        model_dir = %d.model_dir.display(),
        threads = d.threads,
        load_ms = started.elapsed().as_millis() as u64,
        "detector loaded"
    );
    Ok(detector)
}
