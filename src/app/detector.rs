//! The detector a worker or `skyburst detect` runs, built from `[detector]`.

use anyhow::Context;
use skyburst_detector::{ConvPath, Detector, DetectorOptions, Device};

use crate::config::{Config, DeviceKind};

/// The compute device named by `detector.device`.
pub fn device(kind: DeviceKind) -> anyhow::Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => Device::new_cuda(0).context("detector.device = \"cuda\" but no CUDA GPU could be opened"),
    }
}

/// Loads the detector the config describes. Its `detector.threads` size the pool of whichever
/// thread runs it: rayon's global pool ([`skyburst_detector::set_threads`]) or the worker's
/// [`DetectorThread`](crate::worker::DetectorThread).
pub fn detector(config: &Config) -> anyhow::Result<Detector> {
    let d = &config.detector;
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
